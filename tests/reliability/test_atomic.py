"""io.atomic: an interrupted or crashed write leaves the previous state or nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bmr_compress.io.atomic import atomic_output_dir, remove_stale_staging


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid  # reaped: no such process any more (pid reuse within the test is unlikely)


def test_interrupt_inside_keeps_previous_state(tmp_path: Path) -> None:
    out = tmp_path / "o"
    with atomic_output_dir(out) as st:
        (st / "a").write_text("1")
    with pytest.raises(KeyboardInterrupt), atomic_output_dir(out, overwrite=True) as st:
        (st / "a").write_text("2")
        raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"] and (out / "a").read_text() == "1"


def test_sigint_during_swap_is_deferred_until_it_is_done(tmp_path: Path) -> None:
    """A SIGINT raised while both renames run arrives only after the new output is in place."""
    out = tmp_path / "o"
    with atomic_output_dir(out) as st:
        (st / "a").write_text("1")
    real_rename = Path.rename

    def rename_and_interrupt(self: Path, target: Path) -> Path:
        # raised in this thread, so the test does not depend on which thread the OS picks
        # for a process-directed signal (tests/reliability/test_kill.py covers those)
        signal.raise_signal(signal.SIGINT)
        return real_rename(self, target)

    mp = pytest.MonkeyPatch()
    mp.setattr(Path, "rename", rename_and_interrupt)
    try:
        with pytest.raises(KeyboardInterrupt), atomic_output_dir(out, overwrite=True) as st:
            (st / "a").write_text("2")
    finally:
        mp.undo()
    assert (out / "a").read_text() == "2"


def test_stale_staging_of_a_dead_run_is_removed_and_old_copy_restored(tmp_path: Path) -> None:
    out = tmp_path / "o"
    with atomic_output_dir(out) as st:
        (st / "a").write_text("1")
    dead = _dead_pid()
    (tmp_path / f".o.tmp-{dead}-abc").mkdir()
    live = tmp_path / f".o.tmp-{os.getpid()}-def"  # a run still going: left alone
    live.mkdir()
    out.rename(tmp_path / f".o.old-{dead}-xyz")  # killed between the two renames
    removed = remove_stale_staging(out)
    assert [p.name for p in removed] == [f".o.tmp-{dead}-abc"]
    assert (out / "a").read_text() == "1" and live.exists()

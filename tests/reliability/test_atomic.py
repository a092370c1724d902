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


def test_stale_staging_is_judged_by_the_lock_not_the_pid(tmp_path: Path) -> None:
    """Issue 16 #8: a pid means nothing on a volume shared between containers or hosts. With
    no run holding the output's lock, every staging entry is stale (even one named after a
    live pid here) and an interrupted replacement is restored; while another process holds
    the lock, nothing is touched (even an entry named after a pid that does not exist here)."""
    out = tmp_path / "o"
    with atomic_output_dir(out) as st:
        (st / "a").write_text("1")
    (tmp_path / f".o.tmp-{os.getpid()}-abc").mkdir()  # a pid alive here, but no lock holder
    out.rename(tmp_path / f".o.old-{_dead_pid()}-xyz")  # killed between the two renames
    removed = remove_stale_staging(out)
    assert [p.name for p in removed] == [f".o.tmp-{os.getpid()}-abc"]
    assert (out / "a").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"], "the lock file goes with the last run"

    holder = subprocess.Popen(  # a live run elsewhere: holds the lock
        [sys.executable, "-c", "import sys; from pathlib import Path; from bmr_compress.io.atomic import run_lock\n"
         f"with run_lock(Path({str(out)!r})):\n    print('held', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=str(Path(__file__).parents[2]))
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        foreign = tmp_path / ".o.tmp-999999999-x"  # its pid does not exist in this namespace
        foreign.mkdir()
        assert remove_stale_staging(out) == [] and foreign.is_dir()
    finally:
        holder.communicate("", timeout=60)
    assert [p.name for p in remove_stale_staging(out)] == [".o.tmp-999999999-x"]

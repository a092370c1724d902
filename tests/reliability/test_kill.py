"""Ctrl-C (SIGINT) or a crash (SIGKILL) at any stage of `compress` leaves either nothing or a
complete, valid result at --out; a rerun succeeds and resumes the fine-tune from its checkpoint.

Real processes: `python -m bmr_compress.cli.main compress zoo:mlp-digits -v`, signalled when
their stderr names a stage ("stage: finetune", "stage: export", ...). The fast variant runs
in the default tier; the full stage matrix is marked slow.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.reliability._killer import checkpoints, leftovers, signal_at, start_compress, state_of
from tests.reliability._sources import Sources

STEPS = 40  # checkpoint every max(40 // 10, 10) = 10 steps


def _rerun_succeeds(out: Path, sources: Sources, *, expect_resume: bool = False) -> str:
    run = start_compress(out, sources.cache, steps=STEPS, extra=("--overwrite",) if out.exists() else ())
    rc = run.finish()
    assert rc == 0, run.stderr
    assert state_of(out) == "complete"
    assert leftovers(out) == [], leftovers(out)
    assert checkpoints(out) == [], "the fine-tune checkpoint is removed once the output is in place"
    if expect_resume:
        assert "resumed from" in run.stderr, run.stderr
    return run.stderr


def _kill(out: Path, sources: Sources, stage: str, sig: signal.Signals, *, check=None, delay: float = 0.0) -> int:
    run = start_compress(out, sources.cache, steps=STEPS)
    sent = signal_at(run, stage, sig, check=check, delay=delay)
    rc = run.finish()
    assert sent, f"the run ended before stage {stage}: rc {rc}\n{run.stderr}"
    if sig == signal.SIGINT:
        assert rc == 130, run.stderr
        assert "Traceback" not in run.stderr, run.stderr
        assert leftovers(out) == [], "Ctrl-C cleans its staging directory"
    else:
        assert rc == -signal.SIGKILL
    assert state_of(out) in ("absent", "complete")
    return rc


def test_sigkill_in_export_then_rerun(sources: Sources, tmp_path: Path) -> None:
    """Fast variant: a crash while the output is assembled aside leaves nothing at --out; the
    rerun removes the dead run's staging directory and writes a complete result."""
    out = tmp_path / "out"
    _kill(out, sources, "export", signal.SIGKILL)
    assert state_of(out) == "absent"
    _rerun_succeeds(out, sources)


@pytest.mark.slow
def test_sigkill_in_finetune_resumes(sources: Sources, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _kill(out, sources, "finetune", signal.SIGKILL, check=lambda: any(
        (c / "checkpoint.json").exists() or any(c.glob("*.json")) for c in checkpoints(out)))
    assert state_of(out) == "absent" and checkpoints(out), "the last good fine-tune state is kept"
    _rerun_succeeds(out, sources, expect_resume=True)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "sigkill"])
@pytest.mark.parametrize("stage", ["load", "finetune", "export", "validate"])
def test_signal_at_stage(stage: str, sig: signal.Signals, sources: Sources, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _kill(out, sources, stage, sig)
    _rerun_succeeds(out, sources)


@pytest.mark.slow
def test_sigkill_while_replacing_keeps_previous_result(sources: Sources, tmp_path: Path) -> None:
    """With --overwrite, a crash before the swap leaves the previous complete result in place."""
    out = tmp_path / "out"
    _rerun_succeeds(out, sources)
    before = (out / "report.json").read_bytes()
    run = start_compress(out, sources.cache, steps=STEPS, extra=("--overwrite",))
    assert signal_at(run, "validate", signal.SIGKILL)
    run.finish()
    assert state_of(out) == "complete" and (out / "report.json").read_bytes() == before
    _rerun_succeeds(out, sources)

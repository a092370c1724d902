"""Ctrl-C (SIGINT), SIGTERM or a crash (SIGKILL) at any stage of `compress` leaves either nothing or a
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


def _kill(out: Path, sources: Sources, stage: str, sig: signal.Signals, *, check=None, delay: float = 0.0,
          steps: int | None = STEPS) -> int:
    tmp = out.parent / "tmpdir"
    run = start_compress(out, sources.cache, steps=steps, tmpdir=tmp)
    sent = signal_at(run, stage, sig, check=check, delay=delay)
    rc = run.finish()
    assert sent, f"the run ended before stage {stage}: rc {rc}\n{run.stderr}"
    if sig in (signal.SIGINT, signal.SIGTERM):  # handled alike: everything temporary goes
        assert rc == (130 if sig == signal.SIGINT else 143), run.stderr
        assert "Traceback" not in run.stderr, run.stderr
        if sig == signal.SIGTERM:
            assert "terminated (SIGTERM)" in run.stderr, run.stderr
        assert leftovers(out) == [], "Ctrl-C / SIGTERM clean the staging and work directories"
        assert list(tmp.glob("bmr-*")) == [], f"left in the temp dir: {list(tmp.iterdir())}"
    else:
        assert rc == -signal.SIGKILL
        assert not list(tmp.glob("bmr-work-*")), "scratch files live beside --out, not in the temp dir"
    assert state_of(out) in ("absent", "complete")
    return rc


def test_sigkill_in_export_then_rerun(sources: Sources, tmp_path: Path) -> None:
    """Fast variant: a crash while the output is assembled aside leaves nothing at --out; the
    rerun removes the dead run's staging directory and writes a complete result."""
    out = tmp_path / "out"
    _kill(out, sources, "export", signal.SIGKILL)
    assert state_of(out) == "absent"
    _rerun_succeeds(out, sources)


@pytest.mark.slow  # ~60 s on a loaded 2-core machine; the default tier has the sigterm exit path below
def test_sigterm_in_export_cleans_up_then_rerun(sources: Sources, tmp_path: Path) -> None:
    """Issue 16 #7: SIGTERM (timeout, container stop) is handled like Ctrl-C: one message,
    exit 143, no staging, work or temp-dir copies left; the rerun writes a complete result."""
    out = tmp_path / "out"
    _kill(out, sources, "export", signal.SIGTERM)
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
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL],
                         ids=["sigint", "sigterm", "sigkill"])
@pytest.mark.parametrize("stage", ["load", "finetune", "export", "validate"])
def test_signal_at_stage(stage: str, sig: signal.Signals, sources: Sources, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _kill(out, sources, stage, sig)
    _rerun_succeeds(out, sources)


# three of the six in the default tier (each stage once, both signals); the rest: -m slow
@pytest.mark.parametrize("stage, sig", [
    ("posterior", signal.SIGTERM), ("reduce", signal.SIGINT), ("recovery", signal.SIGTERM),
    pytest.param("posterior", signal.SIGINT, marks=pytest.mark.slow),
    pytest.param("reduce", signal.SIGTERM, marks=pytest.mark.slow),
    pytest.param("recovery", signal.SIGINT, marks=pytest.mark.slow),
], ids=["posterior-sigterm", "reduce-sigint", "recovery-sigterm", "posterior-sigint",
        "reduce-sigterm", "recovery-sigint"])
def test_signal_in_default_laplace_path(stage: str, sig: signal.Signals, sources: Sources,
                                        tmp_path: Path) -> None:
    """The default path's own stages (unit posteriors, sequential reduction, recovery)."""
    _kill(tmp_path / "out", sources, stage, sig, steps=None)


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


EXIT_PATHS = {  # extra compress arguments, signal at the finetune stage or None, exit code
    "ok": ((), None, 0),
    "rejected": (("--size-budget", "0.05"), None, 1),
    "bad-input": (("--data", "two-lines"), None, 2),
    "sigint": ((), signal.SIGINT, 130),
    "sigterm": ((), signal.SIGTERM, 143),
}


# Ctrl-C (also in test_signal_in_default_laplace_path) and bad input: -m slow
@pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.slow) if p in ("sigint", "bad-input")
                                  else p for p in sorted(EXIT_PATHS)])
def test_no_work_or_staging_directory_survives(path: str, sources: Sources, tmp_path: Path) -> None:
    """Issue 16 #7: whatever way `compress` ends (success, rejected, bad input, Ctrl-C,
    SIGTERM), no `bmr-work-*` in the temp dir and no staging/work/lock entry beside --out
    survive it (SIGKILL: the next run removes them, test_sigkill_in_export_then_rerun)."""
    extra, sig, code = EXIT_PATHS[path]
    if "two-lines" in extra:
        (tmp_path / "two.txt").write_text("one line\nanother line\n")
        extra = ("--data", str(tmp_path / "two.txt"))
    out, tmp = tmp_path / "out", tmp_path / "tmpdir"
    run = start_compress(out, sources.cache, steps=STEPS, extra=extra, tmpdir=tmp)
    if sig is not None:
        assert signal_at(run, "finetune", sig)
    assert run.finish() == code, run.stderr
    # (a third-party library leaves a 51-byte `.ses` file there; the tool's own are bmr-*)
    assert list(tmp.glob("bmr-*")) == [], f"left in the temp dir: {list(tmp.iterdir())}"
    assert leftovers(out) == [], leftovers(out)
    if code != 0 and sig is None:
        assert checkpoints(out) == [], "a finished or refused run leaves no checkpoint"

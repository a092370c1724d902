"""Issue 16 #10: `<out>.rejected` is never a place where a user's files are deleted, and
output permissions follow the umask (a replaced directory keeps its mode). Real CLI
processes; a digits MLP cut to 5 % of its parameters is rejected by the metric gate."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.reliability._cli import one_error_line, run_cli_process
from tests.reliability._sources import Sources

QUICK = ["--steps", "5", "--max-samples", "240"]
REJECTED = [*QUICK, "--size-budget", "0.05"]


def _compress(out: Path, sources: Sources, *extra: str, umask: int | None = None):
    return run_cli_process(["compress", "zoo:mlp-digits", "--out", str(out), *extra], sources.cache, umask=umask)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.lstat().st_mode)


def test_user_files_in_rejected_dir_are_never_deleted(sources: Sources, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _compress(out, sources, *REJECTED).returncode == 1
    rej = tmp_path / "out.rejected"
    first = (rej / "report.json").read_bytes()
    # an untouched rejected result of an earlier run is replaced by the next failed run
    r = _compress(out, sources, *REJECTED, "--seed", "1")
    assert r.returncode == 1, r.stderr
    assert (rej / "report.json").read_bytes() != first
    # ... but not once the user put their own file there (refused before any work, exit 2)
    (rej / "notes.txt").write_text("my analysis")
    r = _compress(out, sources, *REJECTED)
    assert r.returncode == 2 and str(rej) in one_error_line(r) and "notes.txt" in one_error_line(r)
    assert (rej / "notes.txt").read_text() == "my analysis"


def test_rejected_dir_that_is_a_symlink_is_refused(sources: Sources, tmp_path: Path) -> None:
    """(#9 too: this was an internal error, exit 3.)"""
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "precious.txt").write_text("x")
    (tmp_path / "out.rejected").symlink_to(target)
    r = _compress(tmp_path / "out", sources, *REJECTED)
    assert r.returncode == 2 and "symlink" in one_error_line(r)
    assert (target / "precious.txt").read_text() == "x" and not (tmp_path / "out").exists()


@pytest.mark.parametrize("umask", [pytest.param(0o022, marks=pytest.mark.slow), 0o027])
def test_output_modes_follow_the_umask(umask: int, sources: Sources, tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = _compress(out, sources, *QUICK, umask=umask)
    assert r.returncode == 0, r.stderr
    for p in [out, *out.rglob("*")]:
        want = (0o777 if p.is_dir() else 0o666) & ~umask
        assert _mode(p) == want, f"{p}: {oct(_mode(p))} != {oct(want)}"


def test_overwrite_keeps_the_directory_mode_and_rejected_follows_umask(sources: Sources, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")  # an earlier output: its marker lists what it wrote
    (out / ".bmr-output.json").write_text('{"written_by": "bmr-compress", "files": ["old.txt"]}')
    out.chmod(0o755)
    r = _compress(out, sources, *QUICK, "--overwrite", umask=0o077)
    assert r.returncode == 0, r.stderr
    assert _mode(out) == 0o755 and _mode(out / "model.safetensors") == 0o600
    r = _compress(tmp_path / "o2", sources, *REJECTED, umask=0o022)
    assert r.returncode == 1
    rej = tmp_path / "o2.rejected"
    assert _mode(rej) == 0o755 and _mode(rej / "model.safetensors") == 0o644
    assert os.access(rej / "report.json", os.R_OK)

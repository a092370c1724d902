"""Issue 16 #9: faults of the environment (disk full, file too large) are exit 2 with one line
naming the cause and the fix, not "internal error" (exit 3), and leave nothing behind.

Disk full is real: --out on a 300 KiB tmpfs mounted for the test (skipped where `mount`
is not allowed). File too large is real too: RLIMIT_FSIZE in the child process."""

from __future__ import annotations

import resource
import subprocess
from pathlib import Path

import pytest

from tests.reliability._cli import one_error_line, run_cli_process
from tests.reliability._sources import Sources

QUICK = ["--steps", "5", "--max-samples", "240"]


@pytest.fixture
def small_tmpfs(tmp_path: Path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_disk_full_is_exit_2(small_tmpfs: Path, sources: Sources) -> None:
    out = small_tmpfs / "out"
    r = run_cli_process(["compress", "zoo:mlp-digits", "--out", str(out), *QUICK], sources.cache)
    assert r.returncode == 2, r.stderr
    line = one_error_line(r)
    assert "disk full (ENOSPC)" in line and "choose another --out" in line
    assert [p.name for p in small_tmpfs.iterdir() if "bmr-ckpt" not in p.name] == []


def test_file_too_large_is_exit_2(sources: Sources, tmp_path: Path) -> None:
    out = tmp_path / "out"
    full = {"BMR_COMPRESS_CACHE": str(sources.cache)}
    limit = 100_000  # bytes per file: the posterior (~140 kB) does not fit

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    import os
    import sys

    from tests.reliability._cli import REPO

    r = subprocess.run([sys.executable, "-m", "bmr_compress.cli.main", "compress", "zoo:mlp-digits",
                        "--out", str(out), *QUICK], capture_output=True, text=True, cwd=str(REPO),
                       env={**os.environ, **full, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"},
                       preexec_fn=small_files, timeout=300)
    assert r.returncode == 2, r.stderr
    assert "file too large" in one_error_line(r)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.") and "bmr-ckpt" not in p.name] == []

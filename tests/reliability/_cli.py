"""Run `bmr-compress` in a real process (`python -m bmr_compress.cli.main`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_cli_process(argv: list[str], cache: Path, *, env: dict[str, str] | None = None,
                    timeout: float = 300, umask: int | None = None, cwd: Path | None = None,
                    stderr_file: Path | None = None) -> subprocess.CompletedProcess:
    """`stderr_file`: stderr goes to that file (not a pipe, not a terminal), read back into
    the result's `.stderr`."""
    full = {**os.environ, "BMR_COMPRESS_CACHE": str(cache), "PYTHONPATH": str(REPO),
            "HF_HUB_OFFLINE": "1", **(env or {})}
    pre = (lambda: os.umask(umask)) if umask is not None else None  # noqa: E731
    argv = [sys.executable, "-m", "bmr_compress.cli.main", *argv]
    where = str(cwd or REPO)
    if stderr_file is None:
        return subprocess.run(argv, capture_output=True, text=True, env=full, cwd=where,
                              timeout=timeout, preexec_fn=pre)
    with stderr_file.open("w") as err:
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=err, text=True, env=full, cwd=where,
                           timeout=timeout, preexec_fn=pre)
    r.stderr = stderr_file.read_text()
    return r


PROGRESS = "[bmr-compress] "  # stage start/end lines, printed at every verbosity


def log_lines(text: str) -> list[str]:
    """The non-empty stderr lines other than the stage progress lines."""
    return [ln for ln in text.strip().splitlines() if ln.strip() and not ln.startswith(PROGRESS)]


def one_error_line(r: subprocess.CompletedProcess) -> str:
    """The single `error: ...` line a refused command prints (asserts there is exactly one)."""
    lines = log_lines(r.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    return lines[0]

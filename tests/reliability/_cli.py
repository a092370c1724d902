"""Run `bmr-compress` in a real process (`python -m bmr_compress.cli.main`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_cli_process(argv: list[str], cache: Path, *, env: dict[str, str] | None = None,
                    timeout: float = 300, umask: int | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, "BMR_COMPRESS_CACHE": str(cache), "PYTHONPATH": str(REPO),
            "HF_HUB_OFFLINE": "1", **(env or {})}
    pre = (lambda: os.umask(umask)) if umask is not None else None  # noqa: E731
    return subprocess.run([sys.executable, "-m", "bmr_compress.cli.main", *argv], capture_output=True,
                          text=True, env=full, cwd=str(REPO), timeout=timeout, preexec_fn=pre)


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

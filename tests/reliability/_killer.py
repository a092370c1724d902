"""Run `bmr-compress compress` in a real process, watch its stage log lines, signal it."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXPECTED = {"model.safetensors", "config.json", "model.onnx", "bmr_manifest.json", "posterior.safetensors",
            "report.json", "report.md"}


@dataclass
class Run:
    proc: subprocess.Popen
    lines: list[str] = field(default_factory=list)
    q: queue.Queue = field(default_factory=queue.Queue)

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.q.put(line)
        self.q.put(None)

    def wait_for(self, needle: str, timeout: float = 120.0, check=None) -> bool:
        """Read stderr until a line contains `needle` (and `check()` holds); False if the
        process ended first."""
        end = time.monotonic() + timeout
        seen = any(needle in ln for ln in self.lines)
        while time.monotonic() < end:
            if seen and (check is None or check()):
                return True
            try:
                line = self.q.get(timeout=0.05)
            except queue.Empty:
                continue
            if line is None:
                return False
            self.lines.append(line)
            seen = seen or needle in line
        raise TimeoutError(f"no {needle!r} within {timeout} s; stderr so far:\n{''.join(self.lines)}")

    def finish(self, timeout: float = 180.0) -> int:
        rc = self.proc.wait(timeout=timeout)
        while True:
            try:
                line = self.q.get(timeout=5)
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return rc

    @property
    def stderr(self) -> str:
        return "".join(self.lines)


def start_compress(out: Path, cache: Path, *, steps: int | None, extra: tuple[str, ...] = (),
                   tmpdir: Path | None = None) -> Run:
    """`tmpdir`: the process's TMPDIR (so a test can see what it leaves in the temp dir).
    steps=None: the default (Laplace) path; a number: the variational fine-tune."""
    env = {**os.environ, "BMR_COMPRESS_CACHE": str(cache), "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    if tmpdir is not None:
        tmpdir.mkdir(parents=True, exist_ok=True)
        env["TMPDIR"] = str(tmpdir)
    argv = [sys.executable, "-m", "bmr_compress.cli.main", "compress", "zoo:mlp-digits", "--out", str(out),
            *(("--steps", str(steps)) if steps is not None else ()), "--max-samples", "240",
            "--seed", "0", "-v", *extra]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env,
                            cwd=str(REPO), start_new_session=True)
    run = Run(proc)
    threading.Thread(target=run._pump, daemon=True).start()
    return run


def signal_at(run: Run, stage: str, sig: signal.Signals, *, check=None, delay: float = 0.0) -> bool:
    """Send `sig` once the `[bmr-compress] <stage>: start` line (and `check()`) is seen; False if it
    ended first."""
    if not run.wait_for(f"[bmr-compress] {stage}: start", check=check):
        return False
    time.sleep(delay)
    if run.proc.poll() is not None:
        return False
    run.proc.send_signal(sig)
    return True


def state_of(out: Path) -> str:
    """'absent' or 'complete' (a valid result); anything else fails the caller's assertion."""
    import json

    from bmr_compress.io.checks import check_artifacts

    if not out.exists():
        return "absent"
    names = {p.name for p in out.iterdir()}
    if not EXPECTED <= names:
        return f"partial: {sorted(names)}"
    check_artifacts(out)  # readable, finite
    report = json.loads((out / "report.json").read_text())
    return "complete" if report["validation"]["passed"] is True else "complete but not validated"


def leftovers(out: Path) -> list[str]:
    """Staging / work / old copies and the lock beside `out` (the resumable fine-tune
    checkpoint is allowed)."""
    return sorted(p.name for p in out.parent.iterdir()
                  if p.name.startswith(f".{out.name}.") and ".bmr-ckpt-" not in p.name)


def checkpoints(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f".{out.name}.bmr-ckpt-*"))

"""Shared helpers for benchmark scripts: machine description and BENCHMARKS.md sections.

Each benchmark owns one section of BENCHMARKS.md, delimited by HTML comments, and rewrites
only that section, so scripts can run in any order and re-runs replace stale figures.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
_HEADER = (
    "# Benchmarks\n\n"
    "Each section is written by the script it names; re-run that script to refresh it.\n"
    "Figures are medians over repeats measured side by side in one run unless stated.\n"
)


def machine() -> str:
    """One line describing this machine: CPU model, cores, memory, Python, torch."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    import torch  # local: only benchmarks call this

    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return (
        f"{cpu}, {os.cpu_count()} logical cores{mem}{gpu}; Python {platform.python_version()}, "
        f"torch {torch.__version__}"
    )


def command() -> str:
    return " ".join(["python"] + [os.path.relpath(sys.argv[0])] + sys.argv[1:])


def git_rev() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
            cwd=BENCHMARKS.parent,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_section(name: str, body: str) -> None:
    """Replace (or append) section `name` of BENCHMARKS.md with `body` plus provenance."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    block = (
        f"<!-- bench:{name} -->\n{body.rstrip()}\n\n"
        f"*Machine:* {machine()}  \n*Command:* `{command()}`  \n"
        f"*Run:* {stamp}, commit {git_rev()}\n<!-- /bench:{name} -->"
    )
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else _HEADER
    pattern = re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _m: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    BENCHMARKS.write_text(text)

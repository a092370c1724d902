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
    """How this benchmark was invoked: `python -m bench.NAME ARGS` for a bench module."""
    script = Path(sys.argv[0])
    if script.parent.resolve() == Path(__file__).resolve().parent:
        return " ".join(["python", "-m", f"bench.{script.stem}"] + sys.argv[1:])
    return " ".join(["python", os.path.relpath(sys.argv[0])] + sys.argv[1:])


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
    BENCHMARKS.write_text(with_summary(text))


_SECTION = re.compile(r"<!-- bench:(?P<name>[\w-]+) -->\n(?P<body>.*?)<!-- /bench:(?P=name) -->", re.S)
_SUMMARY = re.compile(r"<!-- summary -->.*?<!-- /summary -->\n*", re.S)


def _anchor(title: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", title.lower()).strip().replace(" ", "-")


def summary_table(text: str) -> str:
    """The table BENCHMARKS.md opens with: one row per section (linked), its headline (the
    section's `Headline:` line, else its first sentence) and when / at which commit it ran."""
    rows = ["| section | headline | run |", "|---|---|---|"]
    for m in _SECTION.finditer(text):
        body = m.group("body")
        title = next((ln[3:].strip() for ln in body.splitlines() if ln.startswith("## ")), m.group("name"))
        head = re.search(r"^\*?\*?Headline:?\*?\*?:?\s*(.+)$", body, re.M)
        if head is None:
            prose = next((ln for ln in body.splitlines()[1:] if ln.strip() and not ln.startswith(("|", "#", "*", "<"))), "")
            line = re.split(r"(?<=[.;])\s", prose.strip(), maxsplit=1)[0]
        else:
            line = head.group(1).strip()
        run = re.search(r"\*Run:\* ([^,]+), commit (\w+)", body)
        when = f"{run.group(1)}, {run.group(2)}" if run else "-"
        rows.append(f"| [{m.group('name')}](#{_anchor(title)}) | {line.replace('|', '/')} | {when} |")
    return "\n".join(rows)


def with_summary(text: str) -> str:
    """`text` with its summary block (after the header) regenerated from its sections."""
    block = ("<!-- summary -->\n## Summary (generated from the sections below)\n\n"
             + summary_table(text) + "\n<!-- /summary -->\n\n")
    text = _SUMMARY.sub("", text)
    first = text.find("<!-- bench:")
    return text[:first] + block + text[first:] if first >= 0 else text.rstrip() + "\n\n" + block

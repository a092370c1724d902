"""Issue 16 #6: inputs are checked against sane bounds before anything big is built or read.

Real CLI processes under a 3 GiB address-space limit (RLIMIT_AS), timed: a config.json with
10^9 layers is refused from the config alone (it grew memory for 107 s before); a 55 MB
single-line --data text is streamed with a line-length cap (it took 6.9 GB and 69 s)."""

from __future__ import annotations

import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

from tests.reliability._cli import REPO, log_lines, one_error_line
from tests.reliability._sources import Sources, copy_snapshot

LIMIT = 3 * 2**30


def _run_limited(argv: list[str], sources: Sources) -> tuple[subprocess.CompletedProcess, float, int]:
    """(result, wall seconds, peak RSS in bytes) of the CLI in a fresh process capped at LIMIT."""
    probe = ("import resource, subprocess, sys\n"
             f"resource.setrlimit(resource.RLIMIT_AS, ({LIMIT}, {LIMIT}))\n"
             "r = subprocess.run(sys.argv[1:])\n"
             "print('maxrss', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
             "sys.exit(r.returncode)\n")
    env = {**os.environ, "BMR_COMPRESS_CACHE": str(sources.cache), "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    t = time.monotonic()
    r = subprocess.run([sys.executable, "-c", probe, sys.executable, "-m", "bmr_compress.cli.main", *argv],
                       capture_output=True, text=True, env=env, cwd=str(REPO), timeout=240)
    wall = time.monotonic() - t
    lines = r.stderr.strip().splitlines()
    rss = int(lines[-1].split()[1]) * 1024
    r.stderr = "\n".join(lines[:-1])
    return r, wall, rss


def test_absurd_layer_count_is_refused_from_the_config(sources: Sources, tmp_path: Path) -> None:
    snap = copy_snapshot(sources.bert, tmp_path / "snap")
    cfg = json.loads((snap / "config.json").read_text())
    cfg["num_hidden_layers"] = 1_000_000_000
    (snap / "config.json").write_text(json.dumps(cfg))
    r, wall, rss = _run_limited(["compress", str(snap), "--out", str(tmp_path / "out"), "--steps", "1"], sources)
    assert r.returncode == 2, r.stderr
    line = one_error_line(r)
    assert "config.json" in line and "memory available" in line
    assert wall < 60 and rss < 1.5 * 2**30, (wall, rss)


def test_huge_single_line_data_is_streamed(sources: Sources, tmp_path: Path) -> None:
    rng = random.Random(0)
    words = ["alpha", "beta", "gamma", "delta", "pruning", "model"]
    data = tmp_path / "one-line.txt"
    data.write_text(" ".join(rng.choice(words) for _ in range(9_000_000)))  # ~55 MB, no newline
    r, wall, rss = _run_limited(["compress", str(sources.bert), "--out", str(tmp_path / "out"), "--steps", "1",
                                 "--data", str(data)], sources)
    assert r.returncode == 2, r.stderr
    warning, error = log_lines(r.stderr)  # the cut is logged, then one error line
    assert "longer than" in warning and "were cut" in warning
    assert error.startswith("error: ") and "need at least 2 examples" in error
    assert wall < 60 and rss < 1.5 * 2**30, (wall, rss)


def test_long_lines_are_cut_not_read_whole(tmp_path: Path) -> None:
    from bmr_compress.io.userdata import MAX_LINE_CHARS, load_texts

    p = tmp_path / "t.txt"
    p.write_text("short one\n" + "x" * (3 * MAX_LINE_CHARS + 5) + "\nlast line")
    texts, _ = load_texts(p)
    assert texts == ["short one", "x" * MAX_LINE_CHARS, "last line"]

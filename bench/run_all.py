"""Run every benchmark and regenerate BENCHMARKS.md; prints the wall time of each and the total.

    python -m bench.run_all --quick     # a few minutes on 2 CPU cores (target ≤ 20 min)
    python -m bench.run_all             # full settings, meant for a GPU/large machine

Each script runs in its own process (a failure is reported and the others still run) and
writes its own section of BENCHMARKS.md through bench.report.write_section.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SCRIPTS = ("quality", "markovic", "bmrs", "beckers", "speed", "int8", "defaults", "choice")
FULL_ONLY = ("main_job", "references", "curve", "mpnet")  # the README main job (~12 min), its
# references, the MiniLM operating points (~60 min) and the mpnet benchmark (~35 min)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default=None, help="comma-separated subset")
    args = ap.parse_args()
    if args.only is None:
        args.only = ",".join(SCRIPTS + (() if args.quick else FULL_ONLY))
    t0 = time.perf_counter()
    times, failed = {}, []
    for name in args.only.split(","):
        quick = ["--quick"] if args.quick and name not in FULL_ONLY else []
        cmd = [sys.executable, "-m", f"bench.{name}"] + quick
        print(f"== {' '.join(cmd[1:])}", flush=True)
        t = time.perf_counter()
        rc = subprocess.run(cmd, cwd=ROOT).returncode
        times[name] = time.perf_counter() - t
        if rc != 0:
            failed.append(f"{name} (exit {rc})")
        print(f"== {name}: {times[name]:.0f} s, exit {rc}", flush=True)
    total = time.perf_counter() - t0
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = ru.ru_utime + ru.ru_stime  # CPU seconds of every script: load on a shared machine
    load = os.getloadavg()[1]  # inflates wall time but not this
    from bench.report import write_section

    rows = "\n".join(f"| bench/{n}.py | {s:.0f} |" for n, s in times.items())
    write_section("run_all", (
        "## run_all: suite wall time\n\n"
        f"Mode: {'--quick' if args.quick else 'full'}. "
        f"{'Failed: ' + ', '.join(failed) if failed else 'All scripts exited 0.'}\n\n"
        f"| script | wall s |\n|---|---:|\n{rows}\n| **total** | **{total:.0f}** |\n\n"
        f"CPU time of all scripts (user + system): {cpu:.0f} s on {os.cpu_count()} cores; "
        f"5-min load average at the end: {load:.1f} (above {os.cpu_count()} means other jobs "
        "shared the cores and inflated the wall times).\n"))
    print(f"TOTAL wall time: {total:.0f} s ({total / 60:.1f} min), CPU {cpu:.0f} s, "
          f"load {load:.1f}; failed: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

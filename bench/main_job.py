"""The README main job (all-MiniLM-L6-v2 on the docstring corpus, default settings) against the
issue-6 targets: ORT CPU latency (1 thread, batch 1, sequence 128) >= 2x faster, fp32 ONNX >= 2x
smaller (>= 6x with int8), mean cosine >= 0.95 and nearest-neighbour agreement >= 90 %.

    python bench/main_job.py                 # runs the main job into bench/out/minilm
    python bench/main_job.py --from out/minilm   # reads an existing run's report.json

Writes the `main_job` section of BENCHMARKS.md with the figures reached, honestly, met or not.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._report import write_section  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def run_main_job(out: Path) -> float:
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "bmr_compress.cli.main", "compress", "zoo:all-minilm-l6-v2",
           "--out", str(out), "--overwrite"]
    subprocess.run(cmd, check=False, cwd=ROOT)
    return time.perf_counter() - t0


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def section(report: dict, wall: float | None, directory: Path) -> str:
    lat = report.get("latency", {})
    o, c = lat.get("original", {}), lat.get("compressed", {})
    sizes = report.get("onnx_sizes", {}).get("onnx_file_bytes", {})
    int8 = (report.get("files", {}).get("after", {}) or {}).get("model.int8.onnx")
    met = report.get("metric", {}).get("compressed", {})
    p = report.get("parameters", {})
    rows = [
        ("ORT CPU latency speed-up (median; 1 thread, batch 1, seq "
         f"{lat.get('seq')})", _ratio(o.get("median_ms"), c.get("median_ms")), 2.0, "x"),
        ("fp32 ONNX size ratio", _ratio(sizes.get("original"), sizes.get("compressed")), 2.0, "x"),
        ("int8 ONNX size ratio (vs fp32 original)", _ratio(sizes.get("original"), int8), 6.0, "x"),
        ("int8 ORT latency speed-up (vs fp32 original)",
         _ratio(o.get("median_ms"), (lat.get("int8") or {}).get("median_ms")), 4.0, "x"),
        ("mean cosine with the original embeddings", met.get("cosine"), 0.95, ""),
        ("nearest-neighbour agreement", met.get("nn_agreement"), 0.90, ""),
    ]
    lines = ["## main_job: the README main job against its targets", "",
             f"`bash scripts/demo.sh` = `bmr-compress compress zoo:all-minilm-l6-v2` with default "
             f"settings (posterior {report.get('settings', {}).get('posterior')}, tolerance "
             f"{report.get('settings', {}).get('tolerance')}; data: "
             f"{report.get('source', {}).get('data')}). Latency medians from one run, both models "
             "interleaved; p90 in report.json.", "",
             "| figure | target | reached | met |", "|---|---:|---:|---|"]
    for name, value, target, unit in rows:
        shown = "n/a" if value is None else f"{value:.3f}{unit}"
        ok = "n/a" if value is None else ("yes" if value >= target else "**no**")
        lines.append(f"| {name} | ≥ {target}{unit} | {shown} | {ok} |")
    lines += ["", f"Parameters {p.get('original'):,} → {p.get('compressed'):,}; latency "
              f"{o.get('median_ms', float('nan')):.2f} → {c.get('median_ms', float('nan')):.2f} ms; "
              f"validation passed: {report.get('validation', {}).get('passed')}.", "",
              "Wall time per stage (s): " + ", ".join(
                  f"{k} {v:.1f}" for k, v in report.get("stage_seconds", {}).items())]
    if wall is not None:
        lines.append(f"\nWhole command including start-up: {wall:.0f} s.")
    plan = report.get("plan", {})
    kept = {k: f"{v.get('kept')}/{v.get('num_units')}" for k, v in plan.items()}
    if kept:
        lines.append("\nUnits kept per group: " + ", ".join(f"{k} {v}" for k, v in kept.items()))
    return "\n".join(lines)


def budget_rows(directory: Path, budgets: list[float]) -> str:
    """Re-plan the same posterior (`bmr-compress reduce`, no refit) under user latency budgets
    (units removed in ΔlnZ order) and tabulate what validation measured, passed or rejected."""
    rows = ["", "What a user-given budget does instead (same posterior, `bmr-compress reduce "
            "DIR --latency-budget F`; survivors moved to their reduced posterior means, the "
            "default; no recovery fine-tune):", "",
            "| --latency-budget | parameters | ORT latency speed-up | fp32 ONNX ratio | cosine | "
            "NN agreement | validation |", "|---:|---:|---:|---:|---:|---:|---|"]
    for b in budgets:
        out = directory.with_name(f"{directory.name}-lat{b}")
        for d in (out, out.with_name(out.name + ".rejected")):
            subprocess.run(["rm", "-rf", str(d)], check=False)
        subprocess.run([sys.executable, "-m", "bmr_compress.cli.main", "reduce", str(directory),
                        "--out", str(out), "--latency-budget", str(b)], cwd=ROOT, check=False,
                       capture_output=True)
        path = out / "report.json"
        if not path.is_file():
            path = out.with_name(out.name + ".rejected") / "report.json"
        if not path.is_file():
            rows.append(f"| {b} | – | – | – | – | – | failed before validation |")
            continue
        r = json.loads(path.read_text())
        lat, sz = r.get("latency", {}), r.get("onnx_sizes", {}).get("onnx_file_bytes", {})
        m = r.get("metric", {}).get("compressed", {})
        sp = _ratio(lat.get("original", {}).get("median_ms"), lat.get("compressed", {}).get("median_ms"))
        rows.append(f"| {b} | {r['parameters']['compressed']:,} | {sp or float('nan'):.2f}x | "
                    f"{_ratio(sz.get('original'), sz.get('compressed')) or float('nan'):.2f}x | "
                    f"{m.get('cosine', float('nan')):.3f} | {m.get('nn_agreement', float('nan')):.3f} | "
                    f"{'passed' if r['validation']['passed'] else 'rejected'} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--from", dest="src", type=Path, help="read this run's report.json")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "minilm")
    ap.add_argument("--budgets", default="",
                    help="latency budgets to re-plan under ('' for none)")
    args = ap.parse_args()
    wall = None
    directory = args.src
    if directory is None:
        directory = args.out
        wall = run_main_job(directory)
    report_path = directory / "report.json"
    if not report_path.is_file():
        rejected = directory.with_name(directory.name + ".rejected") / "report.json"
        if not rejected.is_file():
            raise SystemExit(f"no report.json in {directory} (or its .rejected twin)")
        report_path = rejected
    report = json.loads(report_path.read_text())
    body = section(report, wall, directory)
    budgets = [float(b) for b in args.budgets.split(",") if b.strip()]
    if budgets and report_path.parent == directory:
        body += "\n" + budget_rows(directory, budgets)
    print(body)
    write_section("main_job", body)


if __name__ == "__main__":
    main()

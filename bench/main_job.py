"""The README main job (all-MiniLM-L6-v2 on the docstring corpus, default settings): the
recommended artefact against every reference measured in the same run (is it dominated?),
its speed-up and held-out retrieval retention against the target (>= 1.8x at >= 99 %), its
int8 file against the fp32 original, and the wall time (<= 15 min on 2 cores).

    python -m bench.main_job                 # runs the main job into bench/out/minilm
    python -m bench.main_job --from out/minilm   # reads an existing run's report.json

Writes the `main_job` section of BENCHMARKS.md with the figures reached, honestly, met or not.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


from bench.report import write_section

ROOT = Path(__file__).resolve().parent.parent


def run_main_job(out: Path) -> float:
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "bmr_compress.cli.main", "compress", "zoo:all-minilm-l6-v2",
           "--out", str(out), "--overwrite"]
    subprocess.run(cmd, check=False, cwd=ROOT)
    return time.perf_counter() - t0


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def dominated_by(points: list[dict]) -> tuple[dict, list[dict]]:
    """The recommended point and every point that dominates it on held-out retention and
    speed (at least as fast and as good, strictly better in one). A point left unscored was
    slower than the recommended one (the run scores fastest first) and cannot dominate it."""
    rec = next(p for p in points if p["recommended"])
    r, s = rec["retention"]["heldout"], rec["speedup"]
    return rec, [p for p in points if p is not rec and p["speedup"] >= s
                 and "heldout" in p["retention"] and p["retention"]["heldout"] >= r
                 and (p["speedup"] > s or p["retention"]["heldout"] > r)]


def _se(p: dict, split: str = "heldout") -> float | None:
    """The paired standard error of a point's retention (None in reports before it)."""
    return ((p.get("metrics") or {}).get(split) or {}).get("retention_se")


def _pct(p: dict, split: str = "heldout") -> str:
    if split not in p["retention"]:
        return "not scored"
    se = _se(p, split)
    r = 100 * p["retention"][split]
    return f"{r:.2f} ± {100 * se:.2f} %" if se else f"{r:.2f} %"


def clearly_dominated_by(rec: dict, dom: list[dict], z: float = 2.0) -> list[dict]:
    """Those of `dom` (each at least as fast as the recommended point) whose held-out retention
    beats the recommended one's by more than z combined standard errors: the dominations
    that sampling noise alone rarely makes. A faster point whose retention is higher by less
    than that may well be worse: it is not counted."""
    se_r = _se(rec)
    if se_r is None:
        return dom
    out = []
    for d in dom:
        se_d = _se(d) or 0.0
        gap = d["retention"]["heldout"] - rec["retention"]["heldout"]
        if gap > z * (se_r ** 2 + se_d ** 2) ** 0.5:
            out.append(d)
    return out


def section(report: dict, wall: float | None, directory: Path) -> str:
    ops = report.get("operating_points") or {}
    points = ops.get("points", [])
    cpu = ops.get("cpu", {})
    lines = ["## main_job: the README main job, its recommended artefact and the references", ""]
    if not points:
        return "\n".join(lines + ["No operating points in this run's report."])
    rec, dom = dominated_by(points)
    int8 = next((p for p in points if p.get("file") == "model.int8.onnx"), None)
    p = report.get("parameters", {})
    total = report.get("stage_seconds", {}).get("total")
    lines += [
        f"Headline: recommended `{rec.get('file')}` ({rec['label']}) {rec['speedup']:.2f}x faster "
        f"than the fp32 original at {100 * rec['retention']['heldout']:.1f} % held-out "
        f"{ops.get('metric')} retention on {cpu.get('model', 'this CPU')}; dominated by "
        f"{sum(d['base'] == 'original' for d in dom)} of the original's files and by "
        f"{len(dom)} point(s) of the run in all.", "",
        f"`bash scripts/demo.sh` = `bmr-compress compress zoo:all-minilm-l6-v2`, default settings "
        f"(tolerance {report.get('settings', {}).get('tolerance')}, budget: keep ≥ "
        f"{100 * (1 - ops.get('max_quality_loss', 0.01)):.0f} % on selection pairs). CPU: "
        f"{cpu.get('model')} ({cpu.get('arch')}, features: "
        f"{', '.join(cpu.get('features', [])) or 'none'}; onnxruntime {cpu.get('onnxruntime')}). "
        f"Every artefact timed interleaved in the run ({ops.get('runs')} runs, "
        f"{ops.get('latency_shape')}); retention = {ops.get('metric')} ÷ the original's on "
        f"{ops.get('evaluation', {}).get('pairs')} query→document pairs (selection chooses, "
        "held-out is reported).", "",
        "| artefact | size MB | speed-up | retention (held-out) | retention (selection) | "
        "qualifies |", "|---|---:|---:|---:|---:|---|"]
    for q in sorted(points, key=lambda q: -q["speedup"]):
        mark = " **(recommended)**" if q["recommended"] else ""
        lines.append(f"| {q['label']}{mark} | {q['size_bytes'] / 1e6:.1f} | {q['speedup']:.2f}x | "
                     f"{_pct(q)} | {_pct(q, 'selection')} | "
                     f"{'yes' if q['qualifies'] else 'no: ' + q['reason']} |")
    target = rec["speedup"] >= 1.8 and rec["retention"]["heldout"] >= 0.99
    refs = [d for d in dom if d["base"] == "original"]  # what a user would do instead
    lines += ["", "| acceptance point | reached | met |", "|---|---|---|",
              f"| recommended not dominated by a reference (the original, fp32 and under each "
              f"int8 scheme) | dominated by {', '.join(d['label'] for d in refs) or 'none'} | "
              f"{'yes' if not refs else '**no**'} |",
              f"| recommended not dominated by any point of the same run | dominated by "
              f"{', '.join(d['label'] for d in dom) or 'none'} | {'yes' if not dom else '**no**'} |"]
    clear = clearly_dominated_by(rec, dom)
    if _se(rec) is not None:
        lines.append(f"| the same, beyond sampling noise (at least as fast, held-out retention "
                     f"higher by > 2 combined standard errors) | "
                     f"{', '.join(d['label'] for d in clear) or 'none'} | "
                     f"{'yes' if not clear else '**no**'} |")
    if int8 is not None:
        lines.append(f"| shipped int8 never slower than the fp32 original | {int8['speedup']:.2f}x | "
                     f"{'yes' if int8['speedup'] >= 1 else '**no**'} |")
    else:
        lines.append("| shipped int8 never slower than the fp32 original | no int8 shipped | yes |")
    lines += [f"| target: ≥ 1.8x at ≥ 99 % held-out retention | {rec['speedup']:.2f}x at "
              f"{100 * rec['retention']['heldout']:.1f} % | {'yes' if target else '**no**'} |"]
    if total is not None:
        lines.append(f"| ≤ 15 min on 2 cores (compress) | {total / 60:.1f} min | "
                     f"{'yes' if total <= 900 else '**no**'} |")
    lines += ["", f"Parameters {p.get('original'):,} → {p.get('compressed'):,}; validation passed: "
              f"{report.get('validation', {}).get('passed')}.", "",
              "Wall time per stage (s): " + ", ".join(
                  f"{k} {v:.1f}" for k, v in report.get("stage_seconds", {}).items())]
    if wall is not None:
        lines.append(f"\nWhole command including start-up: {wall:.0f} s.")
    plan = report.get("plan", {})
    kept = {k: f"{v.get('kept')}/{v.get('num_units')}" for k, v in plan.items()}
    if kept:
        lines.append("\nUnits kept per group: " + ", ".join(f"{k} {v}" for k, v in kept.items()))
    return "\n".join(lines)


def readme_table(report: dict) -> str:
    """The README's results block: the recommended artefact beside the dense original's int8
    schemes and the original, from the same run, the CPU named."""
    ops = report["operating_points"]
    pts, cpu = ops["points"], ops.get("cpu", {})
    rec = next(q for q in pts if q["recommended"])
    base = next(q for q in pts if q["label"] == "original")
    dense = sorted((q for q in pts if q["base"] == "original" and q["precision"] == "int8"),
                   key=lambda q: -q["speedup"])
    rows = [rec] + [q for q in dense if q is not rec] + [base]
    feats = ", ".join(cpu.get("features", [])) or "none"
    n = ops.get("evaluation", {}).get("pairs", {}).get("heldout")
    out = [f"Main job (`bash scripts/demo.sh`: all-MiniLM-L6-v2, default settings) on "
           f"{cpu.get('model')} ({cpu.get('logical_cores')} cores; int8-relevant features: "
           f"{feats}; onnxruntime {cpu.get('onnxruntime')}), every artefact timed interleaved in "
           f"one run (1 thread, batch 1, 128 tokens). Retention = retrieval MRR@10 on {n} "
           "held-out query→document pairs ÷ the original's (never used to choose), ± its paired "
           "standard error (sampling noise of the pairs).", "",
           "| artefact | file | speed-up | size | held-out retention |", "|---|---|---:|---:|---:|"]
    for q in rows:
        name = f"**{q['label']} (recommended)**" if q is rec else q["label"]
        size = base["size_bytes"] / q["size_bytes"]
        out.append(f"| {name} | `{q.get('file') or '-'}` | {q['speedup']:.2f}x | "
                   f"{q['size_bytes'] / 1e6:.1f} MB ({size:.2f}x smaller) | "
                   f"{_pct(q)} |")
    total = report.get("stage_seconds", {}).get("total")
    if total:
        out += ["", f"`compress` took {total / 60:.1f} min on 2 cores. On another CPU, "
                "`bmr-compress bench out/minilm` re-times every artefact and names the one to deploy "
                "there."]
    return "\n".join(out)


def write_readme_table(report: dict) -> None:
    import re

    readme = ROOT / "README.md"
    text = readme.read_text()
    block = "<!-- results:begin -->\n" + readme_table(report) + "\n<!-- results:end -->"
    readme.write_text(re.sub(r"<!-- results:begin -->.*?<!-- results:end -->", lambda _m: block,
                             text, flags=re.S))


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
    if report.get("operating_points") and report_path.parent == directory:
        write_readme_table(report)


if __name__ == "__main__":
    main()

"""Speed: end-to-end wall time of the main job per stage, ORT latency and size ratios, plus
the two micro-benchmarks written by others (bench/bmr_throughput.py, bench/finetune_step.py),
run as subprocesses with quick or full settings. Writes the "speed" section (the
micro-benchmarks write their own sections).

    python -m bench.speed [--quick] [--skip-micro]
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

from bench import common as C
from bench.report import write_section


def compress_report(source: str, steps: int, extra: dict[str, Any]) -> dict[str, Any]:
    """Run the real pipeline (`bmr-compress compress`) and return its report.json."""
    from bmr_compress.pipeline import build_config, compress

    from bmr_compress.errors import ValidationFailed

    with tempfile.TemporaryDirectory(prefix="bench-speed-") as work:
        out = Path(work) / "out"
        try:
            compress(build_config({"source": source, "steps": steps, "progress": False, **extra}),
                     out)
        except ValidationFailed as e:  # the job ran every stage; its report is kept aside
            rep = json.loads((out.with_name("out.rejected") / "report.json").read_text())
            rep["bench_validation"] = f"validation failed: {str(e).split(';')[0]}"
            return rep
        rep = json.loads((out / "report.json").read_text())
        rep["bench_validation"] = "validation passed"
        return rep


def _lat(report: dict[str, Any]) -> tuple[float, float]:
    lat = report.get("latency") or {}
    vals = []
    for key in ("original", "compressed"):
        v = lat.get(key) or {}
        vals.append(float(v.get("median_ms", float("nan"))) if isinstance(v, dict) else float("nan"))
    return vals[0], vals[1]


def micro(quick: bool) -> list[str]:
    """Run the throughput and fine-tune-step scripts; return a line per script."""
    py = sys.executable
    jobs = {
        "bmr_throughput": [py, "-m", "bench.bmr_throughput"]
        + (["--n", "5000000", "--repeats", "3", "--no-write"] if quick else []),
        "finetune_step": [py, "-m", "bench.finetune_step"]
        + (["--batch", "4", "--seq", "32", "--steps", "2", "--repeats", "3", "--no-write"]
           if quick else []),
    }
    lines = []
    for name, cmd in jobs.items():
        sw = C.Stopwatch()
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        status = "ok" if r.returncode == 0 else f"FAILED (exit {r.returncode}): {r.stderr.strip()[-300:]}"
        where = ("smoke run only: its section keeps the full-setting figures" if quick
                 else "see its own section")
        lines.append(f"- `python {' '.join(cmd[1:])}`: {status}, {sw():.0f} s ({where})")
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--skip-micro", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import torch

    sw = C.Stopwatch()
    jobs = ([("zoo:mlp-digits", 60, {}), ("zoo:lenet5-digits", 60, {})] if args.quick else
            [("zoo:mlp-digits", 300, {}), ("zoo:lenet5-digits", 300, {}),
             ("zoo:mixer-digits", 300, {}), ("zoo:vit-digits", 300, {}),
             ("zoo:all-minilm-l6-v2", 50, {"max_samples": 256})])
    rows = []
    for source, steps, extra in jobs:
        try:
            rep = compress_report(source, steps, extra)
        except Exception as e:  # noqa: BLE001 - reported, never hidden
            rows.append(f"| {source} | {steps} | failed: {type(e).__name__}: {str(e)[:150]} | | | | |")
            continue
        st = rep.get("stage_seconds", {})
        stages = ", ".join(f"{k} {v:.1f}" for k, v in st.items() if k != "total")
        files = rep.get("files", {})
        b, a = files.get("before", {}).get("model.onnx"), files.get("after", {}).get("model.onnx")
        lo, lc = _lat(rep)
        params = rep.get("parameters", {})
        zeros = rep.get("sparsity", {}).get("unstructured", {}).get("zero_fraction", 0.0)
        rows.append(f"| {source} | {steps} | {rep['bench_validation']} | "
                    f"{st.get('total', float('nan')):.1f} s ({stages}) | "
                    f"{params.get('original', '?'):,} → {params.get('compressed', '?'):,} "
                    f"({zeros:.1%} of the rest zero) | "
                    f"{(a / b if a and b else float('nan')):.3f} | {lc / lo:.3f} ({lo:.3f} → {lc:.3f} ms) |")
    micro_lines = [] if args.skip_micro else micro(args.quick)
    gpu = (f"CUDA available ({torch.cuda.get_device_name(0)}): GPU figures are not measured by "
           "this script version" if torch.cuda.is_available() else
           "No CUDA device on this machine: no GPU figures were measured.")
    body = (
        "## speed: end-to-end wall time per stage, ORT latency and size ratios\n\n"
        "Each row is one real `compress` run (bmr_compress.pipeline.compress, library defaults, "
        "the given fine-tune steps), read from its report.json: stage_seconds, parameter "
        "counts, ONNX file size after/before and onnxruntime CPU latency after/before (the "
        "pipeline's own interleaved measurement). The machine is shared with other jobs.\n\n"
        "| source | fine-tune steps | validation | wall time (per stage, s) | parameters before → after (unstructured zeros) | ONNX bytes ratio | ORT latency ratio |\n"
        "|---|---:|---|---|---|---:|---|\n" + "\n".join(rows) + "\n\n"
        + (("Micro-benchmarks run by this script:\n\n" + "\n".join(micro_lines) + "\n\n")
           if micro_lines else "")
        + f"{gpu}\n\nWall time of this script: {sw():.0f} s.\n")
    write_section("speed", body)
    print(body)


if __name__ == "__main__":
    main()

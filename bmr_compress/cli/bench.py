"""`bmr-compress bench`: time a compress output's artefacts on this CPU and name the one to
deploy here (export.bench). Needs only onnxruntime, numpy and the output directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from bmr_compress.cli.options import common_options
from bmr_compress.cli.runtime import emit, run_command

EPILOG = """\b
Examples:
  bmr-compress bench out/minilm
  bmr-compress bench out/minilm --threads 4 --runs 50
  bmr-compress bench out/minilm --max-quality-loss 0.02 --json
Quality is never re-measured: the retention recorded at compress time decides (on
calibration data) and is reported (on held-out data). The result is written to
OUT/bench/<cpu-signature>.json; the validated files are untouched and `push` ignores bench/.
Exit code 2 when OUT records no operating points (an older or variational output).
"""


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def _human(r: dict[str, Any]) -> str:
    from bmr_compress.export.cpu import describe

    lat = r["latency"]
    lines = [f"CPU: {describe(r['cpu'])} [signature {r['cpu']['signature']}]",
             f"onnxruntime CPU, {lat['threads']} thread(s), batch {lat['batch']}"
             + (f", sequence {lat['seq']}" if lat.get("seq") else "")
             + f"; median of {lat['runs']} runs, interleaved. Budget: keep >= "
             f"{1 - r['max_quality_loss']:.1%} of {r['metric']} on calibration data.", ""]
    rows = [("label", "file", "ms", "speed-up", "held-out", "selection", "qualifies")]
    for p in r["points"]:
        mark = "RECOMMENDED" if p["recommended"] else ("yes" if p["qualifies"] else "no")
        rows.append((p["label"], p["file"], f"{p['median_ms']:.3f}", f"{p['speedup']:.2f}x",
                     _pct(p["retention"]["heldout"]), _pct(p["retention"]["selection"]), mark))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        lines.append("  ".join(c.rjust(w) if 2 <= i <= 5 else c.ljust(w)
                               for i, (c, w) in enumerate(zip(row, widths))).rstrip())
    lines.append("")
    for p in r["points"]:
        if not p["qualifies"]:
            lines.append(f"  {p['label']}: {p['reason']}")
    for s in r["skipped"]:
        lines.append(f"  skipped {s['label']}: {s['why']}")
    mx = r.get("mixed")
    if mx:
        lines.append(f"  size artefact (not a speed candidate): {mx['file']} "
                     + (f"{mx['times_smaller']:.2f}x smaller than the original ONNX, " if mx.get("times_smaller")
                        else "")
                     + f"{mx['speedup']:.2f}x its speed here, {_pct(mx['retention']['heldout'])} held-out "
                     f"({_pct(mx['retention']['selection'])} selection)")
    if r.get("recorded_recommended") and r["recorded_recommended"] != r["recommended"]:
        lines.append(f"  (compress time recommended {r['recorded_recommended']!r} on its own CPU)")
    lines += [r["deploy"], f"written: {r['written']}"]
    return "\n".join(lines)


@click.command("bench", epilog=EPILOG)
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--threads", type=click.IntRange(1),
              help="onnxruntime intra-op threads [default: the recorded latency shape's].")
@click.option("--runs", type=click.IntRange(1), help="Timed runs per artefact [default: the recorded count].")
@click.option("--max-quality-loss", type=click.FloatRange(0, 1, max_open=True),
              help="Largest fraction of the task metric an artefact may lose on calibration data "
                   "(0.01 = keep 99 %) [default: the budget recorded at compress time].")
@common_options
@run_command
def command(out: Path, threads: int | None, runs: int | None, max_quality_loss: float | None,
            as_json: bool, debug: bool, verbose: bool) -> None:
    """Time every artefact in OUT (a `compress` output) on this machine, interleaved, against
    the fp32 original, and print the one to deploy here: the fastest whose recorded retention
    stays within the quality budget (an int8 file only where it beats its fp32 source here)."""
    from bmr_compress.export.bench import bench_directory, write_bench

    result = bench_directory(out, threads=threads, runs=runs, max_quality_loss=max_quality_loss)
    result["written"] = str(write_bench(out, result))
    emit(result, as_json, _human)

"""The report's view of a run's operating points (algorithms/curve.py measures them): the
report.md table and the plot."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def curve_markdown(ops: Mapping[str, Any]) -> list[str]:
    """report.md's table of the operating points (from OperatingPoints.to_json())."""
    sh, cpu = ops["latency_shape"], ops.get("cpu", {})
    feats = ", ".join(cpu.get("features", [])) or "none recorded"
    out = ["## Operating points (this run, this CPU)", "",
           f"Every candidate timed interleaved on onnxruntime CPU ({sh['threads']} thread(s), "
           f"batch {sh['batch']}" + (f", sequence {sh['seq']}" if sh.get("seq") else "")
           + f"; median of {ops['runs']}) on {cpu.get('model', 'this CPU')} "
           f"(int8-relevant features: {feats}). Retention = {ops['metric']} of the artefact ÷ "
           "the original's, on *selection* examples (which choose, never train) and on "
           f"*held-out* examples (reported, decide nothing). Budget: keep ≥ "
           f"{100 * (1 - ops['max_quality_loss']):.1f} % on selection; an int8 file qualifies "
           "only when it is faster here than the fp32 model it came from. Scored fastest first "
           "until one qualifies: slower artefacts could not be recommended and are not scored, "
           "except the recommended one's siblings and the original's int8 files.", "",
           "| artefact | size MB | ms | speed-up | retention (selection) | retention (held-out) "
           "| qualifies |", "|---|---:|---:|---:|---:|---:|---|"]
    for p in ops["points"]:
        mark = " **(recommended)**" if p["recommended"] else ""
        why = "yes" if p["qualifies"] else f"no: {p['reason']}"
        sel, held = (_pct(p["retention"].get(k)) for k in ("selection", "heldout"))
        out.append(f"| {p['label']}{mark} | {p['size_bytes'] / 1e6:.1f} | {p['median_ms']:.2f} | "
                   f"{p['speedup']:.2f}x | {sel} | {held} | {why} |")
    return out + [""]


def _pct(x: float | None) -> str:
    return "not scored" if x is None else f"{100 * x:.1f} %"


def plot_curve(ax: Any, ops: Mapping[str, Any]) -> None:
    """Retention (held-out) against speed-up, the recommended artefact starred (points left
    unscored are not drawn)."""
    for p in ops["points"]:
        if "heldout" not in p["retention"]:
            continue
        marker = "*" if p["recommended"] else ("s" if p["base"] == "original" else "o")
        ax.scatter(p["speedup"], 100 * p["retention"]["heldout"], marker=marker,
                   s=160 if marker == "*" else 40, alpha=1.0 if p["qualifies"] else 0.45)
        ax.annotate(p["label"], (p["speedup"], 100 * p["retention"]["heldout"]), fontsize=6,
                    xytext=(3, 3), textcoords="offset points")
    sh = ops["latency_shape"]
    ax.axhline(100 * (1 - ops["max_quality_loss"]), color="grey", lw=0.8, ls="--")
    ax.set_xlabel(f"ORT CPU speed-up vs original ({sh['threads']} thr, b{sh['batch']}"
                  + (f", s{sh['seq']})" if sh.get("seq") else ")"))
    ax.set_ylabel(f"held-out retention, % ({ops['metric']})")
    ax.grid(alpha=0.3)

"""The report's view of a run's operating points (algorithms.curve measures them): the
report.md table and the plot."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def curve_markdown(curve: Mapping[str, Any]) -> list[str]:
    """The report.md table of the operating points."""
    sh = curve["latency_shape"]
    out = ["## Operating points (one run)", "",
           f"Held-out {curve['metric']} and ORT CPU latency ({sh['threads']} thread(s), batch "
           f"{sh['batch']}" + (f", sequence {sh['seq']}" if sh["seq"] else "")
           + f"; median of {curve['runs']}, interleaved) of the "
           "model after each round, BMR's choice marked, beside the original and the original "
           f"quantised to int8. {curve['note']}.", "",
           f"| model | parameters | median ms | speed-up | {curve['metric']} |",
           "|---|---:|---:|---:|---:|"]
    for p in curve["points"]:
        mark = " **(BMR's choice)**" if p["bmr_choice"] else ""
        params = f"{p['params']:,}" if p["params"] else "(int8)"
        out.append(f"| {p['label']}{mark} | {params} | {p['median_ms']:.3f} | "
                   f"{p['speedup']:.2f}x | {p['value']:.4f} |")
    return out + [""]


def plot_curve(ax: Any, curve: Mapping[str, Any]) -> None:
    for p in curve["points"]:
        marker = "*" if p["bmr_choice"] else ("s" if p["reference"] else "o")
        ax.scatter(p["speedup"], p["value"], marker=marker, s=140 if marker == "*" else 40)
        ax.annotate(p["label"], (p["speedup"], p["value"]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    sh = curve["latency_shape"]
    ax.set_xlabel(f"ORT CPU speed-up vs original ({sh['threads']} thr, b{sh['batch']}"
                  + (f", s{sh['seq']})" if sh["seq"] else ")"))
    ax.set_ylabel(f"held-out {curve['metric']}")
    ax.grid(alpha=0.3)

"""The short human table the CLI prints after `compress` / `reduce`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any



def summary_of(report: Mapping[str, Any]) -> dict[str, Any]:
    """The short table the CLI prints: parameters, sizes, latency, metric, wall time."""
    files = report.get("files", {})
    return {
        "parameters": report.get("parameters"),
        "bytes": {k: {"before": files.get("before", {}).get(k), "after": files.get("after", {}).get(k)}
                  for k in ("model.safetensors", "model.onnx")},
        "int8_onnx_bytes": files.get("after", {}).get("model.int8.onnx"),
        "latency": report.get("latency"),
        "metric": report.get("metric"),
        "wall_s": report.get("stage_seconds", {}).get("total"),
    }


def _mb(n: Any) -> str:
    return "-" if n is None else f"{n / 1e6:.2f} MB"


def _ratio(a: Any, b: Any) -> str:
    return "-" if not a or not b else f"{a / b:.2f}x"


def _num(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, (int, float)) else "-"  # None: not defined on this set


def format_summary(summary: Mapping[str, Any]) -> str:
    """Human table of `summary_of(report)`: before / after / ratio per row."""
    p = summary.get("parameters") or {}
    rows = [("parameters", f"{p.get('original', 0):,}", f"{p.get('compressed', 0):,}",
             _ratio(p.get("original"), p.get("compressed")))]
    for k, v in (summary.get("bytes") or {}).items():
        rows.append((k, _mb(v.get("before")), _mb(v.get("after")),
                     _ratio(v.get("before"), v.get("after"))))
    if summary.get("int8_onnx_bytes"):
        before = ((summary.get("bytes") or {}).get("model.onnx") or {}).get("before")
        rows.append(("model.int8.onnx", _mb(before), _mb(summary["int8_onnx_bytes"]),
                     _ratio(before, summary["int8_onnx_bytes"])))
    lat = summary.get("latency") or {}
    if lat.get("original") and lat.get("compressed"):
        o, c = lat["original"]["median_ms"], lat["compressed"]["median_ms"]
        dims = f"batch {lat.get('batch')}" + (f", seq {lat['seq']}" if lat.get("seq") else "")
        rows.append((f"ORT CPU latency, median ({lat.get('threads')} thread, {dims})",
                     f"{o:.3f} ms", f"{c:.3f} ms", _ratio(o, c)))
    m = summary.get("metric") or {}
    for k, v in (m.get("compressed") or {}).items():
        before = (m.get("original") or {}).get(k)
        rows.append((f"{k} (held-out, n={m.get('n')})", _num(before), _num(v), ""))
    width = max(len(r[0]) for r in rows)
    lines = [f"{'':<{width}}  {'before':>12}  {'after':>12}  {'ratio':>7}"]
    lines += [f"{a:<{width}}  {b:>12}  {c:>12}  {d:>7}" for a, b, c, d in rows]
    if summary.get("wall_s") is not None:
        lines.append(f"wall time: {summary['wall_s']:.1f} s")
    return "\n".join(lines)

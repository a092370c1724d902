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
        "recommended": recommended_of(report),
        "mixed_precision": mixed_of(report),
    }


def mixed_of(report: Mapping[str, Any]) -> dict[str, Any] | None:
    """model.mixed.onnx (--mixed-precision): file, size, speed-up, retention (or why none)."""
    mp = report.get("mixed_precision")
    if not mp:
        return None
    keys = ("file", "size_bytes", "times_smaller", "speedup", "retention", "metric", "tolerance",
            "bits_per_weight", "reason")
    return {k: mp.get(k) for k in keys}


def recommended_of(report: Mapping[str, Any]) -> dict[str, Any] | None:
    """The recommended artefact of the operating points: file, speed-up, size and retention
    beside the dense original's best int8, on the CPU that ran the tool."""
    ops = report.get("operating_points")
    if not ops:
        return None
    pts = {p["label"]: p for p in ops["points"]}
    rec = pts[ops["recommended"]]
    dense = [p for p in ops["points"] if p["base"] == "original" and p["precision"] == "int8"
             and p.get("retention")]
    best_dense = max(dense, key=lambda p: p["speedup"], default=None)
    keys = ("label", "file", "speedup", "size_bytes", "retention", "median_ms")
    return {**{k: rec.get(k) for k in keys}, "metric": ops["metric"],
            "max_quality_loss": ops["max_quality_loss"],
            "cpu": (ops.get("cpu") or {}).get("model"),
            "cpu_features": (ops.get("cpu") or {}).get("features"),
            "original": {k: pts["original"].get(k) for k in keys} if "original" in pts else None,
            "dense_int8": {k: best_dense.get(k) for k in keys} if best_dense else None,
            "dense_is_best": rec["base"] == "original"}


def how_to_load(rec: Mapping[str, Any], out: str) -> list[str]:
    """Lines telling how to load the recommended file in the user's own stack."""
    f = rec.get("file") or "model.onnx"
    from bmr_compress.export.st_layout import ST_INT8, ST_ONNX

    st_name = {"model.onnx": ST_ONNX, "model.int8.onnx": ST_INT8}.get(f)
    lines = [f"  onnxruntime: ort.InferenceSession('{out}/{f}', providers=['CPUExecutionProvider'])"]
    if st_name:
        lines.append(f"  sentence-transformers: SentenceTransformer('{out}', backend='onnx', "
                     f"model_kwargs={{'file_name': '{st_name}'}})")
        lines.append(f"  optimum: ORTModelForFeatureExtraction.from_pretrained('{out}', "
                     f"file_name='{st_name}')")
    return lines


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
    rec = summary.get("recommended")
    if rec:
        lines += ["", *recommendation_lines(rec, str(summary.get("out") or "OUT"))]
    if summary.get("mixed_precision"):
        lines += ["", *mixed_lines(summary["mixed_precision"], str(summary.get("out") or "OUT"))]
    return "\n".join(lines)


def mixed_lines(mp: Mapping[str, Any], out: str = "OUT") -> list[str]:
    """What --mixed-precision wrote, and how to load it."""
    if not mp.get("file"):
        return [f"mixed precision: no file written ({mp.get('reason')})"]
    ret = mp.get("retention") or {}
    speed = f", {mp['speedup']:.2f}x the original's speed" if mp.get("speedup") else ""
    return [f"mixed precision: {mp['file']}: {mp['times_smaller']:.2f}x smaller than the "
            f"original's ONNX ({mp['bits_per_weight']:.2f} bits per weight){speed}, "
            f"{100 * ret.get('heldout', float('nan')):.1f} % of its {mp.get('metric')} on "
            f"held-out data ({100 * ret.get('selection', float('nan')):.1f} % on selection)",
            f"  onnxruntime: ort.InferenceSession('{out}/{mp['file']}', "
            "providers=['CPUExecutionProvider'])"]


def recommendation_lines(rec: Mapping[str, Any], out: str = "OUT") -> list[str]:
    """What to deploy from this run, on the CPU that ran it, and how to load it."""
    ret = rec.get("retention") or {}
    where = rec.get("cpu") or "this CPU"
    lines = [f"recommended on {where}: {rec.get('file') or rec['label']} ({rec['label']}): "
             f"{rec['speedup']:.2f}x faster than the original, "
             f"{100 * ret.get('heldout', float('nan')):.1f} % of its {rec['metric']} on held-out "
             f"data ({100 * ret.get('selection', float('nan')):.1f} % on the selection data that "
             f"chose it; budget {100 * (1 - rec['max_quality_loss']):.0f} %)"]
    d = rec.get("dense_int8")
    if rec.get("dense_is_best"):
        lines.append("  the dense original (int8 or fp32) is the best answer for this budget on "
                     "this CPU: no cut of this run was both faster and within the budget")
    elif d:
        dr = (d.get("retention") or {}).get("heldout", float("nan"))
        lines.append(f"  beside it, the original + int8 ({d['label']}): {d['speedup']:.2f}x at "
                     f"{100 * dr:.1f} % held-out")
    if rec.get("file"):
        lines += how_to_load(rec, out)
    return lines

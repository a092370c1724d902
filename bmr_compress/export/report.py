"""report.json (machine-readable) + report.md (human) + PNG plots, from plain dicts/dataclasses.

`build_report` assembles the dict from what the pipeline already holds; `write_report` adds the
files actually present in the output directory (so sizes match the disk), writes the plots
(matplotlib, Agg, imported lazily) and both report files.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bmr_compress.io.checks import count_params
from bmr_compress.io.jsonsafe import to_jsonable

if TYPE_CHECKING:
    from torch import nn

    from bmr_compress.export.validation import ValidationResult

log = logging.getLogger(__name__)

REPORT_JSON, REPORT_MD, PLOTS_DIR = "report.json", "report.md", "plots"
_OWN = {REPORT_JSON, REPORT_MD}
param_count = count_params  # the name export has offered (distinct elements, tied once)


def _jsonable(x: Any) -> Any:
    """report.json's conversion: NaN -> null, ±inf -> "inf" / "-inf" (strict JSON)."""
    return to_jsonable(x, nonfinite="mark")


def sparsity_stats(original: nn.Module, compressed: nn.Module) -> dict[str, Any]:
    """Per-parameter structured kept fraction (numel after / before) and unstructured zeros."""
    before = dict(original.named_parameters())
    after = dict(compressed.named_parameters())
    per_layer: dict[str, dict[str, Any]] = {}
    n_before = n_after = zeros = 0
    for name, p in before.items():
        q = after.get(name)
        n_after_i = q.numel() if q is not None else 0
        z = int((q == 0).sum()) if q is not None else 0
        per_layer[name] = {
            "shape_before": list(p.shape), "shape_after": list(q.shape) if q is not None else None,
            "params_before": p.numel(), "params_after": n_after_i,
            "kept_fraction": n_after_i / p.numel() if p.numel() else 1.0,
            "zero_fraction": z / n_after_i if n_after_i else 0.0,
        }
        n_before += p.numel()
        n_after += n_after_i
        zeros += z
    return {
        "structured": {"params_before": n_before, "params_after": n_after,
                       "removed_fraction": 1 - n_after / n_before if n_before else 0.0},
        "unstructured": {"zeros": zeros, "zero_fraction": zeros / n_after if n_after else 0.0,
                         "note": "zeros shrink files only (sparse storage); ORT CPU densifies at load"},
        "per_layer": per_layer,
    }


def build_report(
    *,
    source: Mapping[str, Any],
    settings: Mapping[str, Any],
    original: nn.Module,
    compressed: nn.Module,
    validation: ValidationResult | Mapping[str, Any],
    files_before: Mapping[str, int],
    stage_seconds: Mapping[str, float],
    plan_summary: Mapping[str, Any] | None = None,
    onnx: Any = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The report dict. `files_before`: name -> bytes of the uncompressed artefacts;
    `onnx`: the compressed `OnnxArtifact` (or its `to_dict()`): io names, versions, sparsity."""
    from bmr_compress import __version__

    val = validation.to_dict() if hasattr(validation, "to_dict") else dict(validation)
    n0, n1 = count_params(original), count_params(compressed)
    report: dict[str, Any] = {
        "tool": {"name": "bmr-compress", "version": __version__},
        "source": dict(source),
        "settings": _jsonable(settings),
        "parameters": {"original": n0, "compressed": n1, "ratio": n1 / n0 if n0 else 1.0},
        "files": {"before": dict(files_before), "after": {}},
        "sparsity": sparsity_stats(original, compressed),
        "metric": val.get("metric", {}),
        "parity": val.get("parity", {}),
        "latency": val.get("latency", {}),
        "onnx_sizes": val.get("sizes", {}),
        "int8": val.get("int8"),
        "onnx": onnx.to_dict() if hasattr(onnx, "to_dict") else dict(onnx or {}),
        "stage_seconds": dict(stage_seconds),
        "plan": _jsonable(plan_summary or {}),
        "validation": {"passed": bool(val.get("passed")), "checks": val.get("checks", [])},
    }
    report.update(_jsonable(extra or {}))
    return report


def write_report(
    out_dir: str | Path,
    report: dict[str, Any],
    *,
    delta_lnz: Mapping[str, Any] | None = None,
    plots: bool = True,
) -> tuple[Path, Path]:
    """Write report.json, report.md and plots/*.png; `report["files"]["after"]` is read from disk.

    `delta_lnz`: group or tensor name -> ΔlnZ values (tensor/array/list) for the histograms.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = dict(report)
    report["plots"] = (_write_plots(out / PLOTS_DIR, report, delta_lnz)
                       if plots and _can_plot() else [])
    report.setdefault("files", {})["after"] = {
        str(p.relative_to(out)): p.stat().st_size
        for p in sorted(out.rglob("*")) if p.is_file() and p.name not in _OWN
        and not p.name.startswith(".")
    }
    jpath, mpath = out / REPORT_JSON, out / REPORT_MD
    jpath.write_text(json.dumps(_jsonable(report), indent=2, sort_keys=True, allow_nan=False) + "\n")
    mpath.write_text(render_markdown(report))
    if json.loads(jpath.read_text())["validation"]["passed"] != report["validation"]["passed"]:
        raise OSError(f"read-back of {jpath} differs")  # pragma: no cover - disk corruption
    log.info("wrote %s and %s", jpath, mpath)
    return jpath, mpath


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)  # pragma: no cover


def render_markdown(report: Mapping[str, Any]) -> str:
    v, p, m = report["validation"], report["parameters"], report.get("metric", {})
    lines = [f"# bmr-compress report: {report['source'].get('id', '?')}", "",
             f"Validation: **{'passed' if v['passed'] else 'FAILED'}**", "", "## Checks", "",
             "| check | result | detail |", "|---|---|---|"]
    lines += [f"| {c['name']} | {'ok' if c['passed'] else 'FAIL'} | {str(c['detail']).replace('|', chr(92) + '|')} |" for c in v["checks"]]
    lines += ["", "## Size", "", "| | original | compressed |", "|---|---|---|",
              f"| parameters | {p['original']:,} | {p['compressed']:,} ({p['ratio']:.1%}) |"]
    sizes = report.get("onnx_sizes", {})
    for key in ("onnx_file_bytes", "onnx_initializer_bytes"):
        if key in sizes:
            lines.append(f"| {key} | {_fmt_bytes(sizes[key]['original'])} | {_fmt_bytes(sizes[key]['compressed'])} |")
    sp = report["sparsity"]
    lines += ["", f"Structured: {sp['structured']['removed_fraction']:.1%} of parameters removed. "
              f"Unstructured zeros: {sp['unstructured']['zero_fraction']:.1%} of what is left "
              "(size only; onnxruntime densifies them at load).", ""]
    rm = report.get("reduced_means")
    if rm:
        lines += [f"Reduced means: the survivors of {int(rm['layers'])} pruned layer(s) moved to "
                  "their BMR reduced posterior mean; relative output error on calibration data "
                  f"{rm['output_error_zeroed']:.3g} if only zeroed, {rm['output_error_reduced']:.3g} "
                  "after the move.", ""]
    if m:
        held = report["source"].get("heldout")
        lines += ["## Task metric (held-out)", ""]
        lines += [f"Held-out data: {held}.", ""] if held else []
        lines += [f"Task `{m.get('task')}`, gate `{m.get('name')}` = "
                  f"{m.get('gate'):.4g}, threshold {m.get('threshold')}.", "",
                  f"- original: {json.dumps(_jsonable(m.get('original')))}",
                  f"- compressed: {json.dumps(_jsonable(m.get('compressed')))}", ""]
    lat = report.get("latency", {})
    if "original" in lat:
        lines += ["## onnxruntime CPU latency (same run, interleaved)", "",
                  f"{lat['threads']} thread(s), batch {lat['batch']}, sequence {lat['seq']}, "
                  f"{lat['runs']} runs after {lat['warmup']} warm-up.", "",
                  "| | median ms | p90 ms |", "|---|---|---|",
                  f"| original | {lat['original']['median_ms']:.3f} | {lat['original']['p90_ms']:.3f} |",
                  f"| compressed | {lat['compressed']['median_ms']:.3f} | {lat['compressed']['p90_ms']:.3f} |"]
        if "int8" in lat:
            lines.append(f"| compressed int8 | {lat['int8']['median_ms']:.3f} | {lat['int8']['p90_ms']:.3f} |")
        if "mixed" in lat:
            lines.append(f"| compressed mixed precision | {lat['mixed']['median_ms']:.3f} | "
                         f"{lat['mixed']['p90_ms']:.3f} |")
        lines += ["", *_latency_grid_md(lat)]
    q = report.get("int8")
    if q:
        qm = q.get("metric") or {}
        how = _INT8_WORDS.get(_int8_scheme(report), "8-bit weights")
        lines += [f"int8 ({how}): {_fmt_bytes(q['file_bytes'])}"
                  + (f", {qm.get('name')} {qm.get('gate'):.4g} vs the original on held-out data"
                     if qm.get("gate") is not None else "") + ".", ""]
    if report.get("mixed_precision"):
        lines += mixed_markdown(report["mixed_precision"])
    if report.get("operating_points"):
        from bmr_compress.export.operating_points import curve_markdown

        lines += curve_markdown(report["operating_points"])
    par = report.get("parity", {})
    if par:
        lines += [f"ORT parity: max |err| {par.get('max_abs_error')} at shapes "
                  f"{[(s['batch'], s['seq']) for s in par.get('shapes', [])]} (export shape "
                  f"{par.get('export_shape')}; atol {par.get('atol')}, rtol {par.get('rtol')}).", ""]
    lines += ["## Wall time per stage", ""] + [f"- {k}: {s:.2f} s" for k, s in report["stage_seconds"].items()]
    if report.get("plots"):
        lines += ["", "## Plots", ""] + [f"![{Path(f).stem}]({f})" for f in report["plots"]]
    lines += ["", "## Files", ""] + [f"- {k}: {_fmt_bytes(b)}" for k, b in report["files"].get("after", {}).items()]
    return "\n".join(lines) + "\n"


def _latency_grid_md(lat: Mapping[str, Any]) -> list[str]:
    """Median ms at every (batch, threads) measured, one column per model."""
    grid = lat.get("grid") or []
    if not grid:
        return []
    names = [k for k in ("original", "compressed", "int8", "mixed") if k in grid[0]]
    out = [f"Median ms by batch and threads (sequence {grid[0].get('seq')}):", "",
           "| batch | threads | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    out += [f"| {g['batch']} | {g['threads']} | " + " | ".join(f"{g[n]['median_ms']:.3f}" for n in names)
            + " |" for g in grid]
    return out + [""]


def mixed_markdown(mp: Mapping[str, Any]) -> list[str]:
    """The --mixed-precision section: the file, its size, speed and retention, the ladder."""
    out = ["## Mixed precision (BMR per matrix)", "", f"Rule: {mp.get('rule')}.", ""]
    if not mp.get("file"):
        return out + [f"No mixed-precision file was written: {mp.get('reason')}.", ""]
    ret = mp.get("retention") or {}
    speed = (f", {mp['speedup']:.2f}x the original's speed ({mp['median_ms']:.3f} ms)"
             if mp.get("speedup") else "")
    out += [f"`{mp['file']}`: {_fmt_bytes(mp['size_bytes'])}, {mp['times_smaller']:.2f}x smaller "
            f"than the original's ONNX{speed}; {100 * ret.get('heldout', float('nan')):.1f} % of "
            f"its {mp.get('metric')} on held-out data ({100 * ret.get('selection', float('nan')):.1f} "
            f"% on the selection data that chose it). Tolerance {mp['tolerance']:g}, "
            f"ν = {mp['nu']:.3g}, {mp['bits_per_weight']:.2f} bits per weight; matrices per grid: "
            + ", ".join(f"{g} {n}" for g, n in mp["counts"].items() if n) + ".", "",
            "| tolerance | ν | MB | bits/weight | selection | held-out | |", "|---|---|---|---|---|---|---|"]
    for c in mp.get("ladder") or []:
        r = c.get("retention") or {}
        cells = [f"{100 * r[k]:.1f} %" if k in r else "-" for k in ("selection", "heldout")]
        out.append(f"| {c['tolerance']:g} | {c['nu']:.3g} | {c['size_bytes'] / 1e6:.2f} | "
                   f"{c['bits_per_weight']:.2f} | {cells[0]} | {cells[1]} | "
                   f"{'shipped' if c['tolerance'] == mp['tolerance'] else c.get('reason', '')} |")
    return out + ["", "Load it like model.onnx (onnxruntime CPU; contrib ops MatMulNBits and "
                  "GatherBlockQuantized).", ""]


def _can_plot() -> bool:
    """Whether matplotlib is installed (the `plots` extra); says so in the log when not."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        log.warning("report plots skipped: matplotlib is not installed "
                 "(pip install 'bmr-compress[plots]')")
        return False
    return True


def _write_plots(d: Path, report: Mapping[str, Any], delta_lnz: Mapping[str, Any] | None) -> list[str]:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    import numpy as np

    d.mkdir(parents=True, exist_ok=True)
    written: list[str] = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(d / name, dpi=90)
        plt.close(fig)
        written.append(f"{PLOTS_DIR}/{name}")

    layers = {k: v for k, v in report["sparsity"]["per_layer"].items() if k.endswith("weight")}
    if layers:
        fig, ax = plt.subplots(figsize=(7, max(2.5, 0.18 * len(layers))))
        ax.barh(range(len(layers)), [v["kept_fraction"] for v in layers.values()])
        ax.set_yticks(range(len(layers)), list(layers), fontsize=6)
        ax.invert_yaxis()
        ax.set_xlim(0, 1.05)
        ax.set_xlabel("kept fraction of parameters")
        save(fig, "kept_fraction.png")
    if delta_lnz:
        vals = {k: np.asarray(_jsonable(v), dtype=float).ravel() for k, v in delta_lnz.items()}
        allv = np.concatenate([v for v in vals.values() if v.size]) if vals else np.zeros(0)
        if allv.size:
            fig, ax = plt.subplots(figsize=(6, 3.5))
            ax.hist(allv[np.isfinite(allv)], bins=60)
            ax.axvline(0.0, color="k", lw=1)
            ax.set_xlabel("ΔlnZ (≥ 0: prune)")
            ax.set_ylabel("units")
            save(fig, "delta_lnz_hist.png")
    sizes = report.get("onnx_sizes", {}).get("onnx_file_bytes")
    lat = report.get("latency", {})
    if sizes or "original" in lat:
        fig, axes = plt.subplots(1, 2, figsize=(7, 3))
        if sizes:
            axes[0].bar(["original", "compressed"], [sizes["original"] / 1024, sizes["compressed"] / 1024])
            axes[0].set_ylabel("ONNX KiB")
        if "original" in lat:
            axes[1].bar(["original", "compressed"],
                        [lat["original"]["median_ms"], lat["compressed"]["median_ms"]])
            axes[1].set_ylabel(f"median ms ({lat['threads']} thr, b{lat['batch']}, s{lat['seq']})")
        save(fig, "size_latency.png")
    if report.get("operating_points"):
        from bmr_compress.export.operating_points import plot_curve

        fig, ax = plt.subplots(figsize=(7, 4.5))
        plot_curve(ax, report["operating_points"])
        save(fig, "operating_points.png")
    return written


_INT8_WORDS = {
    "dynamic": "onnxruntime dynamic int8, weights per output channel",
    "dynamic-per-tensor": "onnxruntime dynamic int8, one weight scale per tensor",
    "blockwise": "8-bit weights in blocks of up to 128 input channels, int8 embedding rows",
}


def _int8_scheme(report: dict[str, Any]) -> str | None:
    """The scheme of the shipped model.int8.onnx (chosen by the operating points, or forced)."""
    for p in (report.get("operating_points") or {}).get("points", []):
        if p.get("file") == "model.int8.onnx":
            return p.get("scheme")
    return (report.get("settings") or {}).get("int8_scheme")

"""--mixed-precision: model.mixed.onnx, the shipped model with each weight matrix (the embedding
tables included) on the grid Bayesian model reduction chose for it (docs/PRECISION.md).

After the operating points chose the model the output holds:

1. Row posteriors of every Linear-like layer and embedding table of that model from the
   calibration statistics batches (the batches the Laplace path takes A and b from:
   algorithms/laplace_reduce.split_calibration), scoring/precision.matrix_posteriors.
2. For each tolerance of LADDER (relative output distortion, the currency of --tolerance),
   ν by the discrepancy principle and, per matrix, the smallest grid with ΔlnZ ≥ 0 at that ν
   (scoring/precision.calibrate_precisions); each distinct choice is written as an ONNX file
   (export/mixed_precision.quantize_mixed).
3. **The rule**: those files are scored by task retention, smallest first, with the run's own
   evaluator (pipeline/choose.evaluator_for: retrieval MRR@10 for sentence embeddings, the
   task metric otherwise, on *selection* examples that never train), until one keeps
   ≥ 1 − --max-quality-loss of the original's metric: that one ships. Held-out retention is
   measured and reported, and decides nothing. When none qualifies, nothing is written and
   the report says so.

`finalize_` adds what validation measured (latency beside fp32, the held-out checks).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bmr_compress.pipeline.stages import Fitted

log = logging.getLogger(__name__)

MIXED_FILE = "model.mixed.onnx"
LADDER = (0.08, 0.04, 0.02, 0.01, 0.005, 0.0025)  # tolerances, largest (smallest file) first


@dataclass
class MixedPrecision:
    """What --mixed-precision wrote: the file (None: none qualified) and its report record."""

    path: Path | None
    record: dict[str, Any] = field(default_factory=dict)


def _bytes(path: Path) -> int:
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.is_file() else 0)


def _rows(post: Any) -> Any:
    """A MatrixPosterior's weights as export/mixed_precision.matrices lists them (float32)."""
    w0 = post.posterior.w0
    return (w0.T if post.kind == "embedding" else w0).float().contiguous().numpy()


def _statistics(f: Fitted) -> list[Any]:
    from bmr_compress.algorithms.laplace_reduce import split_calibration
    from bmr_compress.scoring import matrix_posteriors, output_scale

    stats = split_calibration(f.data.train_batches).stats
    task = str(f.source.task)
    scale = output_scale(f.model, stats, task)
    return matrix_posteriors(f.model, stats, task, scale)


def _ladder(posts: list[Any], params: Mapping[str, str], fp32: Path, work: Path
            ) -> list[dict[str, Any]]:
    """One candidate per distinct choice along LADDER: tolerance, ν, grids, file, size."""
    from bmr_compress.bmr.precision import GRIDS, KEEP
    from bmr_compress.export.mixed_precision import quantize_mixed
    from bmr_compress.scoring import calibrate_precisions

    numel = {p.param: int(p.posterior.w0.numel()) for p in posts if p.param in params}
    out: list[dict[str, Any]] = []
    seen: set[tuple[tuple[str, str], ...]] = set()
    for tol in LADDER:
        choice = calibrate_precisions(posts, tol)
        grids = {p: g for p, g in choice.grids.items() if p in params}
        key = tuple(sorted(grids.items()))
        if key in seen or all(g == KEEP for g in grids.values()):
            continue
        seen.add(key)
        path = quantize_mixed(fp32, work / f"tolerance-{tol:g}.onnx",
                              {params[p]: g for p, g in grids.items()}).path
        counts = {g: sum(v == g for v in grids.values()) for g in (KEEP, *GRIDS)}
        bits = sum(numel[p] * (32.0 if g == KEEP else GRIDS[g].bits_per_weight)
                   for p, g in grids.items()) / max(sum(numel.values()), 1)
        out.append({"tolerance": tol, "nu": choice.nu,
                    "predicted_distortion": choice.predicted_distortion, "grids": grids,
                    "counts": counts, "bits_per_weight": bits, "path": path,
                    "size_bytes": _bytes(path), "retention": {}, "qualifies": False,
                    "reason": "not scored: a smaller file qualified"})
    return out


def _choose(cands: list[dict[str, Any]], evaluator: Any, budget: float) -> dict[str, Any] | None:
    """Score smallest first until one keeps the budget on selection data (module docstring)."""
    for c in sorted(cands, key=lambda c: c["size_bytes"]):
        log.info("mixed precision: scoring tolerance %g (%.1f MB)", c["tolerance"],
                 c["size_bytes"] / 1e6)
        c["metrics"] = evaluator.measure(c["path"])
        c["retention"] = {k: float(v["retention"]) for k, v in c["metrics"].items()}
        c["qualifies"] = c["retention"]["selection"] >= 1.0 - budget
        c["reason"] = ("" if c["qualifies"] else
                       f"selection retention {c['retention']['selection']:.4f} < {1 - budget:.4f}")
        if c["qualifies"]:
            return c
    return None


def write_mixed_precision(f: Fitted, stage: Path, work: Path, example: Mapping[str, Any],
                          original_onnx: Path) -> MixedPrecision:
    """model.mixed.onnx in `stage` for the model `f` ships, by the module docstring's rule;
    `original_onnx`: the original's fp32 ONNX (the size and retention reference)."""
    import onnx

    from bmr_compress.export import export_onnx
    from bmr_compress.export.mixed_precision import match_initializers
    from bmr_compress.pipeline.choose import evaluator_for

    budget = f.config.export.max_quality_loss
    rule = (f"tolerances {', '.join(f'{t:g}' for t in LADDER)} (relative output distortion) "
            "each set ν; every matrix takes its smallest grid with ΔlnZ ≥ 0; the smallest "
            f"file whose selection retention is ≥ {1 - budget:g} ships")
    record: dict[str, Any] = {"file": None, "rule": rule, "max_quality_loss": budget,
                              "original_bytes": _bytes(original_onnx)}
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    posts = _statistics(f)
    record["statistics_seconds"] = time.perf_counter() - t0
    fp32 = export_onnx(f.model, work / "fp32.onnx", dict(example), sparse=False).path
    params = match_initializers(onnx.load(str(fp32)), {p.param: _rows(p) for p in posts})
    record["matrices"] = {"scored": len(posts), "in_onnx": len(params)}
    log.info("mixed precision: %d matrices scored, %d found in the ONNX graph", len(posts),
             len(params))
    cands = _ladder(posts, params, fp32, work) if params else []
    if not cands:
        record["reason"] = "no weight matrix of this model can be stored on a grid in ONNX"
        log.warning("--mixed-precision: %s; no %s written", record["reason"], MIXED_FILE)
        return MixedPrecision(None, record)
    evaluator = evaluator_for(f, original_onnx)
    record["metric"] = evaluator.metric
    best = _choose(cands, evaluator, budget)
    record["ladder"] = [{k: v for k, v in c.items() if k not in ("path", "grids")} for c in cands]
    if best is None:
        record["reason"] = (f"no file of the ladder kept {1 - budget:g} of the original's "
                            f"{evaluator.metric} on selection data")
        log.warning("--mixed-precision: %s; no %s written", record["reason"], MIXED_FILE)
        return MixedPrecision(None, record)
    from bmr_compress.export.mixed_precision import quantize_mixed

    path = quantize_mixed(fp32, stage / MIXED_FILE,
                          {params[p]: g for p, g in best["grids"].items()}).path
    record.update({k: best[k] for k in ("tolerance", "nu", "predicted_distortion", "grids",
                                        "counts", "bits_per_weight", "retention", "metrics")})
    record.update({"file": MIXED_FILE, "size_bytes": _bytes(path),
                   "times_smaller": record["original_bytes"] / max(_bytes(path), 1)})
    log.info("mixed precision: %s at tolerance %g, %.2fx smaller than the original ONNX, "
             "%.1f %% of its %s on selection data", MIXED_FILE, best["tolerance"],
             record["times_smaller"], 100 * best["retention"]["selection"], evaluator.metric)
    return MixedPrecision(path, record)


def finalize_(mixed: MixedPrecision, result: Any, gate_factor: float) -> dict[str, Any]:
    """Add validation's measurements to the record (latency beside the original and the
    compressed fp32, the validation checks' figures) and gate held-out retention as the
    recommended artefact is gated: below 1 − gate_factor × the budget fails."""
    rec = mixed.record
    lat = result.latency or {}
    if "mixed" in lat and "original" in lat:
        rec["median_ms"] = float(lat["mixed"]["median_ms"])
        rec["speedup"] = float(lat["original"]["median_ms"]) / rec["median_ms"]
        rec["speedup_vs_compressed"] = float(lat["compressed"]["median_ms"]) / rec["median_ms"]
    rec["validation"] = result.mixed
    if mixed.path is not None and rec.get("retention"):
        floor = 1.0 - gate_factor * rec["max_quality_loss"]
        r = rec["retention"]["heldout"]
        result.add("mixed_precision_retention", r >= floor,
                   f"{MIXED_FILE}: retention {r:.4f} on held-out data (>= {floor:.4f}; "
                   f"{rec['retention']['selection']:.4f} on the selection data that chose it)", r)
    return rec

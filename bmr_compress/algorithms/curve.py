"""Operating points of one run: the model after each Laplace round, beside the dense int8.

Each round of the default path spends more of the tolerance, so the rounds are points on the
latency–quality curve of one fit. For each, the held-out task metric (the report's gate
metric, on the held-out batches that decided nothing) and the ORT CPU latency at the
report's latency shape, every model timed interleaved with the original and with the
original quantised to int8 (what a user would do instead without pruning). Layer dropping,
the other reference, needs its own recovery and is measured in bench/curve.py.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

SNAPSHOT_MAX_PARAMS = 300_000_000  # above this, rounds are not kept in memory for the curve
CURVE_RUNS = 20


def operating_points(
    original: nn.Module, rounds: Sequence[tuple[str, nn.Module]], *, final: str,
    original_onnx: Path, final_onnx: Path, final_int8: Path | None, work: Path,
    heldout: Sequence[Mapping[str, torch.Tensor]], task: str, example: Mapping[str, torch.Tensor],
    latency: Mapping[str, Any], int8_scheme: str = "blockwise",
) -> dict[str, Any]:
    """{"metric", "latency_shape", "points": [{label, params, median_ms, speedup, value,
    bmr_choice, reference}]}: the original, its int8, every round's model and BMR's int8.

    `rounds`: (label, model) per kept round, the last one being the final model `final`
    (exported as final_onnx). `latency`: the report's latency entry (threads, batch, seq,
    input_shapes) whose shape the points are timed at.
    """
    from bmr_compress.export import export_onnx, quantize_int8
    from bmr_compress.export.checks import OrtModule
    from bmr_compress.export.latency import cpu_session, measure_latency
    from bmr_compress.export.metrics import task_metric
    from bmr_compress.export.validation import make_inputs_like, to_numpy
    from bmr_compress.io.checks import count_params

    work.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {"original": original_onnx}
    paths["original int8"] = quantize_int8(original_onnx, work / "original.int8.onnx",
                                           scheme=int8_scheme).path
    models: dict[str, nn.Module | None] = {"original": original, "original int8": None}
    for i, (label, m) in enumerate(rounds):
        paths[label] = (final_onnx if label == final
                        else export_onnx(m, work / f"round{i}.onnx", dict(example)).path)
        models[label] = m
    if final_int8 is not None:
        paths[f"{final} + int8"] = final_int8
        models[f"{final} + int8"] = None
    values: dict[str, float] = {}
    name = None
    batches = list(heldout)
    for label, path in paths.items():
        m = models[label] if models[label] is not None else OrtModule(cpu_session(path))
        metric = task_metric(original, m.eval() if isinstance(m, nn.Module) else m, batches, task)
        values[label], name = float(metric["gate"]), metric["name"]
    batch, seq = int(latency.get("batch", 1)), latency.get("seq")
    feed = to_numpy(make_inputs_like(dict(example), batch, seq, seed=99))
    lat = measure_latency({k: str(v) for k, v in paths.items()}, feed,
                          threads=int(latency.get("threads", 1)), runs=CURVE_RUNS)
    base = lat["original"]["median_ms"]
    params = {k: count_params(m) for k, m in models.items()
              if isinstance(m, nn.Module)}
    points = [{"label": k, "params": params.get(k), "median_ms": lat[k]["median_ms"],
               "speedup": base / lat[k]["median_ms"], "value": values[k],
               "bmr_choice": k in (final, f"{final} + int8"), "reference": k.startswith("original")}
              for k in paths]
    return {"metric": name, "latency_shape": {"threads": latency.get("threads", 1),
                                              "batch": batch, "seq": seq},
            "runs": CURVE_RUNS, "points": points,
            "note": "Layer dropping with the same recovery is measured in bench/curve.py"}


def run_curve(f: Any, original_onnx: Path, onnx: Path, int8: Path | None, work: Path,
              result: Any, example: Mapping[str, Any]) -> dict[str, Any] | None:
    """operating_points for a run (f: the pipeline's Fitted record, result: its ValidationResult);
    None when there are no rounds to show or the measurement fails (the run does not depend
    on it)."""
    snaps = getattr(getattr(f.iteration, "outcome", None), "snapshots", None)
    if not snaps or not result.latency.get("original"):
        return None
    final = snaps[-1][0]
    try:
        return operating_points(
            f.original, [*snaps[:-1], (final, f.model)], final=final, original_onnx=original_onnx,
            final_onnx=onnx, final_int8=int8, work=work / "curve", heldout=f.data.heldout_batches,
            task=str(f.source.task), example=example, latency=result.latency,
            int8_scheme=f.config.export.int8_scheme)
    except Exception as e:  # noqa: BLE001
        log.warning("operating points not measured: %s", e)
        return None

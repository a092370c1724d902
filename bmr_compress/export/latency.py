"""onnxruntime CPU latency of several models measured side by side, interleaved run by run."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import onnxruntime as ort


def cpu_session(path: str | Path, *, threads: int = 1) -> ort.InferenceSession:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def measure_latency(
    models: dict[str, str | Path],
    inputs: dict[str, np.ndarray],
    *,
    threads: int = 1,
    runs: int = 30,
    warmup: int = 3,
) -> dict[str, Any]:
    """Median/p90 ms per model; each iteration times every model once, in rotating order."""
    sessions = {name: cpu_session(p, threads=threads) for name, p in models.items()}
    feeds = {name: {i.name: inputs[i.name] for i in s.get_inputs()} for name, s in sessions.items()}
    for _ in range(warmup):
        for name, s in sessions.items():
            s.run(None, feeds[name])
    times: dict[str, list[float]] = {name: [] for name in sessions}
    names = list(sessions)
    for it in range(runs):
        k = it % len(names)
        for name in names[k:] + names[:k]:  # rotate so no model always runs first
            t0 = time.perf_counter()
            sessions[name].run(None, feeds[name])
            times[name].append((time.perf_counter() - t0) * 1e3)
    shape = {k: list(v.shape) for k, v in inputs.items()}
    out: dict[str, Any] = {"threads": threads, "runs": runs, "warmup": warmup, "input_shapes": shape,
                           "provider": "CPUExecutionProvider", "interleaved": True}
    for name, ts in times.items():
        ts_sorted = sorted(ts)
        p90 = ts_sorted[min(len(ts) - 1, int(round(0.9 * (len(ts) - 1))))]
        out[name] = {"median_ms": statistics.median(ts), "p90_ms": p90}
    return out

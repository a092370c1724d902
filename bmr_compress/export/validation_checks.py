"""The individual checks behind `validate`; each appends `Check`s to a `ValidationResult`."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bmr_compress.export.validation import (
    ValidationResult,
    ValidationSettings,
    make_inputs_like,
    max_positions,
    parity_shapes,
    sample_dims,
    to_numpy,
    torch_out,
)
from bmr_compress.tasks import Task

log = logging.getLogger(__name__)


def initializer_bytes(path: Path) -> tuple[int, int]:
    """(stored, dense) bytes of an ONNX file's initializers (sparse: values + indices)."""
    import onnx

    from bmr_compress.export.onnx_export import dense_bytes_of_sparse, stored_bytes, tensor_bytes

    proto = onnx.load(str(path), load_external_data=False)  # sizes come from dims
    dense = sum(tensor_bytes(t) for t in proto.graph.initializer)
    dense += sum(dense_bytes_of_sparse(s) for s in proto.graph.sparse_initializer)
    return stored_bytes(proto), dense


def plain_initializer_bytes(path: Path) -> int:
    """Initializer bytes written out plainly, one dense tensor per parameter: the exporter
    stores equal-valued tensors once and aliases the others with Identity nodes (an untrained
    model's LayerNorm weights, all ones), and all-zero tensors as empty sparse initializers
    (its zero biases); a fine-tune makes them differ and nonzero, so they are stored apart
    even when nothing was removed. (A tied weight is one parameter and counts once.)"""
    import onnx

    from bmr_compress.export.onnx_export import dense_bytes_of_sparse, tensor_bytes

    proto = onnx.load(str(path), load_external_data=False)
    size = {t.name: tensor_bytes(t) for t in proto.graph.initializer}
    size.update({s.values.name: dense_bytes_of_sparse(s) for s in proto.graph.sparse_initializer})
    aliases = sum(size[n.input[0]] for n in proto.graph.node
                  if n.op_type == "Identity" and n.input and n.input[0] in size)
    return sum(size.values()) + aliases


def onnx_file_bytes(path: Path) -> int:
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.exists() else 0)


def check_onnx_files(res: ValidationResult, paths: dict[str, Path]) -> bool:
    import onnx
    import onnxruntime as ort

    ok = True
    for label, path in paths.items():
        try:
            # full_check adds strict shape inference, which rejects sparse_initializer inputs
            # (ORT densifies those at load); use it on dense graphs only.
            head = onnx.load(str(path), load_external_data=False)
            onnx.checker.check_model(str(path), full_check=not head.graph.sparse_initializer)
            ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            ok &= res.add(f"onnx_checker[{label}]", True, f"{path.name}: checker and ORT load ok")
        except Exception as e:  # noqa: BLE001 - any failure is a failed check, reported
            ok &= res.add(f"onnx_checker[{label}]", False, f"{path}: {type(e).__name__}: {_one_line(e)}")
    return ok


def check_finite(res: ValidationResult, model: nn.Module) -> None:
    import torch

    bad = [n for n, t in model.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
    res.add("finite_parameters", not bad,
            "all parameters finite" if not bad else f"NaN/Inf in {len(bad)} tensors, e.g. {bad[:3]}")


def check_parity(
    res: ValidationResult, model: nn.Module, path: Path, sample: dict[str, torch.Tensor],
    st: ValidationSettings,
) -> None:
    import numpy as np

    from bmr_compress.export.latency import cpu_session

    shapes = list(st.parity_shapes) if st.parity_shapes else parity_shapes(sample, max_positions(model))
    sess = cpu_session(path)
    res.parity = {"atol": st.atol, "rtol": st.rtol, "export_shape": list(sample_dims(sample)), "shapes": []}
    worst = 0.0
    all_ok = True
    for i, (b, s) in enumerate(shapes):
        try:
            batch = make_inputs_like(sample, b, s, seed=st.seed + i)
            ref = torch_out(model, batch)
            got = sess.run(None, to_numpy(batch))[0]
            if got.shape != ref.shape:
                raise ValueError(f"ORT output shape {got.shape} != PyTorch {ref.shape}")
            err = np.abs(got - ref)
            ok = bool(np.isfinite(got).all()) and bool((err <= st.atol + st.rtol * np.abs(ref)).all())
            max_abs = float(np.nan_to_num(err, nan=np.inf).max()) if err.size else 0.0
            res.parity["shapes"].append({"batch": b, "seq": s, "max_abs_error": max_abs,
                                         "max_abs_reference": float(np.abs(ref).max()), "passed": ok})
        except Exception as e:  # noqa: BLE001
            ok, max_abs = False, float("inf")
            res.parity["shapes"].append({"batch": b, "seq": s, "error": _one_line(e), "passed": False})
        worst = max(worst, max_abs)
        all_ok &= ok
    res.parity["max_abs_error"] = worst
    res.add("onnx_parity", all_ok,
            f"ORT vs PyTorch at {shapes}: max |err| {worst:.3g} (atol {st.atol}, rtol {st.rtol})", worst)


def check_sizes(res: ValidationResult, path: Path, original: Path) -> None:
    stored_c, dense_c = initializer_bytes(path)
    stored_o, dense_o = initializer_bytes(original)
    res.sizes = {"onnx_file_bytes": {"original": onnx_file_bytes(original), "compressed": onnx_file_bytes(path)},
                 "onnx_initializer_bytes": {"original": stored_o, "compressed": stored_c},
                 "onnx_dense_initializer_bytes": {"original": dense_o, "compressed": dense_c}}
    ok = stored_c <= stored_o
    detail = f"ONNX initializer bytes {stored_o} -> {stored_c}"
    if not ok:  # what the original export stored once, or as empty sparse, may now differ
        plain = plain_initializer_bytes(original)
        ok = stored_c <= plain
        detail += f" (the original written plainly, one dense tensor per parameter: {plain})"
    res.add("size_not_larger", ok, detail, {"original": stored_o, "compressed": stored_c})


GRID_RUNS = 10  # runs per extra (batch, threads) point: an informative table, not the gate


def grid_points(grid: Sequence[tuple[int, int]], cores: int) -> list[tuple[int, int]]:
    """The (batch, threads) points to time on a machine with `cores` logical cores: a thread
    count above it is capped to it (more threads than cores measures contention, not the
    model), and the points it makes equal are timed once."""
    return list(dict.fromkeys((b, min(t, cores)) for b, t in grid))


def check_latency(
    res: ValidationResult, model: nn.Module, paths: dict[str, Path], sample: dict[str, torch.Tensor],
    st: ValidationSettings,
) -> None:
    from bmr_compress.export.latency import measure_latency

    _, s = sample_dims(sample)
    seq = st.latency_seq or s
    cap = max_positions(model)
    if seq is not None and cap is not None:
        seq = min(seq, cap)
    models = {k: str(v) for k, v in paths.items()}
    try:
        batch = make_inputs_like(sample, st.latency_batch, seq, seed=st.seed + 99)
        res.latency = measure_latency(models, to_numpy(batch), threads=st.latency_threads,
                                      runs=st.latency_runs, warmup=st.latency_warmup)
        res.latency.update({"batch": st.latency_batch, "seq": seq})
        grid = []
        for b, t in grid_points(st.latency_grid, os.cpu_count() or 1):
            if (b, t) == (st.latency_batch, st.latency_threads):
                r = res.latency
            else:
                x = to_numpy(make_inputs_like(sample, b, seq, seed=st.seed + 99))
                r = measure_latency(models, x, threads=t, runs=min(st.latency_runs, GRID_RUNS),
                                    warmup=st.latency_warmup)
            grid.append({"batch": b, "threads": t, "seq": seq, **{k: r[k] for k in models}})
        res.latency["grid"] = grid
        res.add("latency_measured", True,
                f"median {res.latency['original']['median_ms']:.3g} -> "
                f"{res.latency['compressed']['median_ms']:.3g} ms ({st.latency_threads} threads)")
    except Exception as e:  # noqa: BLE001
        res.add("latency_measured", False, f"ORT latency run failed: {_one_line(e)}")


_GATES = {  # task -> (settings field, higher is better)
    Task.CLASSIFICATION: ("min_top1_agreement", True),
    Task.EMBEDDING: ("min_cosine", True),
    Task.CAUSAL_LM: ("max_perplexity_ratio", False),
    Task.REGRESSION: ("min_r2", True),
}


def check_metric(
    res: ValidationResult, original: nn.Module, compressed: nn.Module,
    batches: Iterable[dict[str, torch.Tensor]], task: Task | str, st: ValidationSettings,
) -> None:
    from bmr_compress.export.metrics import task_metric

    task = Task.parse(task) if isinstance(task, str) else task
    key, higher = _GATES[task]
    limit = getattr(st, key)
    try:
        res.metric = task_metric(original, compressed, batches, task)
    except Exception as e:  # noqa: BLE001
        res.add("task_metric", False, f"task metric failed: {_one_line(e)}")
        return
    v = res.metric["gate"]
    ok = v >= limit if higher else v <= limit
    res.metric["threshold"] = {key: limit}
    res.add("task_metric", ok, f"{res.metric['name']} {v:.4g} ({'>=' if higher else '<='} {limit})", v)


class OrtModule(nn.Module):
    """An onnxruntime session behind a module's call, so task metrics can score ONNX models."""

    def __init__(self, session: Any) -> None:
        super().__init__()
        self.session = session
        self.names = [i.name for i in session.get_inputs()]

    def forward(self, **inputs: torch.Tensor) -> torch.Tensor:
        feed = {k: v.detach().cpu().numpy() for k, v in inputs.items() if k in self.names}
        return torch.from_numpy(self.session.run(None, feed)[0])


def check_int8(
    res: ValidationResult, path: Path, fp32_path: Path | None, sample: dict[str, torch.Tensor],
    model: nn.Module, st: ValidationSettings, *, original: nn.Module | None = None,
    batches: Iterable[dict[str, torch.Tensor]] | None = None, task: Task | str | None = None,
) -> None:
    """int8 artefact: `check_quantized` under the name int8 (res.int8)."""
    res.int8 = check_quantized(res, "int8", path, fp32_path, sample, model, st, original=original,
                               batches=batches, task=task)


def check_mixed(
    res: ValidationResult, path: Path, fp32_path: Path | None, sample: dict[str, torch.Tensor],
    model: nn.Module, st: ValidationSettings, *, original: nn.Module | None = None,
    batches: Iterable[dict[str, torch.Tensor]] | None = None, task: Task | str | None = None,
) -> None:
    """The mixed-precision artefact (model.mixed.onnx): the same checks as the int8 file,
    named mixed_precision_* (res.mixed)."""
    res.mixed = check_quantized(res, "mixed_precision", path, fp32_path, sample, model, st,
                                original=original, batches=batches, task=task)


def check_quantized(
    res: ValidationResult, label: str, path: Path, fp32_path: Path | None,
    sample: dict[str, torch.Tensor], model: nn.Module, st: ValidationSettings, *,
    original: nn.Module | None = None, batches: Iterable[dict[str, torch.Tensor]] | None = None,
    task: Task | str | None = None,
) -> dict[str, Any] | None:
    """A quantised artefact: loads, finite, and, gating, the task metric of the quantised ONNX
    model against the original on held-out data (same threshold as the compressed model). The
    raw relative L2 error against the fp32 ONNX at random inputs of two shapes unlike the
    export sample is recorded; it gates (<= st.int8_max_rel_error) only when no held-out data
    is given (int8 arithmetic quantises activations at run time, so outlier hidden dimensions
    make raw token states look worse than what the task sees). Returns what it measured."""
    import numpy as np

    from bmr_compress.export.latency import cpu_session
    from bmr_compress.export.metrics import task_metric

    if not check_onnx_files(res, {label: path}) or fp32_path is None:
        return None
    info: dict[str, Any] | None = None
    try:
        q, f = cpu_session(path), cpu_session(fp32_path)
        errs = []
        for i, (b, s) in enumerate(parity_shapes(sample, max_positions(model))):
            feed = to_numpy(make_inputs_like(sample, b, s, seed=st.seed + 10 + i))
            yq, yf = q.run(None, feed)[0], f.run(None, feed)[0]
            errs.append(float(np.linalg.norm(yq - yf) / max(float(np.linalg.norm(yf)), 1e-12)))
        worst = max(errs)
        stored, _ = initializer_bytes(path)
        info = {"path": path.name, "file_bytes": onnx_file_bytes(path), "initializer_bytes": stored,
                "rel_error_vs_fp32": errs, "max_rel_error": st.int8_max_rel_error}
        if original is not None and batches is not None and task is not None:
            t = Task.parse(task) if isinstance(task, str) else task
            key, higher = _GATES[t]
            limit = getattr(st, key)
            metric = task_metric(original, OrtModule(q), batches, t)
            info["metric"] = metric
            v = metric["gate"]
            ok = bool(np.isfinite(v)) and (v >= limit if higher else v <= limit)
            res.add(f"{label}_metric", ok, f"{label} {metric['name']} {v:.4g} vs original "
                    f"({'>=' if higher else '<='} {limit}); raw relative L2 vs fp32 {worst:.3g}", v)
        else:
            res.add(f"{label}_parity", bool(np.isfinite(worst)) and worst <= st.int8_max_rel_error,
                    f"{label} vs fp32 ORT relative L2 error {worst:.3g} "
                    f"(<= {st.int8_max_rel_error})", worst)
    except Exception as e:  # noqa: BLE001
        res.add(f"{label}_parity", False, f"{label} validation failed: {_one_line(e)}")
    return info


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:300]




def check_st_embeddings(
    res: ValidationResult, out_dir: Path, model: nn.Module, tokenizer: Any, texts: list[str],
    *, onnx_path: Path | None = None, min_cosine: float = 1 - 1e-4,
) -> dict[str, Any]:
    """A sentence-transformers output: `SentenceTransformer(out_dir)` (and its ONNX backend when
    optimum is installed) must give the embeddings of the tool's own path (our ONNX model on
    onnxruntime + the folder's pooling/normalisation; PyTorch when no ONNX is given)."""
    import importlib.util

    import numpy as np

    from bmr_compress.export.latency import cpu_session
    from bmr_compress.export.st_layout import pool, read_st_pipeline

    st = read_st_pipeline(out_dir)
    info: dict[str, Any] = {"texts": len(texts)}
    if st is None:
        return info
    info["pipeline"] = st.describe()
    if importlib.util.find_spec("sentence_transformers") is None:
        res.add("sentence_transformers", True, "sentence-transformers not installed: not checked")
        return info
    foreign = [str(m.get("type")) for m in st.modules if isinstance(m, dict)
               and not str(m.get("type", "")).startswith("sentence_transformers.")]
    if foreign:  # SentenceTransformer(dir) would import whatever modules.json names
        res.add("sentence_transformers", False, f"modules.json names code outside sentence-transformers "
                f"({foreign[0][:80]}): not loaded")
        return info
    try:
        enc = tokenizer(texts, padding=True, truncation=True, max_length=st.max_seq_length or 512,
                        return_tensors="np")
        feed = {k: np.asarray(v).astype(np.int64) for k, v in enc.items()}
        if onnx_path is not None:
            sess = cpu_session(onnx_path)
            hidden = sess.run(None, {i.name: feed[i.name] for i in sess.get_inputs()})[0]
        else:
            hidden = torch_out(model, {k: torch.from_numpy(v) for k, v in feed.items()
                                        if k in ("input_ids", "attention_mask", "token_type_ids")})
        ref = pool(hidden, feed["attention_mask"], st)
        paths = {"torch": _st_encode(out_dir, texts, None)}
        if importlib.util.find_spec("optimum") is not None:
            paths["onnx"] = _st_encode(out_dir, texts, "onnx")
        worst = 1.0
        for name, emb in paths.items():
            cos = (emb * ref).sum(1) / np.maximum(np.linalg.norm(emb, axis=1) * np.linalg.norm(ref, axis=1), 1e-12)
            info[f"min_cosine_{name}"] = float(cos.min())
            worst = min(worst, float(cos.min()))
        norms = np.linalg.norm(paths["torch"], axis=1)
        info["norm_range"] = [float(norms.min()), float(norms.max())]
        ok = worst >= min_cosine and (not st.normalize or bool(np.allclose(norms, 1.0, atol=1e-4)))
        res.add("sentence_transformers", ok,
                f"SentenceTransformer({', '.join(paths)}) vs tool embeddings ({st.describe()}): "
                f"min cosine {worst:.6f} (>= {min_cosine}), norms {norms.min():.4f}..{norms.max():.4f}",
                worst)
    except Exception as e:  # noqa: BLE001 - any failure to load or encode is a failed check
        res.add("sentence_transformers", False, f"SentenceTransformer({out_dir.name}) failed: {_one_line(e)}")
    return info


def _st_encode(out_dir: Path, texts: list[str], backend: str | None) -> Any:
    import warnings

    from sentence_transformers import SentenceTransformer

    kw: dict[str, Any] = {"device": "cpu", "local_files_only": True}
    if backend:
        kw["backend"] = backend
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # third-party deprecation notes are not our check
        m = SentenceTransformer(str(out_dir), **kw)
        return m.encode(texts, convert_to_numpy=True, batch_size=len(texts))

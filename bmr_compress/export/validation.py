"""Validation gate: checker, ORT parity at unseen shapes, task metric, finiteness, sizes, latency.

`validate` returns a `ValidationResult` with one `Check` per gate; by default it raises
`ValidationFailed` (exit code 1; the result is attached as ``err.result``) when any check fails,
so nothing downstream (report publishing, push) runs on a bad export.

Parity tolerance (documented default): ``|ort - torch| <= atol + rtol * |torch|`` element-wise
with atol=1e-4, rtol=1e-3 for float32 exports: ORT fuses attention/LayerNorm/GELU kernels, which
moves float32 results by ~1e-6 relative on tiny models and ~1e-5..1e-4 on 6-layer encoders.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bmr_compress.errors import ValidationFailed
from bmr_compress.tasks import Task, output_tensor

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ValidationSettings:
    atol: float = 1e-4
    rtol: float = 1e-3
    parity_shapes: tuple[tuple[int, int], ...] | None = None  # (batch, seq); None: derived
    min_top1_agreement: float = 0.90  # classification
    min_cosine: float = 0.90  # embedding
    max_perplexity_ratio: float = 1.5  # causal_lm
    min_r2: float = 0.90  # regression (compressed vs original outputs)
    int8_max_rel_error: float = 0.15  # ||int8 - fp32|| / ||fp32|| on ORT outputs
    latency_threads: int = 1
    latency_batch: int = 1
    latency_seq: int | None = None  # None: the export sample's sequence length
    latency_runs: int = 30
    latency_warmup: int = 3
    # (batch, threads) pairs also timed, every model side by side (the first row is the gate's)
    latency_grid: tuple[tuple[int, int], ...] = ((1, 1), (8, 1), (1, 4), (8, 4))
    seed: int = 0


@dataclass
class Check:
    name: str
    passed: bool
    detail: str
    value: Any = None


@dataclass
class ValidationResult:
    checks: list[Check] = field(default_factory=list)
    parity: dict[str, Any] = field(default_factory=dict)
    metric: dict[str, Any] = field(default_factory=dict)
    sizes: dict[str, Any] = field(default_factory=dict)
    latency: dict[str, Any] = field(default_factory=dict)
    int8: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    def add(self, name: str, passed: bool, detail: str, value: Any = None) -> bool:
        self.checks.append(Check(name, bool(passed), detail, value))
        (log.info if passed else log.error)("validation %s: %s", name, detail)
        return bool(passed)

    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "checks": [asdict(c) for c in self.checks],
                "parity": self.parity, "metric": self.metric, "sizes": self.sizes,
                "latency": self.latency, "int8": self.int8}

    def raise_if_failed(self) -> None:
        if not self.passed:
            what = "; ".join(f"{c.name}: {c.detail}" for c in self.failures()) or "no checks ran"
            err = ValidationFailed(f"validation failed: {what}")
            err.result = self  # type: ignore[attr-defined]
            raise err


# ---------------------------------------------------------------- inputs at other shapes


def make_inputs_like(
    sample: dict[str, torch.Tensor], batch: int, seq: int | None, *, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Inputs with the sample's names/dtypes at (batch, seq); seq applies to token inputs only."""
    import torch

    from bmr_compress.export.onnx_export import SEQUENCE_INPUTS

    g = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for name, t in sample.items():
        shape = [batch, *t.shape[1:]]
        if seq is not None and name in SEQUENCE_INPUTS and t.dim() >= 2:
            shape[1] = seq
        if name == "attention_mask":
            x = torch.ones(shape, dtype=t.dtype)
            if shape[1] > 2:
                x[-1, -2:] = 0  # one padded row exercises the mask
        elif name in ("token_type_ids", "position_ids"):
            x = torch.zeros(shape, dtype=t.dtype) if name == "token_type_ids" else (
                torch.arange(shape[1], dtype=t.dtype).expand(shape).contiguous())
        elif t.is_floating_point():
            x = torch.randn(shape, generator=g).to(t.dtype)
        else:
            hi = max(int(t.max()) + 1, 2)
            x = torch.randint(0, hi, shape, generator=g).to(t.dtype)
        out[name] = x
    return out


def _sample_dims(sample: dict[str, torch.Tensor]) -> tuple[int, int | None]:
    from bmr_compress.export.onnx_export import SEQUENCE_INPUTS

    first = next(iter(sample.values()))
    seq = next((int(t.shape[1]) for n, t in sample.items() if n in SEQUENCE_INPUTS and t.dim() >= 2), None)
    return int(first.shape[0]), seq


def parity_shapes(sample: dict[str, torch.Tensor], max_seq: int | None) -> list[tuple[int, int | None]]:
    """Two (batch, seq) pairs, both unlike the export sample's."""
    b, s = _sample_dims(sample)
    if s is None:
        return [(b + 1, None), (b + 3, None)]
    cap = max_seq or 4 * s + 8
    seqs = [c for c in dict.fromkeys((s + 3, 2 * s + 1, s + 5, s - 1, s - 2)) if 1 <= c <= cap and c != s]
    if len(seqs) < 2:
        raise ValueError(f"cannot find two sequence lengths unlike {s} within {cap}")
    return [(b + 1, seqs[0]), (1 if b != 1 else 3, seqs[1])]


def max_positions(model: nn.Module) -> int | None:
    cfg = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions"):
        v = getattr(cfg, key, None)
        if isinstance(v, int):
            return v
    return None


def _to_numpy(batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in batch.items()}


def _torch_out(model: nn.Module, batch: dict[str, torch.Tensor]) -> np.ndarray:
    import torch

    from bmr_compress.export.onnx_export import _is_hf, hf_call_kwargs

    kw: dict[str, Any] = dict(batch)
    if _is_hf(model):
        kw.update(hf_call_kwargs(model))
    with torch.no_grad():
        return output_tensor(model(**kw)).float().cpu().numpy()


# ---------------------------------------------------------------- the gate


def validate(
    original: nn.Module,
    compressed: nn.Module,
    *,
    onnx_path: str | Path,
    original_onnx_path: str | Path,
    sample_inputs: dict[str, torch.Tensor],
    heldout_batches: Iterable[dict[str, torch.Tensor]],
    task: Task | str,
    settings: ValidationSettings | None = None,
    int8_path: str | Path | None = None,
    raise_on_failure: bool = True,
) -> ValidationResult:
    """Run every check; a check that errors counts as failed (with the error as its detail).

    `sample_inputs` is the batch the ONNX files were exported with (parity uses other shapes);
    `original_onnx_path` is the uncompressed export (size and latency baseline).
    """
    from bmr_compress.export import checks

    st = settings or ValidationSettings()
    res = ValidationResult()
    onnx_path, original_onnx_path = Path(onnx_path), Path(original_onnx_path)
    ok_files = checks.check_onnx_files(res, {"compressed": onnx_path, "original": original_onnx_path})
    checks.check_finite(res, compressed)
    if ok_files:
        checks.check_parity(res, compressed, onnx_path, sample_inputs, st)
        checks.check_sizes(res, onnx_path, original_onnx_path)
        timed = {"original": original_onnx_path, "compressed": onnx_path}
        if int8_path is not None and Path(int8_path).is_file():
            timed["int8"] = Path(int8_path)  # int8 latency beside fp32, same run
        checks.check_latency(res, compressed, timed, sample_inputs, st)
    checks.check_metric(res, original, compressed, heldout_batches, task, st)
    if int8_path is not None:
        checks.check_int8(res, Path(int8_path), onnx_path if ok_files else None, sample_inputs, compressed, st,
                          original=original, batches=heldout_batches, task=task)
    if raise_on_failure:
        res.raise_if_failed()
    return res

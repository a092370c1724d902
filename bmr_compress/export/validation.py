"""Validation gate data: settings, results, and the inputs the checks run at
(export.validation_checks runs the checks, export.gate.validate runs them all).

`validate` returns a `ValidationResult` with one `Check` per gate; by default it raises
`ValidationFailed` (exit code 1; the result is attached as ``err.result``) when any check fails,
so nothing downstream (report publishing, push) runs on a bad export.

Parity tolerance (documented default): ``|ort - torch| <= atol + rtol * |torch|`` element-wise
with atol=1e-4, rtol=1e-3 for float32 exports: ORT fuses attention/LayerNorm/GELU kernels, which
moves float32 results by ~1e-6 relative on tiny models and ~1e-5..1e-4 on 6-layer encoders.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from bmr_compress.errors import ValidationFailed
from bmr_compress.tasks import output_tensor

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
    mixed: dict[str, Any] | None = None  # model.mixed.onnx (--mixed-precision)

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
                "latency": self.latency, "int8": self.int8, "mixed": self.mixed}

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


def sample_dims(sample: dict[str, torch.Tensor]) -> tuple[int, int | None]:
    from bmr_compress.export.onnx_export import SEQUENCE_INPUTS

    first = next(iter(sample.values()))
    seq = next((int(t.shape[1]) for n, t in sample.items() if n in SEQUENCE_INPUTS and t.dim() >= 2), None)
    return int(first.shape[0]), seq


def parity_shapes(sample: dict[str, torch.Tensor], max_seq: int | None) -> list[tuple[int, int | None]]:
    """Two (batch, seq) pairs, both unlike the export sample's."""
    b, s = sample_dims(sample)
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


def to_numpy(batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in batch.items()}


def torch_out(model: nn.Module, batch: dict[str, torch.Tensor]) -> np.ndarray:
    import torch

    from bmr_compress.export.onnx_export import hf_call_kwargs, is_hf

    kw: dict[str, Any] = dict(batch)
    if is_hf(model):
        kw.update(hf_call_kwargs(model))
    with torch.no_grad():
        return output_tensor(model(**kw)).float().cpu().numpy()

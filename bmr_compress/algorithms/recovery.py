"""Recovery after a cut: a short distillation of the reduced model towards the original.

The refit of the prune → refit → re-score rounds (Beckers et al.): the survivors' means are
free to move, the original model is the teacher, no labels are needed. The loss is the
relative output distortion δ = ‖f − f₀‖² / scale² of tasks.probe_output (for normalised
embeddings 2(1 − cos)), the quantity the user's tolerance bounds; for a classifier whose
calibration batches carry labels, plus their cross-entropy (supervised when labels are given).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecoveryRecord:
    steps: int
    seconds: float
    first_loss: float | None
    last_loss: float | None


def distortion(model: nn.Module, original: nn.Module, batches: Sequence[Mapping[str, Any]],
               task: str, scale: float = 1.0) -> float:
    """Measured δ = E_n ‖f_n − f0_n‖² / scale² over `batches` (no gradient)."""
    from bmr_compress.tasks import probe_output

    total, n = 0.0, 0
    with torch.no_grad():
        for b in batches:
            f, f0 = probe_output(model, b, task), probe_output(original, b, task)
            total += float(((f - f0).double() ** 2).sum())
            n += f.shape[0]
    return total / max(n, 1) / scale ** 2


def recover_(model: nn.Module, original: nn.Module, batches: Sequence[Mapping[str, Any]],
             task: str, *, steps: int, lr: float = 1e-4, scale: float = 1.0,
             progress: bool = False) -> RecoveryRecord:
    """Distil `model` towards `original` for `steps` Adam steps over `batches` (cycled).

    Zero-width or already-removed weights stay removed: the cut model has no slot for them.
    Gradients flow with the model in eval mode (see below).
    """
    from bmr_compress.tasks import probe_output

    if steps <= 0 or not batches:
        return RecoveryRecord(0, 0.0, None, None)
    params = [p for p in model.parameters() if p.is_floating_point()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr)
    # the student stays in eval mode (no dropout, normalisation statistics frozen): it is fitted
    # to a deterministic teacher, and dropout's noise only hides the distortion the recovery
    # should remove (all-MiniLM-L6-v2, first round's check distortion after 100 steps: 0.064
    # in eval mode, 0.076 with dropout)
    model.eval()
    t0, first, last = time.perf_counter(), None, None
    bar = _bar(steps, progress)
    try:
        for step in range(steps):
            b = batches[step % len(batches)]
            inputs = {k: v for k, v in b.items() if k != "labels"}
            with torch.no_grad():
                f0 = probe_output(original, inputs, task)
            f = probe_output(model, inputs, task)
            loss = ((f - f0) ** 2).sum(-1).mean() / scale ** 2
            if task == "classification" and "labels" in b:  # supervised when labels are given
                loss = loss + nn.functional.cross_entropy(f, b["labels"].long(), ignore_index=-100)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            last = float(loss.detach())
            first = last if first is None else first
            if bar is not None:
                bar.update(1)
                bar.set_postfix(distortion=f"{last:.3g}")
    finally:
        if bar is not None:
            bar.close()
        model.eval()
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)
            p.grad = None
    seconds = time.perf_counter() - t0
    log.info("recovery: %d steps in %.0f s, distortion %.3g -> %.3g", steps, seconds,
             first or 0.0, last or 0.0)
    return RecoveryRecord(steps, seconds, first, last)


def _bar(total: int, on: bool) -> Any:
    import sys

    if not on or not sys.stderr.isatty():
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="recovery", unit="step", leave=False)

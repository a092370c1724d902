"""Recovery after a cut: a short distillation of the reduced model towards the original.

The refit of the prune → refit → re-score rounds (Beckers et al.): the survivors' means are
free to move, the original model is the teacher, no labels are needed. The loss is the
relative output distortion δ = ‖f − f₀‖² / scale² of tasks.probe_output (for normalised
embeddings 2(1 − cos)), the quantity the user's tolerance bounds; for a classifier whose
calibration batches carry labels, plus their cross-entropy (supervised when labels are given);
optionally plus a layer-wise term on every block's output (algorithms/targets.recovery_loss). The
teacher's side of the loss is computed once per batch (algorithms/targets.TeacherTargets).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from bmr_compress.algorithms.targets import (
    LossShare, TeacherTargets, forward_targets, recovery_loss, takes_hidden_states,
)
from bmr_compress.variational.ddp import current_shard, local_batches

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecoveryRecord:
    steps: int
    seconds: float
    first_loss: float | None
    last_loss: float | None


def distortion(model: nn.Module, original: nn.Module, batches: Sequence[Mapping[str, Any]],
               task: str, scale: float = 1.0, *,
               reference: Sequence[torch.Tensor] | None = None) -> float:
    """Measured δ = E_n ‖f_n − f0_n‖² / scale² over `batches` (no gradient). `reference`:
    the original's outputs on `batches` (`probe_outputs`), when computed once for many calls.
    Under a Shard each process measures its slices (`reference` holds the original's outputs
    on them) and the sums are added."""
    from bmr_compress.tasks import probe_output

    total, n = 0.0, 0
    shard = current_shard()
    with torch.no_grad():
        for i, b in enumerate(batches):
            b = b if shard is None else shard.local(b)
            f = probe_output(model, b, task)
            f0 = reference[i] if reference is not None else probe_output(original, b, task)
            total += float(((f - f0).double() ** 2).sum())
            n += f.shape[0]
    if shard is not None:
        total, n = shard.total([total, n])
    return total / max(n, 1) / scale ** 2


def probe_outputs(original: nn.Module, batches: Sequence[Mapping[str, Any]],
                  task: str) -> list[torch.Tensor]:
    """The original's outputs on `batches`, for `distortion(..., reference=...)` (under a
    Shard: on this process's slices of them)."""
    from bmr_compress.tasks import probe_output

    with torch.no_grad():
        return [probe_output(original, b, task) for b in local_batches(batches)]


SCHEDULES = ("constant", "cosine")


def recover_(model: nn.Module, original: nn.Module, batches: Sequence[Mapping[str, Any]],
             task: str, *, steps: int, lr: float = 1e-4, scale: float = 1.0,
             progress: bool = False, targets: TeacherTargets | None = None,
             hidden_weight: float = 0.0, schedule: str = "constant",
             keep_zeros: bool = False) -> RecoveryRecord:
    """Distil `model` towards `original` for `steps` Adam steps over `batches` (cycled).

    `targets`: the teacher's outputs on `batches` (algorithms/targets.py), computed here when not
    given; pass them to reuse one teacher pass over many calls. `hidden_weight` > 0 adds the
    layer-wise loss (every block's output, normalised by the teacher's; the model must keep
    its depth and width of the residual stream). `schedule`: "constant" lr, or "cosine"
    (5 % linear warm-up, then cosine decay to 0). `keep_zeros`: weights that are exactly zero
    stay zero (masked, unstructured cuts). Removed units stay removed: the cut model has no
    slot for them. Gradients flow with the model in eval mode (see below).

    Under a Shard (variational.ddp: several processes, each holding every batch) each process
    computes its slice of each batch (and `targets` are for those slices), the gradients are
    summed into the whole batch's, and every process ends with rank 0's weights.
    """
    if steps <= 0 or not batches:
        return RecoveryRecord(0, 0.0, None, None)
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, not {schedule!r}")
    hidden = hidden_weight > 0 and takes_hidden_states(model)
    if hidden_weight > 0 and not hidden:
        log.warning("recovery: %s gives no hidden states; the layer-wise loss is off (output "
                    "only)", type(model).__name__)
    shard = current_shard()
    local = batches if shard is None else [shard.local(b) for b in batches]
    if targets is None or len(targets) != len(batches) or (hidden and not targets.hidden):
        targets = TeacherTargets.compute(original, local, task, hidden=hidden)
    params = [p for p in model.parameters() if p.is_floating_point()]
    flags = [p.requires_grad for p in params]
    keep = [p != 0 for p in params] if keep_zeros else None
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr)
    # the student stays in eval mode (no dropout, normalisation statistics frozen): it is fitted
    # to a deterministic teacher, and dropout's noise only hides the distortion the recovery
    # should remove (all-MiniLM-L6-v2, first round's check distortion after 100 steps: 0.064
    # in eval mode, 0.076 with dropout)
    model.eval()
    t0, first, last = time.perf_counter(), None, None
    bar = _bar(steps, progress and (shard is None or shard.rank == 0))
    try:
        for step in range(steps):
            for group in opt.param_groups:
                group["lr"] = lr * lr_factor(schedule, step, steps)
            i = step % len(batches)
            b = local[i]
            share = None if shard is None else LossShare.of(batches[i], shard.sum_)
            loss = recovery_loss(forward_targets(model, b, task, hidden), targets[i], b, task,
                                 scale, hidden_weight if hidden else 0.0, share=share)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if shard is not None:  # the whole batch's gradient and loss on every process
                loss = torch.tensor(shard.sum_grads_(params, loss))
            opt.step()
            if keep is not None:
                with torch.no_grad():
                    for p, k in zip(params, keep, strict=True):
                        p.mul_(k)
            last = float(loss.detach())
            first = last if first is None else first
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{last:.3g}")
    finally:
        if bar is not None:
            bar.close()
        model.eval()
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)
            p.grad = None
    if shard is not None:  # the same sums give the same steps; this makes it certain
        shard.broadcast_params_(params)
    seconds = time.perf_counter() - t0
    log.info("recovery: %d steps in %.0f s, loss %.3g -> %.3g", steps, seconds,
             first or 0.0, last or 0.0)
    return RecoveryRecord(steps, seconds, first, last)


def lr_factor(schedule: str, step: int, steps: int) -> float:
    """The learning rate of `step` (0-based) of `steps`, as a fraction of the peak."""
    if schedule == "constant":
        return 1.0
    warm = max(1, steps // 20)
    if step < warm:
        return (step + 1) / warm
    return 0.5 * (1.0 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))


def _bar(total: int, on: bool) -> Any:
    import sys

    if not on or not sys.stderr.isatty():
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="recovery", unit="step", leave=False)

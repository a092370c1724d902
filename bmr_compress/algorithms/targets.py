"""The frozen teacher's outputs for the recovery, computed once per batch and cached.

The original model never changes during a reduction, so its probe output (and, for the
layer-wise loss, its hidden states) on the calibration batches are computed once and reused
by every recovery step of every round instead of a teacher forward per step. Kept in memory
while small; above ``max_memory_bytes`` each batch's targets go to a safetensors file in a
temporary folder (removed with the object) and are read back when that batch comes round.

Target keys: ``output`` (examples, m) = tasks.probe_output; ``hidden.<l>`` (examples, tokens,
d) = the residual stream after block l (l = 1..L), present when hidden states are cached.
"""

from __future__ import annotations

import inspect
import logging
import tempfile
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

MAX_MEMORY_BYTES = 256 * 2 ** 20


def takes_hidden_states(model: nn.Module) -> bool:
    """Whether `model`'s forward returns hidden states on ``output_hidden_states=True``: it
    names the argument (transformers 4), or it is a transformers model whose forward takes
    it through ``**kwargs`` (transformers 5)."""
    params = inspect.signature(model.forward).parameters
    if "output_hidden_states" in params:
        return True
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    return var_kw and any(c.__name__ == "PreTrainedModel" for c in type(model).__mro__)


def forward_targets(model: nn.Module, batch: Mapping[str, Any], task: str,
                    hidden: bool) -> dict[str, torch.Tensor]:
    """{"output": probe output, "hidden.<l>": block l's output} of one forward of `model`
    (with whatever gradient mode the caller set)."""
    from bmr_compress.tasks import probe_output

    inputs = {k: v for k, v in batch.items() if k != "labels"}
    if not hidden:
        return {"output": probe_output(model, inputs, task)}
    seen: list[Any] = []
    handle = model.register_forward_hook(lambda _m, _a, out: seen.append(out))
    try:
        f = probe_output(model, {**inputs, "output_hidden_states": True}, task)
    finally:
        handle.remove()
    states = getattr(seen[-1], "hidden_states", None) if seen else None
    if not states:
        raise ValueError(f"{type(model).__name__} returned no hidden states")
    return {"output": f, **{f"hidden.{i}": h for i, h in enumerate(states) if i > 0}}


class TeacherTargets:
    """Per-batch teacher targets, index-aligned with the batches they were computed on."""

    def __init__(self, task: str, hidden: bool) -> None:
        self.task, self.hidden = task, hidden
        self._memory: list[dict[str, torch.Tensor] | None] = []
        self._files: list[Path | None] = []
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self.nbytes = 0

    @classmethod
    def compute(cls, original: nn.Module, batches: Sequence[Mapping[str, Any]], task: str, *,
                hidden: bool = False, max_memory_bytes: int = MAX_MEMORY_BYTES) -> TeacherTargets:
        """One no-grad forward of `original` per batch; on disk once past `max_memory_bytes`."""
        out = cls(task, hidden)
        was_training = original.training
        original.eval()
        with torch.no_grad():
            for b in batches:
                t = {k: v.detach().contiguous() for k, v in forward_targets(original, b, task, hidden).items()}
                size = sum(v.numel() * v.element_size() for v in t.values())
                out._add(t, spill=out.nbytes + size > max_memory_bytes)
                out.nbytes += size
        original.train(was_training)
        log.info("teacher targets: %d batches, %.0f MB%s", len(out), out.nbytes / 2 ** 20,
                 " (partly on disk)" if out._dir is not None else "")
        return out

    def _add(self, targets: dict[str, torch.Tensor], spill: bool) -> None:
        if not spill:
            self._memory.append(targets)
            self._files.append(None)
            return
        from safetensors.torch import save_file

        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="bmr-teacher-")
            weakref.finalize(self, self._dir.cleanup)
        path = Path(self._dir.name) / f"{len(self._files)}.safetensors"
        save_file(targets, str(path))
        self._memory.append(None)
        self._files.append(path)

    def __len__(self) -> int:
        return len(self._memory)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        kept = self._memory[i]
        if kept is not None:
            return kept
        from safetensors.torch import load_file

        path = self._files[i]
        assert path is not None
        return load_file(str(path))

    @property
    def on_disk(self) -> bool:
        return self._dir is not None


@dataclass(frozen=True)
class LossShare:
    """One process's part of a global batch's loss (several processes, variational.ddp):
    every term is normalised by the whole batch's counts, so the parts of all processes add
    up to the loss of the whole batch, and so do their gradients."""

    examples: int  # examples in the whole batch
    labelled: int  # labels other than -100 in the whole batch
    sum_: Callable[[torch.Tensor], None]  # in place: the sum over the processes

    @classmethod
    def of(cls, batch: Mapping[str, Any], sum_: Callable[[torch.Tensor], None]) -> LossShare:
        """The share for the whole batch `batch` (every process holds all of it)."""
        n = next(int(v.shape[0]) for v in batch.values()
                 if isinstance(v, torch.Tensor) and v.dim() > 0)
        labels = batch.get("labels")
        return cls(n, int((labels != -100).sum()) if labels is not None else 0, sum_)


def recovery_loss(student: Mapping[str, torch.Tensor], teacher: Mapping[str, torch.Tensor],
                  batch: Mapping[str, Any], task: str, scale: float,
                  hidden_weight: float = 0.0, *, share: LossShare | None = None) -> torch.Tensor:
    """E_n ‖f_n − f0_n‖² / scale² (+ cross-entropy for a labelled classifier) + hidden_weight ·
    the mean over blocks of ‖h_l − h0_l‖² / ‖h0_l‖² on the real (unpadded) tokens.

    `share`: `batch` is this process's slice of a larger batch; the result is its part of
    that batch's loss (LossShare)."""
    if share is not None:
        return _shared_loss(student, teacher, batch, task, scale, hidden_weight, share)
    f, f0 = student["output"], teacher["output"]
    loss = ((f - f0) ** 2).sum(-1).mean() / scale ** 2
    if task == "classification" and "labels" in batch:  # supervised when labels are given
        loss = loss + nn.functional.cross_entropy(f, batch["labels"].long(), ignore_index=-100)
    keys = [k for k in teacher if k.startswith("hidden.")]
    if hidden_weight > 0 and keys:
        mask = batch.get("attention_mask")
        terms = []
        for k in keys:
            h, h0 = student[k], teacher[k]
            w = (mask.to(h.dtype).unsqueeze(-1) if mask is not None and mask.shape == h.shape[:2]
                 else torch.ones_like(h[..., :1]))
            terms.append((((h - h0) ** 2) * w).sum() / ((h0 ** 2) * w).sum().clamp_min(1e-12))
        loss = loss + hidden_weight * torch.stack(terms).mean()
    return loss


def _shared_loss(student: Mapping[str, torch.Tensor], teacher: Mapping[str, torch.Tensor],
                 batch: Mapping[str, Any], task: str, scale: float, hidden_weight: float,
                 share: LossShare) -> torch.Tensor:
    """recovery_loss's terms as sums over this slice, each divided by the whole batch's
    normaliser (examples, labels, and the teacher's hidden norms summed over the processes)."""
    f, f0 = student["output"], teacher["output"]
    loss = ((f - f0) ** 2).sum() / share.examples / scale ** 2
    if task == "classification" and "labels" in batch:
        ce = nn.functional.cross_entropy(f, batch["labels"].long(), ignore_index=-100,
                                         reduction="sum")
        loss = loss + ce / max(share.labelled, 1)
    keys = [k for k in teacher if k.startswith("hidden.")]
    if hidden_weight > 0 and keys:
        mask = batch.get("attention_mask")
        nums, dens = [], []
        for k in keys:
            h, h0 = student[k], teacher[k]
            w = (mask.to(h.dtype).unsqueeze(-1) if mask is not None and mask.shape == h.shape[:2]
                 else torch.ones_like(h[..., :1]))
            nums.append((((h - h0) ** 2) * w).sum())
            dens.append(((h0 ** 2) * w).sum().detach())
        den = torch.stack(dens)
        share.sum_(den)  # the whole batch's ‖h0_l‖², the same on every process
        loss = loss + hidden_weight * (torch.stack(nums) / den.clamp_min(1e-12)).mean()
    return loss

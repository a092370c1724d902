"""What a model's output means: task kinds, output selection and pooling.

Shared by the fine-tune (distillation loss), validation (task metric) and export
(output names). See docs/INTERNALS.md, "Batches, outputs and tasks".
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


class Task(str, enum.Enum):
    CLASSIFICATION = "classification"  # logits over classes; metric: accuracy / top-1 agreement
    REGRESSION = "regression"  # real-valued outputs; metric: R^2 / RMSE
    EMBEDDING = "embedding"  # last_hidden_state, mean-pooled; metric: cosine + NN agreement
    CAUSAL_LM = "causal_lm"  # next-token logits; metric: perplexity ratio

    @classmethod
    def parse(cls, value: str) -> Task:
        try:
            return cls(value)
        except ValueError:
            from bmr_compress.errors import InputError

            choices = ", ".join(t.value for t in cls)
            raise InputError(f"unknown task {value!r} (choose one of: {choices})") from None


def output_tensor(out: Any) -> torch.Tensor:
    """The task output of a forward pass: a tensor, else `.logits`, else `.last_hidden_state`."""
    import torch

    if isinstance(out, torch.Tensor):
        return out
    for key in ("logits", "last_hidden_state"):
        value = getattr(out, key, None)
        if value is None and isinstance(out, dict):
            value = out.get(key)
        if isinstance(value, torch.Tensor):
            return value
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise TypeError(f"cannot find a tensor output in {type(out).__name__}")


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Sentence embedding: mean of token states over unmasked positions. (B, T, H) -> (B, H)."""
    if attention_mask is None:
        return hidden.mean(dim=1)
    m = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp_min(1e-9)


def strip_labels(batch: Mapping[str, Any]) -> dict[str, Any]:
    """The model's inputs of a batch (its "labels" entry dropped)."""
    return {k: v for k, v in batch.items() if k != "labels"}


def probe_output(model: Any, batch: dict[str, Any], task: str) -> torch.Tensor:
    """The output whose distortion the user's tolerance bounds, as (examples, m).

    embedding: the L2-normalised mean-pooled sentence vector (so E‖Δf‖² = 2(1 − cos) for a
    small change); classification / causal LM: logits centred over classes (softmax does not
    see a shift), padding positions zeroed; regression: the raw outputs.
    """
    import torch

    inputs = {k: v for k, v in batch.items() if k != "labels"}
    out = output_tensor(model(**inputs))
    mask = inputs.get("attention_mask")
    if task == Task.EMBEDDING.value and out.dim() == 3:
        return torch.nn.functional.normalize(mean_pool(out, mask), dim=-1)
    if task in (Task.CLASSIFICATION.value, Task.CAUSAL_LM.value):
        out = out - out.mean(-1, keepdim=True)
        if out.dim() == 3 and mask is not None:
            out = out * mask.to(out.dtype).unsqueeze(-1)
    return out.reshape(out.shape[0], -1)

"""A BERT-like self-attention block whose heads were all removed (docs/theory.md §7c).

The branch then adds only its output projection's bias: the attention output dense has
in_features 0 and a zero-width Linear returns its bias (in torch and in onnxruntime). The
modeling code cannot run zero heads itself (it reshapes the projections to (…, −1, head
size), ambiguous for an empty tensor), so the family adapter swaps this module in for the
self-attention when its query has no rows left, and the original back when a padded twin
gives it rows again (cutting/hf_layout.py). The zero-width query/key/value projections stay,
under the same names, so the state dict, the manifest's shapes and the adapter's view of the
layer are those of any other cut.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class RemovedAttention(nn.Module):
    """Stands in for a self-attention module with no heads: a zero-width context, and the
    same call signature and (context, attention weights) return as the module it replaces."""

    def __init__(self, original: nn.Module) -> None:
        super().__init__()
        self.query, self.key, self.value = original.query, original.key, original.value
        self.attention_head_size = int(original.attention_head_size)
        self.num_attention_heads = 0
        self.all_head_size = 0
        self.__dict__["_original"] = original  # not a submodule: put back by `restore`

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any,
                ) -> tuple[torch.Tensor, None]:
        return hidden_states[..., :0], None  # (batch, seq, 0): no head contributes

    def restore(self) -> nn.Module:
        """The original self-attention module, holding this one's (current) projections."""
        orig = self.__dict__["_original"]
        orig.query, orig.key, orig.value = self.query, self.key, self.value
        return orig


def swap_attention_(owner: nn.Module, attr: str) -> nn.Module:
    """Put RemovedAttention in place of `owner.<attr>` when its query has no rows, the
    original back when it has; returns the module now there."""
    attn = getattr(owner, attr)
    width = attn.query.weight.shape[0]
    if width == 0 and not isinstance(attn, RemovedAttention):
        attn = RemovedAttention(attn)
    elif width and isinstance(attn, RemovedAttention):
        attn = attn.restore()
    setattr(owner, attr, attn)
    return attn

"""MPNet: heads, FFN neurons and the hidden stream, with the shared relative-position bias.

An MPNet layer is BERT-like (`attention.attn.q/k/v/o`, `intermediate.dense`, `output.dense`),
but every layer's attention scores also get a per-head relative-position bias read from one
table for the whole encoder: `encoder.relative_attention_bias` (Embedding num_buckets x
num_heads), computed once per forward as (batch, heads, q, k) and handed to all layers. Head
j of *every* layer reads column j.

Heads are removed per layer, so after a cut layer i holds heads S_i (original ids, ascending)
and must read columns S_i of the shared table. The cut model keeps the table whole: it is
shared, so a column could only go when no layer reads it, and it is num_buckets x heads
numbers (32 x 12 in all-mpnet-base-v2). Each layer with fewer heads than the table gets a
`RelativeHeads` child whose buffer `index` = S_i; a forward pre-hook on the layer's attention
narrows the bias to those columns. The buffer is one of the head group's slices, so a cut
slices it with the layer's q/k/v rows and o columns, and it is saved with the weights (the
manifest lists its shape; reloading re-creates the child from that shape). A layer that has
all its heads has no child: an uncut MPNet is exactly the transformers model.

For plain `transformers`, the padded twin (cutting.hf_layout) puts head S_i[j] of layer i
back at slot S_i[j] (zero heads elsewhere), so the original shared table is right for every
layer; `Layer.slots` tells hf_layout where each head goes.
"""

from __future__ import annotations

import inspect
from functools import cache
from typing import Any

import torch
from torch import nn

from bmr_compress.coupling.adapters import (
    FamilyAdapter, Layer, Parts, embedding_params, out_size, register_adapter, set_derived_heads,
    set_uniform,
)
from bmr_compress.coupling.groups import UnitGroup

CHILD = "relative_heads"  # the child of a cut layer's attention holding its head ids


class RelativeHeads(nn.Module):
    """Which columns of the shared relative-position bias one attention layer reads."""

    def __init__(self, index: torch.Tensor):
        super().__init__()
        self.register_buffer("index", index.to(torch.long))  # (heads of this layer,)

    def forward(self, position_bias: torch.Tensor) -> torch.Tensor:
        # (batch, table heads, q, k) -> (batch, heads of this layer, q, k)
        return position_bias.index_select(1, self.index)


@cache
def _bias_position(cls: type) -> int:
    """Position of `position_bias` among the positional arguments of cls.forward
    (transformers 5: hidden, mask, position_bias; 4.x: hidden, mask, head_mask, position_bias)."""
    names = [p for p in inspect.signature(cls.forward).parameters if p != "self"]
    return names.index("position_bias")


def _select_heads(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
                  ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
    """Forward pre-hook of an MPNet self-attention: narrow `position_bias` to the layer's
    heads (a no-op for a layer without a RelativeHeads child)."""
    heads = getattr(module, CHILD, None)
    if heads is None:
        return None
    if "position_bias" in kwargs:
        if kwargs["position_bias"] is not None:
            kwargs = {**kwargs, "position_bias": heads(kwargs["position_bias"])}
        return args, kwargs
    i = _bias_position(type(module))
    if i < len(args) and args[i] is not None:
        args = (*args[:i], heads(args[i]), *args[i + 1:])
    return args, kwargs


def _set_heads_(attn: nn.Module, index: torch.Tensor | None) -> None:
    """Give `attn` a RelativeHeads child with `index` (None: remove it) and the hook."""
    if index is None:
        if getattr(attn, CHILD, None) is not None:
            delattr(attn, CHILD)
        return
    setattr(attn, CHILD, RelativeHeads(index))
    if _select_heads not in attn._forward_pre_hooks.values():
        attn.register_forward_pre_hook(_select_heads, with_kwargs=True)


@register_adapter("transformers.models.mpnet.modeling_mpnet.MPNetPreTrainedModel")
class MPNetAdapter(FamilyAdapter):
    family = "mpnet"
    units = "attention heads (with their relative-position bias columns), FFN neurons, hidden width"
    plain_transformers = ("exact when widths are uniform, else zero-padded, heads back at "
                          "their bias slots")

    def parts(self, model: nn.Module) -> Parts:
        base = model.base_model
        names = {id(m): n for n, m in model.named_modules()}
        layers = []
        for blk in base.encoder.layer:
            a = blk.attention.attn
            hd = a.attention_head_size
            n = a.q.weight.shape[0] // hd
            rel = getattr(a, CHILD, None)
            layers.append(Layer((a.q, 0), (a.k, 0), (a.v, 0), a.o, [blk.intermediate.dense],
                                blk.output.dense, [blk.attention.LayerNorm, blk.output.LayerNorm],
                                a, n, n, hd, slots=None if rel is None else rel.index,
                                head_tensors=[] if rel is None else [f"{names[id(rel)]}.index"]))
        emb = base.embeddings
        producers = embedding_params(model, emb.word_embeddings, emb.position_embeddings)
        consumers, fixed = [], []
        pooler = getattr(base, "pooler", None)
        if pooler is not None:  # reads the stream; its output keeps its width (as BERT's)
            p = names[id(pooler.dense)]
            consumers.append(pooler.dense)
            fixed += [(f"{p}.weight", 0), (f"{p}.bias", 0)]
        return Parts(emb.word_embeddings.weight.shape[1], layers, producers, [emb.LayerNorm],
                     consumers, fixed)

    def groups(self, model: nn.Module) -> list[UnitGroup]:
        """Unit groups; first gives every attention layer a RelativeHeads child (its own ids:
        the function is unchanged) so that a cut slices each layer's ids with its heads."""
        dev = model.base_model.encoder.relative_attention_bias.weight.device
        for blk in model.base_model.encoder.layer:
            a = blk.attention.attn
            if getattr(a, CHILD, None) is None:
                n = a.q.weight.shape[0] // a.attention_head_size
                _set_heads_(a, torch.arange(n, device=dev))
        return super().groups(model)

    def sync_(self, model: nn.Module) -> dict[str, object]:
        """After a cut (or a reload's re-shaping): a layer with every head of the table reads
        it as it is (no child); one with fewer heads keeps its child, or gets one with the
        right length whose ids come with the weights."""
        table = model.base_model.encoder.relative_attention_bias.weight
        for blk in model.base_model.encoder.layer:
            a = blk.attention.attn
            n = a.q.weight.shape[0] // a.attention_head_size
            rel = getattr(a, CHILD, None)
            if n == table.shape[1]:
                _set_heads_(a, None)
            elif rel is None or rel.index.numel() != n:
                _set_heads_(a, torch.arange(n, device=table.device))
            elif _select_heads not in a._forward_pre_hooks.values():
                a.register_forward_pre_hook(_select_heads, with_kwargs=True)
        return super().sync_(model)

    def sync_layer_(self, layer: Layer) -> None:
        a = layer.attn
        a.all_head_size = a.q.weight.shape[0]
        a.num_attention_heads = a.all_head_size // a.attention_head_size

    def config_updates(self, model: nn.Module, parts: Parts) -> dict[str, object]:
        """hidden_size; intermediate_size when uniform; num_attention_heads only when it keeps
        the head size (the config derives it as hidden / heads)."""
        updates: dict[str, object] = {"hidden_size": parts.hidden}
        set_derived_heads(updates, "num_attention_heads", parts)
        set_uniform(updates, "intermediate_size", [out_size(layer.ffn_in[0]) for layer in parts.layers])
        return updates

"""A cut transformers model in a form plain `transformers.AutoModel` loads without surprises.

A config holds one FFN width and one head count for all layers (and BERT-like configs derive
the head size as hidden / heads). When the cut left layers of different widths, the model
written for transformers is the cut model **zero-padded** to widths the config can state:

* FFN: every layer padded to the widest kept layer. A padded neuron has W_in row 0 and bias 0
  (gate and up rows 0 for gated FFNs) and W_out column 0, so it adds act(0) · 0 = 0.
* heads: padded to the widest kept layer (the original count where the config derives the
  head size). A padded head has zero query, key and value rows (and biases) and zero output
  projection columns: its attention weights are uniform over zero values, its output 0.

Padding is appended at the end of each axis, so the cut model is the leading slice of every
padded tensor (`unpad_state_dict`). The result is checked: its config rebuilds exactly its
shapes, and its outputs equal the cut model's. Families or layouts where neither the real
nor a padded width can be stated (fused q/k/v) raise UnsupportedModelError naming why.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from bmr_compress.errors import UnsupportedModelError
from bmr_compress.layers import channel_type
from bmr_compress.coupling.adapters import Layer, adapter_for, out_size

log = logging.getLogger(__name__)


def transformers_layout(model: nn.Module, example: Mapping[str, torch.Tensor] | None = None,
                        ) -> tuple[nn.Module, dict[str, Any]]:
    """(model to write as config.json + model.safetensors, info). The model itself when its
    config already states its widths ("exact"); else a zero-padded copy ("padded"), checked
    against the cut model on `example`. Raises UnsupportedModelError when neither works."""
    from bmr_compress.cutting.apply import plain_loadable

    if plain_loadable(model):
        return model, {"layout": "exact"}
    adapter = adapter_for(model)
    if adapter is None:
        raise UnsupportedModelError(f"{type(model).__name__}: no family adapter, so no padded "
                                    "layout; config.json cannot state the cut widths")
    padded = copy.deepcopy(model)
    widths = pad_(padded)
    adapter.sync_(padded)
    if not plain_loadable(padded):
        raise UnsupportedModelError(f"{type(model).__name__}: even zero-padded to {widths}, the "
                                    "config cannot state the cut model's shapes")
    err = _max_output_diff(model, padded, example) if example is not None else 0.0
    if err > 1e-5:
        raise UnsupportedModelError(f"zero-padded {type(model).__name__} differs from the cut "
                                    f"model by {err:.3g}")
    info = {"layout": "padded", "widths": widths, "max_abs_diff": err,
            "config": {k: getattr(padded.config, k) for k in adapter.config_updates(padded, adapter.parts(padded))}}
    log.info("config.json states padded widths %s (max |diff| %.3g)", widths, err)
    return padded, info


def pad_(model: nn.Module) -> dict[str, int]:
    """Zero-pad every layer's FFN and heads in place to uniform, config-expressible widths."""
    adapter = adapter_for(model)
    assert adapter is not None
    parts = adapter.parts(model)
    cfg = model.config
    ffn_target = max(out_size(layer.ffn_in[0]) for layer in parts.layers)
    hd = parts.layers[0].head_dim
    derived = getattr(cfg, "head_dim", None) is None  # BERT-like: head size = hidden / heads
    if derived:
        if parts.hidden % hd:
            raise UnsupportedModelError(f"hidden {parts.hidden} is not a multiple of head size {hd}")
        heads_t = kv_t = parts.hidden // hd
    else:
        heads_t = max(layer.num_heads for layer in parts.layers)
        kv_t = max(layer.num_kv for layer in parts.layers)
    for layer in parts.layers:
        _pad_ffn(layer, ffn_target)
        _pad_heads(layer, heads_t, kv_t)
    return {"ffn": ffn_target, "heads": heads_t, "kv_heads": kv_t}


def _pad_ffn(layer: Layer, width: int) -> None:
    extra = width - out_size(layer.ffn_in[0])
    if extra <= 0:
        return
    for m in layer.ffn_in:
        _pad_(m, "out", extra)
    _pad_(layer.ffn_out, "in", extra)


def _pad_heads(layer: Layer, heads: int, kv: int) -> None:
    hd = layer.head_dim
    if layer.num_heads == heads and layer.num_kv == kv:
        return
    mods = {id(layer.q[0]), id(layer.k[0]), id(layer.v[0])}
    if len(mods) != 3:
        raise UnsupportedModelError(f"{type(layer.q[0]).__name__}: fused q/k/v heads of unequal "
                                    "count per layer cannot be padded; config.json cannot state them")
    if heads * layer.num_kv != kv * layer.num_heads:
        raise UnsupportedModelError(f"padding {layer.num_heads}/{layer.num_kv} heads to {heads}/{kv} "
                                    "would change the query-to-key-value grouping")
    _pad_(layer.q[0], "out", (heads - layer.num_heads) * hd)
    _pad_(layer.k[0], "out", (kv - layer.num_kv) * hd)
    _pad_(layer.v[0], "out", (kv - layer.num_kv) * hd)
    _pad_(layer.o, "in", (heads - layer.num_heads) * hd)
    layer.num_heads, layer.num_kv = heads, kv


def _pad_(module: nn.Module, side: str, extra: int) -> None:
    """Append `extra` zero channels to `module`'s output ("out") or input ("in") axis."""
    if extra <= 0:
        return
    lt = channel_type(module)
    if lt is None:
        raise UnsupportedModelError(f"{type(module).__name__}: no handler to pad (no layer type"
                                    " with channel axes in bmr_compress.layers)")
    for name, dim in lt.out_tensors if side == "out" else lt.in_tensors:
        t = getattr(module, name, None)
        if t is None:
            continue
        shape = list(t.shape)
        shape[dim] = extra
        new = torch.cat([t.detach(), torch.zeros(shape, dtype=t.dtype, device=t.device)], dim=dim)
        if isinstance(t, nn.Parameter):
            setattr(module, name, nn.Parameter(new, requires_grad=t.requires_grad))
        else:
            module._buffers[name] = new
    lt.sync_(module)


def unpad_state_dict(state: Mapping[str, torch.Tensor], shapes: Mapping[str, list[int]]
                     ) -> dict[str, torch.Tensor]:
    """The cut model's tensors from a padded state dict: the leading slice of each padded axis."""
    out = {}
    for k, t in state.items():
        want = shapes.get(k)
        if want is not None and list(t.shape) != list(want):
            if len(want) != t.dim() or any(w > s for w, s in zip(want, t.shape)):
                raise UnsupportedModelError(f"{k}: stored {tuple(t.shape)} cannot hold {tuple(want)}")
            t = t[tuple(slice(0, w) for w in want)].contiguous()
        out[k] = t
    return out


def _max_output_diff(a: nn.Module, b: nn.Module, example: Mapping[str, torch.Tensor]) -> float:
    from bmr_compress.export.validation import torch_out

    inputs = {k: v for k, v in example.items() if k != "labels"}
    return float(abs(torch_out(a, inputs) - torch_out(b, inputs)).max())

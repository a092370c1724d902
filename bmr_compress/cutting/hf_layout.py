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
padded tensor (`unpad_state_dict`), except where one axis stacks blocks (fused [q|k|v] rows,
a GLU's [input|gate] rows): each block gets its zeros, and the layout info's `scattered`
says so. Heads that read a table shared across layers (MPNet's
relative-position bias; `Layer.slots`) go back to their own slot instead; the layout info's
`scattered` says which rows to gather back, and `buffers` holds the per-layer head ids that
the twin does not carry. The result is checked: its config rebuilds exactly its
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
from bmr_compress.coupling.adapters import Layer, adapter_for, ffn_width

log = logging.getLogger(__name__)
# where _pad_ notes tensors padded in blocks: (layout info's "scattered", module names by id)
Log = tuple[dict[str, dict[str, Any]], dict[int, str]] | None


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
    scattered: dict[str, dict[str, Any]] = {}
    buffers = {name: t.tolist() for layer in adapter.parts(padded).layers
               for name, t in _head_buffers(padded, layer)}
    widths = pad_(padded, scattered)
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
    if scattered:
        info["scattered"] = scattered
    if buffers:
        info["buffers"] = buffers
    log.info("config.json states padded widths %s (max |diff| %.3g)", widths, err)
    return padded, info


def _head_buffers(model: nn.Module, layer: Layer) -> list[tuple[str, torch.Tensor]]:
    state = model.state_dict()
    return [(name, state[name]) for name in layer.head_tensors]


def pad_(model: nn.Module, scattered: dict[str, dict[str, Any]] | None = None) -> dict[str, int]:
    """Zero-pad every layer's FFN and heads in place to uniform, config-expressible widths.
    `scattered` collects, per tensor whose heads went back to their slots, how to gather
    the cut tensor back (dim, rows per head, slots)."""
    adapter = adapter_for(model)
    assert adapter is not None
    parts = adapter.parts(model)
    cfg = model.config
    ffn_target = max(ffn_width(layer) for layer in parts.layers)
    hd = parts.layers[0].head_dim
    derived = getattr(cfg, "head_dim", None) is None  # BERT-like: head size = hidden / heads
    if derived:
        if parts.hidden % hd:
            raise UnsupportedModelError(f"hidden {parts.hidden} is not a multiple of head size {hd}")
        heads_t = kv_t = parts.hidden // hd
    else:
        heads_t = max(layer.num_heads for layer in parts.layers)
        kv_t = max(layer.num_kv for layer in parts.layers)
    names = {id(m): n for n, m in model.named_modules()}
    log_to = (scattered if scattered is not None else {}, names)
    for layer in parts.layers:
        _pad_ffn(layer, ffn_target, log_to)
        if layer.slots is not None:
            _scatter_heads(layer, heads_t, names, log_to[0])
        else:
            _pad_heads(layer, heads_t, kv_t, log_to)
    return {"ffn": ffn_target, "heads": heads_t, "kv_heads": kv_t}


def _pad_ffn(layer: Layer, width: int, log_to: Log = None) -> None:
    n = ffn_width(layer)
    if width <= n:
        return
    for m in layer.ffn_in:  # each stacked chunk (GLU input / gate halves) gets its zeros
        _pad_(m, "out", width - n, blocks=layer.ffn_chunks, log_to=log_to)
    _pad_(layer.ffn_out, "in", width - n)


def _pad_heads(layer: Layer, heads: int, kv: int, log_to: Log = None) -> None:
    hd = layer.head_dim
    if layer.num_heads == heads and layer.num_kv == kv:
        return
    mods = {id(layer.q[0]), id(layer.k[0]), id(layer.v[0])}
    if heads * layer.num_kv != kv * layer.num_heads:
        raise UnsupportedModelError(f"padding {layer.num_heads}/{layer.num_kv} heads to {heads}/{kv} "
                                    "would change the query-to-key-value grouping")
    w = layer.num_heads * hd
    if len(mods) == 1 and (layer.k[1], layer.v[1]) == (w, 2 * w) and heads == kv:
        # fused [q | k | v] rows (GPT-2's c_attn, ModernBERT's Wqkv): zeros after each third
        _pad_(layer.q[0], "out", (heads - layer.num_heads) * hd, blocks=3, log_to=log_to)
        _pad_(layer.o, "in", (heads - layer.num_heads) * hd)
        layer.num_heads, layer.num_kv = heads, kv
        return
    if len(mods) != 3:
        raise UnsupportedModelError(f"{type(layer.q[0]).__name__}: fused q/k/v heads in an "
                                    "unknown layout cannot be padded; config.json cannot state them")
    _pad_(layer.q[0], "out", (heads - layer.num_heads) * hd)
    _pad_(layer.k[0], "out", (kv - layer.num_kv) * hd)
    _pad_(layer.v[0], "out", (kv - layer.num_kv) * hd)
    _pad_(layer.o, "in", (heads - layer.num_heads) * hd)
    layer.num_heads, layer.num_kv = heads, kv


def _scatter_heads(layer: Layer, heads: int, names: dict[int, str],
                   scattered: dict[str, dict[str, Any]]) -> None:
    """Put head h of `layer` at slot slots[h] of `heads` zero heads (q, k, v rows, o columns)."""
    slots = [int(s) for s in layer.slots] if layer.slots is not None else []
    if len({id(layer.q[0]), id(layer.k[0]), id(layer.v[0])}) != 3 or layer.num_kv != layer.num_heads:
        raise UnsupportedModelError("slotted heads need separate q/k/v projections, one KV head each")
    if slots and max(slots) >= heads:
        raise UnsupportedModelError(f"head slot {max(slots)} does not fit {heads} heads "
                                    "(the hidden width was cut below the table's heads)")
    hd = layer.head_dim
    rows = torch.tensor([s * hd + r for s in slots for r in range(hd)], dtype=torch.long)
    for module, side in ((layer.q[0], "out"), (layer.k[0], "out"), (layer.v[0], "out"),
                         (layer.o, "in")):
        lt = channel_type(module)
        assert lt is not None
        for name, dim in lt.out_tensors if side == "out" else lt.in_tensors:
            t = getattr(module, name, None)
            if t is None:
                continue
            shape = list(t.shape)
            shape[dim] = heads * hd
            new = torch.zeros(shape, dtype=t.dtype, device=t.device)
            new.index_copy_(dim, rows.to(t.device), t.detach())
            setattr(module, name, nn.Parameter(new, requires_grad=t.requires_grad))
            scattered[f"{names[id(module)]}.{name}"] = {"dim": dim, "unit": hd, "slots": slots}
        lt.sync_(module)
    layer.num_heads = layer.num_kv = heads


def _pad_(module: nn.Module, side: str, extra: int, blocks: int = 1, log_to: Log = None) -> None:
    """Append `extra` zero channels to `module`'s output ("out") or input ("in") axis; with
    `blocks` > 1 the axis is that many equal stacked blocks and each gets `extra` zeros."""
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
        zeros = torch.zeros(shape, dtype=t.dtype, device=t.device)
        parts = [p for b in t.detach().chunk(blocks, dim=dim) for p in (b, zeros)]
        if blocks > 1 and log_to is not None:  # the cut tensor is the head of every block
            log_to[0][f"{log_to[1][id(module)]}.{name}"] = {"dim": dim, "blocks": blocks,
                                                            "width": t.shape[dim] // blocks}
        new = torch.cat(parts, dim=dim)
        if isinstance(t, nn.Parameter):
            setattr(module, name, nn.Parameter(new, requires_grad=t.requires_grad))
        else:
            module._buffers[name] = new
    lt.sync_(module)


def unpad_state_dict(state: Mapping[str, torch.Tensor], shapes: Mapping[str, list[int]],
                     layout: Mapping[str, Any] | None = None) -> dict[str, torch.Tensor]:
    """The cut model's tensors from a padded state dict: the leading slice of each padded
    axis; slotted heads gathered back and their ids restored (`layout`: the manifest's
    transformers_layout)."""
    out: dict[str, torch.Tensor] = {}
    scattered = (layout or {}).get("scattered") or {}
    for k, ids in ((layout or {}).get("buffers") or {}).items():
        out[k] = torch.tensor(ids, dtype=torch.long)
    for k, t in state.items():
        if k in scattered:
            g = scattered[k]
            if "blocks" in g:  # stacked blocks, each zero-padded at its end
                step = t.shape[int(g["dim"])] // int(g["blocks"])
                rows = [b * step + r for b in range(int(g["blocks"])) for r in range(g["width"])]
            else:  # heads put back at their slots
                rows = [s * g["unit"] + r for s in g["slots"] for r in range(g["unit"])]
            t = t.index_select(int(g["dim"]), torch.tensor(rows, dtype=torch.long))
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

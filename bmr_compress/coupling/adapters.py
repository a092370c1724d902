"""Family adapters: explicit head / KV-group / FFN / hidden groups for transformer families,
plus the attribute and config updates the family's modeling code needs after a cut.

Registry keyed by transformers model classes, looked up through the MRO of the model's class
(never by class-name substrings). Each adapter describes a model as `Parts` (which modules
are the embeddings, the q/k/v/o projections, FFN and norms of each layer); group
construction and attribute syncing are shared.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from torch import nn

from bmr_compress.errors import UnsupportedModelError
from bmr_compress.layers import LayerType, channel_type, class_path
from bmr_compress.coupling.groups import Slice, UnitGroup, blocks, column, count_numel

log = logging.getLogger(__name__)


@dataclass
class Layer:
    """One transformer block. qkv: (module, row offset) for q, k, v (GPT-2 fuses them)."""

    q: tuple[nn.Module, int]
    k: tuple[nn.Module, int]
    v: tuple[nn.Module, int]
    o: nn.Module
    ffn_in: list[nn.Module]  # producing FFN neurons (gate and up for gated FFNs)
    ffn_out: nn.Module  # consuming FFN neurons
    norms: list[nn.Module]
    attn: nn.Module  # the module holding head-count attributes
    num_heads: int
    num_kv: int
    head_dim: int
    # head h's column in a table shared across layers (MPNet's relative-position bias):
    # a padded twin puts head h back at slot slots[h]; None: heads are appended in order
    slots: torch.Tensor | None = None
    head_tensors: list[str] = field(default_factory=list)  # state-dict keys, one entry per
    # KV unit along dim 0, cut with the heads (MPNet's per-layer head ids)
    ffn_chunks: int = 1  # ffn_in outputs `chunks` stacked halves (ModernBERT's GLU Wi: input
    # then gate rows); neuron j owns row j of every chunk
    attn_owner: tuple[nn.Module, str] | None = None  # (parent, attribute) holding `attn`


@dataclass
class Parts:
    hidden: int
    layers: list[Layer]
    hidden_producers: list[tuple[str, int, str]] = field(default_factory=list)  # (param, dim, role)
    hidden_norms: list[nn.Module] = field(default_factory=list)  # final / embedding norms
    hidden_consumers: list[nn.Module] = field(default_factory=list)  # heads reading the stream
    fixed: list[tuple[str, int]] = field(default_factory=list)  # (param, dim) of hidden size
    # that is *not* the hidden stream (e.g. a pooler's output): ignored by the coverage check


class FamilyAdapter:
    """Base adapter. Subclasses implement `parts`, `sync_layer_` and `config_updates`."""

    family = "generic"
    # for the README's family table (coupling.family_table)
    units = "attention heads, FFN neurons, hidden width"
    plain_transformers = "exact when widths are uniform, else zero-padded to them"
    # residual branches ("ffn", "attention") the family's surgery can take to width 0
    zero_width_branches: tuple[str, ...] = ()

    def parts(self, model: nn.Module) -> Parts:
        raise NotImplementedError

    def sync_layer_(self, layer: Layer) -> None:
        """Update the attention module's head-count attributes from its (cut) tensors."""
        raise NotImplementedError

    def config_updates(self, model: nn.Module, parts: Parts) -> dict[str, object]:
        """Config fields that describe the cut model (widths uniform across layers only)."""
        raise NotImplementedError

    def groups(self, model: nn.Module) -> list[UnitGroup]:
        return build_groups(model, self.parts(model), self.family, self.zero_width_branches)

    def sync_(self, model: nn.Module) -> dict[str, object]:
        """Re-sync attention attributes and the config after a cut; returns config updates."""
        parts = self.parts(model)
        for layer in parts.layers:
            self.sync_layer_(layer)
        updates = self.config_updates(model, parts)
        for key, value in updates.items():
            setattr(model.config, key, value)
        return updates


ADAPTERS: dict[str, FamilyAdapter] = {}  # the model class's dotted path -> its adapter


def register_adapter(*classes: type | str):
    """Class decorator: one adapter instance for every model class given, as a class or as
    its dotted path (transformers' classes: registering them imports nothing)."""

    def deco(cls: type[FamilyAdapter]) -> type[FamilyAdapter]:
        inst = cls()
        for c in classes:
            if class_path(c) in ADAPTERS:
                raise ValueError(f"adapter for {class_path(c)} registered twice")
            ADAPTERS[class_path(c)] = inst
        return cls

    return deco


def adapter_for(model: nn.Module) -> FamilyAdapter | None:
    for cls in type(model).__mro__:
        found = ADAPTERS.get(class_path(cls))
        if found is not None:
            return found
    return None


# --------------------------------------------------------------------------- group building


def _names(model: nn.Module) -> dict[int, str]:
    return {id(m): n for n, m in model.named_modules()}


def _slices(names: dict[int, str], module: nn.Module, index: torch.Tensor, side: str,
            role: str | None = None) -> list[Slice]:
    """Slices of `module`'s output ("out") or input ("in") channel tensors at `index`."""
    lt = _channels(module, names[id(module)])
    spec = lt.out_tensors if side == "out" else lt.in_tensors
    prefix = names[id(module)]
    out = []
    for tname, dim in spec:
        t = getattr(module, tname, None)
        if isinstance(t, torch.Tensor):
            r = role or (lt.out_role if side == "out" else "in")
            out.append(Slice(f"{prefix}.{tname}", dim, index, r))
    return out


def _channels(module: nn.Module, where: str) -> LayerType:
    lt = channel_type(module)
    if lt is None:
        raise UnsupportedModelError(f"{where}: no surgery handler for {type(module).__name__}"
                                    " (register a layer type in bmr_compress.layers)")
    return lt


def _head_groups(names, layer: Layer, i: int, family: str) -> UnitGroup:
    rep = layer.num_heads // layer.num_kv if layer.num_kv else 1  # 0: the block was removed
    hd = layer.head_dim
    (q, qo), (k, ko), (v, vo) = layer.q, layer.k, layer.v
    qi = blocks(layer.num_kv, rep * hd, qo)
    slices = (_slices(names, q, qi, "out") + _slices(names, k, blocks(layer.num_kv, hd, ko), "out")
              + _slices(names, v, blocks(layer.num_kv, hd, vo), "out")
              + _slices(names, layer.o, blocks(layer.num_kv, rep * hd), "in")
              + [Slice(t, 0, blocks(layer.num_kv, 1), "out") for t in layer.head_tensors])
    kind = "head" if rep == 1 else "kv_group"
    # a gate on v's output scales the unit's attention output linearly (not so for a fused qkv)
    gate = names[id(v)] if v is not q else None
    return UnitGroup(f"layers.{i}.attention", kind, layer.num_kv, tuple(slices), family,
                     unit_width=rep * hd, extra={"heads_per_unit": rep, "head_dim": hd,
                                                 "gate_module": gate, "gate_unit": hd,
                                                 "branch": "attention"})


def ffn_width(layer: Layer) -> int:
    """FFN neurons of `layer` (its producing layer's outputs over the chunks they stack)."""
    return out_size(layer.ffn_in[0]) // layer.ffn_chunks


def _ffn_group(names, layer: Layer, i: int, family: str) -> UnitGroup:
    n = ffn_width(layer)
    idx = torch.cat([column(n) + c * n for c in range(layer.ffn_chunks)], 1)  # (n, chunks)
    slices = [s for m in layer.ffn_in for s in _slices(names, m, idx, "out")]
    slices += _slices(names, layer.ffn_out, column(n), "in")
    # up_proj for gated FFNs: the gate enters linearly; none on a chunked (fused GLU) output
    gate = names[id(layer.ffn_in[-1])] if layer.ffn_chunks == 1 else None
    return UnitGroup(f"layers.{i}.ffn", "neuron", n, tuple(slices), family,
                     extra={"gate_module": gate, "gate_unit": 1, "branch": "ffn"})


def out_size(m: nn.Module) -> int:
    return _channels(m, type(m).__name__).width(m)


def _hidden_group(model: nn.Module, names, parts: Parts, family: str,
                  others: list[UnitGroup]) -> UnitGroup | None:
    h = parts.hidden
    idx = column(h)
    slices = [Slice(p, d, idx, r) for p, d, r in parts.hidden_producers]
    for layer in parts.layers:
        seen: set[int] = set()
        for m, _ in (layer.q, layer.k, layer.v):
            if id(m) not in seen:
                seen.add(id(m))
                slices += _slices(names, m, idx, "in")
        slices += _slices(names, layer.o, idx, "out")
        for m in layer.ffn_in:
            slices += _slices(names, m, idx, "in")
        slices += _slices(names, layer.ffn_out, idx, "out")
        for m in layer.norms:
            slices += [Slice(f"{names[id(m)]}.weight", 0, idx, "norm")]
            if getattr(m, "bias", None) is not None:
                slices += [Slice(f"{names[id(m)]}.bias", 0, idx, "norm")]
    for m in parts.hidden_norms:
        slices += [Slice(f"{names[id(m)]}.weight", 0, idx, "norm")]
        if getattr(m, "bias", None) is not None:
            slices += [Slice(f"{names[id(m)]}.bias", 0, idx, "norm")]
    tied = {id(t) for t in [_get(model, s.param) for s in slices]}
    for m in parts.hidden_consumers:
        for s in _slices(names, m, idx, "in"):
            if id(_get(model, s.param)) not in tied:  # tied to the embedding: cut once
                slices.append(s)
    covered = {(id(_get(model, s.param)), s.dim) for s in slices}
    covered |= {(id(_get(model, s.param)), s.dim) for g in others for s in g.slices}
    covered |= {(id(_get(model, p)), d) for p, d in parts.fixed}
    for name, t in model.state_dict(keep_vars=True).items():
        for d, size in enumerate(t.shape):
            if size == h and (id(t), d) not in covered and t.dim() > 0:
                log.info("no hidden group for %s: %s dim %d (size %d) is not covered", family,
                         name, d, h)
                return None
    return UnitGroup("hidden", "hidden", h, tuple(slices), family, extra={"gate_module": None})


def _get(model: nn.Module, name: str) -> torch.Tensor:
    mpath, _, attr = name.rpartition(".")
    return getattr(model.get_submodule(mpath) if mpath else model, attr)


def build_groups(model: nn.Module, parts: Parts, family: str,
                 zero_width: tuple[str, ...] = ()) -> list[UnitGroup]:
    names = _names(model)
    groups = []
    for i, layer in enumerate(parts.layers):
        groups.append(_head_groups(names, layer, i, family))
        groups.append(_ffn_group(names, layer, i, family))
    for g in groups:
        g.extra["zero_width"] = g.extra["branch"] in zero_width
    hidden = _hidden_group(model, names, parts, family, groups)
    if hidden is not None:
        groups.append(hidden)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    return [UnitGroup(g.name, g.kind, g.num_units, g.slices, g.family_hint, g.unit_width,
                      count_numel(g.slices, shapes), g.min_units, g.extra) for g in groups]


def uniform(values: list[int]) -> int | None:
    return values[0] if values and all(v == values[0] for v in values) else None


def set_uniform(updates: dict[str, object], key: str, values: list[int]) -> None:
    """updates[key] = the common value of `values`, when every layer has the same one."""
    u = uniform(values)
    if u is not None:
        updates[key] = u


def set_derived_heads(updates: dict[str, object], key: str, parts: Parts) -> None:
    """Families whose config derives head_dim = hidden / heads can only state a head count
    that keeps head_dim: otherwise the original count stays (shapes live in the manifest)."""
    heads = uniform([layer.num_heads for layer in parts.layers])
    if heads is not None and heads * parts.layers[0].head_dim == parts.hidden:
        updates[key] = heads


def embedding_params(model: nn.Module, *modules: nn.Module | None) -> list[tuple[str, int, str]]:
    """(parameter name, hidden axis, "embed") of each embedding table that produces the
    residual stream (None entries skipped)."""
    names = {id(m): n for n, m in model.named_modules()}
    return [(f"{names[id(m)]}.weight", 1, "embed") for m in modules if m is not None]

"""Physical removal of unit slices (the mutating half of surgery).

Given groups and the units to keep, every coupled tensor is index_select-ed along every
cut dim; tied tensors (one object under several names) are cut once and re-assigned to
every owner; then each touched module's shape attributes are re-synced by its layer type
(bmr_compress.layers).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping

import torch
from torch import nn

from bmr_compress.errors import UnsupportedModelError
from bmr_compress.layers import layer_type
from bmr_compress.coupling.groups import UnitGroup, zero_width_ok

log = logging.getLogger(__name__)


def tensors_of(module: nn.Module) -> dict[str, torch.Tensor]:
    """Direct parameters and buffers of one module (not recursing)."""
    out: dict[str, torch.Tensor] = {}
    for name, p in module.named_parameters(recurse=False):
        out[name] = p
    for name, b in module.named_buffers(recurse=False):
        out[name] = b
    return out


def sync_module_(module: nn.Module, old_sizes: Collection[int]) -> None:
    """Bring `module`'s attributes in line with its tensors after a cut (its layer type's
    `sync_`; types without shape attributes check that none is stale)."""
    layer_type(module).sync_(module, old_sizes)


def owners(model: nn.Module) -> dict[int, list[tuple[nn.Module, str, str]]]:
    """id(tensor) -> [(module, attribute, qualified name)] for every parameter and buffer."""
    out: dict[int, list[tuple[nn.Module, str, str]]] = {}
    for mname, module in model.named_modules(remove_duplicate=False):
        for attr, t in tensors_of(module).items():
            if t is None:
                continue
            qual = f"{mname}.{attr}" if mname else attr
            entry = out.setdefault(id(t), [])
            if all(q != qual for _, _, q in entry):
                entry.append((module, attr, qual))
    return out


def resolve(model: nn.Module, name: str) -> torch.Tensor:
    mpath, _, attr = name.rpartition(".")
    module = model.get_submodule(mpath) if mpath else model
    t = getattr(module, attr, None)
    if not isinstance(t, torch.Tensor):
        raise UnsupportedModelError(f"{name} is not a tensor of the model")
    return t


def removed_indices(
    model: nn.Module, groups: list[UnitGroup], keep: Mapping[str, list[int]]
) -> dict[int, dict[int, set[int]]]:
    """id(tensor) -> dim -> indices to remove, merged over every group."""
    cuts: dict[int, dict[int, set[int]]] = {}
    for g in groups:
        kept = set(keep.get(g.name, range(g.num_units)))
        gone = [j for j in range(g.num_units) if j not in kept]
        if not gone:
            continue
        rows = torch.tensor(gone, dtype=torch.long)
        for s in g.slices:
            t = resolve(model, s.param)
            idx = s.index.index_select(0, rows).flatten()
            if int(idx.max()) >= t.shape[s.dim]:
                raise UnsupportedModelError(
                    f"group {g.name}: index {int(idx.max())} out of range for {s.param}"
                    f" dim {s.dim} of size {t.shape[s.dim]}"
                )
            cuts.setdefault(id(t), {}).setdefault(s.dim, set()).update(idx.tolist())
    return cuts


def cut_(
    model: nn.Module,
    groups: list[UnitGroup],
    keep: Mapping[str, list[int]],
    extra: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Remove every non-kept unit's slices from `model` in place.

    extra: tensors shaped like model tensors (e.g. unstructured masks, keyed by the
    tensor's qualified name) that are cut the same way; returns them cut.
    """
    cuts = removed_indices(model, groups, keep)
    # (tensor, dim) a whole residual branch removed entirely may take to width 0
    emptied = {(id(resolve(model, s.param)), s.dim) for g in groups
               if zero_width_ok(g) and not keep.get(g.name, [0]) for s in g.slices}
    own = owners(model)
    old_sizes: set[int] = set()
    touched: dict[int, nn.Module] = {}
    by_name: dict[str, dict[int, torch.Tensor]] = {}
    for tid, dims in cuts.items():
        entries = own[tid]
        module0, attr0, _ = entries[0]
        t = getattr(module0, attr0)
        new = t.detach()
        for dim, gone in sorted(dims.items()):
            size = t.shape[dim]
            old_sizes.add(size)
            kept_idx = torch.tensor([i for i in range(size) if i not in gone], dtype=torch.long)
            if kept_idx.numel() == 0 and (tid, dim) not in emptied:
                raise UnsupportedModelError(f"cut would remove every channel of {entries[0][2]}")
            new = new.index_select(dim, kept_idx.to(new.device))
            for _, _, qual in entries:
                by_name.setdefault(qual, {})[dim] = kept_idx
        new = new.contiguous()
        if isinstance(t, nn.Parameter):
            new = nn.Parameter(new, requires_grad=t.requires_grad)
        for module, attr, _ in entries:
            if isinstance(t, nn.Parameter):
                setattr(module, attr, new)
            else:
                module._buffers[attr] = new
            touched[id(module)] = module
    for module in touched.values():
        sync_module_(module, old_sizes)
    out: dict[str, torch.Tensor] = {}
    for name, m in (extra or {}).items():
        for dim, kept_idx in sorted(by_name.get(name, {}).items()):
            m = m.index_select(dim, kept_idx.to(m.device))
        out[name] = m
    return out

"""Coupling discovery for arbitrary models through Torch-Pruning's dependency graph.

Torch-Pruning traces the model and, for every prunable layer's output channels, returns the
group of coupled (module, pruning function, indices) items — residual adds, concats, flattens
and norms included. We map each group onto our `UnitGroup`/`Slice` data (unit j = root channel
j) and cut with our own slicing (cut.py), so one code path serves adapters and graphs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch
from torch import nn

from bmr_compress.errors import UnsupportedModelError
from bmr_compress.layers import channel_type, layer_type
from bmr_compress.coupling.groups import Slice, UnitGroup, count_numel

log = logging.getLogger(__name__)


def _output_modules(dg, model: nn.Module) -> list[nn.Module]:
    """Prunable layers whose output is a model output (classifier heads): never cut."""
    out = []
    for m, node in dg.module2node.items():
        if _is_layer(m) and not _reaches_prunable(node, set()):
            out.append(m)
    return out


def _is_layer(m: object) -> bool:
    """A module with input and output channels (Linear, Conv, Conv1D, ...)."""
    return isinstance(m, nn.Module) and bool(layer_type(m).in_tensors)


def _reaches_prunable(node, seen: set[int]) -> bool:
    """Does any layer lie downstream of `node` (iterative DFS over the traced graph)?"""
    stack = list(node.outputs)
    while stack:
        nxt = stack.pop()
        if id(nxt) in seen:
            continue
        seen.add(id(nxt))
        if _is_layer(nxt.module):
            return True
        stack.extend(nxt.outputs)
    return False


def graph_groups(
    model: nn.Module,
    example_inputs: Mapping[str, torch.Tensor] | torch.Tensor,
    *,
    ignored: list[nn.Module] | None = None,
) -> list[UnitGroup]:
    """Trace `model` with Torch-Pruning and return one UnitGroup per coupled channel group."""
    import torch_pruning as tp

    # Torch-Pruning traces through autograd: parameters that do not require grad (a frozen
    # copy of a pretrained model) leave the graph empty, so enable grad while tracing.
    frozen = [p for p in model.parameters() if not p.requires_grad]
    for p in frozen:
        p.requires_grad_(True)
    try:
        dg = tp.DependencyGraph().build_dependency(model, example_inputs=example_inputs)
    finally:
        for p in frozen:
            p.requires_grad_(False)
    names = {id(m): n for n, m in model.named_modules()}
    ignore = list(ignored or []) + _output_modules(dg, model)
    groups: list[UnitGroup] = []
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    for tg in dg.get_all_groups(ignored_layers=ignore):
        root = tg[0].dep.target.module
        n_units = len(tg[0].idxs)
        slices: list[Slice] = []
        seen: set[tuple[str, int]] = set()
        for item in tg:
            module = item.dep.target.module
            if not isinstance(module, nn.Module) or id(module) not in names:
                continue  # functional ops (add, cat, flatten) carry no tensors
            lt = channel_type(module)
            own = list(module.parameters(recurse=False)) + list(module.buffers(recurse=False))
            if lt is None:
                if own:
                    raise UnsupportedModelError(
                        f"{names[id(module)]} ({type(module).__name__}) is coupled but has"
                        " no handler: register a layer type for it in bmr_compress.layers"
                    )
                continue
            out_side = dg.is_out_channel_pruning_fn(item.dep.handler)
            spec = lt.out_tensors if out_side else lt.in_tensors
            index = _unit_index(list(item.idxs), list(item.root_idxs), n_units)
            role = ("out" if lt.in_tensors else "norm") if out_side else "in"
            for tname, dim in spec:
                t = getattr(module, tname, None)
                key = f"{names[id(module)]}.{tname}"
                if isinstance(t, torch.Tensor) and (key, dim) not in seen:
                    seen.add((key, dim))
                    slices.append(Slice(key, dim, index, role))
        kind = layer_type(root).unit
        g = UnitGroup(names[id(root)], kind, n_units, tuple(slices), "generic")
        groups.append(UnitGroup(g.name, g.kind, g.num_units, g.slices, g.family_hint, 1,
                                count_numel(g.slices, shapes)))
    log.info("dependency graph: %d groups, output layers kept: %s", len(groups),
             [names.get(id(m)) for m in ignore])
    return groups


def _unit_index(idxs: list[int], root_idxs: list[int], n_units: int) -> torch.Tensor:
    """LongTensor[n_units, k]: the item's channels owned by each root channel."""
    per: list[list[int]] = [[] for _ in range(n_units)]
    for i, r in zip(idxs, root_idxs):
        per[int(r)].append(int(i))
    k = len(per[0])
    if any(len(p) != k for p in per):
        raise UnsupportedModelError("uneven channel mapping in a coupled group")
    return torch.tensor(per, dtype=torch.long).reshape(n_units, k)

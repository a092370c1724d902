"""Per-unit compute cost (multiply-accumulates per example) for latency budgets.

A CPU's dense-layer latency follows its MACs closely at a fixed shape, so a latency budget
is planned as a MAC budget: each Linear/Conv/Conv1D is hooked once on example inputs to learn
how many positions (tokens, pixels) it runs at; a unit's cost is the MACs of the rows and
columns it owns. Attention's score/value matmuls (∝ seq² · head_dim) are not counted.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from bmr_compress.layers import layer_type
from bmr_compress.coupling.groups import UnitGroup


def module_positions(model: nn.Module, example_inputs: Mapping[str, torch.Tensor] | torch.Tensor
               ) -> dict[str, float]:
    """Qualified module name -> output positions per example (tokens x pixels)."""
    seen: dict[str, float] = {}
    hooks = []
    batch = (next(iter(example_inputs.values())) if isinstance(example_inputs, Mapping)
             else example_inputs).shape[0]
    for name, m in model.named_modules():
        lt = layer_type(m)
        if not lt.in_tensors:  # only layers (input and output channels) cost MACs here
            continue
        width = lt.width(m)

        def hook(mod, args, out, name=name, width=width):
            if isinstance(out, torch.Tensor):
                seen[name] = seen.get(name, 0.0) + out.numel() / width / batch

        hooks.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            if isinstance(example_inputs, Mapping):
                model(**example_inputs)
            else:
                model(example_inputs)
    finally:
        for h in hooks:
            h.remove()
    return seen


def unit_macs(model: nn.Module, groups: list[UnitGroup],
              example_inputs: Mapping[str, torch.Tensor] | torch.Tensor) -> dict[str, float]:
    """Group name -> MACs per example that removing one unit saves (at the example's shape)."""
    pos = module_positions(model, example_inputs)
    out: dict[str, float] = {}
    for g in groups:
        total = 0.0
        for s in g.slices:
            mod, _, tname = s.param.rpartition(".")
            if tname != "weight" or mod not in pos or s.role not in ("out", "in"):
                continue
            w = model.get_submodule(mod).weight
            total += s.index.shape[1] * pos[mod] * (w.numel() / w.shape[s.dim])
        out[g.name] = total
    return out


def mac_weights(model: nn.Module,
                example_inputs: Mapping[str, torch.Tensor] | torch.Tensor) -> dict[str, float]:
    """Weight tensor name -> MACs per example that one of its elements costs (its module's
    output positions); the per-element weights of a MAC `CostLedger`."""
    return {f"{name}.weight": p for name, p in module_positions(model, example_inputs).items()}


class CostLedger:
    """Exact cost of the structure that is still kept: every tensor element counted once,
    however many units own it (an MLP's middle weight matrix is owned by the rows of one
    neuron group and the columns of the next; summing per-unit costs counts it twice).

    shapes: tensor name -> shape (of the tensors the groups slice).
    per_element: tensor name -> cost of one element (None: 1 for every tensor, i.e. a
        parameter count; `mac_weights` for multiply-accumulates: tensors not named cost 0).
    `total()` is the kept cost of the owned tensors; `unit_cost` is what removing one unit
    saves *now* (elements it shares with an already-removed unit are not counted again).
    """

    def __init__(self, groups: list[UnitGroup], shapes: Mapping[str, torch.Size],
                 per_element: Mapping[str, float] | None = None) -> None:
        self._slices = {g.name: g.slices for g in groups}
        self._alive: dict[str, torch.Tensor] = {}
        self._weight: dict[str, float] = {}
        for g in groups:
            for s in g.slices:
                if s.param in self._alive or s.param not in shapes:
                    continue
                w = 1.0 if per_element is None else float(per_element.get(s.param, 0.0))
                if w > 0:
                    self._alive[s.param] = torch.ones(tuple(shapes[s.param]), dtype=torch.bool)
                    self._weight[s.param] = w

    def total(self) -> float:
        return sum(self._weight[p] * int(a.sum()) for p, a in self._alive.items())

    def _by_param(self, name: str, j: int) -> dict[str, list[tuple[int, torch.Tensor]]]:
        out: dict[str, list[tuple[int, torch.Tensor]]] = {}
        for s in self._slices[name]:
            if s.param in self._alive:
                out.setdefault(s.param, []).append((s.dim, s.index[j]))
        return out

    def unit_cost(self, name: str, j: int) -> float:
        return sum(self._weight[param] * _alive_in_union(self._alive[param], parts)
                   for param, parts in self._by_param(name, j).items())

    def remove(self, name: str, j: int) -> float:
        """Mark unit j of group `name` removed; returns what that saved."""
        saved = 0.0
        for param, parts in self._by_param(name, j).items():
            alive = self._alive[param]
            saved += self._weight[param] * _alive_in_union(alive, parts)
            for dim, idx in parts:
                alive.index_fill_(dim, idx, False)
        return saved


def _alive_in_union(alive: torch.Tensor, parts: list[tuple[int, torch.Tensor]]) -> int:
    """Kept elements of `alive` in the union of the slices (dim, index) — one slice, or a
    row and a column by inclusion–exclusion, without building a full-size mask."""
    if len(parts) == 1:
        dim, idx = parts[0]
        return int(alive.index_select(dim, idx).sum())
    if len(parts) == 2 and parts[0][0] != parts[1][0]:
        (d1, i1), (d2, i2) = parts
        both = alive.index_select(d1, i1).index_select(d2, i2)
        return int(alive.index_select(d1, i1).sum() + alive.index_select(d2, i2).sum() - both.sum())
    mask = torch.zeros_like(alive)
    for dim, idx in parts:
        mask.index_fill_(dim, idx, True)
    return int((mask & alive).sum())

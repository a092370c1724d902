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

from bmr_compress.surgery.groups import UnitGroup
from bmr_compress.surgery.handlers import handler_for


def _positions(model: nn.Module, example_inputs: Mapping[str, torch.Tensor] | torch.Tensor
               ) -> dict[str, float]:
    """Qualified module name -> output positions per example (tokens x pixels)."""
    seen: dict[str, float] = {}
    hooks = []
    batch = (next(iter(example_inputs.values())) if isinstance(example_inputs, Mapping)
             else example_inputs).shape[0]
    for name, m in model.named_modules():
        h = handler_for(m)
        if h is None or not h.in_tensors:
            continue
        out_dim = h.out_tensors[0][1]
        width = m.weight.shape[out_dim]

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
    pos = _positions(model, example_inputs)
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

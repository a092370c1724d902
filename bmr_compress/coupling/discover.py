"""discover_groups: the unit groups of a model, from its family adapter or its traced graph."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from bmr_compress.coupling import families  # noqa: F401  (registers the family adapters)
from bmr_compress.coupling.adapters import adapter_for
from bmr_compress.coupling.graph import graph_groups
from bmr_compress.coupling.groups import UnitGroup
from bmr_compress.errors import UnsupportedModelError


def discover_groups(
    model: nn.Module,
    example_inputs: Mapping[str, torch.Tensor] | torch.Tensor | None = None,
    *,
    ignored: list[nn.Module] | None = None,
) -> list[UnitGroup]:
    """Unit groups of `model`: from its family adapter if one is registered (by MRO of the
    model class), else from Torch-Pruning's dependency graph traced on example_inputs."""
    adapter = adapter_for(model)
    if adapter is not None:
        return adapter.groups(model)
    if example_inputs is None:
        raise UnsupportedModelError(f"{type(model).__name__}: no family adapter; example inputs"
                                    " are needed to trace its dependency graph")
    return graph_groups(model, example_inputs, ignored=ignored)

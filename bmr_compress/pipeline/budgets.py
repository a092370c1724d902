"""The variational path's plan settings from PlanConfig, budgets counted exactly."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

    from bmr_compress.coupling.groups import UnitGroup
    from bmr_compress.pipeline.config import PlanConfig
    from bmr_compress.planning.plan import PlanSettings


def plan_settings(plan: PlanConfig, original: nn.Module,
                   mac_weights: Mapping[str, float] | None = None,
                   groups: list[UnitGroup] | None = None,
                   task: str | None = None) -> PlanSettings:
    """planning.PlanSettings from the pipeline's PlanConfig. `--size-budget` is a share (≤ 1)
    or count of the model's parameters and `--latency-budget` a share of its dense-layer
    MACs; both are turned into budgets on what the unit groups own, counted exactly (costs.CostLedger):
    what no group owns stays whatever BMR decides."""
    from bmr_compress.io.checks import count_params
    from bmr_compress.planning import PlanSettings
    from bmr_compress.scoring.costs import CostLedger

    shapes = {k: v.shape for k, v in original.state_dict().items()}
    budget = plan.size_budget
    max_params = None
    if budget is not None:
        total = count_params(original)
        target = total * float(budget) if float(budget) <= 1.0 else float(budget)
        owned = CostLedger(groups or [], shapes).total()
        max_params = max(int(target - (total - owned)), 0)
    max_macs = None
    if plan.latency_budget is not None and mac_weights is not None and groups:
        total_macs = sum(shapes[k].numel() * w for k, w in mac_weights.items() if k in shapes)
        owned = CostLedger(groups, shapes, mac_weights).total()
        max_macs = max(float(plan.latency_budget) * total_macs - (total_macs - owned), 0.0)
    kinds = PlanSettings().kinds
    if task == "embedding":  # the hidden size *is* the embedding size users consume
        kinds = tuple(k for k in kinds if k != "hidden")
    return PlanSettings(
        structured=plan.structured, unstructured=plan.unstructured,
        threshold=plan.threshold, round_to=plan.round_to, max_params=max_params,
        max_macs=max_macs, kinds=kinds,
    )

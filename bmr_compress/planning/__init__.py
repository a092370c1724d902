"""Planning: which units and weights to remove, from ΔlnZ scores alone (no pruning ratio).

plan: one-shot plans and masks; sequential: layer-by-layer structured reduction on inputs
through the already-reduced layers; iterate: the Beckers rounds (prune, pin, refit, rescore).
"""

from bmr_compress.planning.plan import (
    Plan, PlanSettings, make_plan, plan_masks, structured_masks, unstructured_masks,
)
from bmr_compress.planning.iterate import IterationResult, Round, iterate_bmr, pin_scores

__all__ = ["IterationResult", "Plan", "PlanSettings", "Round", "iterate_bmr", "make_plan", "pin_scores", "plan_masks", "structured_masks", "unstructured_masks"]

"""Planning: which units and weights to remove, from ΔlnZ scores alone (no pruning ratio).

plan: one-shot plans and masks; sequential: layer-by-layer structured reduction on inputs
through the already-reduced layers; ranking: which units that reduction keeps (the evidence
by default, or a baseline's importance) and whether the survivors are compensated; iterate:
the Beckers rounds (prune, pin, refit, rescore).
"""

from bmr_compress.planning.plan import (
    Plan, PlanSettings, make_plan, plan_masks, structured_masks, unstructured_masks,
)
from bmr_compress.planning.iterate import IterationResult, Round, iterate_bmr, pin_scores
from bmr_compress.planning.ranking import (
    DISTORTION, EVIDENCE, MAGNITUDE, RANKINGS, FollowedRound, Ranking, unit_magnitude,
)

__all__ = ["DISTORTION", "EVIDENCE", "FollowedRound", "IterationResult", "MAGNITUDE", "Plan",
           "PlanSettings", "RANKINGS", "Ranking", "Round", "iterate_bmr", "make_plan",
           "pin_scores", "plan_masks", "structured_masks", "unit_magnitude",
           "unstructured_masks"]

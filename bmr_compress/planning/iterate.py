"""Iterative BMR (Beckers et al.): prune → pin pruned weights at zero → refit survivors a few
steps → rescore, until a round prunes nothing or held-out ELBO stops improving.

Written against two callables so it is testable without a trainer:
  score() -> (unit scores, weight scores)   from the current posterior
  refit(masks) -> held-out ELBO              pins masks (True = keep) and refits
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

from bmr_compress.coupling.groups import UnitGroup
from bmr_compress.planning.plan import (
    Plan, PlanSettings, make_plan, plan_masks, unstructured_masks,
)

log = logging.getLogger(__name__)

Scores = tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class Round:
    index: int
    pruned_fraction: float  # of all scored weights, cumulative after this round
    newly_pruned: int
    heldout_elbo: float


@dataclass
class IterationResult:
    rounds: list[Round]
    stop_reason: str
    masks: dict[str, torch.Tensor]  # masks of the best round (True = keep)
    best_round: int  # index into rounds (-1: the unpruned start was best)
    plan: Plan | None = None
    pruned_units: dict[str, list[int]] = field(default_factory=dict)
    baseline_elbo: float | None = None  # held-out ELBO before any pruning, if measured

    def to_json(self) -> dict:
        return {"rounds": [dataclasses.asdict(r) for r in self.rounds],
                "stop_reason": self.stop_reason, "best_round": self.best_round,
                "baseline_elbo": self.baseline_elbo}


def iterate_bmr(
    groups: list[UnitGroup],
    shapes: Mapping[str, torch.Size],
    score: Callable[[], Scores],
    refit: Callable[[dict[str, torch.Tensor]], float],
    settings: PlanSettings,
    *,
    max_rounds: int = 10,
    baseline_elbo: float = -math.inf,
    tol: float = 0.0,
) -> IterationResult:
    """Run rounds until nothing new is pruned or held-out ELBO falls below the best by > tol.

    Rounds within tol of the best ELBO are accepted (more pruning at equal evidence); the
    returned masks are those of the last accepted round.

    Pruning is cumulative: once pruned, a weight or unit stays pruned (its score is pinned
    to +inf before planning). Rounding to hardware multiples is left to the final plan.
    `shapes` lists the tensors masks are made for (the wrapped parameters).
    """
    step_settings = dataclasses.replace(settings, round_to=0, max_params=None)
    masks = {k: torch.ones(s, dtype=torch.bool) for k, s in shapes.items()}
    gone_units: dict[str, set[int]] = {g.name: set() for g in groups}
    rounds: list[Round] = []
    best, best_elbo, best_masks = -1, baseline_elbo, {k: m.clone() for k, m in masks.items()}
    best_units = {k: set(v) for k, v in gone_units.items()}
    total = sum(m.numel() for m in masks.values())
    reason = f"max_rounds={max_rounds} reached"
    for r in range(max_rounds):
        unit_scores, weight_scores = score()
        unit_scores = _pin_units(unit_scores, gone_units)
        weight_scores = {k: v.masked_fill(~masks[k], math.inf) if k in masks else v
                         for k, v in weight_scores.items()}
        plan = make_plan(groups, unit_scores, weight_scores, step_settings)
        new = plan_masks(groups, plan, shapes, unstructured_masks(plan, weight_scores))
        merged = {k: masks[k] & new.get(k, masks[k]) for k in masks}
        newly = sum(int((masks[k] & ~merged[k]).sum()) for k in masks)
        if newly == 0:
            reason = "a round pruned nothing"
            break
        masks = merged
        for g in groups:
            kept = set(plan.keep.get(g.name, range(g.num_units)))
            gone_units[g.name] |= set(range(g.num_units)) - kept
        elbo = float(refit(masks))
        pruned = sum(int((~m).sum()) for m in masks.values()) / max(total, 1)
        rounds.append(Round(r, pruned, newly, elbo))
        log.info("BMR round %d: pruned %.4f of weights (+%d), held-out ELBO %.4f", r, pruned,
                 newly, elbo)
        if elbo > best_elbo - tol:  # not worse than the best so far (within tol): accept
            if elbo >= best_elbo or best == -1:
                best_elbo = max(elbo, best_elbo)
            best = len(rounds) - 1
            best_masks = {k: m.clone() for k, m in masks.items()}
            best_units = {k: set(v) for k, v in gone_units.items()}
        else:
            reason = "held-out ELBO stopped improving"
            break
    return IterationResult(rounds, reason, best_masks, best,
                           pruned_units={k: sorted(v) for k, v in best_units.items()})


def _pin_units(scores: Mapping[str, torch.Tensor],
               gone: Mapping[str, set[int]]) -> dict[str, torch.Tensor]:
    out = {}
    for name, sc in scores.items():
        sc = sc.clone().double()
        if gone.get(name):
            sc[torch.tensor(sorted(gone[name]), dtype=torch.long)] = math.inf
        out[name] = sc
    return out


def pin_scores(scores: Mapping[str, torch.Tensor],
               result: IterationResult) -> dict[str, torch.Tensor]:
    """Unit scores with every unit pruned by the iteration pinned to +inf (for the final plan)."""
    return _pin_units(scores, {k: set(v) for k, v in result.pruned_units.items()})

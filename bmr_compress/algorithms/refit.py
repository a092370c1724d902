"""Iterative BMR wired to the variational fine-tune (variational.finetune / set_masks_).

planning.iterate decides the rounds (pure), the variational trainer refits, and this module
runs one against the other.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import torch
from torch import nn

from bmr_compress.coupling.groups import UnitGroup
from bmr_compress.planning.iterate import IterationResult, Scores, iterate_bmr
from bmr_compress.planning.plan import PlanSettings
from bmr_compress.scoring.mean_field import score_groups, score_weights
from bmr_compress.variational import (
    finetune, gate_tensors, heldout_elbo, posterior_tensors, set_masks_,
)

log = logging.getLogger(__name__)


def iterate_with_finetune(
    model: nn.Module,
    groups: list[UnitGroup],
    teacher: nn.Module | None,
    batches: Sequence[dict[str, torch.Tensor]],
    heldout: Sequence[dict[str, torch.Tensor]],
    finetune_settings,
    plan_settings: PlanSettings,
    *,
    refit_steps: int = 50,
    max_rounds: int = 10,
    rule: str = "spike",
    tol: float = 0.0,
) -> IterationResult:
    """Beckers-style rounds on a wrapped, fitted `model`: score → pin pruned weights at zero
    (set_masks_) → finetune `refit_steps` → held-out ELBO; the model ends in the state of
    the best round (its masks re-applied and its parameters restored)."""
    refit_settings = dataclasses.replace(finetune_settings, steps=refit_steps, progress=False,
                                         checkpoint_dir=None, resume=False)
    snapshots: list[dict[str, torch.Tensor]] = []

    def score() -> Scores:
        post = posterior_tensors(model)
        gates = gate_tensors(model) if rule != "spike" else None
        ws = score_weights(post)
        return score_groups(groups, post, gates, rule, weight_scores=ws), ws

    def refit(masks: dict[str, torch.Tensor]) -> float:
        set_masks_(model, masks)
        finetune(model, teacher, batches, refit_settings)
        snapshots.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return heldout_elbo(model, teacher, heldout, finetune_settings).elbo

    baseline = heldout_elbo(model, teacher, heldout, finetune_settings).elbo
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    shapes = {k: p.mu.shape for k, p in posterior_tensors(model).items()}
    # Round 1 is accepted on its own evidence (ΔlnZ ≥ 0); later rounds must not lower the
    # held-out ELBO below the best round's by more than tol.
    result = iterate_bmr(groups, shapes, score, refit, plan_settings, max_rounds=max_rounds,
                         tol=tol)
    result.baseline_elbo = baseline
    if result.best_round >= 0:
        model.load_state_dict(snapshots[result.best_round])
    else:
        model.load_state_dict(start, strict=False)
    set_masks_(model, result.masks)
    log.info("iterative BMR: %d rounds, stop: %s, best round %d", len(result.rounds),
             result.stop_reason, result.best_round)
    return result

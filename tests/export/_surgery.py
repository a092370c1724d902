"""Compression for the export tests through the real surgery API.

The posterior stands in for a fine-tune: mean = the pretrained weights, one posterior std per
tensor (`REL_STD` x the tensor's std), prior = the tensor's empirical variance. ΔlnZ scores,
the plan and the physical cut are the project's own (score_groups / make_plan / apply_plan_).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from bmr_compress.cutting import apply_plan_
from bmr_compress.planning import PlanSettings, make_plan, unstructured_masks
from bmr_compress.scoring import score_groups, score_weights
from bmr_compress.coupling import discover_groups
from bmr_compress.variational.state import PosteriorTensor

REL_STD = 0.6


def synthetic_posterior(model: nn.Module) -> dict[str, PosteriorTensor]:
    post = {}
    for name, p in model.named_parameters():
        if p.dim() < 2 or isinstance(model.get_submodule(name.rpartition(".")[0]), nn.Embedding):
            continue
        std = float(p.detach().std())
        post[name] = PosteriorTensor(
            mu=p.detach().clone(), log_var=torch.full_like(p, math.log((REL_STD * std) ** 2)),
            prior_log_var=torch.tensor(math.log(std**2 + float(p.detach().mean()) ** 2)),
        )
    return post


def surgery_compress(model: nn.Module, name: str, sample: dict[str, torch.Tensor]) -> nn.Module:
    groups = discover_groups(model, sample)
    post = synthetic_posterior(model)
    scores = score_groups(groups, post)
    wscores = score_weights(post)
    plan = make_plan(groups, scores, wscores, PlanSettings(round_to=0))
    record = apply_plan_(model, groups, plan, weight_masks=unstructured_masks(plan, wscores))
    model.bmr_record = record  # type: ignore[attr-defined] - for the report and assertions
    model.bmr_scores = scores  # type: ignore[attr-defined]
    return model


def with_dead_units_(model: nn.Module, example: dict[str, torch.Tensor], every: int = 2) -> nn.Module:
    """Make every `every`-th neuron/filter/head near-silent (x 1e-3 on all its slices), like a
    trained model with redundant units, so that BMR has something to find."""
    groups = discover_groups(model, example)
    state = model.state_dict()
    with torch.no_grad():
        for g in groups:
            if g.kind not in ("neuron", "filter", "head") or g.num_units < 2:
                continue
            units = torch.arange(1, g.num_units, every)
            for s in g.slices:
                if s.role not in ("out", "in"):
                    continue
                t = state[s.param]
                idx = s.index.index_select(0, units).flatten()
                t.index_copy_(s.dim, idx, t.index_select(s.dim, idx) * 1e-3)
    return model

"""Sequential structured reduction: layer by layer, inputs through the already-reduced layers.

For each consumer site in forward order: measure A on the calibration inputs as they now
arrive (earlier sites already reduced and compensated — the SparseGPT/OBC order), score its
units with the row-correlated Laplace posterior at the calibrated ν, drop every unit with
ΔlnZ ≥ 0 (kept widths rounded to a hardware multiple, guided by ΔlnZ), and move the
survivors to their reduced posterior means (bmr.structured.column_reduced_means). Removed
units end exactly zero, so apply_plan_ cuts them without changing the function.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from bmr_compress.bmr.ard import unit_score
from bmr_compress.bmr.branch import ROUNDING, branch_evidence
from bmr_compress.bmr.structured import LayerFactors, column_reduced_means
from bmr_compress.layers import layer_type
from bmr_compress.coupling.groups import UnitGroup, zero_width_ok
from bmr_compress.planning.plan import keep_top, rounded_count
from bmr_compress.planning.ranking import EVIDENCE, Ranking
from bmr_compress.scoring.unit_posterior import (
    Site, input_moments, layer_weight, prior_variance,
)

log = logging.getLogger(__name__)


@dataclass
class SequentialResult:
    """Kept unit indices per group, ΔlnZ per unit at the sites, and per-site output errors."""

    keep: dict[str, list[int]] = field(default_factory=dict)
    delta_lnz: dict[str, torch.Tensor] = field(default_factory=dict)
    sites: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def removed(self) -> int:
        return sum(len(v) for v in self.delta_lnz.values()) - sum(
            len(self.keep[g]) for g in self.delta_lnz)


def write_rows_(mod: nn.Module, rows: torch.Tensor) -> None:
    w = mod.weight
    has_bias = getattr(mod, "bias", None) is not None
    body = rows[:, :-1] if has_bias else rows
    with torch.no_grad():
        w.copy_(layer_type(mod).from_rows(mod, body, w.shape).to(dtype=w.dtype, device=w.device))
        if has_bias:
            mod.bias.copy_(rows[:, -1].to(dtype=mod.bias.dtype, device=mod.bias.device))


def reduce_sequential_(
    model: nn.Module,
    groups: Sequence[UnitGroup],
    sites: Mapping[str, Site],
    row_scale: Mapping[str, torch.Tensor],
    batches: Sequence[Mapping[str, Any]],
    nu: float,
    *,
    round_to: int = 8,
    min_units: int = 1,
    progress: Callable[[str], None] | None = None,
    prior: str = "ard",
    ranking: Ranking = EVIDENCE,
    round_index: int = 0,
    branches: bool = False,
) -> SequentialResult:
    """Zero and compensate, site by site, every unit whose ΔlnZ ≥ 0 at precision ν.

    Mutates `model` (removed units' consumer columns become 0; survivors move); returns the
    kept indices per scored group. Sites are visited in module order (forward order for the
    supported families).

    `prior`: how each unit's prior scale is set (bmr.ard.UNIT_PRIORS; "ard" by default).
    `ranking` (planning/ranking.py): which units stay and whether the survivors are
    compensated; when it follows an earlier reduction, that reduction's round `round_index`
    fixes how many units of each group stay. `branches`: a whole residual branch may go
    (decide_site).
    """
    by_name = {g.name: g for g in groups}
    result = SequentialResult()
    order = [n for n, _ in model.named_modules() if n in sites]
    for name in order:
        site = sites[name]
        if progress is not None:
            progress(name)
        mod = model.get_submodule(name)
        a_in = input_moments(model, [name], batches).get(name)
        if a_in is None:  # the site never ran on these inputs: keep its units
            for g in site.columns:
                result.keep[g] = list(range(by_name[g].num_units))
            continue
        w = layer_weight(model, name)
        s2 = prior_variance(model, name)
        b = row_scale[name].double()
        fac = LayerFactors.build(w, a_in, b, s2)
        keep, scores, drop = decide_site(fac, site, by_name, nu, round_to, min_units,
                                         prior=prior, ranking=ranking, model=model,
                                         round_index=round_index, branches=branches)
        result.keep.update(keep)
        result.delta_lnz.update(scores)
        # the survivors make up for the removed columns: the conditional mean of the Laplace
        # posterior centred on the current weights (the prior's shrinkage decides what goes,
        # it is not written into the units that stay)
        new = (column_reduced_means(w, drop, a_in, nu * b, 1.0 / s2) if ranking.compensate
               else w * (~drop).to(w.dtype))
        err_new = _rel_error(w, new, a_in, b)
        err_zero = _rel_error(w, w * (~drop).to(w.dtype), a_in, b)
        result.sites[name] = {"columns_removed": int(drop.sum()), "columns": int(drop.numel()),
                              "distortion_zeroed": err_zero, "distortion_reduced": err_new}
        write_rows_(mod, new)
        log.info("%s: %d of %d columns removed, predicted distortion %.3g (zeroed %.3g)",
                 name, int(drop.sum()), drop.numel(), err_new, err_zero)
    return result


def decide_site(fac: LayerFactors, site: Site, groups: Mapping[str, UnitGroup], nu: float,
                round_to: int, min_units: int = 1, *, prior: str = "ard",
                ranking: Ranking = EVIDENCE, model: nn.Module | None = None,
                round_index: int = 0, branches: bool = False,
                ) -> tuple[dict[str, list[int]], dict[str, torch.Tensor], torch.Tensor]:
    """BMR's decision at one consumer site: (kept units per group, ΔlnZ per unit, bool mask
    of the consumer columns that go). Units with ΔlnZ ≥ 0 go; kept counts are rounded to a
    multiple of round_to in the direction the evidence prefers.

    `ranking` chooses which units stay (by its importance; `model`: the model as it is now,
    read by the magnitude ranking) and, when it follows an earlier reduction, how many
    (that reduction's round `round_index`).

    `branches`: a group that is a whole residual branch the cut can remove
    (coupling.groups.zero_width_ok) and the only one its site consumes is also scored as one
    unit (bmr.branch.branch_evidence); it goes entirely when that joint ΔlnZ ≥ 0 and is at
    least what thinning gains (docs/theory.md §7c)."""
    counts = ranking.kept_counts(round_index)
    keep: dict[str, list[int]] = {}
    scores: dict[str, torch.Tensor] = {}
    drop = torch.zeros(fac.w0.shape[1], dtype=torch.bool)
    for gname, cols in site.columns.items():
        g = groups[gname]
        ev = unit_score(fac, cols, nu, prior)
        if counts is not None and gname in counts:
            n_keep = min(int(counts[gname]), g.num_units)
        else:
            n_keep = rounded_count(g, int((ev.delta_lnz < 0).sum()), round_to, min_units,
                                   scores=ev.delta_lnz)
        keep[gname] = keep_top(-ranking.importance(model, g, ev).double(), n_keep)
        if branches and counts is None and len(site.columns) == 1 and zero_width_ok(g) \
                and _branch_goes(fac, cols, nu, prior, ev.delta_lnz, keep[gname]):
            keep[gname] = []
        scores[gname] = ev.delta_lnz
        gone = sorted(set(range(g.num_units)) - set(keep[gname]))
        if gone:
            drop[cols[gone].flatten()] = True
    return keep, scores, drop


def _branch_goes(fac: LayerFactors, cols: torch.Tensor, nu: float, prior: str,
                 unit_scores: torch.Tensor, kept: list[int]) -> bool:
    """Whether removing the whole branch beats thinning it, by evidence. The branch's joint
    ΔlnZ must be ≥ 0 (the constant branch is at least as probable as the full one) and at
    least the thinned layer's, which the per-unit rule takes as the sum of its removed units'
    ΔlnZ under "layer"; under "ard" a removed unit's evidence is 0 (its τ* = 0; the score
    reported for it is its τ = 1 value, for ordering), so thinning gains 0 and a tie goes to
    the smaller model."""
    if int(cols.numel()) + 1 < fac.w0.shape[1]:  # columns other than the bias: not a branch
        return False
    ev = branch_evidence(fac, cols, nu, prior)
    gone = unit_scores[sorted(set(range(len(unit_scores))) - set(kept))]
    # units pinned at +inf by earlier rounds (weights already zero) add nothing either way
    thin = 0.0 if prior == "ard" else float(gone[torch.isfinite(gone)].sum())
    # within ROUNDING nats of each other (a layer whose weights are ~0 has s² ~ 0, so both
    # are ~0): a tie, and ties go to the smaller model
    goes = float(ev.delta_lnz[0]) >= max(0.0, thin) - ROUNDING
    log.debug("branch of %d units: joint ΔlnZ %.4g vs thinning %.4g: %s", len(unit_scores),
             float(ev.delta_lnz[0]), thin, "removed" if goes else "kept")
    return goes


def _rel_error(w: torch.Tensor, new: torch.Tensor, a_in: torch.Tensor, b: torch.Tensor) -> float:
    """Σ_i b_i (w̃_i − w_i)ᵀ A (w̃_i − w_i): the predicted relative output distortion."""
    diff = new - w
    return float(torch.einsum("i,ij,jk,ik->", b, diff, a_in, diff))

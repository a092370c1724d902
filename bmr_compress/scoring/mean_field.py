"""Scoring: ΔlnZ per weight (unstructured) and per unit (structured) from a fitted posterior.

Sign convention (MATH.md): ΔlnZ = ln p̃(D) − ln p(D); ΔlnZ ≥ 0 ⇒ the reduced (pruned)
model has at least as much evidence ⇒ prune. Under a mean-field posterior and factorised
prior, a unit's ΔlnZ is the sum of its weights' ΔlnZ over every coupled slice (producing
rows and biases, norm parameters, consuming columns). Pure functions: no nn.Module.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from bmr_compress.errors import InputError
from bmr_compress.coupling.groups import Slice, UnitGroup
from bmr_compress.variational.state import GateTensor, PosteriorTensor

RULES = ("spike", "bmrs_n", "bmrs_u")


def score_weights(posterior: Mapping[str, PosteriorTensor]) -> dict[str, torch.Tensor]:
    """Per-weight spike-at-zero ΔlnZ, keyed by parameter name, shaped like the parameter."""
    from bmr_compress.bmr import spike_delta_lnz

    return {
        name: spike_delta_lnz(p.mu, p.log_var, p.prior_log_var) for name, p in posterior.items()
    }


def _slice_sum(scores: torch.Tensor, s: Slice) -> torch.Tensor:
    """Tensor[num_units]: sum of scores over each unit's slice."""
    moved = scores.movedim(s.dim, 0)  # (size, *rest)
    picked = moved.index_select(0, s.index.flatten())  # (units*k, *rest)
    return picked.reshape(s.index.shape[0], -1).sum(1)


def _pair_overlap(scores: torch.Tensor, a: Slice, b: Slice) -> torch.Tensor:
    """Tensor[num_units]: scores counted twice when one unit owns rows and columns of a tensor."""
    moved = scores.movedim((a.dim, b.dim), (0, 1))  # (size_a, size_b, *rest)
    rows = moved.index_select(0, a.index.flatten()).reshape(a.index.shape[0], a.index.shape[1],
                                                            *moved.shape[1:])
    out = []
    for j in range(a.index.shape[0]):
        out.append(rows[j].index_select(1, b.index[j]).sum())
    return torch.stack(out)


def structured_from_weights(
    groups: list[UnitGroup], weight_scores: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Sum per-weight ΔlnZ over every slice of every unit; slices without a score count 0."""
    out: dict[str, torch.Tensor] = {}
    for g in groups:
        total = torch.zeros(g.num_units, dtype=torch.float64)
        by_param: dict[str, list[Slice]] = {}
        for s in g.slices:
            if s.param in weight_scores:
                by_param.setdefault(s.param, []).append(s)
        for param, ss in by_param.items():
            sc = weight_scores[param]
            for s in ss:
                total += _slice_sum(sc, s).double()
            if len(ss) == 2 and ss[0].dim != ss[1].dim:
                total -= _pair_overlap(sc, ss[0], ss[1]).double()
        out[g.name] = total
    return out


def gate_site(g: UnitGroup) -> tuple[str, int] | None:
    """(module, unit_size) whose output a BMRS gate should scale so that θ_j → 0 removes unit
    j's contribution, or None (hidden streams, fused qkv, norms after the producer, or
    several coupled producers: those groups are scored by the spike rule)."""
    if "gate_module" in g.extra:
        mod = g.extra["gate_module"]
        return None if mod is None else (str(mod), int(g.extra.get("gate_unit", 1)))
    if g.kind == "hidden" or any(s.role == "norm" for s in g.slices):
        return None
    producers = {s.param.rpartition(".")[0] for s in g.slices if s.role == "out"}
    if len(producers) != 1:
        return None
    mod = producers.pop()
    w = next((s for s in g.slices if s.param == f"{mod}.weight" and s.role == "out"), None)
    if w is None:
        return None
    k = w.index.shape[1]
    if not torch.equal(w.index, torch.arange(g.num_units * k).reshape(g.num_units, k)):
        return None
    return mod, k


def gate_sites(groups: list[UnitGroup]) -> list[tuple[str, int]]:
    """Gate sites for PosteriorSpec.gates: one gate per unit on each group's gate module."""
    out: list[tuple[str, int]] = []
    for g in groups:
        site = gate_site(g)
        if site is not None and site not in out:
            out.append(site)
    return out


def _gate_units(g: UnitGroup, gate: GateTensor, per_gate: torch.Tensor) -> torch.Tensor | None:
    """Tensor[num_units] of summed gate ΔlnZ for gates on `gate.module` covering g's units."""
    ss = [s for s in g.slices if s.role == "out" and s.param == f"{gate.module}.weight"]
    if not ss:
        return None
    out = torch.zeros(g.num_units, dtype=torch.float64)
    for j in range(g.num_units):
        channels = torch.cat([s.index[j] for s in ss])
        gid = torch.unique(channels // gate.unit_size)
        if int(gid.max()) >= per_gate.numel():
            raise InputError(f"gate {gate.module} has {per_gate.numel()} units,"
                             f" group {g.name} needs more")
        out[j] = per_gate.double().index_select(0, gid).sum()
    return out


def score_groups(
    groups: list[UnitGroup],
    posterior: Mapping[str, PosteriorTensor],
    gates: Mapping[str, GateTensor] | None = None,
    rule: str = "spike",
    *,
    log_a_red: float = -23 * math.log(2.0),
    log_b_red: float = -4 * math.log(2.0),
    weight_scores: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """ΔlnZ per unit for every group (float64 Tensor[num_units]).

    rule "spike": sum of per-weight spike ΔlnZ over the unit's slices.
    rule "bmrs_n" / "bmrs_u": gate ΔlnZ (BMRS) of the gates on the unit's producing module;
    groups with no gate fall back to the spike score.
    weight_scores: score_weights(posterior) if already computed (saves recomputing it).
    """
    if rule not in RULES:
        raise InputError(f"unknown scoring rule {rule!r}; expected one of {RULES}")
    if weight_scores is None and posterior:
        weight_scores = score_weights(posterior)
    spike = structured_from_weights(groups, weight_scores) if weight_scores else {
        g.name: torch.zeros(g.num_units, dtype=torch.float64) for g in groups}
    if rule == "spike":
        return spike
    from bmr_compress.bmr import bmrs_n_delta_lnz, bmrs_u_delta_lnz

    per_gate: dict[str, torch.Tensor] = {}
    for name, gt in (gates or {}).items():
        if rule == "bmrs_n":
            per_gate[gt.module] = bmrs_n_delta_lnz(gt.mu, gt.log_sigma, gt.log_a, gt.log_b)
        else:
            per_gate[gt.module] = bmrs_u_delta_lnz(gt.mu, gt.log_sigma, log_a_red, log_b_red,
                                              gt.log_a, gt.log_b)
    out: dict[str, torch.Tensor] = {}
    for g in groups:
        found = [u for gt in (gates or {}).values()
                 if (u := _gate_units(g, gt, per_gate[gt.module])) is not None]
        out[g.name] = torch.stack(found).sum(0) if found else spike[g.name]
    return out

"""The default reduction: a stated tolerance, Laplace unit posteriors, sequential cuts, recovery.

Round r (Beckers et al.'s prune → refit → re-score, with a tolerance instead of a ratio):

1. posterior: A and b of every consumer site on the current model (scoring/unit_posterior);
2. ν: the likelihood precision at which the one-shot BMR reduction's *measured* distortion on
   calibration-check batches equals what is left of the tolerance (bisection in ln ν,
   bracketed around the predicted-distortion ν of scoring/tolerance.py; from round 2 first
   within a factor 10 of the previous round's ν);
3. reduce: sequential, layer by layer, ΔlnZ ≥ 0 units out, survivors to their reduced means;
   then cut for real;
4. recovery: distil towards the original for `recovery_steps`; measure the distortion again.

Stops when a round removes nothing, the tolerance is spent or the rounds run out. A round
that leaves the distortion above the tolerance even after recovery is undone, and the next
round may spend only half as much of what is left. The check batches are never
trained on and are not the held-out set the report quotes.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from bmr_compress.io.checks import count_params
from bmr_compress.planning.ranking import EVIDENCE, FollowedRound, Ranking

log = logging.getLogger(__name__)

STATS_BATCHES = 4  # calibration batches for A and b (the rest train the recovery)
CHECK_BATCHES = 4  # calibration batches that only judge distortion
CALIBRATION_STEPS = 7
PREDICTION_STEPS = 6
NEAR_STEPS = 5  # later rounds: bisection in ln ν within a factor 10 of the last round's ν


@dataclass
class LaplaceOutcome:
    model: nn.Module
    keep: dict[str, list[int]]  # group -> kept indices of the ORIGINAL units
    num_units: dict[str, int]
    delta_lnz: dict[str, torch.Tensor]  # the last scored round's ΔlnZ per unit
    rounds: list[dict[str, Any]] = field(default_factory=list)
    tolerance: float = 0.0
    final_distortion: float = 0.0
    snapshots: list[tuple[str, nn.Module]] = field(default_factory=list)  # kept rounds' models
    snapshot_keeps: dict[str, dict[str, list[int]]] = field(default_factory=dict)  # their keep

    def at(self, label: str) -> LaplaceOutcome:
        """This outcome as if the reduction had stopped at the kept round `label`."""
        model = dict(self.snapshots)[label]
        return LaplaceOutcome(model, {k: list(v) for k, v in self.snapshot_keeps[label].items()},
                              dict(self.num_units), self.delta_lnz, self.rounds, self.tolerance,
                              self.final_distortion, [], {})


# unit kinds scored at a consumer site (hidden dimensions are read by every layer: kept)
KINDS = ("neuron", "filter", "head", "kv_group")


def _one_shot(model: nn.Module, sites: Mapping[str, Any], factors: Mapping[str, Any],
              a_in: Mapping[str, torch.Tensor], groups: Mapping[str, Any], nu: float,
              round_to: int, prior: str, branches: bool = False) -> tuple[nn.Module, int]:
    """A copy of `model` with every site reduced at ν from the same statistics."""
    from bmr_compress.bmr.structured import column_reduced_means
    from bmr_compress.planning.sequential import decide_site, write_rows_

    tmp = copy.deepcopy(model)
    removed = 0
    for name, site in sites.items():
        fac = factors[name]
        keep, _, drop = decide_site(fac, site, groups, nu, round_to, prior=prior,
                                    branches=branches)
        removed += sum(groups[g].num_units - len(k) for g, k in keep.items())
        new = column_reduced_means(fac.w0, drop, a_in[name],
                                   nu * fac.row_scale, 1.0 / fac.prior_var)
        write_rows_(tmp.get_submodule(name), new)
    return tmp, removed


def _calibrate(model: nn.Module, original: nn.Module, sites: Mapping[str, Any],
               factors: Mapping[str, Any], a_in: Mapping[str, torch.Tensor],
               groups: Mapping[str, Any], check: Sequence[Mapping[str, Any]], task: str,
               scale: float, base: float, budget: float, round_to: int, prior: str,
               near: float | None = None,
               reference: Sequence[torch.Tensor] | None = None, branches: bool = False) -> float:
    """ν whose one-shot reduction adds at most `budget` measured distortion to `base`.

    `near`: the previous round's ν. The search then starts within a factor 10 of it (rounds
    move ν little on a transformer) and falls back to the full search when the answer is not
    inside that bracket. `reference`: the original's outputs on `check`, computed once."""
    from bmr_compress.algorithms.recovery import distortion
    from bmr_compress.scoring.tolerance import calibrate_nu, distortion_at

    def measured(nu: float) -> tuple[float, int]:
        tmp, removed = _one_shot(model, sites, factors, a_in, groups, nu, round_to, prior,
                                 branches)
        return distortion(tmp, original, check, task, scale, reference=reference) - base, removed

    if near is not None and math.isfinite(near):
        found = _bisect_near(measured, budget, near)
        if found is not None:
            log.info("nu: near the last round's %.3g, measured %.3g (removes %d units, "
                     "distortion +%.3g)", near, found[0], found[2], found[1])
            return found[0] if found[2] else math.inf
    columns = {n: s.columns for n, s in sites.items()}
    pred = calibrate_nu(lambda nu: distortion_at(factors, columns, nu, prior), budget,
                        steps=PREDICTION_STEPS)
    if not math.isfinite(pred.nu):
        return math.inf
    # the prediction sums single removals (no interactions between them; under the layer prior
    # it also counts the prior's share): bracket the measured ν widely around it
    cal = calibrate_nu(measured, budget, steps=CALIBRATION_STEPS,
                       nu_range=(pred.nu * 1e-3, pred.nu * 1e4))
    log.info("nu: predicted %.3g, measured %.3g (removes %d units, distortion +%.3g)",
             pred.nu, cal.nu, cal.units_removed, cal.predicted_distortion)
    return cal.nu if cal.units_removed else math.inf


def _bisect_near(measured: Any, budget: float, near: float) -> tuple[float, float, int] | None:
    """(ν, added distortion, units removed) by bisection in ln ν over [near/10, near·10], the
    smallest ν found within `budget`; None when the answer may lie outside the bracket (every
    point over budget, or every point within it)."""
    lo, hi = math.log(near / 10.0), math.log(near * 10.0)
    lo0, best = lo, None
    for _ in range(NEAR_STEPS):
        mid = 0.5 * (lo + hi)
        d, n = measured(math.exp(mid))
        if d <= budget:
            hi, best = mid, (math.exp(mid), d, n)
        else:
            lo = mid
    return None if best is None or lo == lo0 else best


@dataclass
class CalibrationBatches:
    """The calibration batches split by use: `check` only judges distortion, `stats` give A
    and b, `labelled` (with labels, when given) train the recovery."""

    check: list[dict[str, Any]]
    stats: list[dict[str, Any]]
    labelled: list[Mapping[str, Any]]


def split_calibration(batches: Sequence[Mapping[str, Any]]) -> CalibrationBatches:
    """The calibration batches as laplace_reduce splits them (up to CHECK_BATCHES judge,
    STATS_BATCHES give the statistics, the rest with labels train the recovery)."""
    from bmr_compress.tasks import strip_labels

    train = [strip_labels(b) for b in batches]
    n_check = min(CHECK_BATCHES, max(1, len(train) // 5)) if len(train) > 1 else 0
    check, fit = train[:n_check] or train, train[n_check:] or train
    labelled = list(batches[n_check:]) or list(batches)
    return CalibrationBatches(check, fit[:STATS_BATCHES], labelled)


def _posterior(model: nn.Module, example: Mapping[str, Any], stats: Sequence[Mapping[str, Any]],
               task: str, scale: float) -> tuple[list[Any], dict[str, Any], dict[str, Any],
                                                 dict[str, torch.Tensor], dict[str, Any]] | None:
    """Unit groups, consumer sites, their Kronecker factors, input moments A and row scales
    b of the current model; None when no group has a supported consumer layer."""
    from bmr_compress.bmr.structured import LayerFactors
    from bmr_compress.coupling import discover_groups
    from bmr_compress.scoring.unit_posterior import (
        consumer_sites, input_moments, layer_weight, prior_variance, row_scales,
    )

    groups = discover_groups(model, example)
    sites, unsupported = consumer_sites(model, groups, KINDS)
    if not sites:
        log.warning("no unit group has a supported consumer layer: nothing to score "
                    "(unsupported: %s)", ", ".join(unsupported) or "none")
        return None
    a_in = input_moments(model, list(sites), stats)
    b = row_scales(model, list(a_in), stats, task, scale, a_in)
    factors = {n: LayerFactors.build(layer_weight(model, n), a_in[n], b[n],
                                     prior_variance(model, n)) for n in a_in}
    return groups, {n: s for n, s in sites.items() if n in factors}, factors, a_in, b


def laplace_reduce(original: nn.Module, data: Any, task: str, *, tolerance: float,
                   rounds: int, recovery_steps: int, lr: float, round_to: int,
                   timer: Any, progress: bool = False, ranking: Ranking = EVIDENCE,
                   unit_prior: str = "ard", schedule: str = "constant",
                   hidden_weight: float = 0.0, branches: bool = False) -> LaplaceOutcome:
    """Reduce a copy of `original` within `tolerance` (relative output distortion).

    `data`: .train_batches (calibration: check, statistics and recovery batches) and
    .heldout_batches (the first one only traces the unit groups). `ranking`
    (planning/ranking.py): which units stay and whether the survivors are compensated. A
    ranking that follows an earlier outcome's rounds runs exactly those rounds, each at its
    ν keeping the counts it kept per group (every layer ends at the same width, hence the
    same latency), with no tolerance stop and no undo. `unit_prior`: "ard" (each unit its own prior scale, bmr/ard.py) or "layer"
    (one empirical-Bayes scale per layer, bmr/structured.py). `schedule`, `hidden_weight`:
    the recovery's lr schedule and layer-wise loss weight (algorithms/recovery.recover_); the
    teacher's targets on the recovery batches are computed once, for every round.
    `branches`: a whole residual branch (an FFN block) may go when its joint evidence says so
    (planning/sequential.decide_site, docs/theory.md §7c); off by default.
    """
    from bmr_compress.algorithms.curve import SNAPSHOT_MAX_PARAMS
    from bmr_compress.algorithms.recovery import distortion, probe_outputs
    from bmr_compress.tasks import strip_labels
    from bmr_compress.coupling import discover_groups
    from bmr_compress.scoring.unit_posterior import output_scale

    cal = split_calibration(data.train_batches)
    example = strip_labels(data.heldout_batches[0])
    model = copy.deepcopy(original)
    scale = output_scale(original, cal.stats, task)
    first = discover_groups(model, example)
    following = bool(ranking.follow)
    snapshots = not following and count_params(original) <= SNAPSHOT_MAX_PARAMS
    out = LaplaceOutcome(model, {g.name: list(range(g.num_units)) for g in first},
                         {g.name: g.num_units for g in first}, {}, tolerance=tolerance)
    ref = probe_outputs(original, cal.check, task)  # the original's side of every distortion
    run = _Run(original, example, cal, task, scale, round_to, timer, progress, ranking,
               recovery_steps, lr, unit_prior, schedule, hidden_weight, ref,
               branches=branches)
    share = 1.0  # of the remaining tolerance a round may spend (halved after an overshoot)
    for r in range(len(ranking.follow) if following else rounds):
        before = distortion(model, original, cal.check, task, scale, reference=ref)
        budget = (tolerance - before) * share
        if not following and budget <= 0.05 * tolerance:
            break
        step = run.round(model, out, r, before, budget,
                         ranking.follow[r] if following else None)
        if step is None:
            break
        model, removed, after = step
        if not following and after > tolerance:  # overshot: undo, next round spends half
            share *= 0.5
            continue
        if snapshots and removed:
            out.snapshots.append((f"round {r + 1}", copy.deepcopy(model)))
            out.snapshot_keeps[f"round {r + 1}"] = {k: list(v) for k, v in out.keep.items()}
        if removed == 0:
            break
    out.model = model
    out.final_distortion = distortion(model, original, cal.check, task, scale, reference=ref)
    return out


@dataclass
class _Run:
    """One laplace_reduce call's fixed inputs; `round` runs one prune → recover round."""

    original: nn.Module
    example: Mapping[str, Any]
    cal: CalibrationBatches
    task: str
    scale: float
    round_to: int
    timer: Callable[[str], AbstractContextManager[None]]  # stage name -> timing context
    progress: bool
    ranking: Ranking
    recovery_steps: int
    lr: float
    unit_prior: str
    schedule: str = "constant"
    hidden_weight: float = 0.0
    check_ref: Sequence[torch.Tensor] | None = None  # the original's outputs on cal.check
    targets: Any = None  # the teacher's outputs on cal.labelled, computed at the first recovery
    branches: bool = False  # whole residual branches may go (decide_site)

    def round(self, model: nn.Module, out: LaplaceOutcome, r: int, before: float, budget: float,
              followed: FollowedRound | None) -> tuple[nn.Module, int, float] | None:
        """Score, calibrate ν (or take the followed round's), reduce, cut and recover `model`
        in place. Returns (the model to go on with, units removed, distortion after), the
        model being the state before this round when it overshot; None: nothing to do."""
        from bmr_compress.algorithms.recovery import distortion, recover_
        from bmr_compress.algorithms.targets import TeacherTargets, takes_hidden_states
        from bmr_compress.cutting import apply_plan_
        from bmr_compress.planning.plan import Plan, PlanSettings
        from bmr_compress.planning.sequential import reduce_sequential_
        from bmr_compress.variational.ddp import local_batches

        o, cal, task, scale = self.original, self.cal, self.task, self.scale
        with self.timer("posterior"):
            post = _posterior(model, self.example, cal.stats, task, scale)
        if post is None:
            return None
        groups, sites, factors, a_in, b = post
        if followed is not None:
            nu = followed.nu
        else:
            with self.timer("calibrate"):
                nu = _calibrate(model, o, sites, factors, a_in, {g.name: g for g in groups},
                                cal.check, task, scale, before, budget, self.round_to,
                                self.unit_prior, out.rounds[-1]["nu"] if out.rounds else None,
                                self.check_ref, self.branches)
        if not math.isfinite(nu):
            return None
        undo = copy.deepcopy(model), {k: list(v) for k, v in out.keep.items()}
        with self.timer("reduce"):
            res = reduce_sequential_(model, groups, sites, b, cal.stats, nu,
                                     round_to=self.round_to, prior=self.unit_prior,
                                     ranking=self.ranking, round_index=r,
                                     branches=self.branches)
            plan = Plan({g.name: res.keep.get(g.name, list(range(g.num_units))) for g in groups},
                        {}, PlanSettings(unstructured=False, round_to=self.round_to), {})
            apply_plan_(model, groups, plan)
        cut_distortion = distortion(model, o, cal.check, task, scale, reference=self.check_ref)
        for name, kept in plan.keep.items():  # compose with earlier rounds
            if name in out.keep:
                out.keep[name] = [out.keep[name][i] for i in kept]
        with self.timer("recovery"):
            if self.targets is None and self.recovery_steps > 0:
                self.targets = TeacherTargets.compute(  # this process's slices only
                    o, local_batches(cal.labelled), task,
                    hidden=self.hidden_weight > 0 and takes_hidden_states(o))
            rec = recover_(model, o, cal.labelled, task, steps=self.recovery_steps, lr=self.lr,
                           scale=scale, progress=self.progress, targets=self.targets,
                           schedule=self.schedule, hidden_weight=self.hidden_weight)
        after = distortion(model, o, cal.check, task, scale, reference=self.check_ref)
        out.rounds.append({"round": r + 1, "nu": nu, "distortion_before": before,
                           "removed_units": res.removed, "distortion_cut": cut_distortion,
                           "kept_counts": {g: len(k) for g, k in res.keep.items()},
                           "distortion_after_recovery": after, "recovery_steps": rec.steps,
                           "recovery_seconds": rec.seconds})
        out.delta_lnz = {k: v.clone() for k, v in res.delta_lnz.items()}
        log.info("round %d: %d units removed at nu=%.3g, check distortion %.3g -> %.3g",
                 r + 1, res.removed, nu, before, after)
        if followed is None and after > out.tolerance:  # overshot: the caller undoes it
            model, out.keep = undo
            out.rounds[-1]["undone"] = True
        return model, res.removed, after


def final_record(original: nn.Module, outcome: LaplaceOutcome, example: Mapping[str, Any]) -> Any:
    """One SurgeryRecord from the original to the reduced model across all rounds."""
    from bmr_compress.cutting import apply_plan_
    from bmr_compress.coupling import discover_groups
    from bmr_compress.planning.plan import Plan, PlanSettings

    model = outcome.model
    groups = discover_groups(model, example)
    record = apply_plan_(model, groups, Plan({g.name: list(range(g.num_units)) for g in groups},
                                             {}, PlanSettings(unstructured=False), {}))
    cfg = getattr(original, "config", None)
    before_cfg = cfg.to_dict() if cfg is not None and hasattr(cfg, "to_dict") else {}
    record.build_config = {k: before_cfg[k] for k in record.config_updates
                           if k in before_cfg and before_cfg[k] != record.config_updates[k]}
    shapes0 = {k: list(v.shape) for k, v in original.state_dict().items()}
    for name in record.coverage:
        if name in shapes0 and record.shapes.get(name) not in (None, shapes0[name]):
            record.coverage[name] = "pruned structurally"
    for name, g in record.groups.items():
        if name in outcome.keep:
            g["num_units"] = outcome.num_units[name]
            g["kept"] = list(outcome.keep[name])
    record.params_before = count_params(original)
    return record

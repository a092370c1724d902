"""The default reduction: a stated tolerance, Laplace unit posteriors, sequential cuts, recovery.

Round r (Beckers et al.'s prune → refit → re-score, with a tolerance instead of a ratio):

1. posterior: A and b of every consumer site on the current model (surgery/unit_posterior);
2. ν: the likelihood precision at which the one-shot BMR reduction's *measured* distortion on
   calibration-check batches equals what is left of the tolerance (bisection in ln ν,
   bracketed from below by the predicted-distortion ν of surgery/tolerance.py);
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

STATS_BATCHES = 4  # calibration batches for A and b (the rest train the recovery)
CHECK_BATCHES = 4  # calibration batches that only judge distortion
CALIBRATION_STEPS = 7


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


# unit kinds scored at a consumer site (hidden dimensions are read by every layer: kept)
KINDS = ("neuron", "filter", "head", "kv_group")


def _one_shot(model: nn.Module, sites: Mapping[str, Any], factors: Mapping[str, Any],
              a_in: Mapping[str, torch.Tensor], groups: Mapping[str, Any], nu: float,
              round_to: int) -> tuple[nn.Module, int]:
    """A copy of `model` with every site reduced at ν from the same statistics."""
    from bmr_compress.bmr.structured import column_reduced_means
    from bmr_compress.surgery.sequential import decide_site, write_rows_

    tmp = copy.deepcopy(model)
    removed = 0
    for name, site in sites.items():
        fac = factors[name]
        keep, _, drop = decide_site(fac, site, groups, nu, round_to)
        removed += sum(groups[g].num_units - len(k) for g, k in keep.items())
        new = column_reduced_means(fac.w0, drop, a_in[name],
                                   nu * fac.row_scale, 1.0 / fac.prior_var)
        write_rows_(tmp.get_submodule(name), new)
    return tmp, removed


def _calibrate(model: nn.Module, original: nn.Module, sites: Mapping[str, Any],
               factors: Mapping[str, Any], a_in: Mapping[str, torch.Tensor],
               groups: Mapping[str, Any], check: Sequence[Mapping[str, Any]], task: str,
               scale: float, base: float, budget: float, round_to: int) -> float:
    """ν whose one-shot reduction adds at most `budget` measured distortion to `base`."""
    from bmr_compress.pipeline.recovery import distortion
    from bmr_compress.surgery.tolerance import calibrate_nu, distortion_at

    columns = {n: s.columns for n, s in sites.items()}
    pred = calibrate_nu(lambda nu: distortion_at(factors, columns, nu), budget, steps=10)
    if not math.isfinite(pred.nu):
        return math.inf

    def measured(nu: float) -> tuple[float, int]:
        tmp, removed = _one_shot(model, sites, factors, a_in, groups, nu, round_to)
        return distortion(tmp, original, check, task, scale) - base, removed

    # the prediction counts the prior's share and no interactions: bracket around it
    cal = calibrate_nu(measured, budget, steps=CALIBRATION_STEPS,
                       nu_range=(pred.nu * 1e-3, pred.nu * 1e4))
    log.info("nu: predicted %.3g, measured %.3g (removes %d units, distortion +%.3g)",
             pred.nu, cal.nu, cal.units_removed, cal.predicted_distortion)
    return cal.nu if cal.units_removed else math.inf


def laplace_reduce(original: nn.Module, data: Any, task: str, *, tolerance: float,
                   rounds: int, recovery_steps: int, lr: float, round_to: int,
                   timer: Any, progress: bool = False,
                   follow: Sequence[Mapping[str, Any]] | None = None,
                   ranking: str = "evidence", compensate: bool = True) -> LaplaceOutcome:
    """Reduce a copy of `original` within `tolerance` (relative output distortion).

    Side-by-side baselines (bench/references.py): `follow` = the `rounds` of an earlier
    outcome; each round then keeps exactly the counts that round kept per group (so every
    layer ends with the same width, hence the same latency) at its ν, and `ranking`
    ("magnitude") chooses which units — with the same compensation, cut and recovery
    (compensate=False: the survivors are not moved).
    """
    from bmr_compress.pipeline.recovery import distortion, recover_
    from bmr_compress.pipeline.settings import _strip_labels
    from bmr_compress.surgery import apply_plan_, discover_groups
    from bmr_compress.surgery.plan import Plan, PlanSettings
    from bmr_compress.surgery.sequential import reduce_sequential_
    from bmr_compress.surgery.unit_posterior import (
        consumer_sites, input_moments, layer_weight, output_scale, prior_variance, row_scales,
    )
    from bmr_compress.bmr.structured import LayerFactors

    train = [_strip_labels(b) for b in data.train_batches]
    n_check = min(CHECK_BATCHES, max(1, len(train) // 5)) if len(train) > 1 else 0
    check, fit = train[:n_check] or train, train[n_check:] or train
    labelled = list(data.train_batches[n_check:]) or list(data.train_batches)  # recovery
    stats = fit[:STATS_BATCHES]
    example = _strip_labels(data.heldout_batches[0])
    model = copy.deepcopy(original)
    scale = output_scale(original, stats, task)
    first = discover_groups(model, example)
    from bmr_compress.pipeline.curve import SNAPSHOT_MAX_PARAMS

    snapshots = follow is None and sum(p.numel() for p in original.parameters()) <= SNAPSHOT_MAX_PARAMS
    keep = {g.name: list(range(g.num_units)) for g in first}
    out = LaplaceOutcome(model, keep, {g.name: g.num_units for g in first}, {},
                         tolerance=tolerance)
    share = 1.0  # of the remaining tolerance a round may spend (halved after an overshoot)
    followed = [r for r in follow if not r.get("undone")] if follow is not None else None
    for r in range(rounds if followed is None else len(followed)):
        before = distortion(model, original, check, task, scale)
        budget = (tolerance - before) * share
        if followed is None and budget <= 0.05 * tolerance:
            break
        with timer("posterior"):
            groups = discover_groups(model, example)
            by_name = {g.name: g for g in groups}
            sites, unsupported = consumer_sites(model, groups, KINDS)
            if not sites:
                log.warning("no unit group has a supported consumer layer: nothing to score "
                            "(unsupported: %s)", ", ".join(unsupported) or "none")
                break
            a_in = input_moments(model, list(sites), stats)
            b = row_scales(model, list(a_in), stats, task, scale, a_in)
            factors = {n: LayerFactors.build(layer_weight(model, n), a_in[n], b[n],
                                             prior_variance(model, n)) for n in a_in}
            sites = {n: s for n, s in sites.items() if n in factors}
        counts = None
        if followed is not None:
            nu, counts = float(followed[r]["nu"]), dict(followed[r]["kept_counts"])
        else:
            with timer("calibrate"):
                nu = _calibrate(model, original, sites, factors, a_in, by_name, check, task,
                                scale, before, budget, round_to)
        if not math.isfinite(nu):
            break
        undo = copy.deepcopy(model), {k: list(v) for k, v in out.keep.items()}
        with timer("reduce"):
            res = reduce_sequential_(model, groups, sites, b, stats, nu, round_to=round_to,
                                     counts=counts, ranking=ranking, compensate=compensate)
            plan = Plan({g.name: res.keep.get(g.name, list(range(g.num_units))) for g in groups},
                        {}, PlanSettings(unstructured=False, round_to=round_to), {})
            apply_plan_(model, groups, plan)
        cut_distortion = distortion(model, original, check, task, scale)
        for name, kept in plan.keep.items():  # compose with earlier rounds
            if name in out.keep:
                out.keep[name] = [out.keep[name][i] for i in kept]
        with timer("recovery"):
            rec = recover_(model, original, labelled, task, steps=recovery_steps, lr=lr, scale=scale,
                           progress=progress)
        after = distortion(model, original, check, task, scale)
        out.rounds.append({"round": r + 1, "nu": nu, "distortion_before": before,
                           "removed_units": res.removed, "distortion_cut": cut_distortion,
                           "kept_counts": {g: len(k) for g, k in res.keep.items()},
                           "distortion_after_recovery": after, "recovery_steps": rec.steps,
                           "recovery_seconds": rec.seconds})
        out.delta_lnz = {k: v.clone() for k, v in res.delta_lnz.items()}
        log.info("round %d: %d units removed at nu=%.3g, check distortion %.3g -> %.3g",
                 r + 1, res.removed, nu, before, after)
        if followed is None and after > tolerance:  # overshot: undo, next round spends half
            model, out.keep = undo
            out.rounds[-1]["undone"] = True
            share *= 0.5
            continue
        if snapshots and res.removed:
            out.snapshots.append((f"round {r + 1}", copy.deepcopy(model)))
        if res.removed == 0:
            break
    out.model = model
    out.final_distortion = distortion(model, original, check, task, scale)
    return out


def final_record(original: nn.Module, outcome: LaplaceOutcome, example: Mapping[str, Any]) -> Any:
    """One SurgeryRecord from the original to the reduced model across all rounds."""
    from bmr_compress.surgery import apply_plan_, discover_groups
    from bmr_compress.surgery.apply import count_params
    from bmr_compress.surgery.plan import Plan, PlanSettings

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


def laplace_stage(settings: Any, timer: Any, work: Any) -> tuple[Any, Any]:
    """load → Laplace rounds → (Fitted, Cut) for finish_stage (pipeline/stages.py)."""
    from bmr_compress.pipeline.settings import _strip_labels
    from bmr_compress.pipeline.stages import Cut, Fitted, load_stage
    from bmr_compress.surgery.plan import Plan, PlanSettings

    source, data, opts = load_stage(settings, timer)
    original = source.model
    from bmr_compress.pipeline.settings import DEFAULT_TOLERANCE

    if opts.get("tolerance") is None:
        opts["tolerance"] = DEFAULT_TOLERANCE.get(str(source.task), 0.03)
    outcome = laplace_reduce(
        original, data, str(source.task), tolerance=float(opts["tolerance"]),
        rounds=int(opts["rounds"]), recovery_steps=int(opts["recovery_steps"]),
        lr=float(opts["recovery_lr"]), round_to=int(opts["round_to"]), timer=timer,
        progress=settings.progress,
    )
    example = _strip_labels(data.heldout_batches[0])
    record = final_record(original, outcome, example)
    summary = {name: {"kind": g["kind"], "num_units": g["num_units"], "kept": len(g["kept"]),
                      "rule": "ΔlnZ ≥ 0 at the tolerance-calibrated ν"}
               for name, g in record.groups.items()}
    plan = Plan({k: list(v["kept"]) for k, v in record.groups.items()}, {},
                PlanSettings(unstructured=False, round_to=int(opts["round_to"])), summary)
    fitted = Fitted(source, data, opts, original, outcome.model, [], work / "posterior.safetensors")
    fitted.iteration = _Rounds(outcome)
    return fitted, Cut(plan, record, outcome.delta_lnz, None)


@dataclass
class _Rounds:
    """What report.json's `iterative` entry says about the Laplace rounds."""

    outcome: LaplaceOutcome

    def to_json(self) -> dict[str, Any]:
        o = self.outcome
        return {"method": "laplace rounds (tolerance-calibrated BMR, sequential, recovery)",
                "tolerance": o.tolerance, "final_check_distortion": o.final_distortion,
                "rounds": o.rounds}

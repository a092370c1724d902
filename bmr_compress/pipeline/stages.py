"""The pipeline stages: load → fit → cut (the variational path); finish is pipeline/finish.py."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

log = logging.getLogger(__name__)

from bmr_compress.io.jsonsafe import to_jsonable
from bmr_compress.pipeline.budgets import plan_settings
from bmr_compress.pipeline.config import CompressConfig, flat_record
from bmr_compress.pipeline.shared import (
    DISTILL, StageTimer, recipe_for,
)
from bmr_compress.tasks import strip_labels

if TYPE_CHECKING:
    from torch import Tensor, nn

    from bmr_compress.io.data import DataBundle
    from bmr_compress.io.sources import LoadedSource
    from bmr_compress.pipeline.api import LaplaceRounds
    from bmr_compress.cutting.apply import SurgeryRecord
    from bmr_compress.coupling.groups import UnitGroup
    from bmr_compress.planning.iterate import IterationResult
    from bmr_compress.planning.plan import Plan
    from bmr_compress.variational.settings import FinetuneSettings, PosteriorSpec
    from bmr_compress.variational.trainer import FitResult


@dataclass
class Fitted:
    """What the fit stage hands on: the source, data, the wrapped & fitted model and groups."""

    source: LoadedSource
    data: DataBundle
    config: CompressConfig
    original: nn.Module
    model: nn.Module  # wrapped (variational) or, after cut(), the compressed plain model
    groups: list[UnitGroup]
    posterior_path: Path
    fit: FitResult | None = None  # the variational fine-tune (None on the Laplace path)
    iteration: IterationResult | LaplaceRounds | None = None  # the rounds, when there were any


@dataclass
class Cut:
    """What the cut hands on to finish_stage: the plan, what the surgery did, ΔlnZ per unit."""

    plan: Plan
    record: SurgeryRecord
    unit_scores: dict[str, Tensor]  # group -> ΔlnZ per unit (num_units,)
    compensation: dict[str, float] | None = None  # reduced-means summary (None: not run)


def load_stage(config: CompressConfig, timer: StageTimer) -> tuple[LoadedSource, DataBundle]:
    """Seed torch, resolve the source and build the data bundle. Returns (source, data)."""
    import torch

    from bmr_compress.io.data import make_dataset
    from bmr_compress.pipeline.sources import resolve_source

    src, d = config.source, config.data
    recipe = recipe_for(src.recipe, src.spec)
    torch.manual_seed(int(config.seed))
    with timer("load"):
        source = resolve_source(src.spec, revision=src.revision,
                                trust_remote_code=src.trust_remote_code, recipe=src.recipe,
                                task=src.task, allow_pickle=src.allow_pickle)
    with timer("data"):
        data = make_dataset(d.spec, source, default=recipe.data if recipe is not None else None,
                            max_samples=d.max_samples, batch_size=d.batch_size)
    source.model.eval()
    for p in source.model.parameters():
        p.requires_grad_(False)
    return source, data


def checkpoint_dir(config: CompressConfig, out: str | Path) -> Path:
    """Where the fine-tune checkpoints go: beside --out, keyed by what determines the fit, so
    a rerun after Ctrl-C or a crash resumes and a changed setting starts afresh."""
    import hashlib

    out = Path(out).expanduser().resolve()
    src, d = config.source, config.data
    key = json.dumps({"source": src.spec, "recipe": src.recipe, "revision": src.revision,
                      "data": d.spec, "max_samples": d.max_samples, "batch_size": d.batch_size,
                      "opts": to_jsonable(flat_record(config))}, sort_keys=True)
    return out.parent / f".{out.name}.bmr-ckpt-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def fit_settings(config: CompressConfig, task: str,
                 checkpoints: Path | None = None) -> FinetuneSettings:
    """The fine-tune's FinetuneSettings: config.finetune with the run's seed, device and
    progress, checkpoints every ~10 % of the steps (when a directory is given) and, for
    embedding models, the pooled-embedding likelihood unless a distill mode was chosen."""
    ft = config.finetune
    distill = DISTILL.get(task, "auto") if ft.distill == "auto" else ft.distill
    ckpt = {} if checkpoints is None else {
        "checkpoint_dir": str(checkpoints), "checkpoint_every": max(ft.steps // 10, 10),
        "resume": True}
    return dataclasses.replace(ft, seed=int(config.seed), device=config.device,
                               progress=config.progress, distill=distill, **ckpt)


def fit_(model: nn.Module, teacher: nn.Module, batches: Sequence[Mapping[str, Any]],
         ft: FinetuneSettings, spec: PosteriorSpec | None = None) -> FitResult:
    """Wrap `model` in place in a Gaussian posterior (variational.wrap_) and fine-tune it
    towards `teacher` on `batches`. Returns variational.finetune's FitResult."""
    from bmr_compress.variational import PosteriorSpec, finetune, wrap_

    for p in model.parameters():
        p.requires_grad_(True)
    wrap_(model, spec if spec is not None else PosteriorSpec())
    return finetune(model, teacher, batches, ft)


def fit_stage(config: CompressConfig, out: Path, timer: StageTimer, work: Path) -> Fitted:
    """Load, discover coupled units, wrap in a Gaussian posterior and fine-tune.

    The fine-tune checkpoints every ~10 % of its steps into checkpoint_dir(); a rerun with
    the same settings resumes from there. The caller removes it once the output is in place.
    """
    from bmr_compress.scoring import gate_sites
    from bmr_compress.coupling import discover_groups
    from bmr_compress.variational import PosteriorSpec, save_posterior

    source, data = load_stage(config, timer)
    original = source.model
    model = copy.deepcopy(original)
    example = strip_labels(data.heldout_batches[0])
    with timer("coupling"):
        groups = discover_groups(model, example)
    sites = tuple(gate_sites(groups)) if config.plan.gates != "none" else ()
    ft = fit_settings(config, str(source.task), checkpoint_dir(config, out))
    with timer("finetune"):
        fit = fit_(model, original, data.train_batches, ft, PosteriorSpec(gates=sites))
    fitted = Fitted(source, data, config, original, model, groups, work / "posterior.safetensors",
                    fit=fit)
    if config.plan.iterative:
        fitted.iteration = _iterate(fitted, ft, timer)
    save_posterior(fitted.posterior_path, model, {
        "source": source.source_id, "revision": source.revision or "",
        "settings": to_jsonable(flat_record(config)), "gate_sites": [list(s) for s in sites],
    })
    return fitted


def _rule(config: CompressConfig) -> str:
    return {"none": "spike", "bmrs_n": "bmrs_n", "bmrs_u": "bmrs_u"}[config.plan.gates]


def _iterate(f: Fitted, ft: FinetuneSettings, timer: StageTimer) -> IterationResult:
    """Beckers et al.: prune → pin at zero → refit → rescore, until nothing more goes."""
    from bmr_compress.algorithms.refit import iterate_with_finetune

    with timer("iterate"):
        result = iterate_with_finetune(
            f.model, f.groups, f.original, f.data.train_batches, f.data.heldout_batches, ft,
            plan_settings(f.config.plan, f.original, groups=f.groups, task=str(f.source.task)),
            rule=_rule(f.config),
        )
    for r in result.rounds:
        log.info("round %d: pruned %.1f%% (new %d), held-out ELBO %.4g", r.index,
                 100 * r.pruned_fraction, r.newly_pruned, r.heldout_elbo)
    return result


def cut_stage(f: Fitted, timer: StageTimer) -> Cut:
    """Score every weight and unit from the posterior, plan, unwrap and cut for real."""
    from bmr_compress.cutting import apply_plan_
    from bmr_compress.planning import make_plan, unstructured_masks
    from bmr_compress.scoring import score_groups, score_weights
    from bmr_compress.planning.iterate import pin_scores
    from bmr_compress.variational import gate_tensors, posterior_tensors, unwrap_

    with timer("score+plan"):
        posterior = posterior_tensors(f.model)
        rule = _rule(f.config)
        gates = gate_tensors(f.model) if rule != "spike" else None
        macs = None
        if f.config.plan.latency_budget is not None:
            from bmr_compress.scoring.costs import mac_weights

            macs = mac_weights(f.original, strip_labels(f.data.heldout_batches[0]))
        psettings = plan_settings(f.config.plan, f.original, macs, f.groups, str(f.source.task))
        weight_scores = score_weights(posterior)
        unit_scores = score_groups(f.groups, posterior, gates, rule)
        if f.iteration is not None:  # units pruned in the rounds stay pruned
            unit_scores = pin_scores(unit_scores, f.iteration)
        plan = make_plan(f.groups, unit_scores, weight_scores, psettings,
                         shapes={k: v.shape for k, v in f.original.state_dict().items()},
                         mac_weights=macs)
        wmasks = unstructured_masks(plan, weight_scores) if psettings.unstructured else None
    comp = None
    with timer("surgery"):
        unwrap_(f.model)
        if f.config.plan.compensate:
            comp = _reduced_means(f, plan, posterior, wmasks)
        record = apply_plan_(f.model, f.groups, plan, weight_masks=wmasks)
    f.model.eval()
    log.info("parameters: %d -> %d", record.params_before, record.params_after)
    return Cut(plan, record, unit_scores, comp)


def _reduced_means(f: Fitted, plan: Any, posterior: Mapping[str, Any],
                   wmasks: Mapping[str, Any] | None) -> dict[str, float] | None:
    """Move the survivors of every pruned layer to their BMR reduced posterior mean under a
    row-correlated posterior (cutting/compensate.py), using up to CALIBRATION_BATCHES
    training batches. Returns the summary, or None when nothing was pruned."""
    import torch

    from bmr_compress.planning import plan_masks
    from bmr_compress.cutting.compensate import compensate_

    shapes = {k: p.mu.shape for k, p in posterior.items()}
    masks = plan_masks(f.groups, plan, shapes, wmasks)
    if not any(not bool(m.all()) for m in masks.values()):
        return None
    batches = [strip_labels(b) for b in f.data.train_batches[:CALIBRATION_BATCHES]]
    with torch.no_grad():
        report = compensate_(f.model, posterior, masks, batches)
    return report.summary()


CALIBRATION_BATCHES = 16

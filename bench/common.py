"""Shared benchmark code: load a model + data, fit the posterior, BMR's plan, baseline scorers
that produce per-weight / per-unit scores in the same format as scoring.score_weights /
score_groups (higher = prune first), equal-sparsity plans, the shared recovery fine-tune,
and evaluation (metric, parameters, ONNX bytes, ORT CPU latency).

Equal-sparsity protocol (used by bench/quality.py):
  1. one variational fine-tune (library defaults unless overridden) gives the posterior; every
     method starts from its mean μ, so every method gets the same fine-tune budget;
  2. BMR plans from ΔlnZ alone (PlanSettings(round_to=1), threshold from the library);
  3. a baseline plans its structure with make_plan(..., PlanSettings(max_params = BMR's
     group-owned count, raised by 1 % steps while the survivors are fewer than BMR's nonzero
     count)) on its own unit scores, then prunes single weights (global ranking by its own
     per-weight score) among its survivors until its nonzero count of wrapped weights equals
     BMR's exactly;
  4. every method gets the same `recover_steps` of the tool's recovery afterwards (zeros kept).
"""

from __future__ import annotations

import copy
import dataclasses
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


import torch
from torch import nn

Scores = dict[str, torch.Tensor]


@dataclass
class Case:
    """One benchmark model: the pretrained source, its data and its coupled unit groups."""

    name: str
    original: nn.Module
    train: list[dict[str, torch.Tensor]]
    heldout: list[dict[str, torch.Tensor]]
    task: str
    groups: list[Any]
    description: str


def strip(batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in batch.items() if k != "labels"}


def load_case(recipe: str, *, max_samples: int | None = None, batch_size: int | None = None,
              seq_len: int | None = None) -> Case:
    """Resolve `zoo:<recipe>` (zoo models train once into the cache) and build its data."""
    from bmr_compress.io import make_dataset
    from bmr_compress.io import load_recipe
    from bmr_compress.pipeline import resolve_source
    from bmr_compress.coupling import discover_groups

    r = load_recipe(recipe)
    src = resolve_source(f"zoo:{recipe}")
    spec = r.data
    if seq_len is not None and spec is not None:
        spec = dataclasses.replace(spec, seq_len=seq_len)
    data = make_dataset(None, src, default=spec, max_samples=max_samples, batch_size=batch_size)
    model = src.model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    traced = copy.deepcopy(model).requires_grad_(True)  # the graph tracer follows grad_fn
    groups = discover_groups(traced, strip(data.heldout_batches[0]))
    return Case(recipe, model, data.train_batches, data.heldout_batches, str(src.task),
                groups, data.description)


def fit_posterior(case: Case, steps: int, seed: int, *, spec: Any = None,
                  **overrides: Any) -> tuple[nn.Module, Any]:
    """Wrap a copy of the original and run the library's variational fine-tune (the fit
    stage of `compress --posterior variational`, pipeline.stages.fit_)."""
    from bmr_compress.pipeline import fit_
    from bmr_compress.variational import FinetuneSettings

    torch.manual_seed(seed)
    model = copy.deepcopy(case.original)
    settings = FinetuneSettings(steps=steps, seed=seed, device="cpu", progress=False,
                                **{k: v for k, v in overrides.items() if v is not None})
    fit = fit_(model, case.original, case.train, settings, spec)
    return model, fit


def reshuffle_batches(batches: list[dict[str, torch.Tensor]], seed: int
                      ) -> list[dict[str, torch.Tensor]]:
    """The examples of `batches` permuted by `seed` and re-batched alike (an independent
    calibration split per seed); whole batches are permuted when their shapes differ."""
    g = torch.Generator().manual_seed(seed)
    try:
        cat = {k: torch.cat([b[k] for b in batches]) for k in batches[0]}
    except RuntimeError:  # ragged sequence lengths across batches
        return [batches[i] for i in torch.randperm(len(batches), generator=g)]
    size = next(iter(batches[0].values())).shape[0]
    perm = torch.randperm(next(iter(cat.values())).shape[0], generator=g)
    return [{k: v[perm[i:i + size]] for k, v in cat.items()} for i in range(0, perm.numel(), size)]


def plain_copy(wrapped: nn.Module) -> nn.Module:
    """A deterministic copy with weights = μ (the wrapped model is left as it is)."""
    from bmr_compress.variational import unwrap_

    m = copy.deepcopy(wrapped)
    unwrap_(m)
    for p in m.parameters():
        p.requires_grad_(False)
    return m.eval()


# ----------------------------------------------------------------------------- plans


@dataclass
class MethodPlan:
    """What to remove: kept units per group and keep-masks (True = keep) on wrapped tensors."""

    keep: dict[str, list[int]]
    masks: dict[str, torch.Tensor]
    plan: Any

    def nonzero(self) -> int:
        return int(sum(int(m.sum()) for m in self.masks.values()))


def owned_params(groups: list[Any], keep: Mapping[str, list[int]]) -> int:
    return int(sum(g.numel_per_unit * len(keep.get(g.name, range(g.num_units))) for g in groups))


def keep_masks(groups: list[Any], plan: Any, shapes: Mapping[str, torch.Size],
           weight_masks: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Keep-masks over every tensor in `shapes` (all True where the plan prunes nothing)."""
    from bmr_compress.planning import plan_masks

    s = plan_masks(groups, plan, shapes, weight_masks)
    return {k: s.get(k, torch.ones(shape, dtype=torch.bool)) for k, shape in shapes.items()}


def bmr_plan(groups: list[Any], unit_scores: Scores, weight_scores: Scores,
             shapes: Mapping[str, torch.Size], **plan_kw: Any) -> MethodPlan:
    from bmr_compress.planning import PlanSettings, make_plan, unstructured_masks

    plan = make_plan(groups, unit_scores, weight_scores, PlanSettings(round_to=1, **plan_kw))
    masks = keep_masks(groups, plan, shapes, unstructured_masks(plan, weight_scores))
    return MethodPlan(plan.keep, masks, plan)


def equal_plan(groups: list[Any], unit_scores: Scores, weight_scores: Scores,
               shapes: Mapping[str, torch.Size], ref: MethodPlan) -> MethodPlan:
    """A baseline's plan at `ref`'s sparsity: structure by a parameter budget equal to ref's
    group-owned count, then a global weight threshold down to ref's nonzero count exactly."""
    from bmr_compress.planning import PlanSettings, make_plan

    shifted = {k: v.double() - (float(v.max()) + 1.0) for k, v in unit_scores.items()}
    structured = any(len(ref.keep[g.name]) < g.num_units for g in groups)
    budget = owned_params(groups, ref.keep) if structured else None
    target = ref.nonzero()
    for _ in range(60):  # coupled slices overlap, so a unit's cost is approximate: the
        settings = PlanSettings(round_to=1, unstructured=False, structured=structured,
                                max_params=budget)  # smallest budget that still keeps
        plan = make_plan(groups, shifted, None, settings)  # at least BMR's nonzero count
        masks = keep_masks(groups, plan, shapes)
        surviving = sum(int(m.sum()) for m in masks.values())
        if budget is None or surviving >= target:
            break
        budget = int(budget * 1.01) + 1
    k = surviving - target
    if k > 0:
        names = list(masks)
        flat = torch.cat([weight_scores[n].flatten().double().masked_fill(~masks[n].flatten(),
                                                                          -float("inf"))
                          for n in names])
        top = torch.topk(flat, k).indices
        prune = torch.zeros(flat.numel(), dtype=torch.bool)
        prune[top] = True
        off = 0
        for n in names:
            c = masks[n].numel()
            masks[n] = masks[n] & ~prune[off:off + c].reshape(masks[n].shape)
            off += c
    return MethodPlan(plan.keep, masks, plan)


def apply_method(plain: nn.Module, groups: list[Any], mp: MethodPlan, *,
                 reduced_means: tuple[Mapping[str, Any], list[dict[str, torch.Tensor]]] | None = None
                 ) -> tuple[nn.Module, Any]:
    """Copy of `plain` with mp's weights zeroed and its units physically removed.

    reduced_means=(posterior, calibration batches): first move the survivors to BMR's reduced
    posterior mean (cutting/compensate.py, what `compress` does by default)."""
    from bmr_compress.cutting import apply_plan_
    from bmr_compress.cutting import compensate_

    m = copy.deepcopy(plain)
    if reduced_means is not None:
        posterior, calib = reduced_means
        compensate_(m, posterior, mp.masks, [strip(b) for b in calib])
    plan = dataclasses.replace(mp.plan, keep=mp.keep)
    record = apply_plan_(m, groups, plan, weight_masks=mp.masks)
    return m.eval(), record


# ----------------------------------------------------------------------------- recovery & eval


def recovery_settings(recipe: str) -> Any:
    """The recovery `compress zoo:<recipe>` runs: the recipe's `[settings.laplace]` table
    (LaplaceSettings; the library defaults where the recipe sets nothing)."""
    from bmr_compress.io import load_recipe
    from bmr_compress.pipeline import from_recipe

    r = load_recipe(recipe)
    return from_recipe(r.settings, r.path).laplace


def recover_(model: nn.Module, teacher: nn.Module, batches: list[dict[str, torch.Tensor]],
             task: str, steps: int, seed: int, settings: Any = None) -> None:
    """`steps` of the tool's one recovery (bmr_compress.algorithms.recover_ with the lr,
    schedule and layer-wise weight of `settings`, a LaplaceSettings; None: the library
    defaults), zeros kept at zero so masked cuts stay cut. Every method gets the same call."""
    from bmr_compress.algorithms import recover_ as tool_recover_
    from bmr_compress.pipeline import LaplaceSettings
    from bmr_compress.scoring import output_scale

    if steps <= 0:
        return
    torch.manual_seed(seed)
    lap = settings if settings is not None else LaplaceSettings()
    tool_recover_(model, teacher, batches, task, steps=steps, lr=lap.recovery_lr,
                  scale=output_scale(teacher, [strip(b) for b in batches[:4]], task),
                  schedule=lap.recovery_schedule, hidden_weight=lap.recovery_hidden_weight,
                  keep_zeros=True)
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()


def metric(case: Case, model: nn.Module) -> float:
    """Held-out accuracy (classification), cosine agreement (embedding) or R² (regression)."""
    from bmr_compress.export import task_metric

    r = task_metric(case.original, model, case.heldout, case.task)
    comp = r["compressed"]
    if case.task == "classification" and "accuracy" in comp:
        return float(comp["accuracy"])
    return float(r["gate"])


def metric_name(case: Case) -> str:
    return {"classification": "held-out accuracy", "embedding": "held-out cosine agreement "
            "with the original", "regression": "R²"}.get(case.task, "metric")


def onnx_and_latency(models: Mapping[str, nn.Module], example: dict[str, torch.Tensor],
                     work: Path, runs: int = 20) -> dict[str, dict[str, float]]:
    """Export each model to ONNX and time them side by side on onnxruntime CPU (1 thread)."""
    from bmr_compress.export import export_onnx
    from bmr_compress.export import measure_latency

    paths = {}
    for name, m in models.items():
        art = export_onnx(m, work / f"{name}.onnx", example)
        paths[name] = art.path
    feeds = {k: v.numpy() for k, v in example.items()}
    lat = measure_latency(paths, feeds, threads=1, runs=runs)
    return {n: {"onnx_bytes": float(p.stat().st_size), "latency_ms": lat[n]["median_ms"]}
            for n, p in paths.items()}


def count_nonzero(model: nn.Module) -> int:
    return int(sum(int((p != 0).sum()) for p in model.parameters()))


def count_params(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def med_spread(xs: list[float], fmt: str = "{:.3f}") -> str:
    """'median [min–max]' over repeats."""
    if not xs:
        return "n/a"
    if len(xs) == 1:
        return fmt.format(xs[0])
    return f"{fmt.format(statistics.median(xs))} [{fmt.format(min(xs))}–{fmt.format(max(xs))}]"


class Stopwatch:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.t0


def shapes_of(posterior: Mapping[str, Any]) -> dict[str, torch.Size]:
    return {k: p.mu.shape for k, p in posterior.items()}


Callback = Callable[[str], None]

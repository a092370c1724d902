"""Shared benchmark code: load a model + data, fit the posterior, BMR's plan, baseline scorers
that produce per-weight / per-unit scores in the same format as surgery.score_weights /
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
  4. every method gets the same `recover_steps` of masked distillation fine-tune afterwards.
"""

from __future__ import annotations

import copy
import dataclasses
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402

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
    from bmr_compress.io.data import make_dataset
    from bmr_compress.io.recipes import load_recipe
    from bmr_compress.pipeline.sources import resolve_source
    from bmr_compress.surgery import discover_groups

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
    """Wrap a copy of the original and run the library's variational fine-tune."""
    from bmr_compress.variational import FinetuneSettings, PosteriorSpec, finetune, wrap_

    torch.manual_seed(seed)
    model = copy.deepcopy(case.original)
    for p in model.parameters():
        p.requires_grad_(True)
    wrap_(model, spec if spec is not None else PosteriorSpec())
    settings = FinetuneSettings(steps=steps, seed=seed, device="cpu", progress=False,
                                **{k: v for k, v in overrides.items() if v is not None})
    fit = finetune(model, case.original, case.train, settings)
    return model, fit


def plain_copy(wrapped: nn.Module) -> nn.Module:
    """A deterministic copy with weights = μ (the wrapped model is left as it is)."""
    from bmr_compress.variational import unwrap_

    m = copy.deepcopy(wrapped)
    unwrap_(m)
    for p in m.parameters():
        p.requires_grad_(False)
    return m.eval()


# ----------------------------------------------------------------------------- scorers


def _unit_scores(groups: list[Any], weight_scores: Scores, values: Scores) -> Scores:
    """Per-unit score = −sqrt(mean over the unit's slices of value²): units with small
    values go first; mean (not sum) so units of different sizes compare globally."""
    from bmr_compress.surgery import structured_from_weights

    sq = {k: v.double() ** 2 for k, v in values.items()}
    summed = structured_from_weights(groups, sq)
    return {g.name: -(summed[g.name] / max(g.numel_per_unit, 1)).sqrt() for g in groups}


def activation_norms(model: nn.Module, batches: list[dict[str, torch.Tensor]]
                     ) -> dict[str, torch.Tensor]:
    """‖X_j‖₂ over examples/positions of every Linear's input feature j and every Conv2d's input
    channel (Wanda's activation statistic), keyed by the weight's parameter name."""
    sums: dict[str, torch.Tensor] = {}
    hooks = []
    for name, mod in model.named_modules():
        if isinstance(mod, (nn.Linear, nn.Conv2d)):
            def hook(m, inp, _out, key=f"{name}.weight" if name else "weight"):
                x = inp[0].detach().float()
                x = x.movedim(1, -1) if isinstance(m, nn.Conv2d) else x
                sq = (x.reshape(-1, x.shape[-1]) ** 2).sum(0)
                sums[key] = sums.get(key, torch.zeros_like(sq)) + sq
            hooks.append(mod.register_forward_hook(hook))
    with torch.no_grad():
        for b in batches:
            model(**strip(b))
    for h in hooks:
        h.remove()
    return {k: v.sqrt() for k, v in sums.items()}


def baseline_scores(method: str, groups: list[Any], posterior: Mapping[str, Any],
                    model: nn.Module, batches: list[dict[str, torch.Tensor]], seed: int
                    ) -> tuple[Scores, Scores]:
    """(unit scores, weight scores) of a baseline; higher = prune first (ΔlnZ convention).

    magnitude: |μ|; snr: |μ|/σ; wanda: |μ|·‖X_j‖ (Linear/Conv weights; |μ| elsewhere);
    random: uniform. Structured scores aggregate the weight statistic over each unit's slices.
    """
    mu = {k: p.mu.detach().float() for k, p in posterior.items()}
    if method == "magnitude":
        stat = {k: v.abs() for k, v in mu.items()}
    elif method == "snr":
        stat = {k: mu[k].abs() / (0.5 * p.log_var.detach().float()).exp()
                for k, p in posterior.items()}
    elif method == "wanda":
        return _wanda(groups, mu, activation_norms(model, batches))
    elif method == "random":
        g = torch.Generator().manual_seed(10_000 + seed)
        stat = {k: torch.rand(v.shape, generator=g) + 1e-6 for k, v in mu.items()}
        units = {gr.name: -(torch.rand(gr.num_units, generator=g, dtype=torch.float64) + 1e-6)
                 for gr in groups}
        return units, {k: -v for k, v in stat.items()}
    else:
        raise ValueError(f"unknown baseline {method!r}")
    weights = {k: -v for k, v in stat.items()}
    return _unit_scores(groups, weights, stat), weights


def _quantile(x: torch.Tensor) -> torch.Tensor:
    """Rank of each element within its tensor, scaled to [0, 1)."""
    r = torch.empty(x.numel(), dtype=torch.float64)
    r[torch.argsort(x.flatten(), stable=True)] = torch.arange(x.numel(), dtype=torch.float64)
    return (r / max(x.numel(), 1)).reshape(x.shape)


def _row_quantile(x: torch.Tensor) -> torch.Tensor:
    """Rank of each element within its output row (dim 0), scaled to [0, 1)."""
    flat = x.reshape(x.shape[0], -1)
    r = torch.empty_like(flat, dtype=torch.float64)
    r.scatter_(1, torch.argsort(flat, dim=1, stable=True),
               torch.arange(flat.shape[1], dtype=torch.float64).expand(flat.shape[0], -1).contiguous())
    return (r / max(flat.shape[1], 1)).reshape(x.shape)


def _wanda(groups: list[Any], mu: Scores, norms: Mapping[str, torch.Tensor]) -> tuple[Scores, Scores]:
    """Wanda (Sun et al.): |W_ij|·‖X_j‖ compared within each output row, the same fraction
    pruned per row (the paper's comparison group). Unstructured: per-row rank quantiles of the
    statistic, so a global top-k prunes a near-uniform fraction of every row of every
    Linear/Conv weight; other tensors (norms, biases,
    embeddings) go only after every such weight. Structured: the statistic per unit, relative
    to its group's mean, so groups compare on one scale."""
    stat, weights = {}, {}
    for k, v in mu.items():
        n = norms.get(k)
        if n is not None and v.dim() >= 2 and v.shape[1] == n.numel():
            stat[k] = v.abs() * n.reshape([1, n.numel()] + [1] * (v.dim() - 2))
            weights[k] = -_row_quantile(stat[k])
        else:
            stat[k] = v.abs()
            weights[k] = -(1.0 + _quantile(stat[k]))
    units = _unit_scores(groups, weights, stat)
    units = {k: u / u.abs().mean().clamp_min(1e-30) for k, u in units.items()}
    return units, weights


_TP_FFN_ONLY: dict[str, bool] = {}  # model class -> Torch-Pruning needs the FFN-only fallback


def tp_magnitude(plain: nn.Module, example: dict[str, torch.Tensor], target_params: int,
                 iters: int = 10) -> nn.Module:
    """Torch-Pruning's magnitude pruner (structured, L2 group importance, global ranking),
    its channel ratio bisected so that its parameter count comes closest to target_params
    from above or equal (the output layer is never pruned). Where Torch-Pruning cannot
    prune a model consistently (attention head reshapes), only FFN expansion layers are
    roots (`ffn_only`; stated in the table)."""
    import torch_pruning as tp

    inputs = tuple(example.values())

    def prune(ratio: float) -> nn.Module:
        m = copy.deepcopy(plain).requires_grad_(True)
        layers = [mod for mod in m.modules() if isinstance(mod, (nn.Linear, nn.Conv2d))]
        heads = layers[-1:]
        if ffn_only:  # attention/residual widths: only expansion (FFN-in) layers are roots
            heads = [mod for mod in layers if not (isinstance(mod, nn.Linear)
                                                   and mod.out_features > mod.in_features)]
        pruner = tp.pruner.MetaPruner(
            m, example_inputs=inputs if len(inputs) > 1 else inputs[0],
            importance=tp.importance.GroupMagnitudeImportance(p=2), global_pruning=True,
            pruning_ratio=ratio, ignored_layers=heads,
            forward_fn=lambda mod, x: mod(**example),
        )
        pruner.step()
        m = m.requires_grad_(False).eval()
        with torch.no_grad():
            m(**example)  # fails here if the pruned model is inconsistent
        return m

    key = type(plain).__name__
    ffn_only = _TP_FFN_ONLY.get(key, False)
    if key not in _TP_FFN_ONLY:
        try:
            prune(0.5)
        except (RuntimeError, IndexError, ValueError):  # head reshapes TP cannot follow
            ffn_only = True
        _TP_FFN_ONLY[key] = ffn_only
    need = max(0.0, 1.0 - target_params / count_params(plain))  # fraction of parameters
    lo, hi, best = 0.0, min(0.95, 3 * need + 0.02), None  # channel ratio bracket
    for _ in range(iters):
        mid = (lo + hi) / 2
        m = prune(mid)
        if count_params(m) >= target_params:
            lo, best = mid, m
        else:
            hi = mid
    return best if best is not None else prune(0.0)


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


def _masks(groups: list[Any], plan: Any, shapes: Mapping[str, torch.Size],
           weight_masks: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Keep-masks over every tensor in `shapes` (all True where the plan prunes nothing)."""
    from bmr_compress.surgery import plan_masks

    s = plan_masks(groups, plan, shapes, weight_masks)
    return {k: s.get(k, torch.ones(shape, dtype=torch.bool)) for k, shape in shapes.items()}


def bmr_plan(groups: list[Any], unit_scores: Scores, weight_scores: Scores,
             shapes: Mapping[str, torch.Size], **plan_kw: Any) -> MethodPlan:
    from bmr_compress.surgery import PlanSettings, make_plan, unstructured_masks

    plan = make_plan(groups, unit_scores, weight_scores, PlanSettings(round_to=1, **plan_kw))
    masks = _masks(groups, plan, shapes, unstructured_masks(plan, weight_scores))
    return MethodPlan(plan.keep, masks, plan)


def equal_plan(groups: list[Any], unit_scores: Scores, weight_scores: Scores,
               shapes: Mapping[str, torch.Size], ref: MethodPlan) -> MethodPlan:
    """A baseline's plan at `ref`'s sparsity: structure by a parameter budget equal to ref's
    group-owned count, then a global weight threshold down to ref's nonzero count exactly."""
    from bmr_compress.surgery import PlanSettings, make_plan

    shifted = {k: v.double() - (float(v.max()) + 1.0) for k, v in unit_scores.items()}
    structured = any(len(ref.keep[g.name]) < g.num_units for g in groups)
    budget = owned_params(groups, ref.keep) if structured else None
    target = ref.nonzero()
    for _ in range(60):  # coupled slices overlap, so a unit's cost is approximate: the
        settings = PlanSettings(round_to=1, unstructured=False, structured=structured,
                                max_params=budget)  # smallest budget that still keeps
        plan = make_plan(groups, shifted, None, settings)  # at least BMR's nonzero count
        masks = _masks(groups, plan, shapes)
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
    posterior mean (surgery/compensate.py, what `compress` does by default)."""
    from bmr_compress.surgery import apply_plan_
    from bmr_compress.surgery.compensate import compensate_

    m = copy.deepcopy(plain)
    if reduced_means is not None:
        posterior, calib = reduced_means
        compensate_(m, posterior, mp.masks, [strip(b) for b in calib])
    plan = dataclasses.replace(mp.plan, keep=mp.keep)
    record = apply_plan_(m, groups, plan, weight_masks=mp.masks)
    return m.eval(), record


# ----------------------------------------------------------------------------- recovery & eval


def _distill_loss(student_out: torch.Tensor, teacher_out: torch.Tensor, task: str,
                  batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    if task == "classification":
        return torch.nn.functional.kl_div(student_out.log_softmax(-1), teacher_out.log_softmax(-1),
                                          log_target=True, reduction="batchmean")
    return torch.nn.functional.mse_loss(student_out, teacher_out)


def recover_(model: nn.Module, teacher: nn.Module, batches: list[dict[str, torch.Tensor]],
             task: str, steps: int, seed: int, lr: float = 1e-3) -> None:
    """Masked distillation fine-tune: the same budget for every method; zeros stay zero."""
    from bmr_compress.tasks import output_tensor

    if steps <= 0:
        return
    torch.manual_seed(seed)
    params = [p for p in model.parameters() if p.dtype.is_floating_point]
    keep = [(p != 0) for p in params]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr)
    model.train()
    for i in range(steps):
        b = strip(batches[i % len(batches)])
        with torch.no_grad():
            t = output_tensor(teacher(**b)).float()
        loss = _distill_loss(output_tensor(model(**b)).float(), t, task, b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for p, k in zip(params, keep, strict=True):
                p.mul_(k)
    for p in params:
        p.requires_grad_(False)
    model.eval()


def metric(case: Case, model: nn.Module) -> float:
    """Held-out accuracy (classification), cosine agreement (embedding) or R² (regression)."""
    from bmr_compress.export.metrics import task_metric

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
    from bmr_compress.export.latency import measure_latency

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

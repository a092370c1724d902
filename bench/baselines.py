"""Baseline scorers for the benchmarks (imported by the scripts that compare against them):
per-weight / per-unit scores in the format of scoring.score_weights / score_groups (higher =
prune first) for magnitude, SNR, Wanda and random, and Torch-Pruning's magnitude pruner.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

Scores = dict[str, torch.Tensor]


def strip(batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in batch.items() if k != "labels"}


def _unit_scores(groups: list[Any], weight_scores: Scores, values: Scores) -> Scores:
    """Per-unit score = −sqrt(mean over the unit's slices of value²): units with small
    values go first; mean (not sum) so units of different sizes compare globally."""
    from bmr_compress.scoring import structured_from_weights

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


TP_FFN_ONLY: dict[str, bool] = {}  # model class -> Torch-Pruning needs the FFN-only fallback


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
    ffn_only = TP_FFN_ONLY.get(key, False)
    if key not in TP_FFN_ONLY:
        try:
            prune(0.5)
        except (RuntimeError, IndexError, ValueError):  # head reshapes TP cannot follow
            ffn_only = True
        TP_FFN_ONLY[key] = ffn_only
    from bmr_compress.io import count_params

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

"""BMR chooses the storage precision of every weight matrix (bmr/precision.py on a model).

For every nn.Linear (and every layer type whose weight reads as rows) and every nn.Embedding
of the model, this module measures the row posterior's factors the way unit removal does
(scoring/unit_posterior.py: A = E[x xᵀ] of the layer's inputs over calibration tokens, the
output-side factors b_i from per-example Gauss–Newton traces, s² = mean(w0²)), scores every
candidate grid of bmr.precision.GRIDS and keeps the smallest grid whose ΔlnZ ≥ 0 at ν.

* Linear rows are the output channels; the bias stays in float, so the posterior of the
  weights is taken given the bias (A without its bias row and column).
* An embedding table is a layer whose inputs are one-hot tokens: rows are the embedding
  dimensions, columns the tokens, A = diag(token frequencies) (tokens never seen keep their
  prior and cost nothing in the evidence). Its grid's blocks run along each token's vector
  (what GatherBlockQuantized stores), i.e. across the rows of this view.

ν is either given (the unit removal's, so both decisions are paid in one currency) or set
from a tolerance by the same discrepancy principle as scoring/tolerance.py: the smallest ν
whose chosen grids' predicted distortion Σ δ stays within the tolerance.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from bmr_compress.bmr.precision import (
    GRIDS, KEEP, GridEvidence, RowPosterior, block_for, choose_grid, projected_evidence,
    round_to_grid,
)
from bmr_compress.layers import layer_type
from bmr_compress.scoring.tolerance import calibrate_nu
from bmr_compress.scoring.unit_posterior import input_moments, probe_backward, row_scales
from bmr_compress.variational.ddp import current_shard

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MatrixPosterior:
    """One weight matrix: its parameter name, rows view, kind and candidate grids' weights."""

    param: str  # e.g. "encoder.layer.0.intermediate.dense.weight"
    kind: str  # "linear" or "embedding"
    posterior: RowPosterior
    candidates: dict[str, torch.Tensor]  # grid name -> rounded weights in the rows view

    def evidence(self, nu: float) -> dict[str, GridEvidence]:
        cache = self.__dict__.setdefault("_projected", {})  # ν-free projections, made once
        if not cache:
            p = self.posterior
            cache[""] = p.project(p.w0)
            for g, w in self.candidates.items():
                cache[g] = p.project(w - p.w0)
        return projected_evidence(self.posterior, cache[""],
                                  {g: cache[g] for g in self.candidates}, nu)


@dataclass(frozen=True)
class PrecisionChoice:
    """The grid of every scored matrix at ν, with each grid's evidence."""

    nu: float
    grids: dict[str, str]  # param -> grid name (KEEP: fp32)
    evidence: dict[str, dict[str, GridEvidence]]

    @property
    def predicted_distortion(self) -> float:
        return sum(self.evidence[p][g].distortion for p, g in self.grids.items() if g != KEEP)


def _rows_grid(w: torch.Tensor, grid: str, along_rows: bool) -> torch.Tensor:
    """w rounded to the grid with blocks along its columns (Linear: input channels) or, for an
    embedding's (dim, vocab) view, along its rows (each token's vector)."""
    g = GRIDS[grid]
    x = w.T if along_rows else w
    q = round_to_grid(x.float(), g.bits, block_for(x.shape[-1], g.block)).double()
    return q.T if along_rows else q


def linear_names(model: nn.Module) -> list[str]:
    """Modules whose weight reads as (out, in) rows and is 2-D in storage (Linear, Conv1D)."""
    out = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Embedding) or not isinstance(getattr(m, "weight", None), torch.Tensor):
            continue
        lt = layer_type(m)
        if lt.rows_ok(m) and m.weight.dim() == 2:
            out.append(name)
    return out


def matrix_posteriors(model: nn.Module, batches: list[Mapping[str, Any]], task: str,
                      scale: float, *, grids: Iterable[str] = tuple(GRIDS)) -> list[MatrixPosterior]:
    """Factors and candidate grids of every Linear-like layer and embedding table."""
    grids = list(grids)
    names = linear_names(model)
    a_in = input_moments(model, names, batches)
    b = row_scales(model, list(a_in), batches, task, scale, a_in)
    out = []
    for name in names:
        if name not in a_in or name not in b:
            continue
        mod = model.get_submodule(name)
        w0 = layer_type(mod).rows(mod, mod.weight.detach()).double().cpu()  # (out, in)
        a = a_in[name]
        if getattr(mod, "bias", None) is not None:
            a = a[:-1, :-1]  # weights given the bias
        post = RowPosterior.build(w0, a, b[name], max(float((w0 ** 2).mean()), 1e-30))
        out.append(MatrixPosterior(f"{name}.weight", "linear", post,
                                   {g: _rows_grid(w0, g, False) for g in grids}))
    freq, b_emb = embedding_factors(model, batches, task, scale)
    for name, f in freq.items():
        w0 = model.get_submodule(name).weight.detach().double().cpu().T  # (dim, vocab)
        post = RowPosterior.build(w0, f, b_emb[name], max(float((w0 ** 2).mean()), 1e-30))
        out.append(MatrixPosterior(f"{name}.weight", "embedding", post,
                                   {g: _rows_grid(w0, g, True) for g in grids}))
    return out


def embedding_factors(model: nn.Module, batches: list[Mapping[str, Any]], task: str,
                      scale: float) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Per nn.Embedding: token frequencies over real tokens (the diagonal of A, tr A = 1) and
    b_i = E_n[Σ_t (Σ_{p: t_p = t} g_npi)²], the per-example Gauss–Newton trace of embedding
    dimension i (g the gradient of a Gaussian probe of the output scaled by 1/scale)."""
    mods = {n: m for n, m in model.named_modules() if isinstance(m, nn.Embedding)}
    counts = {n: torch.zeros(m.num_embeddings, dtype=torch.float64) for n, m in mods.items()}
    sums = {n: torch.zeros(m.embedding_dim, dtype=torch.float64) for n, m in mods.items()}
    state: dict[str, Any] = {}
    hooks = []
    for name, mod in mods.items():
        def hook(m: nn.Module, inp: tuple[Any, ...], out: Any, key: str = name) -> None:
            ids = inp[0].detach()
            mask = state.get("mask")
            real = (mask.bool() if mask is not None and tuple(mask.shape) == tuple(ids.shape)
                    else torch.ones_like(ids, dtype=torch.bool))
            if ids.dim() == 2 and ids.shape[0] == 1 and real.shape[0] > 1:  # shared positions
                real = real.any(0, keepdim=True)
            counts[key].index_add_(0, ids[real].reshape(-1).cpu(),
                                   torch.ones(int(real.sum()), dtype=torch.float64))
            if isinstance(out, torch.Tensor) and out.requires_grad:
                def grad_hook(g: torch.Tensor, key: str = key, ids: torch.Tensor = ids) -> None:
                    g = g.detach().double().cpu()  # (B or 1, P, dim)
                    flat = ids.reshape(ids.shape[0], -1).cpu()
                    for e in range(g.shape[0]):
                        uniq, inv = torch.unique(flat[min(e, flat.shape[0] - 1)], return_inverse=True)
                        per = torch.zeros(len(uniq), g.shape[-1], dtype=torch.float64)
                        per.index_add_(0, inv, g[e].reshape(-1, g.shape[-1]))
                        sums[key] += (per ** 2).sum(0)
                out.register_hook(grad_hook)
        hooks.append(mod.register_forward_hook(hook))
    n_examples = probe_backward(model, batches, task, scale, hooks,
                                before=lambda b: state.update(mask=b.get("attention_mask")))
    shard = current_shard()
    if shard is not None:  # every process has a slice of each batch: add their counts
        counts, sums = shard.sum_dict(counts), shard.sum_dict(sums)
    freq = {n: c / max(float(c.sum()), 1.0) for n, c in counts.items() if float(c.sum()) > 0}
    return freq, {n: sums[n] / max(n_examples, 1) for n in freq}


def choose_precisions(posteriors: Iterable[MatrixPosterior], nu: float) -> PrecisionChoice:
    """The smallest grid with ΔlnZ ≥ 0 at ν for every matrix (bmr.precision.choose_grid)."""
    grids, evidence = {}, {}
    for m in posteriors:
        ev = m.evidence(nu)
        evidence[m.param] = ev
        grids[m.param] = choose_grid(ev)
    return PrecisionChoice(nu, grids, evidence)


def calibrate_precisions(posteriors: list[MatrixPosterior], tolerance: float) -> PrecisionChoice:
    """Choices at the smallest ν whose predicted distortion Σ δ is within `tolerance`."""
    def evaluate(nu: float) -> tuple[float, int]:
        c = choose_precisions(posteriors, nu)
        return c.predicted_distortion, sum(g != KEEP for g in c.grids.values())

    cal = calibrate_nu(evaluate, tolerance, steps=14)
    nu = cal.nu if math.isfinite(cal.nu) else 1e12
    choice = choose_precisions(posteriors, nu)
    log.info("precision: nu=%.3g, predicted distortion %.3g, %s", nu, choice.predicted_distortion,
             ", ".join(f"{g} {sum(v == g for v in choice.grids.values())}"
                       for g in (KEEP, *GRIDS)))
    return choice


def round_weights_(model: nn.Module, grids: Mapping[str, str]) -> dict[str, str]:
    """Write every chosen matrix's rounded (dequantised) weights into `model`, in place: the
    float model that the mixed-precision export computes. Returns the grids applied."""
    done = {}
    with torch.no_grad():
        for param, grid in grids.items():
            if grid == KEEP:
                continue
            mod = model.get_submodule(param.rpartition(".")[0])
            w = mod.weight
            if isinstance(mod, nn.Embedding):
                q = _rows_grid(w.detach().double().T, grid, True).T
            else:
                lt = layer_type(mod)
                rows = _rows_grid(lt.rows(mod, w.detach()).double(), grid, False)
                q = lt.from_rows(mod, rows, w.shape)
            w.copy_(q.to(w.dtype))
            done[param] = grid
    return done

"""Gaussian weights: reduced Gaussian prior, spike limit, group sums (docs/theory.md §2).

Full prior N(0, s²), mean-field posterior N(μ, σ²), reduced prior N(0, γ²); every variance
enters as a log-variance (v = ln σ², v0 = ln s², g = ln γ²). Sign: ΔlnZ ≥ 0 ⇒ prune.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ._special import as_tensor_like, float_dtype, require

_BIG = 30.0  # t1 = v − g above this: work with ln r = t1 + ln(r e^{-t1}) (no overflow of e^{t1})


class GaussianReduction(NamedTuple):
    """ΔlnZ and the reduced posterior N(mu, exp(log_var)) for a reduced Gaussian prior."""

    delta_lnz: Tensor
    mu: Tensor
    log_var: Tensor


def gaussian_delta_lnz(
    mu: Tensor, log_var: Tensor, prior_log_var: Tensor | float, reduced_log_var: Tensor | float
) -> GaussianReduction:
    """Evidence change for replacing the prior N(0, s²) by N(0, γ²), element-wise.

    With r = P̃/P = 1 + σ²/γ² − σ²/s² (must be > 0, i.e. P̃ = P + π̃ − π0 > 0):
    ΔlnZ = ½[ln(s²/σ²) + ln(σ²/γ²) − ln r] − ½ (μ²/σ²)(1 − 1/r); reduced posterior
    μ̃ = μ / r, ln σ̃² = ln σ² − ln r. For γ² = 0 use :func:`spike_delta_lnz`.
    All arguments broadcast; the result has the promoted floating dtype.
    """
    dtype = float_dtype(mu, log_var, prior_log_var, reduced_log_var)
    mu, v = torch.as_tensor(mu, dtype=dtype), torch.as_tensor(log_var, dtype=dtype)
    v0, g = as_tensor_like(prior_log_var, v), as_tensor_like(reduced_log_var, v)
    require(torch.isfinite(g), "reduced_log_var must be finite (use spike_delta_lnz for γ² = 0)")
    t1 = v - g  # ln(σ²/γ²)
    t2 = v - v0  # ln(σ²/s²)
    dt = t2 - t1  # ln(γ²/s²)
    big = t1 > _BIG
    # small t1: d = r − 1 = e^{t1} − e^{t2} (accurate near r = 1) or, when r < ½,
    # r = e^{t1} − expm1(t2) directly (accurate near r = 0, e.g. σ = s exactly)
    e1 = torch.exp(torch.clamp(t1, max=_BIG))
    d = torch.where(dt > 1.0, e1 - torch.exp(t2), e1 * -torch.expm1(dt))
    direct = d < -0.5
    r_direct = e1 - torch.expm1(t2)
    # big t1: y = r e^{-t1} = e^{-t1} − expm1(t2 − t1)
    y = torch.exp(-t1) - torch.expm1(dt)
    valid = torch.where(big, y > 0, torch.where(direct, r_direct > 0, d > -1))
    valid &= torch.isfinite(v) & torch.isfinite(v0)
    require(valid, "reduced precision P̃ = 1/σ² + 1/γ² − 1/s² must be > 0 (and inputs finite)")
    ln_r_small = torch.where(direct, torch.log(r_direct), torch.log1p(d))
    ln_r = torch.where(big, t1 + torch.log(y), ln_r_small)
    # t1 − ln r, computed without cancelling two large numbers
    t1_minus_ln_r = torch.where(big, -torch.log(y), t1 - ln_r_small)
    frac = torch.where(big | direct, -torch.expm1(-ln_r), d / (1.0 + d))  # 1 − 1/r
    z2 = torch.square(mu * torch.exp(-0.5 * v))  # μ²/σ², no overflow of 1/σ²
    delta = 0.5 * ((v0 - v) + t1_minus_ln_r) - 0.5 * z2 * frac
    return GaussianReduction(delta, mu * torch.exp(-ln_r), v - ln_r)


def spike_delta_lnz(
    mu: Tensor, log_var: Tensor, prior_log_var: Tensor | float, *, out: Tensor | None = None
) -> Tensor:
    """Spike limit γ² → 0: ΔlnZ = ½[ln(s²/σ²) − μ²/σ²] (prune ⇔ μ²/σ² ≤ ln(s²/σ²)).

    Large contiguous float tensors with a scalar prior (the per-tensor scoring case) take the
    fast path of :mod:`._fast` (one fused or cache-blocked pass, written into `out` if given);
    anything else (broadcasting, autograd) uses the plain expression. Both give the same
    values up to rounding, and a weight with σ ≥ s and μ ≠ 0 always scores < 0.
    """
    from ._fast import fast_path_ok, score_spike_

    if fast_path_ok(mu, log_var, prior_log_var, out):
        if out is None:
            out = torch.empty_like(mu)
        return score_spike_(out, mu, log_var, prior_log_var)
    dtype = float_dtype(mu, log_var, prior_log_var)
    v = torch.as_tensor(log_var, dtype=dtype)
    v0 = as_tensor_like(prior_log_var, v)
    res = 0.5 * (v0 - v) - 0.5 * torch.square(mu * torch.exp(-0.5 * v))
    if out is not None:
        out.copy_(res)
        return out
    return res


def group_delta_lnz(delta_lnz: Tensor, index: Tensor, num_groups: int) -> Tensor:
    """Sum ΔlnZ over index sets: result[k] = Σ_{i: index[i] = k} delta_lnz[i].

    `index` is an integer tensor of `delta_lnz`'s shape (or broadcastable to it) with values in
    [0, num_groups); returns a 1-d tensor of length `num_groups` (empty groups score 0).
    Valid because a mean-field posterior under a factorised prior makes joint reductions add.
    """
    if num_groups < 0:
        raise ValueError(f"num_groups must be >= 0, got {num_groups}")
    if index.dtype.is_floating_point or index.dtype == torch.bool:
        raise ValueError(f"index must be an integer tensor, got dtype {index.dtype}")
    index = torch.broadcast_to(index, delta_lnz.shape).reshape(-1).long()
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= num_groups):
        raise ValueError(
            f"group index out of range [0, {num_groups}): min {int(index.min())}, "
            f"max {int(index.max())}"
        )
    res = torch.zeros(num_groups, dtype=delta_lnz.dtype, device=delta_lnz.device)
    return res.index_add_(0, index, delta_lnz.reshape(-1))

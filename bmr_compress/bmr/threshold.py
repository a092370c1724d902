"""Per-layer Beta–Bernoulli threshold of Marković et al. (docs/theory.md §2, an option).

Inclusion probability of a layer's weights ~ Beta(α0, β0); mean-field fixed point:
ζ ← ψ(α) − ψ(β); q_i = σ(ζ − ΔlnZ_i); α ← α0 + Σ q_i; β ← β0 + Σ (1 − q_i).
Keep weight i iff ΔlnZ_i ≤ ζ (q_i ≥ ½); prune iff ΔlnZ_i > ζ. With most of a layer kept ζ > 0
(more lenient than ΔlnZ ≥ 0); with most pruned ζ < 0 (prunes more).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._special import require


def beta_bernoulli_threshold(
    delta_lnz: Tensor, iters: int = 4, alpha0: float = 1.0, beta0: float = 1.0
) -> Tensor:
    """ζ for one layer (0-d tensor, dtype of `delta_lnz`) after `iters` fixed-point rounds.

    ζ is the value the last round's q_i = σ(ζ − ΔlnZ_i) used, so keep ⇔ ΔlnZ ≤ ζ ⇔ q_i ≥ ½.
    The sums are accumulated in float64.
    """
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    if not (alpha0 > 0 and beta0 > 0 and math.isfinite(alpha0) and math.isfinite(beta0)):
        raise ValueError(f"alpha0 and beta0 must be finite and > 0, got {alpha0}, {beta0}")
    if not delta_lnz.is_floating_point():
        raise ValueError(f"delta_lnz must be floating point, got {delta_lnz.dtype}")
    require(~torch.isnan(delta_lnz), "delta_lnz must not contain NaN")
    d = delta_lnz.reshape(-1)
    n = d.numel()
    alpha = torch.tensor(alpha0, dtype=torch.float64, device=d.device)
    beta = torch.tensor(beta0, dtype=torch.float64, device=d.device)
    zeta = torch.special.digamma(alpha) - torch.special.digamma(beta)
    for _ in range(iters):
        zeta = torch.special.digamma(alpha) - torch.special.digamma(beta)
        s = torch.sigmoid(zeta.to(d.dtype) - d).sum(dtype=torch.float64)  # Σ q_i
        alpha, beta = alpha0 + s, beta0 + (n - s)
    return zeta.to(d.dtype)

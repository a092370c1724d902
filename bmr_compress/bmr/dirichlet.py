"""Dirichlet parameters (Friston et al.; docs/theory.md §4).

Sign: ΔlnZ ≥ 0 ⇒ prefer the reduction.

Prior Dir(a0), posterior Dir(a), reduced prior Dir(ã0), concentrations along the last dim;
reduced posterior ã = a + ã0 − a0 and, with ln B(α) = Σ lnΓ(α_i) − lnΓ(Σ α_i),
ΔlnZ = ln B(a0) + ln B(ã) − ln B(ã0) − ln B(a).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._special import float_dtype, require


def _log_beta(conc: Tensor) -> Tensor:
    """ln B over the last dim: Σ lnΓ(α_i) − lnΓ(Σ α_i). [..., K] -> [...]"""
    return torch.lgamma(conc).sum(-1) - torch.lgamma(conc.sum(-1))


def dirichlet_delta_lnz(prior: Tensor, posterior: Tensor, reduced_prior: Tensor) -> Tensor:
    """ΔlnZ of replacing Dir(prior) by Dir(reduced_prior) given the posterior Dir(posterior).

    Inputs broadcast over leading dims; the last dim holds the K concentrations. Returns
    ΔlnZ per distribution (shape without the last dim); sum it for independent columns.
    """
    dtype = float_dtype(prior, posterior, reduced_prior)
    a0, a, r0 = (torch.as_tensor(t, dtype=dtype) for t in (prior, posterior, reduced_prior))
    a0, a, r0 = torch.broadcast_tensors(a0, a, r0)
    if a0.dim() == 0:
        raise ValueError("Dirichlet parameters need a last dimension of categories")
    for name, t in (("prior", a0), ("posterior", a), ("reduced_prior", r0)):
        msg = f"Dirichlet {name} concentrations must be finite and > 0"
        require(torch.isfinite(t) & (t > 0), msg)
    red_post = a + r0 - a0
    require(red_post > 0, "reduced posterior concentrations a + ã0 − a0 must be > 0")
    # four ln B terms of similar size cancel: accumulate them in float64 (K is small)
    wide = [t.double() for t in (a0, red_post, r0, a)]
    delta = _log_beta(wide[0]) + _log_beta(wide[1]) - _log_beta(wide[2]) - _log_beta(wide[3])
    return delta.to(dtype)


def model_posterior(delta_lnz: Tensor, log_prior: Tensor | None = None, dim: int = -1) -> Tensor:
    """Posterior over candidate reductions m: softmax_m(ln p(m) + ΔlnZ_m) along `dim`.

    `log_prior` defaults to a uniform prior over the candidates (it may be unnormalised).
    """
    if not delta_lnz.is_floating_point():
        raise ValueError(f"delta_lnz must be floating point, got {delta_lnz.dtype}")
    logits = delta_lnz if log_prior is None else delta_lnz + log_prior
    require(~torch.isnan(logits), "model log-odds must not be NaN")
    return torch.softmax(logits, dim=dim)

"""Structured multiplicative gates: BMRS truncated log-normal and Gaussian (MATH.md section 3).

Truncated log-normal: x = ln(theta) ~ N(mu, sigma^2) truncated to [log_a, log_b];
prior log-uniform on [a, b] (uniform density 1/(log_b - log_a) in x). All formulas work
in log-CDF space so that far-tail truncations do not cancel. Computed in float32 or
better (callers pass float32 parameters; autocast does not reach these ops).
"""

from __future__ import annotations

import math

import torch
from torch.special import log_ndtr, ndtri

_HALF_LOG_2PI_E = 0.5 * math.log(2 * math.pi * math.e)
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def log_diff_ndtr(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """ln(Phi(hi) - Phi(lo)) for lo < hi, reflected into the lower tail for precision."""
    flip = lo > 0
    lo2 = torch.where(flip, -hi, lo)
    hi2 = torch.where(flip, -lo, hi)
    lhi = log_ndtr(hi2)
    d = (log_ndtr(lo2) - lhi).clamp(max=-1e-20)
    return lhi + torch.log(-torch.expm1(d))


def _bounds(mu: torch.Tensor, sigma: torch.Tensor, log_a: float, log_b: float):
    alpha = (log_a - mu) / sigma
    beta = (log_b - mu) / sigma
    return alpha, beta, log_diff_ndtr(alpha, beta)


def trunc_lognormal_kl(
    mu: torch.Tensor, log_sigma: torch.Tensor, log_a: float = -20.0, log_b: float = 0.0
) -> torch.Tensor:
    """KL(q || log-uniform[a, b]) per gate, closed form (MATH.md section 3)."""
    sigma = log_sigma.exp()
    alpha, beta, log_z = _bounds(mu, sigma, log_a, log_b)
    # alpha*phi(alpha)/Z, with phi/Z computed in log space (Z may be tiny)
    t_a = alpha * torch.exp(-0.5 * alpha * alpha - _LOG_SQRT_2PI - log_z)
    t_b = beta * torch.exp(-0.5 * beta * beta - _LOG_SQRT_2PI - log_z)
    return math.log(log_b - log_a) - log_sigma - log_z - _HALF_LOG_2PI_E - 0.5 * (t_a - t_b)


def trunc_lognormal_mean(
    mu: torch.Tensor, log_sigma: torch.Tensor, log_a: float = -20.0, log_b: float = 0.0
) -> torch.Tensor:
    """E[theta] = E[exp(x)] = exp(mu + sigma^2/2) (Phi(beta-sigma) - Phi(alpha-sigma)) / Z."""
    sigma = log_sigma.exp()
    alpha, beta, log_z = _bounds(mu, sigma, log_a, log_b)
    return torch.exp(mu + 0.5 * sigma * sigma + log_diff_ndtr(alpha - sigma, beta - sigma) - log_z)


def trunc_lognormal_sample(
    mu: torch.Tensor, log_sigma: torch.Tensor, u: torch.Tensor, log_a: float = -20.0,
    log_b: float = 0.0,
) -> torch.Tensor:
    """theta = exp(x), x by inverse CDF from uniforms u in (0, 1) (broadcast against mu)."""
    sigma = log_sigma.exp()
    alpha = (log_a - mu) / sigma
    beta = (log_b - mu) / sigma
    pa, pb = torch.special.ndtr(alpha), torch.special.ndtr(beta)
    eps = torch.finfo(mu.dtype).eps
    p = (pa + u * (pb - pa)).clamp(eps, 1 - eps)
    x = (mu + sigma * ndtri(p)).clamp(log_a, log_b)
    return x.exp()


def gaussian_gate_kl(mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) per gate."""
    return 0.5 * (torch.exp(2 * log_sigma) + mu * mu - 1.0) - log_sigma


def gate_kl(kind: str, mu: torch.Tensor, log_sigma: torch.Tensor, log_a: float,
            log_b: float) -> torch.Tensor:
    if kind == "lognormal":
        return trunc_lognormal_kl(mu, log_sigma, log_a, log_b)
    return gaussian_gate_kl(mu, log_sigma)


def gate_mean(kind: str, mu: torch.Tensor, log_sigma: torch.Tensor, log_a: float,
              log_b: float) -> torch.Tensor:
    if kind == "lognormal":
        return trunc_lognormal_mean(mu, log_sigma, log_a, log_b)
    return mu


def gate_sample(
    kind: str, mu: torch.Tensor, log_sigma: torch.Tensor, noise: torch.Tensor, log_a: float,
    log_b: float,
) -> torch.Tensor:
    """A gate draw from standard-normal `noise` (B, units)."""
    if kind == "lognormal":
        u = torch.special.ndtr(noise)  # uniform via the normal CDF: one noise source for all
        return trunc_lognormal_sample(mu, log_sigma, u, log_a, log_b)
    return mu + log_sigma.exp() * noise


def gate_init(kind: str, units: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Start near theta = 1: lognormal mu=0, log sigma=-5 (E[theta] ~ 0.995, as BMRS);
    gaussian mu=1."""
    mu = torch.zeros(units) if kind == "lognormal" else torch.ones(units)
    return mu, torch.full((units,), -5.0)

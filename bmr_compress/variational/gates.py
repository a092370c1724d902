"""Structured multiplicative gates: BMRS truncated log-normal and Gaussian (docs/theory.md §3).

Truncated log-normal: x = ln(theta) ~ N(mu, sigma^2) truncated to [log_a, log_b];
prior log-uniform on [a, b] (uniform density 1/(log_b - log_a) in x). Its KL and E[theta]
are the math core's (``bmr_compress.bmr.gates``: one implementation, accurate in value and
gradient in float32 over the whole range), called here without input validation (no host
sync per step; a NaN reaches the trainer's divergence check instead of raising). Callers
pass float32 parameters; autocast does not reach these ops.
"""

from __future__ import annotations

import torch
from torch.special import ndtri

from bmr_compress.bmr.gates import trunc_lognormal_kl, trunc_lognormal_mean


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
    """KL(q || p) >= 0 per gate: truncated log-normal vs log-uniform, or N(mu, s^2) vs N(0, 1)."""
    if kind == "lognormal":
        return trunc_lognormal_kl(mu, log_sigma, log_a, log_b, validate=False)
    return gaussian_gate_kl(mu, log_sigma)


def gate_mean(kind: str, mu: torch.Tensor, log_sigma: torch.Tensor, log_a: float,
              log_b: float) -> torch.Tensor:
    """E[theta] per gate (evaluation mode and export folding)."""
    if kind == "lognormal":
        return trunc_lognormal_mean(mu, log_sigma, log_a, log_b, validate=False)
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

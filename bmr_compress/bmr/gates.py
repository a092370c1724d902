"""Truncated log-normal gates (BMRS, MATH.md §3), in x = ln θ space.

Prior: log-uniform on [a, b] (uniform 1/(ln b − ln a) in x). Posterior: N(μ, σ²) in x
truncated to [ln a, ln b]; α = (ln a − μ)/σ, β = (ln b − μ)/σ, Z = Φ(β) − Φ(α).
Every ln Z goes through :func:`._special.log_ndtr_diff` (log-space, tails factored out).
Sign: ΔlnZ ≥ 0 ⇒ prune.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._special import HALF_LOG_2PI, float_dtype, log_ndtr_diff, require


def _check_bounds(log_a: float, log_b: float) -> float:
    if not (math.isfinite(log_a) and math.isfinite(log_b)):
        raise ValueError(f"gate bounds must be finite, got log_a={log_a}, log_b={log_b}")
    if not log_a < log_b:
        raise ValueError(f"need log_a < log_b, got log_a={log_a}, log_b={log_b}")
    return math.log(log_b - log_a)


def _standardise(
    mu: Tensor, log_sigma: Tensor, log_a: float, log_b: float
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(μ, ln σ, σ, α, β) in the promoted dtype; rejects non-finite parameters."""
    dtype = float_dtype(mu, log_sigma)
    mu, ls = torch.as_tensor(mu, dtype=dtype), torch.as_tensor(log_sigma, dtype=dtype)
    mu, ls = torch.broadcast_tensors(mu, ls)
    require(torch.isfinite(mu) & torch.isfinite(ls), "gate mu and log_sigma must be finite")
    sigma = torch.exp(ls)
    require(sigma > 0, "gate sigma = exp(log_sigma) underflows to 0; log_sigma is too small")
    alpha = (log_a - mu) / sigma
    beta = (log_b - mu) / sigma
    return mu, ls, sigma, alpha, beta


def bmrs_n_delta_lnz(
    mu: Tensor, log_sigma: Tensor, log_a: float = -20.0, log_b: float = 0.0
) -> Tensor:
    """BMRS_N: reduced prior = spike at the lower bound ln a (limit form, Savage–Dickey).

    ΔlnZ = ln q_x(ln a) + ln(ln b − ln a), q_x(ln a) = φ(α)/(σ Z); prune iff the posterior
    density of x at ln a is at least the prior's 1/(ln b − ln a).
    """
    log_len = _check_bounds(log_a, log_b)
    _, ls, _, alpha, beta = _standardise(mu, log_sigma, log_a, log_b)
    s, anchor = log_ndtr_diff(alpha, beta)  # ln Z = s − anchor²/2
    # ln φ(α) − ln Z = −(α − A)(α + A)/2 − ½ ln 2π − s
    return -0.5 * (alpha - anchor) * (alpha + anchor) - HALF_LOG_2PI - s - ls + log_len


def bmrs_u_delta_lnz(
    mu: Tensor,
    log_sigma: Tensor,
    log_a_red: float,
    log_b_red: float,
    log_a: float = -20.0,
    log_b: float = 0.0,
) -> Tensor:
    """BMRS_U: reduced prior = log-uniform on [a', b'] ⊂ [a, b] (bounds given as logs).

    ΔlnZ = ln Q(ln a' ≤ x ≤ ln b') + ln((ln b − ln a)/(ln b' − ln a')); prune iff
    Q(a' ≤ θ ≤ b') ≥ (ln b' − ln a')/(ln b − ln a).
    """
    log_len = _check_bounds(log_a, log_b)
    log_len_red = _check_bounds(log_a_red, log_b_red)
    if not (log_a <= log_a_red and log_b_red <= log_b):
        raise ValueError(
            f"reduced interval [{log_a_red}, {log_b_red}] must lie inside [{log_a}, {log_b}]"
        )
    mu, _, sigma, alpha, beta = _standardise(mu, log_sigma, log_a, log_b)
    s_q, a_q = log_ndtr_diff((log_a_red - mu) / sigma, (log_b_red - mu) / sigma)
    s_z, a_z = log_ndtr_diff(alpha, beta)
    log_q = s_q - s_z - 0.5 * (a_q - a_z) * (a_q + a_z)
    return torch.clamp(log_q, max=0.0) + (log_len - log_len_red)


def trunc_lognormal_kl(
    mu: Tensor, log_sigma: Tensor, log_a: float = -20.0, log_b: float = 0.0
) -> Tensor:
    """KL(q ‖ p) of the truncated log-normal gate against the log-uniform prior on [a, b].

    KL = ln(ln b − ln a) − ln σ − ln Z − ½ ln(2πe) − (α φ(α) − β φ(β)) / (2Z).
    """
    log_len = _check_bounds(log_a, log_b)
    _, ls, _, alpha, beta = _standardise(mu, log_sigma, log_a, log_b)
    s, anchor = log_ndtr_diff(alpha, beta)
    log_z = s - 0.5 * anchor * anchor

    def phi_over_z(t: Tensor) -> Tensor:  # φ(t)/Z = exp(−(t − A)(t + A)/2 − ½ ln 2π − s)
        return torch.exp(-0.5 * (t - anchor) * (t + anchor) - HALF_LOG_2PI - s)

    # t φ(t)/Z → 0 as |t| → ∞ unless it is the bound nearest the mass; avoid 0·inf
    a_term = torch.where(torch.isinf(alpha), torch.zeros_like(alpha), alpha * phi_over_z(alpha))
    b_term = torch.where(torch.isinf(beta), torch.zeros_like(beta), beta * phi_over_z(beta))
    return log_len - ls - log_z - 0.5 * (math.log(2.0 * math.pi) + 1.0) - 0.5 * (a_term - b_term)


def trunc_lognormal_mean(
    mu: Tensor, log_sigma: Tensor, log_a: float = -20.0, log_b: float = 0.0
) -> Tensor:
    """E[θ] of the gate (θ = e^x), used to fold the gate into its unit's weights at export.

    E[θ] = e^{μ + σ²/2} [Φ(β − σ) − Φ(α − σ)] / Z, evaluated in log-space with the Gaussian
    exponents of the tails cancelled algebraically (μ + σ²/2 − (β − σ)²/2 = ln b − β²/2);
    clamped to [a, b], where it lies mathematically.
    """
    _check_bounds(log_a, log_b)
    mu, _, sigma, alpha, beta = _standardise(mu, log_sigma, log_a, log_b)
    s_z, a_z = log_ndtr_diff(alpha, beta)
    l, u = alpha - sigma, beta - sigma
    s_e, a_e = log_ndtr_diff(l, u)
    # μ + σ²/2 − a_e²/2 = ln b − β²/2 (a_e = u), ln a − α²/2 (a_e = l), μ + σ²/2 (a_e = 0)
    is_u, is_l = (a_e == u) & (a_e != 0), (a_e == l) & (a_e != 0)
    base = torch.where(
        is_u,
        torch.full_like(mu, log_b),
        torch.where(is_l, torch.full_like(mu, log_a), mu + 0.5 * sigma * sigma),
    )
    q = torch.where(is_u, beta, torch.where(is_l, alpha, torch.zeros_like(mu)))
    log_mean = base - 0.5 * (q - a_z) * (q + a_z) + (s_e - s_z)
    return torch.exp(torch.clamp(log_mean, min=log_a, max=log_b))

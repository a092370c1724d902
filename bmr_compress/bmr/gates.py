"""Truncated log-normal gates (BMRS, docs/theory.md §3), in x = ln θ space.

Prior: log-uniform on [a, b] (uniform 1/(ln b − ln a) in x). Posterior: N(μ, σ²) in x
truncated to [ln a, ln b]; α = (ln a − μ)/σ, β = (ln b − μ)/σ, Z = Φ(β) − Φ(α).
Every ln Z goes through :func:`._special.log_ndtr_diff` (log-space, tails factored out) and
the KL through :func:`._special.trunc_normal_entropy`; both are accurate in value and
gradient in float32, so training (``bmr_compress.variational.gates``) uses these very
functions with ``validate=False`` (no host sync, NaN propagates to the trainer's divergence
check instead of raising). Sign: ΔlnZ ≥ 0 ⇒ prune.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._special import (
    BOUND, HALF_LOG_2PI, const_minus, float_dtype, log_ndtr_diff, log_ndtr_diff_shift, require,
    tail_sides, trunc_normal_entropy,
)

_TAYLOR_SIGMA = 1e-3  # E[θ] below this σ: shift expansion (see trunc_lognormal_mean)


def _check_bounds(log_a: float, log_b: float) -> float:
    if not (math.isfinite(log_a) and math.isfinite(log_b)):
        raise ValueError(f"gate bounds must be finite, got log_a={log_a}, log_b={log_b}")
    if not log_a < log_b:
        raise ValueError(f"need log_a < log_b, got log_a={log_a}, log_b={log_b}")
    return math.log(log_b - log_a)


def _standardise(
    mu: Tensor, log_sigma: Tensor, log_a: float, log_b: float, validate: bool = True
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(μ, ln σ, σ, α, β) in the promoted dtype; rejects non-finite parameters if `validate`.

    α, β are capped at ±1e18 (a bound that far is a limit; keeps α² finite in float32).
    """
    dtype = float_dtype(mu, log_sigma)
    mu, ls = torch.as_tensor(mu, dtype=dtype), torch.as_tensor(log_sigma, dtype=dtype)
    mu, ls = torch.broadcast_tensors(mu, ls)
    if validate:
        require(torch.isfinite(mu) & torch.isfinite(ls), "gate mu and log_sigma must be finite")
    sigma = torch.exp(ls)
    if validate:
        require(sigma > 0, "gate sigma = exp(log_sigma) underflows to 0; log_sigma is too small")
    alpha = (const_minus(log_a, mu) / sigma).clamp(-BOUND, BOUND)
    beta = (const_minus(log_b, mu) / sigma).clamp(-BOUND, BOUND)
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
    s_q, a_q = log_ndtr_diff(const_minus(log_a_red, mu) / sigma, const_minus(log_b_red, mu) / sigma)
    s_z, a_z = log_ndtr_diff(alpha, beta)
    log_q = s_q - s_z - 0.5 * (a_q - a_z) * (a_q + a_z)
    return torch.clamp(log_q, max=0.0) + (log_len - log_len_red)


def trunc_lognormal_kl(
    mu: Tensor, log_sigma: Tensor, log_a: float = -20.0, log_b: float = 0.0, *,
    validate: bool = True,
) -> Tensor:
    """KL(q ‖ p) ≥ 0 of the truncated log-normal gate against the log-uniform prior on [a, b].

    KL = ln(ln b − ln a) − ln σ − ln Z − ½ ln(2πe) − (α φ(α) − β φ(β)) / (2Z)
       = ln(ln b − ln a) − ln σ − h(α, β),  h the standard truncated normal's entropy,
    evaluated by :func:`._special.trunc_normal_entropy` (no cancellation in either tail, so
    value and gradient hold in float32; e.g. μ = ln b + 2, σ = e⁻⁵: KL ≈ ln 20 + 5 + ln|β| − 1).
    `validate=False` skips the finiteness checks (training: no host sync, NaN propagates).
    """
    log_len = _check_bounds(log_a, log_b)
    _, ls, _, alpha, beta = _standardise(mu, log_sigma, log_a, log_b, validate)
    return log_len - ls - trunc_normal_entropy(alpha, beta)


def trunc_lognormal_mean(
    mu: Tensor, log_sigma: Tensor, log_a: float = -20.0, log_b: float = 0.0, *,
    validate: bool = True,
) -> Tensor:
    """E[θ] of the gate (θ = e^x): the gate at evaluation and when folded into its unit's weights.

    E[θ] = e^{μ + σ²/2} [Φ(β − σ) − Φ(α − σ)] / Z. With ln Z = s − A²/2 and the shifted mass
    ln Z' = s' − A'²/2 (:func:`._special.log_ndtr_diff`), ln E[θ] = base + s' − s where
    base = μ + σ²/2 − A'²/2 + A²/2 is written per (A, A') case without cancellation:
    (β, β−σ): ln b; (α, α−σ): ln a; (0, β−σ): ln b − β²/2; (0, 0): μ + σ²/2;
    (α, 0): ln a + (α−σ)²/2; (α, β−σ): ln b − (β−α)(β+α)/2. Clamped to [ln a, ln b], where
    it lies mathematically. For σ ≤ 1e-3 the shifted mass is expanded instead (the gradient
    of s' − s cancels by a factor ~1/σ): ln E[θ] = base₀ + σ s₁ + σ² s₂/2 + O(σ³), with
    base₀ = μ + Aσ = ln b or ln a in a tail, μ + σ²/2 in the middle, and s₁, s₂ from
    :func:`._special.log_ndtr_diff_shift`; value and gradient then hold in float32.
    `validate` as for :func:`trunc_lognormal_kl`.
    """
    _check_bounds(log_a, log_b)
    mu, _, sigma, alpha, beta = _standardise(mu, log_sigma, log_a, log_b, validate)
    s_z, _ = log_ndtr_diff(alpha, beta)
    s_e, _ = log_ndtr_diff(alpha - sigma, beta - sigma)
    lb, la = torch.full_like(mu, log_b), torch.full_like(mu, log_a)
    z_left, z_right = tail_sides(alpha, beta)  # which anchor A (β, α or 0) each ln Z has
    e_left, e_right = tail_sides(alpha - sigma, beta - sigma)
    base = torch.where(
        e_left,
        torch.where(z_left, lb, torch.where(z_right, lb - 0.5 * (beta - alpha) * (beta + alpha),
                                            lb - 0.5 * beta * beta)),
        torch.where(e_right, la, torch.where(z_right, la + 0.5 * (alpha - sigma) ** 2,
                                             mu + 0.5 * sigma * sigma)),
    )
    # σ ≤ 1e-3: s_e − s_z by its Taylor series in the shift σ (see the docstring)
    s1, s2 = log_ndtr_diff_shift(alpha, beta)
    base0 = torch.where(z_left, lb, torch.where(z_right, la, mu + 0.5 * sigma * sigma))
    small = sigma <= _TAYLOR_SIGMA
    log_mean = torch.where(small, base0 + sigma * (s1 + 0.5 * sigma * s2), base + (s_e - s_z))
    return torch.exp(torch.clamp(log_mean, min=log_a, max=log_b))

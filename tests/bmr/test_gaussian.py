"""Gaussian reduction, spike limit and group sums vs quadrature and properties."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bmr_compress.bmr import gaussian_delta_lnz, group_delta_lnz, joint_spike_delta_lnz, spike_delta_lnz

from .reference import gaussian_reduction_quad

FAST = settings(max_examples=60, deadline=None)
D64 = torch.float64

# (mu, var, prior var s², reduced var γ²): narrow, wide, γ > s, σ ≫ s, σ ≪ s
CASES = [
    (0.3, 0.01, 1.0, 1e-3),
    (-1.2, 0.5, 2.0, 0.1),
    (0.05, 1e-4, 0.1, 0.5),
    (2.0, 3.0, 1.0, 1e-2),
    (1e-3, 1e-8, 1e-2, 1e-6),
    (0.0, 1.0, 1.0, 0.3),
]


@pytest.mark.parametrize("mu,var,s2,g2", CASES)
def test_general_matches_quadrature(mu: float, var: float, s2: float, g2: float) -> None:
    ref, ref_mean, ref_var = gaussian_reduction_quad(mu, var, s2, g2)
    t = lambda x: torch.tensor(x, dtype=D64)  # noqa: E731
    red = gaussian_delta_lnz(t(mu), t(math.log(var)), math.log(s2), math.log(g2))
    assert red.delta_lnz.item() == pytest.approx(ref, rel=1e-6, abs=1e-9)
    assert red.mu.item() == pytest.approx(ref_mean, rel=1e-6, abs=1e-12)
    assert math.exp(red.log_var.item()) == pytest.approx(ref_var, rel=1e-6)


@pytest.mark.parametrize("mu,var,s2", [(0.3, 0.01, 1.0), (-2.0, 3.0, 1.0), (1e-3, 1e-8, 1e-2)])
def test_spike_is_savage_dickey(mu: float, var: float, s2: float) -> None:
    # ln q(0) − ln p(0) with textbook densities
    ref = (-(mu**2) / (2 * var) - 0.5 * math.log(var)) - (-0.5 * math.log(s2))
    got = spike_delta_lnz(torch.tensor(mu, dtype=D64), torch.tensor(math.log(var), dtype=D64), math.log(s2))
    assert got.item() == pytest.approx(ref, rel=1e-12, abs=1e-14)


finite = dict(allow_nan=False, allow_infinity=False)
log_var_st = st.floats(min_value=math.log(1e-30), max_value=math.log(1e6), **finite)
mu_st = st.floats(min_value=-1e3, max_value=1e3, **finite)


@FAST
@given(v0=log_var_st, g=st.floats(-60, 20, **finite), dtype=st.sampled_from([torch.float32, D64]))
def test_zero_when_posterior_equals_prior(v0: float, g: float, dtype: torch.dtype) -> None:
    v = torch.tensor([v0], dtype=dtype)
    mu = torch.zeros(1, dtype=dtype)
    tol = (1e-5 if dtype == torch.float32 else 1e-12) * (1 + abs(v0) + abs(g))
    assert abs(gaussian_delta_lnz(mu, v, v0, g).delta_lnz.item()) <= tol
    assert spike_delta_lnz(mu, v, v0).item() == 0.0


@FAST
@given(mu=st.floats(-5, 5, **finite), v=st.floats(-20, 5, **finite), v0=st.floats(-10, 5, **finite))
def test_general_converges_to_spike(mu: float, v: float, v0: float) -> None:
    assume(v - v0 <= 4)  # keeps γ² = σ² e^{-5} valid (P̃ > 0)
    t = lambda x: torch.tensor([x], dtype=D64)  # noqa: E731
    spike = spike_delta_lnz(t(mu), t(v), v0).item()
    errs = [abs(gaussian_delta_lnz(t(mu), t(v), v0, v - k).delta_lnz.item() - spike) for k in (5, 15, 40)]
    scale = 1 + abs(spike) + mu * mu * math.exp(-v)
    assert errs[2] <= 1e-12 * scale
    assert errs[2] <= errs[1] + 1e-12 * scale and errs[1] <= errs[0] + 1e-12 * scale


@FAST
@given(
    mu=mu_st, v=log_var_st, v0=log_var_st, g=log_var_st, dtype=st.sampled_from([torch.float32, D64])
)
def test_no_nan_or_inf_for_extreme_valid_inputs(mu: float, v: float, v0: float, g: float, dtype: torch.dtype) -> None:
    t = lambda x: torch.tensor([x], dtype=dtype)  # noqa: E731
    assert torch.isfinite(spike_delta_lnz(t(mu), t(v), v0)).all()
    # P̃ > 0 with margin (P̃ ≤ 0 must raise instead): skip the invalid or borderline ones
    rel = 1 + math.exp(min(v - g, 80)) - math.exp(min(v - v0, 80))
    if rel > 1e-3:
        red = gaussian_delta_lnz(t(mu), t(v), v0, g)
        for x in red:
            assert torch.isfinite(x).all(), (red, mu, v, v0, g)


@FAST
@given(mu=st.floats(-3, 3, **finite), v=st.floats(-12, 3, **finite), v0=st.floats(-8, 3, **finite),
       g=st.floats(-20, 2, **finite))
def test_float32_agrees_with_float64(mu: float, v: float, v0: float, g: float) -> None:
    if 1 + math.exp(v - g) - math.exp(v - v0) <= 1e-2:
        return
    out = {}
    for dt in (torch.float32, D64):
        out[dt] = gaussian_delta_lnz(torch.tensor([mu], dtype=dt), torch.tensor([v], dtype=dt), v0, g).delta_lnz.item()
    scale = 1 + abs(out[D64]) + abs(v) + abs(g)
    assert abs(out[torch.float32] - out[D64]) <= 2e-5 * scale


@FAST
@given(mu=mu_st.filter(lambda m: m != 0), v=log_var_st, excess=st.floats(0, 20, **finite),
       dtype=st.sampled_from([torch.float32, D64]))
def test_spike_never_prunes_wide_nonzero_weight(mu: float, v: float, excess: float, dtype: torch.dtype) -> None:
    # σ ≥ s ⇔ v ≥ v0; keep |μ|/σ representable so μ²/σ² does not underflow to 0
    if abs(mu) * math.exp(-0.5 * v) < 1e-15:
        return
    v0 = v - excess
    score = spike_delta_lnz(torch.tensor([mu], dtype=dtype), torch.tensor([v], dtype=dtype), v0)
    assert score.item() < 0


def test_invalid_inputs_raise() -> None:
    mu, v = torch.zeros(3, dtype=D64), torch.zeros(3, dtype=D64)
    with pytest.raises(ValueError, match="reduced precision"):
        gaussian_delta_lnz(mu, v + 5.0, 0.0, 2.0)  # 1/σ² + 1/γ² − 1/s² < 0
    with pytest.raises(ValueError, match="reduced precision"):
        gaussian_delta_lnz(mu, torch.tensor([0.0, float("nan"), 0.0], dtype=D64), 0.0, -1.0)
    with pytest.raises(ValueError, match="finite"):
        gaussian_delta_lnz(mu, v, 0.0, float("-inf"))
    with pytest.raises(ValueError, match="floating"):
        gaussian_delta_lnz(torch.zeros(2, dtype=torch.long), v[:2], 0.0, -1.0)


def test_broadcast_any_shape() -> None:
    mu = torch.randn(3, 1, 5, dtype=D64)
    v = torch.randn(1, 4, 5, dtype=D64) - 3
    v0 = torch.tensor([[-1.0], [-2.0], [-0.5], [0.0]], dtype=D64)  # [4, 1]
    red = gaussian_delta_lnz(mu, v, v0, -30.0)
    assert red.delta_lnz.shape == (3, 4, 5)
    torch.testing.assert_close(red.delta_lnz, spike_delta_lnz(mu, v, v0), rtol=1e-9, atol=1e-9)


# ---- groups -----------------------------------------------------------------------------


@FAST
@given(n=st.integers(1, 200), g=st.integers(1, 12), seed=st.integers(0, 2**31 - 1))
def test_group_sums_are_additive(n: int, g: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randn(n, dtype=D64, generator=gen)
    index = torch.randint(0, g, (n,), generator=gen)
    got = group_delta_lnz(scores, index, g)
    ref = [sum(scores[i].item() for i in range(n) if index[i] == k) for k in range(g)]
    torch.testing.assert_close(got, torch.tensor(ref, dtype=D64), rtol=1e-12, atol=1e-12)
    # merging groups 0 and 1 adds their scores; the total is preserved
    if g >= 2:
        merged = group_delta_lnz(scores, torch.where(index == 1, 0, index), g)
        assert merged[0].item() == pytest.approx(got[0].item() + got[1].item(), abs=1e-12)
    assert got.sum().item() == pytest.approx(scores.sum().item(), abs=1e-10)


def _gaussian_integral_reduction(mu_p: torch.Tensor, cov_pp: torch.Tensor, s2: float, g2: float) -> float:
    """ln ∫ N(w; μ_P, Σ_PP) N(w; 0, γ²I)/N(w; 0, s²I) dw (reduced prior N(0, γ²) on P), in
    closed form from the covariance side: with A = (1/γ² − 1/s²) I,
    ∫ N(w; μ, C) e^{−wᵀAw/2} dw = det(I + CA)^{−½} exp(−½ μᵀ(C + A⁻¹)⁻¹ μ)."""
    n = mu_p.numel()
    a = 1.0 / g2 - 1.0 / s2
    eye = torch.eye(n, dtype=D64)
    logdet = torch.linalg.slogdet(eye + a * cov_pp)[1]
    quad = mu_p @ torch.linalg.solve(cov_pp + eye / a, mu_p)
    return float(0.5 * n * math.log(s2 / g2) - 0.5 * logdet - 0.5 * quad)


def _dense_problem(seed: int, d: int = 7):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=D64)
    lam = a @ a.T / d + 0.2 * torch.eye(d, dtype=D64)  # dense random SPD precision
    mu = 0.5 * torch.randn(d, generator=g, dtype=D64)
    pruned = torch.rand(d, generator=g) < 0.5
    pruned[0], pruned[-1] = True, False  # P and K both non-empty
    return mu, lam, pruned


@pytest.mark.parametrize("seed", range(4))
def test_joint_reduction_of_a_correlated_posterior(seed: int) -> None:
    mu, lam, pruned, v0 = *_dense_problem(seed), -0.3
    got = joint_spike_delta_lnz(mu, lam, pruned, v0).item()
    cov = torch.linalg.inv(lam)
    mu_p, cov_pp = mu[pruned], cov[pruned][:, pruned]
    # (1) direct Gaussian integration with a reduced prior N(0, γ²) on P, γ → 0 (error O(γ²))
    s2 = math.exp(v0)
    errs = [abs(_gaussian_integral_reduction(mu_p, cov_pp, s2, s2 * f) - got) for f in (1e-3, 1e-5, 1e-7)]
    assert errs[0] > errs[1] > errs[2] and errs[2] < 1e-5, errs
    # (2) Savage–Dickey with the P-marginal of the covariance (not the precision's Schur complement)
    n = int(pruned.sum())
    q = torch.distributions.MultivariateNormal(mu_p, covariance_matrix=cov_pp)
    p = torch.distributions.MultivariateNormal(torch.zeros(n, dtype=D64), s2 * torch.eye(n, dtype=D64))
    zero = torch.zeros(n, dtype=D64)
    assert got == pytest.approx((q.log_prob(zero) - p.log_prob(zero)).item(), rel=1e-10, abs=1e-10)
    # (3) the coupling matters: a mean-field sum (precisions diag Λ) gets a different answer
    mf = group_delta_lnz(spike_delta_lnz(mu, -torch.log(torch.diagonal(lam)), v0),
                         (~pruned).long(), 2)[0].item()
    assert abs(mf - got) > 1e-2


def test_joint_reduction_by_quadrature_at_finite_width() -> None:
    # the closed-form Gaussian integral used above, checked by 2-d quadrature (|P| = 2, γ² = s²/4)
    from scipy import integrate

    mu, lam, _ = _dense_problem(11, d=4)
    pruned = torch.tensor([True, False, True, False])
    cov = torch.linalg.inv(lam)
    mu_p, cov_pp = mu[pruned], cov[pruned][:, pruned]
    s2, g2 = 0.8, 0.2
    m0, m1 = mu_p.tolist()
    (c00, c01), (_, c11) = cov_pp.tolist()
    det = c00 * c11 - c01 * c01
    a = 1 / g2 - 1 / s2

    def f(y: float, x: float) -> float:  # N((x, y); μ_P, Σ_PP) · N(w; 0, γ²I)/N(w; 0, s²I)
        dx, dy = x - m0, y - m1
        maha = (c11 * dx * dx - 2 * c01 * dx * dy + c00 * dy * dy) / det
        return math.exp(-0.5 * maha - 0.5 * a * (x * x + y * y)) * s2 / g2 / (2 * math.pi * math.sqrt(det))

    lim = 12 * math.sqrt(max(c00, c11))
    val = integrate.dblquad(f, m0 - lim, m0 + lim, m1 - lim, m1 + lim, epsabs=1e-11)[0]
    assert math.log(val) == pytest.approx(_gaussian_integral_reduction(mu_p, cov_pp, s2, g2), rel=1e-7)


def test_joint_reduction_of_a_diagonal_posterior_is_the_group_sum() -> None:
    mu, v, v0 = 0.2 * torch.randn(6, dtype=D64), torch.randn(6, dtype=D64) - 3, -1.0
    pruned = torch.tensor([True, False, True, False, False, True])
    joint = joint_spike_delta_lnz(mu, torch.diag(torch.exp(-v)), pruned, v0).item()
    groups = group_delta_lnz(spike_delta_lnz(mu, v, v0), (~pruned).long(), 2)
    assert joint == pytest.approx(groups[0].item(), rel=1e-12, abs=1e-12)


def test_joint_reduction_invalid_inputs_raise() -> None:
    mu, pruned = torch.zeros(3, dtype=D64), torch.tensor([True, False, False])
    with pytest.raises(ValueError, match="positive definite"):
        joint_spike_delta_lnz(mu, -torch.eye(3, dtype=D64), pruned, 0.0)
    with pytest.raises(ValueError, match="need mu"):
        joint_spike_delta_lnz(mu, torch.eye(2, dtype=D64), pruned, 0.0)
    assert joint_spike_delta_lnz(mu, torch.eye(3, dtype=D64), ~torch.ones(3, dtype=torch.bool), 0.0) == 0


def test_group_invalid_index_raises() -> None:
    with pytest.raises(ValueError, match="out of range"):
        group_delta_lnz(torch.zeros(3), torch.tensor([0, 3, 1]), 3)
    with pytest.raises(ValueError, match="integer"):
        group_delta_lnz(torch.zeros(3), torch.zeros(3), 3)

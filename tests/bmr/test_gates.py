"""Truncated log-normal gates (BMRS_N, BMRS_U, KL, E[θ]) vs quadrature, Monte Carlo, Eq. 8."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy import stats

from bmr_compress.bmr import bmrs_n_delta_lnz, bmrs_u_delta_lnz, trunc_lognormal_kl, trunc_lognormal_mean

from . import reference as ref

FAST = settings(max_examples=50, deadline=None)
D64 = torch.float64
finite = dict(allow_nan=False, allow_infinity=False)
LN2 = math.log(2.0)
U8 = (-23 * LN2, -8 * LN2)  # paper's BMRS_U-8 reduced interval (logs)

# (μ, σ): near the upper bound, mid-range, at and below the lower bound, wide, narrow
GATES = [(0.0, math.exp(-5)), (-3.0, 1.0), (-10.0, 2.0), (-19.0, 0.5), (-22.0, 1.5), (-8.0, 15.0),
         (2.0, 0.3), (-20.0, 0.05)]


def _t(x: float, dtype: torch.dtype = D64) -> torch.Tensor:
    return torch.tensor([x], dtype=dtype)


@pytest.mark.parametrize("mu,sigma", GATES)
def test_bmrs_n_matches_quadrature(mu: float, sigma: float) -> None:
    got = bmrs_n_delta_lnz(_t(mu), _t(math.log(sigma))).item()
    assert got == pytest.approx(ref.bmrs_n_quad(mu, sigma), rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("mu,sigma", GATES)
def test_bmrs_u_matches_quadrature(mu: float, sigma: float) -> None:
    got = bmrs_u_delta_lnz(_t(mu), _t(math.log(sigma)), *U8).item()
    assert got == pytest.approx(ref.bmrs_u_quad(mu, sigma, *U8), rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("mu,sigma", GATES)
def test_kl_matches_quadrature(mu: float, sigma: float) -> None:
    got = trunc_lognormal_kl(_t(mu), _t(math.log(sigma))).item()
    assert got == pytest.approx(ref.trunc_kl_quad(mu, sigma), rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("mu,sigma", GATES)
def test_mean_matches_quadrature(mu: float, sigma: float) -> None:
    got = trunc_lognormal_mean(_t(mu), _t(math.log(sigma))).item()
    assert got == pytest.approx(ref.trunc_mean_quad(mu, sigma), rel=1e-6)


@pytest.mark.parametrize("mu,sigma", [(-3.0, 1.0), (-19.0, 0.7), (-8.0, 6.0)])
def test_kl_matches_monte_carlo(mu: float, sigma: float) -> None:
    a, b = -20.0, 0.0
    dist = stats.truncnorm((a - mu) / sigma, (b - mu) / sigma, loc=mu, scale=sigma)
    x = dist.rvs(size=200_000, random_state=np.random.default_rng(0))
    log_ratio = dist.logpdf(x) + math.log(b - a)  # ln q − ln p, p uniform on [a, b] in x
    est, se = log_ratio.mean(), log_ratio.std() / math.sqrt(x.size)
    got = trunc_lognormal_kl(_t(mu), _t(math.log(sigma))).item()
    assert abs(got - est) <= 4 * se + 1e-9
    # E[θ] by the same samples
    theta = np.exp(x)
    got_mean = trunc_lognormal_mean(_t(mu), _t(math.log(sigma))).item()
    assert abs(got_mean - theta.mean()) <= 4 * theta.std() / math.sqrt(x.size) + 1e-12


@FAST
@given(mu=st.floats(-26, 4, **finite), sigma=st.floats(0.3, 5, **finite))
def test_bmrs_n_agrees_with_finite_width_eq8(mu: float, sigma: float) -> None:
    # Eq. 8 with a narrow (not vanishing) reduced prior at ln a: accurate in float64 for
    # σ̃_p = 1e-5; it differs from the limit by ≈ E[x − a] ∂ln q/∂x = 0.8 σ̃_p (μ − a)/σ².
    # Eq. 8 takes Z_q = Φ(β) − Φ(α) by subtraction: only accurate while α = (ln a − μ)/σ ≲ 2
    assume((-20.0 - mu) / sigma <= 2.0)
    sp = 1e-5
    finite_width = ref.eq8_finite_width(mu, sigma, sp)
    got = bmrs_n_delta_lnz(_t(mu), _t(math.log(sigma))).item()
    assert abs(got - finite_width) <= sp * abs(mu + 20.0) / sigma**2 + 1e-3


@FAST
@given(mu=st.floats(-30, 5, **finite), sigma=st.floats(0.05, 20, **finite),
       p1=st.integers(1, 20))
def test_bmrs_u_prune_rule_is_mass_threshold(mu: float, sigma: float, p1: int) -> None:
    la_r, lb_r = -23 * LN2, -p1 * LN2
    log_q = ref.trunc_log_mass(mu, sigma, la_r, lb_r)
    log_need = math.log((lb_r - la_r) / 20.0)  # ln of the prior mass of the interval
    assume(abs(log_q - log_need) > 1e-9)
    delta = bmrs_u_delta_lnz(_t(mu), _t(math.log(sigma)), la_r, lb_r).item()
    assert (delta >= 0) == (log_q >= log_need)
    assert delta == pytest.approx(log_q - log_need, rel=1e-6, abs=1e-9)


@FAST
@given(mu=st.floats(-100, 50, **finite), log_sigma=st.floats(math.log(1e-15), math.log(1e3), **finite),
       dtype=st.sampled_from([torch.float32, D64]))
def test_gates_finite_for_extreme_valid_inputs(mu: float, log_sigma: float, dtype: torch.dtype) -> None:
    m, s = _t(mu, dtype), _t(log_sigma, dtype)
    for out in (bmrs_n_delta_lnz(m, s), bmrs_u_delta_lnz(m, s, *U8), trunc_lognormal_kl(m, s)):
        assert torch.isfinite(out).all(), (out, mu, log_sigma, dtype)
    mean = trunc_lognormal_mean(m, s)
    assert torch.isfinite(mean).all() and math.exp(-20) * 0.999 <= mean.item() <= 1.0


@FAST
@given(mu=st.floats(-25, 3, **finite), log_sigma=st.floats(math.log(1e-6), math.log(10.0), **finite))
def test_float32_agrees_with_float64(mu: float, log_sigma: float) -> None:
    # both evaluated at the same (float32-representable) inputs, so the difference is the
    # float32 arithmetic alone; relative tolerance, whatever the magnitude of α
    m32, s32 = _t(mu, torch.float32), _t(log_sigma, torch.float32)
    fns = [bmrs_n_delta_lnz, trunc_lognormal_kl, lambda m, s: bmrs_u_delta_lnz(m, s, *U8),
           lambda m, s: trunc_lognormal_mean(m, s).log()]
    for fn in fns:
        hi = fn(m32.double(), s32.double()).item()
        lo = fn(m32, s32).item()
        assert abs(lo - hi) <= 1e-5 * abs(hi) + 1e-5, (fn, lo, hi)


SIGMAS = [1e-6, 1e-4, math.exp(-5), 0.1, 1.0, 10.0]
OFFSETS = [0.0, 0.5, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0]  # in units of σ


def _grid(sigma: float) -> list[float]:
    """μ at ln b + kσ and ln a − kσ for k in OFFSETS (mass piled on a bound), and inside."""
    return [0.0 + k * sigma for k in OFFSETS] + [-20.0 - k * sigma for k in OFFSETS] + [
        -19.0, -10.0, -3.0, -0.5]


def _value_and_grad(fn, mu: float, log_sigma: float, dtype: torch.dtype):
    m = torch.tensor(mu, dtype=dtype, requires_grad=True)
    s = torch.tensor(log_sigma, dtype=dtype, requires_grad=True)
    out = fn(m, s)
    out.backward()
    return [out.item(), m.grad.item(), s.grad.item()], (m.item(), s.item())


def _assert_close(got: list[float], want: tuple[float, ...], rel: float, abs_: float, ctx) -> None:
    for g, w, name in zip(got, want, ("value", "d/dmu", "d/dlog_sigma")):
        assert math.isfinite(g) and abs(g - w) <= max(rel * abs(w), abs_), (name, g, w, ctx)


@pytest.mark.parametrize("dtype,rel,abs_", [(torch.float32, 1e-4, 1e-3), (D64, 1e-9, 1e-9)])
@pytest.mark.parametrize("sigma", SIGMAS)
def test_kl_value_and_gradient_match_mpmath(sigma: float, dtype: torch.dtype, rel: float,
                                            abs_: float) -> None:
    # float32: the acceptance tolerance of issue 13 (1e-4 relative or 1e-3 absolute); the
    # reference is evaluated at the float32-rounded inputs, so only arithmetic error counts
    for mu in _grid(sigma):
        got, (m, s) = _value_and_grad(trunc_lognormal_kl, mu, math.log(sigma), dtype)
        _assert_close(got, ref.trunc_kl_grad_mp(m, s), rel, abs_, (mu, sigma))


@pytest.mark.parametrize("dtype,rel,abs_", [(torch.float32, 1e-4, 1e-3), (D64, 1e-9, 1e-9)])
@pytest.mark.parametrize("sigma", SIGMAS)
def test_log_mean_value_and_gradient_match_mpmath(sigma: float, dtype: torch.dtype, rel: float,
                                                  abs_: float) -> None:
    for mu in _grid(sigma):
        fn = lambda m, s: trunc_lognormal_mean(m, s).log()  # noqa: E731
        got, (m, s) = _value_and_grad(fn, mu, math.log(sigma), dtype)
        _assert_close(got, ref.trunc_log_mean_grad_mp(m, s), rel, abs_, (mu, sigma))


def test_posterior_equal_to_prior_has_zero_evidence_change() -> None:
    # a very wide normal truncated to [a, b] is the log-uniform prior
    m, s = _t(-10.0), _t(math.log(1e5))
    assert abs(bmrs_u_delta_lnz(m, s, *U8).item()) < 1e-8
    assert abs(trunc_lognormal_kl(m, s).item()) < 1e-8


def test_invalid_gate_inputs_raise() -> None:
    m, s = _t(-3.0), _t(0.0)
    with pytest.raises(ValueError, match="log_a < log_b"):
        bmrs_n_delta_lnz(m, s, log_a=0.0, log_b=-20.0)
    with pytest.raises(ValueError, match="log_a < log_b"):
        trunc_lognormal_kl(m, s, log_a=-1.0, log_b=-1.0)
    with pytest.raises(ValueError, match="inside"):
        bmrs_u_delta_lnz(m, s, -25.0, -5.0)
    with pytest.raises(ValueError, match="log_a < log_b"):
        bmrs_u_delta_lnz(m, s, -5.0, -10.0)
    with pytest.raises(ValueError, match="finite"):
        trunc_lognormal_mean(_t(float("nan")), s)
    with pytest.raises(ValueError, match="underflows"):
        bmrs_n_delta_lnz(m, _t(-800.0))

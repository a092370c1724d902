"""Dirichlet reduction vs quadrature / Monte Carlo; model posterior; Beta–Bernoulli threshold."""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special

from bmr_compress.bmr import beta_bernoulli_threshold, dirichlet_delta_lnz, model_posterior

from .reference import log_beta_fn

FAST = settings(max_examples=40, deadline=None)
D64 = torch.float64
finite = dict(allow_nan=False, allow_infinity=False)


def _beta_logpdf(p, a: float, b: float):
    return (a - 1) * mp.log(p) + (b - 1) * mp.log(1 - p) - (mp.loggamma(a) + mp.loggamma(b) - mp.loggamma(a + b))


@pytest.mark.parametrize("a0,a,r0", [((1.0, 1.0), (5.0, 3.0), (2.0, 0.5)),
                                     ((0.5, 2.0), (10.5, 4.0), (0.5, 8.0)),
                                     ((2.0, 2.0), (3.0, 40.0), (1.0, 3.0))])
def test_beta_case_matches_quadrature(a0, a, r0) -> None:
    # K = 2: ln ∫ q(p) p̃(p)/p(p) dp over (0, 1)
    f = lambda p: mp.exp(_beta_logpdf(p, *a) + _beta_logpdf(p, *r0) - _beta_logpdf(p, *a0))  # noqa: E731
    ref = float(mp.log(mp.quad(f, [0, 0.5, 1])))
    got = dirichlet_delta_lnz(torch.tensor(a0, dtype=D64), torch.tensor(a, dtype=D64), torch.tensor(r0, dtype=D64))
    assert got.item() == pytest.approx(ref, rel=1e-6, abs=1e-9)


def test_dirichlet_k3_matches_monte_carlo_and_closed_form() -> None:
    a0, a, r0 = np.array([1.0, 1.0, 1.0]), np.array([4.0, 7.0, 2.0]), np.array([1.5, 2.0, 0.8])
    x = np.random.default_rng(0).dirichlet(a, size=400_000)
    logpdf = lambda c: (np.log(x) * (c - 1)).sum(1) - (special.gammaln(c).sum() - special.gammaln(c.sum()))  # noqa: E731
    w = np.exp(logpdf(r0) - logpdf(a0))
    est, se = math.log(w.mean()), w.std() / w.mean() / math.sqrt(len(w))
    got = dirichlet_delta_lnz(*(torch.tensor(c, dtype=D64) for c in (a0, a, r0))).item()
    assert abs(got - est) <= 4 * se
    closed = log_beta_fn(list(a0)) + log_beta_fn(list(a + r0 - a0)) - log_beta_fn(list(r0)) - log_beta_fn(list(a))
    assert got == pytest.approx(closed, rel=1e-10)


@FAST
@given(st.lists(st.floats(0.05, 50, **finite), min_size=2, max_size=6), st.floats(0.1, 10, **finite))
def test_dirichlet_properties(conc: list[float], extra: float) -> None:
    a0 = torch.tensor(conc, dtype=D64)
    a = a0 + extra
    # reduced prior = prior ⇒ 0; batch dims broadcast; float32 agrees
    assert abs(dirichlet_delta_lnz(a0, a, a0).item()) <= 1e-10
    batch = dirichlet_delta_lnz(a0.expand(3, -1), a, a0 * 2)
    assert batch.shape == (3,) and torch.isfinite(batch).all()
    lo = dirichlet_delta_lnz(a0.float(), a.float(), (a0 * 2).float()).item()
    assert lo == pytest.approx(batch[0].item(), rel=1e-4, abs=1e-4)


def test_dirichlet_invalid_inputs_raise() -> None:
    one = torch.ones(3, dtype=D64)
    with pytest.raises(ValueError, match="> 0"):
        dirichlet_delta_lnz(one, one * 0 + torch.tensor([1.0, -1.0, 1.0], dtype=D64), one)
    with pytest.raises(ValueError, match="reduced posterior"):
        dirichlet_delta_lnz(one * 5, one * 2, one * 0.5)
    with pytest.raises(ValueError, match="last dimension"):
        dirichlet_delta_lnz(torch.tensor(1.0), torch.tensor(2.0), torch.tensor(1.0))


def test_model_posterior_is_softmax_of_log_prior_plus_evidence() -> None:
    d = torch.tensor([0.5, -1.0, 2.0], dtype=D64)
    lp = torch.log(torch.tensor([0.2, 0.3, 0.5], dtype=D64))
    got = model_posterior(d, lp)
    ref = np.exp(d.numpy() + lp.numpy()) / np.exp(d.numpy() + lp.numpy()).sum()
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12)
    assert model_posterior(torch.tensor([1000.0, 0.0], dtype=D64))[0].item() == 1.0  # no overflow
    with pytest.raises(ValueError, match="NaN"):
        model_posterior(torch.tensor([float("nan"), 0.0]))


# ---- Beta–Bernoulli threshold -----------------------------------------------------------


def _beta_expectations(a_exp: float, b_exp: float) -> tuple[float, float]:
    """(E ln π, E ln(1 − π)) under the density ∝ π^a_exp (1 − π)^b_exp on (0, 1), by
    quadrature (no digamma: an independent route to ψ(α) − ψ(α + β)). Integrated in
    t = logit π, where the density ∝ e^{(a_exp + 1) ln π + (b_exp + 1) ln(1 − π)} is smooth
    and decays exponentially both ways (ln π = −softplus(−t), ln(1 − π) = −softplus(t))."""
    ka, kb = a_exp + 1.0, b_exp + 1.0
    t0 = mp.log(ka / kb)  # the mode in t

    def log_p(t):
        return -mp.log1p(mp.exp(-t))

    def log_1mp(t):
        return -mp.log1p(mp.exp(t))

    shift = ka * log_p(t0) + kb * log_1mp(t0)
    w = lambda t: mp.exp(ka * log_p(t) + kb * log_1mp(t) - shift)  # noqa: E731
    pts = [-mp.inf, t0, mp.inf]
    z = mp.quad(w, pts)
    return (float(mp.quad(lambda t: w(t) * log_p(t), pts) / z),
            float(mp.quad(lambda t: w(t) * log_1mp(t), pts) / z))


def _vb_threshold(d: np.ndarray, iters: int, a0: float, b0: float) -> float:
    """ζ from mean-field VB written out from the model, not from the library's formulas.

    Model: z_i ∈ {keep, prune}, P(keep | π) = π, π ~ Beta(a0, b0), and the data favour
    pruning weight i by ln p(D | prune_i) − ln p(D | keep_i) = ΔlnZ_i = d_i. Coordinate
    ascent from q(π) = prior: q(z_i) ∝ exp(E_q(π) ln p(z_i | π) + ln p(D | z_i)), then
    ln q(π) = ln p(π) + Σ_i E_q(z_i) ln p(z_i | π) + const; expectations by quadrature.
    ζ = E ln π − E ln(1 − π) of the q(π) that the last q(z) update used (keep ⇔ q(keep) ≥ ½).
    """
    exps = (a0 - 1.0, b0 - 1.0)  # q(π) ∝ π^exps[0] (1 − π)^exps[1]
    for _ in range(iters):
        e_keep, e_prune = _beta_expectations(*exps)
        log_keep, log_prune = e_keep + 0.0, e_prune + d  # ln p(D | keep_i) := 0 (only d matters)
        q_keep = 1.0 / (1.0 + np.exp(log_prune - log_keep))
        exps = (a0 - 1.0 + q_keep.sum(), b0 - 1.0 + (1.0 - q_keep).sum())
    return e_keep - e_prune


@pytest.mark.parametrize("seed,n,shift,a0,b0", [(0, 7, 0.0, 1.0, 1.0), (1, 40, -2.0, 2.0, 5.0),
                                                (2, 300, 3.0, 0.5, 3.0), (3, 25, 1.0, 4.0, 0.7)])
@pytest.mark.parametrize("iters", [1, 3])
def test_threshold_matches_variational_bayes_by_quadrature(seed: int, n: int, shift: float,
                                                           a0: float, b0: float, iters: int) -> None:
    d = np.random.default_rng(seed).normal(shift, 3.0, size=n)
    got = beta_bernoulli_threshold(torch.tensor(d, dtype=D64), iters=iters, alpha0=a0, beta0=b0).item()
    assert got == pytest.approx(_vb_threshold(d, iters, a0, b0), rel=1e-8, abs=1e-10)
    got32 = beta_bernoulli_threshold(torch.tensor(d, dtype=torch.float32), iters=iters,
                                     alpha0=a0, beta0=b0).item()
    assert got32 == pytest.approx(got, rel=1e-4, abs=1e-4)


def test_threshold_converges_to_a_self_consistent_fixed_point() -> None:
    # after many rounds ζ = E ln π − E ln(1 − π) under the q(π) that its own q(z) imply
    d = np.random.default_rng(5).normal(-1.0, 2.0, size=60)
    zeta = beta_bernoulli_threshold(torch.tensor(d, dtype=D64), iters=200, alpha0=2.0, beta0=3.0).item()
    q_keep = 1.0 / (1.0 + np.exp(d - zeta))
    e_keep, e_prune = _beta_expectations(1.0 + q_keep.sum(), 2.0 + (1.0 - q_keep).sum())
    assert zeta == pytest.approx(e_keep - e_prune, rel=1e-8, abs=1e-10)


def test_threshold_direction() -> None:
    keep_most = torch.full((1000,), -5.0, dtype=D64)  # all clearly kept ⇒ lenient ζ > 0
    prune_most = torch.full((1000,), 5.0, dtype=D64)  # all clearly pruned ⇒ ζ < 0
    assert beta_bernoulli_threshold(keep_most).item() > 0
    assert beta_bernoulli_threshold(prune_most).item() < 0
    # first round from Beta(1, 1) has ζ = 0, so one iteration is the plain ΔlnZ ≥ 0 rule
    assert beta_bernoulli_threshold(keep_most, iters=1).item() == 0.0


def test_threshold_invalid_inputs_raise() -> None:
    with pytest.raises(ValueError, match="iters"):
        beta_bernoulli_threshold(torch.zeros(3), iters=0)
    with pytest.raises(ValueError, match="alpha0"):
        beta_bernoulli_threshold(torch.zeros(3), alpha0=0.0)
    with pytest.raises(ValueError, match="NaN"):
        beta_bernoulli_threshold(torch.tensor([0.0, float("nan")]))

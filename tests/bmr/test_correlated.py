"""Reduced row means under a row-correlated Gaussian posterior (bmr/correlated.py)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bmr_compress.bmr import reduced_row_means, row_scales


def _problem(seed: int, rows: int = 5, d: int = 9, n: int = 40):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    x[:, 1] = 0.8 * x[:, 0] + 0.2 * x[:, 1]  # correlated inputs: compensation matters
    h = x.T @ x / n
    mu = torch.randn(rows, d, generator=g, dtype=torch.float64)
    keep = torch.rand(rows, d, generator=g) > 0.4
    a = torch.rand(rows, generator=g, dtype=torch.float64) * 50 + 1
    d0 = torch.rand(d, generator=g, dtype=torch.float64) + 0.5
    return x, h, mu, keep, a, d0


def _bmr_reduction(mu_i, lam_i, pruned, kappa):
    """General Gaussian BMR, reduced prior precision Π + κ on P: μ̃ = (Λ + κ 1_P)⁻¹ Λ μ."""
    red = lam_i + torch.diag(kappa * pruned.double())
    return torch.linalg.solve(red, lam_i @ mu_i)


@pytest.mark.parametrize("seed", range(4))
def test_equals_the_general_reduction_in_the_spike_limit(seed):
    _, h, mu, keep, a, d0 = _problem(seed)
    got = reduced_row_means(mu, keep, h, a, d0)
    for i in range(mu.shape[0]):
        lam = a[i] * h + torch.diag(d0)
        errs = [float((_bmr_reduction(mu[i], lam, ~keep[i], kappa) - got[i]).abs().max())
                for kappa in (1e4, 1e7, 1e10)]
        assert errs[0] > errs[1] > errs[2] or errs[0] < 1e-12  # converges as κ grows
        assert errs[2] < 1e-6
        assert bool((got[i][~keep[i]] == 0).all())


@pytest.mark.parametrize("seed", range(4))
def test_equals_the_gaussian_conditional_mean(seed):
    _, h, mu, keep, a, d0 = _problem(seed)
    got = reduced_row_means(mu, keep, h, a, d0)
    for i in range(mu.shape[0]):
        cov = torch.linalg.inv(a[i] * h + torch.diag(d0))
        p, k = ~keep[i], keep[i]
        want = mu[i].clone()
        want[k] = mu[i][k] - cov[k][:, p] @ torch.linalg.solve(cov[p][:, p], mu[i][p])
        want[p] = 0
        assert torch.allclose(got[i], want, rtol=1e-8, atol=1e-10)


def test_large_scale_recovers_least_squares_reconstruction():
    """a_i → ∞ (weak prior): the survivors solve min ‖X(w − μ)‖² subject to w[P] = 0."""
    x, h, mu, keep, _, d0 = _problem(7, n=200)
    got = reduced_row_means(mu, keep, h, torch.full((mu.shape[0],), 1e8, dtype=torch.float64), d0)
    for i in range(mu.shape[0]):
        k = keep[i]
        w = torch.zeros_like(mu[i])
        w[k] = torch.linalg.lstsq(x[:, k], x @ mu[i]).solution
        assert torch.allclose(got[i], w, rtol=1e-5, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.floats(1e-3, 1e6))
def test_never_worse_than_zeroing_in_the_posterior_metric(seed, scale):
    """μ̃ minimises (w − μ)ᵀΛ(w − μ) over w with w[P] = 0; plain zeroing is one such w."""
    _, h, mu, keep, a, d0 = _problem(seed)
    a = a * scale
    got = reduced_row_means(mu, keep, h, a, d0)
    zeroed = mu * keep
    for i in range(mu.shape[0]):
        lam = a[i] * h + torch.diag(d0)
        e_got = (got[i] - mu[i]) @ lam @ (got[i] - mu[i])
        e_zero = (zeroed[i] - mu[i]) @ lam @ (zeroed[i] - mu[i])
        assert e_got <= e_zero * (1 + 1e-9) + 1e-12


def test_rows_without_data_signal_or_fully_pruned_are_only_zeroed():
    _, h, mu, keep, _, d0 = _problem(3)
    keep[0] = False  # a removed output unit
    a = torch.zeros(mu.shape[0], dtype=torch.float64)
    a[0] = 5.0
    got = reduced_row_means(mu, keep, h, a, d0)
    assert torch.equal(got, mu * keep)


def test_row_scales_recover_a_known_scale():
    g = torch.Generator().manual_seed(0)
    h_diag = torch.rand(30, generator=g, dtype=torch.float64) + 0.1
    d0 = torch.full((30,), 2.0, dtype=torch.float64)
    a_true = torch.tensor([0.0, 3.0, 1e4], dtype=torch.float64)
    prec = a_true[:, None] * h_diag[None, :] + d0
    assert torch.allclose(row_scales(prec, h_diag, d0), a_true, rtol=1e-10)
    # precisions below the prior (no data signal) give a_i = 0, never a negative scale
    assert float(row_scales(d0[None, :] * 0.5, h_diag, d0)[0]) == 0.0


def test_invalid_inputs_raise():
    _, h, mu, keep, a, d0 = _problem(0)
    with pytest.raises(ValueError):
        reduced_row_means(mu, keep[:, :3], h, a, d0)
    with pytest.raises(ValueError):
        reduced_row_means(mu, keep, h, -a, d0)
    with pytest.raises(ValueError):
        reduced_row_means(mu, keep, h, a, torch.zeros_like(d0))

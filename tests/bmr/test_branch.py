"""The joint evidence of removing a whole branch (bmr/branch.py) against dense Gaussian
integrals over the consumer layer, in float64."""

from __future__ import annotations

import math

import pytest
import torch

from bmr_compress.bmr.ard import ard_unit_evidence
from bmr_compress.bmr.branch import ard_branch_delta_lnz_at, branch_evidence
from bmr_compress.bmr.structured import LayerFactors, column_reduced_means, unit_evidence
from tests.bmr.test_ard import _ln_z

ROWS, D, S2, NU = 4, 9, 0.5, 40.0


def _layer(seed: int, scale: float = 0.7, bias_mean: float = 0.6):
    g = torch.Generator().manual_seed(seed)
    w0 = torch.randn(ROWS, D, generator=g, dtype=torch.float64) * scale
    mix = torch.randn(D - 1, D - 1, generator=g, dtype=torch.float64)
    x = torch.randn(200, D - 1, generator=g, dtype=torch.float64) @ mix + bias_mean
    x = torch.cat([x, torch.ones(200, 1, dtype=torch.float64)], 1)  # the bias's input 1
    a = x.T @ x / 200  # correlated inputs with a non-zero mean
    b = torch.rand(ROWS, generator=g, dtype=torch.float64) + 0.2
    return w0, a, b


def _ard_direct(w0, a, b, cols, tau: float) -> float:
    """ln Z(t = 0) − ln Z(t² = τ s²), each a Gaussian integral over the whole row."""
    return sum(_ln_z(w0[i], NU * float(b[i]) * a, S2, cols, 0.0)
               - _ln_z(w0[i], NU * float(b[i]) * a, S2, cols, tau * S2) for i in range(ROWS))


def _layer_direct(w0, a, b, cols) -> float:
    """Savage–Dickey: ln q(w_P = 0) − ln p(w_P = 0) per row, Σ = (ν b A + I/s²)⁻¹ dense."""
    total = 0.0
    eye = torch.eye(D, dtype=torch.float64)
    for i in range(ROWS):
        lam = NU * float(b[i]) * a + eye / S2
        sigma = torch.linalg.inv(lam)
        mu = sigma @ (NU * float(b[i]) * a @ w0[i])
        post = torch.distributions.MultivariateNormal(mu[cols], sigma[cols][:, cols])
        prior = torch.distributions.MultivariateNormal(torch.zeros(len(cols), dtype=torch.float64),
                                                       S2 * torch.eye(len(cols), dtype=torch.float64))
        zero = torch.zeros(len(cols), dtype=torch.float64)
        total += float(post.log_prob(zero) - prior.log_prob(zero))
    return total


@pytest.mark.parametrize("bias", [True, False])
def test_layer_prior_branch_equals_savage_dickey(bias):
    w0, a, b = _layer(3)
    cols = torch.arange(D - 1 if bias else D)
    fac = LayerFactors.build(w0, a, b, S2)
    got = float(branch_evidence(fac, cols, NU, prior="layer").delta_lnz[0])
    want = _layer_direct(w0, a, b, cols)
    assert got == pytest.approx(want, rel=1e-8, abs=1e-8)
    # the per-unit code with the branch as one unit (one k × k factorisation per row) agrees
    assert got == pytest.approx(float(unit_evidence(fac, cols[None], NU).delta_lnz[0]),
                                rel=1e-8, abs=1e-8)


@pytest.mark.parametrize("bias", [True, False])
def test_ard_branch_is_the_type2_minimum_of_the_direct_integral(bias):
    w0, a, b = _layer(5, scale=0.3)
    cols = torch.arange(D - 1 if bias else D)
    fac = LayerFactors.build(w0, a, b, S2)
    for tau in (0.01, 0.3, 2.0, 50.0):  # the closed form at fixed τ
        assert ard_branch_delta_lnz_at(fac, cols, NU, tau) == pytest.approx(
            _ard_direct(w0, a, b, cols, tau), rel=1e-8, abs=1e-8)
    ev = branch_evidence(fac, cols, NU, prior="ard")
    # its minimum over τ: at or below the direct integral's on a fine ln τ grid, and close
    coarse = torch.linspace(-8, 8, 81).tolist()
    best = min(coarse, key=lambda x: _ard_direct(w0, a, b, cols, math.exp(x)))
    fine = torch.linspace(best - 0.2, best + 0.2, 81).tolist()
    direct = min(_ard_direct(w0, a, b, cols, math.exp(x)) for x in fine)
    assert direct - 1e-3 <= float(ev.delta_lnz[0]) <= direct + 1e-9
    assert float(ev.delta_lnz[0]) < 0  # a branch that carries signal: the data keep it
    ref = ard_unit_evidence(fac, cols[None], NU)
    assert float(ev.delta_lnz[0]) == pytest.approx(float(ref.delta_lnz[0]), rel=1e-6, abs=1e-6)
    assert float(ev.distortion[0]) == pytest.approx(float(ref.distortion[0]), rel=1e-8)


def test_joint_score_is_not_the_sum_of_unit_scores():
    """Correlated inputs: the branch's joint evidence differs from Σ of single-unit scores."""
    w0, a, b = _layer(7, scale=0.05)
    cols = torch.arange(D - 1)
    fac = LayerFactors.build(w0, a, b, S2)
    joint = float(branch_evidence(fac, cols, NU, prior="layer").delta_lnz[0])
    single = float(unit_evidence(fac, cols[:, None], NU).delta_lnz.sum())
    assert abs(joint - single) > 1e-3 * max(1.0, abs(joint))


def test_useless_branch_goes_and_its_mean_moves_to_the_bias():
    """Output weights ~0: the evidence removes the branch (ΔlnZ ≥ 0); its constant part
    (W_P E[x]) is what the compensated bias takes over."""
    w0, a, b = _layer(11, scale=1e-6)
    w0[:, -1] = 0.3  # the bias itself is useful
    cols = torch.arange(D - 1)
    fac = LayerFactors.build(w0, a, b, S2)
    got = float(branch_evidence(fac, cols, NU, prior="ard").delta_lnz[0])
    assert got >= 0.0  # τ* = 0; reported at τ = 1 like a removed unit (bmr/ard.py)
    assert got == pytest.approx(_ard_direct(w0, a, b, cols, 1.0), rel=1e-6)
    drop = torch.zeros(D, dtype=torch.bool)
    drop[cols] = True
    new = column_reduced_means(w0, drop, a, NU * b, 1.0 / S2)
    assert bool((new[:, cols] == 0).all())
    assert torch.allclose(new[:, -1], w0[:, -1], atol=1e-5)


def test_branch_must_own_every_column_but_one():
    w0, a, b = _layer(1)
    fac = LayerFactors.build(w0, a, b, S2)
    with pytest.raises(ValueError, match="every column"):
        branch_evidence(fac, torch.arange(D - 3), NU)


def test_the_basis_is_computed_once_per_layer_and_reused_across_nu():
    w0, a, b = _layer(13)
    cols = torch.arange(D - 1)
    fac = LayerFactors.build(w0, a, b, S2)
    first = [float(branch_evidence(fac, cols, nu).delta_lnz[0]) for nu in (4.0, 40.0, 400.0)]
    assert len(fac.cache) == 1
    fresh = [float(branch_evidence(LayerFactors.build(w0, a, b, S2), cols, nu).delta_lnz[0])
             for nu in (4.0, 40.0, 400.0)]
    assert first == fresh

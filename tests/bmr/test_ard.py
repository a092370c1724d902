"""The per-unit ARD evidence (bmr/ard.py) against a direct Gaussian integral over the layer."""

from __future__ import annotations

import math

import pytest
import torch

from bmr_compress.bmr.ard import ard_delta_lnz_at, ard_terms, ard_unit_evidence
from bmr_compress.bmr.structured import LayerFactors


def _spd(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3 * d, d, generator=g, dtype=torch.float64)
    return x.T @ x / (3 * d) + 0.05 * torch.eye(d, dtype=torch.float64)


def _ln_z(w0: torch.Tensor, q: torch.Tensor, s2: float, cols: torch.Tensor, t2: float) -> float:
    """ln ∫ exp(−½ (w − w0)ᵀ Q (w − w0)) N(w_K; w0_K, s² I) N(w_P; 0, t² I) dw (w_P = 0 when
    t² = 0), by completing the square over the free coordinates."""
    d = w0.shape[0]
    p = torch.zeros(d, dtype=torch.bool)
    p[cols] = True
    free = ~p if t2 == 0 else torch.ones(d, dtype=torch.bool)
    var = torch.full((d,), s2, dtype=torch.float64)
    var[p] = t2
    mean = w0.clone()
    mean[p] = 0.0
    fixed = torch.where(free, torch.zeros_like(w0), mean)  # w at the fixed coordinates
    r = fixed - w0
    qf = q[free][:, free]
    # write w_F = w0_F + y: exponent −½ yᵀ Q_FF y − yᵀ Q_FG r_G − ½ r_Gᵀ Q_GG r_G
    g_ = ~free
    lin = -(q[free][:, g_] @ r[g_])
    const = -0.5 * float(r[g_] @ q[g_][:, g_] @ r[g_])
    m_y = (mean - w0)[free]  # prior mean of y
    v = var[free]
    lam = qf + torch.diag(1.0 / v)
    h = lin + m_y / v
    sol = torch.linalg.solve(lam, h)
    return (const - 0.5 * float(torch.log(v).sum()) - 0.5 * float(torch.logdet(lam))
            + 0.5 * float(h @ sol) - 0.5 * float(m_y @ (m_y / v)))


@pytest.mark.parametrize("k", [1, 3])
def test_ard_score_equals_the_direct_gaussian_integral(k):
    rows, d, s2, nu = 4, 9, 0.5, 40.0
    g = torch.Generator().manual_seed(k)
    w0 = torch.randn(rows, d, generator=g, dtype=torch.float64) * 0.7
    a = _spd(d, 1)
    b = torch.rand(rows, generator=g, dtype=torch.float64) + 0.2
    units = torch.arange(0, 2 * k).reshape(2, k)
    fac = LayerFactors.build(w0, a, b, s2)
    x, q = ard_terms(fac, units, nu)
    for t2 in (0.05, 0.5, 3.0):
        lib = ard_delta_lnz_at(x, q, t2 / s2)
        for j in range(2):
            direct = sum(_ln_z(w0[i], nu * float(b[i]) * a, s2, units[j], 0.0)
                         - _ln_z(w0[i], nu * float(b[i]) * a, s2, units[j], t2)
                         for i in range(rows))
            assert float(lib[j]) == pytest.approx(direct, rel=1e-8, abs=1e-9)
    ev = ard_unit_evidence(fac, units, nu)
    for j in range(2):  # type-II maximum: the minimum over t² of the direct ΔlnZ(t²)
        def direct(ln_t2: float, j: int = j) -> float:
            return sum(_ln_z(w0[i], nu * float(b[i]) * a, s2, units[j], 0.0)
                       - _ln_z(w0[i], nu * float(b[i]) * a, s2, units[j], math.exp(ln_t2))
                       for i in range(rows))
        grid = torch.linspace(-12, 8, 81).tolist()
        vals = [direct(z) for z in grid]
        i0 = min(range(len(grid)), key=vals.__getitem__)
        lo, hi = grid[max(i0 - 1, 0)], grid[min(i0 + 1, len(grid) - 1)]
        for _ in range(60):  # golden section inside the grid's bracket
            m1, m2 = hi - 0.618 * (hi - lo), lo + 0.618 * (hi - lo)
            lo, hi = (lo, m2) if direct(m1) < direct(m2) else (m1, hi)
        direct_min = min(0.0, direct(0.5 * (lo + hi)))
        if direct_min < 0:
            assert float(ev.delta_lnz[j]) == pytest.approx(direct_min, rel=1e-7, abs=1e-9)
            assert float(ev.delta_lnz[j]) >= direct_min * (1 + 1e-9)  # a search never beats the minimum
        else:
            assert float(ev.delta_lnz[j]) >= 0


def test_ard_prunes_a_unit_the_output_does_not_need_and_keeps_one_it_does():
    """Column 0 duplicates column 1 (perfectly compensable); column 2 is independent."""
    g = torch.Generator().manual_seed(0)
    n, rows = 4000, 3
    z = torch.randn(n, 3, generator=g, dtype=torch.float64)
    xin = torch.stack([z[:, 0], z[:, 0] + 1e-3 * z[:, 1], z[:, 2]], 1)
    a = xin.T @ xin / n
    w0 = torch.randn(rows, 3, generator=g, dtype=torch.float64)
    fac = LayerFactors.build(w0, a, torch.ones(rows, dtype=torch.float64), float((w0 ** 2).mean()))
    ev = ard_unit_evidence(fac, torch.tensor([[0], [2]]), nu=1e3)
    assert float(ev.delta_lnz[0]) >= 0 > float(ev.delta_lnz[1])
    assert float(ev.distortion[0]) < 0.05 * float(ev.distortion[1])

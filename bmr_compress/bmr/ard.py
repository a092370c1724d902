"""Unit evidence with a per-unit prior scale (ARD), survivors compensating: the default score.

Sign convention (docs/theory.md §1): ΔlnZ = ln p̃(D) − ln p(D); ΔlnZ ≥ 0 ⇒ prune.
The derivation and its tests: docs/theory.md §7b.

Model of consumer row i (weights w_i ∈ R^d; a unit owns the columns P, the rest are K):

    likelihood   exp(−½ ν b_i (w − w0_i)ᵀ A (w − w0_i))       (bmr/structured.py)
    survivors    w_K ~ N(w0_iK, s² I)     they may move from the pretrained values, by s
    the unit     w_P ~ N(0, t_j² I)        one scale per unit, shared by its rows (ARD)

Integrating the survivors out leaves a Gaussian likelihood for w_P centred at w0_iP with
precision H_i = Σ_i[P,P]⁻¹ − I/s² (Σ_i = (ν b_i A + I/s²)⁻¹). ŵᵀ H_i ŵ / ν is exactly the
output distortion left after the cut's compensation (bmr.structured.column_reduced_means moves
the survivors with the same damping 1/s²), so the compensation is counted, and the unit is
scored once, where it is consumed. In the eigenbasis of s² H_i (eigenvalues x_ik, projected
pretrained weights ŵ_ik) and with τ = t²/s²:

    ΔlnZ_j(τ) = ln Z(t = 0) − ln Z(t) = Σ_ik ½ ln(1 + τ x_ik) − ½ q_ik τ x_ik / (1 + τ x_ik),
    q_ik = ŵ_ik² x_ik / s²  (the unit's squared signal-to-noise along that direction)

Type-II maximum likelihood (ARD) picks τ*; ΔlnZ_j = ΔlnZ_j(τ*) ≤ 0, and 0 exactly when τ* = 0:
the data prefer the unit gone. Unlike a fixed prior, no weight pays ½ w²/s² for being large
(a fixed prior's data term ½ μᵀSμ uses means shrunk by that prior, so units the data barely
constrain are ranked by how little they are seen, not by what removing them costs). A unit
the evidence removes is reported with ΔlnZ_j(τ = 1) ≥ 0 (the layer's prior scale) so that
units can still be ordered among themselves. The distortion δ_j = Σ_ik q_ik / ν is the
relative output distortion of removing the unit from the pretrained weights, compensated.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from bmr_compress.bmr.structured import LayerFactors, UnitEvidence, unit_evidence

# ln τ grid of the type-II search (τ = t²/s²: a decade apart), then Newton steps in ln τ
_GRID = torch.linspace(-8.0, 8.0, 17, dtype=torch.float64) * math.log(10.0)
_NEWTON = 8


# how a unit's prior scale is set: "ard" (its own, by type-II maximum likelihood: this module)
# or "layer" (the layer's empirical-Bayes scale s² for every weight: bmr.structured)
UNIT_PRIORS = ("ard", "layer")


def unit_score(factors: LayerFactors, units: Tensor, nu: float, prior: str = "ard") -> UnitEvidence:
    """ΔlnZ of removing each unit under the chosen unit prior (UNIT_PRIORS)."""
    if prior == "ard":
        return ard_unit_evidence(factors, units, nu)
    _check(prior == "layer", f"unit prior must be one of {UNIT_PRIORS}, got {prior!r}")
    return unit_evidence(factors, units, nu)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def ard_terms(factors: LayerFactors, units: Tensor, nu: float) -> tuple[Tensor, Tensor]:
    """(x, q) of every unit, each (num_units, rows, k): the eigenvalues of s² H_i on the
    unit's columns and the squared signal-to-noise of its pretrained weights along them."""
    _check(nu > 0 and math.isfinite(nu), "nu must be finite and > 0")
    rows, d = factors.w0.shape
    _check(units.dim() == 2 and int(units.max()) < d and int(units.min()) >= 0,
           f"units must be (num_units, k) column indices below {d}")
    s2 = factors.prior_var
    nbe = nu * factors.row_scale[:, None] * factors.e[None, :]
    g = nbe / (1.0 + nbe)  # 1 − f_i: I − Σ_i/s² = U diag(g_i) Uᵀ, accurate where g ≪ 1
    up = factors.u[units]  # (n, k, d)
    w = factors.w0[:, units].permute(1, 0, 2)  # (n, rows, k)
    if units.shape[1] == 1:
        m = torch.einsum("nd,id->ni", up[:, 0] ** 2, g)[..., None]  # (n, rows, 1)
        wt = w
    else:
        pairs = up[:, :, None, :] * up[:, None, :, :]  # (n, k, k, d)
        mat = torch.einsum("nabd,id->niab", pairs, g)
        m, v = torch.linalg.eigh(0.5 * (mat + mat.transpose(-1, -2)))
        wt = torch.einsum("nikj,nik->nij", v, w)
    m = m.clamp(0.0, 1.0 - 1e-15)
    x = m / (1.0 - m)  # eigenvalues of s² H_i: 1/c − 1, c = 1 − m those of Σ_i[P,P]/s²
    return x, wt ** 2 * x / s2


def ard_delta_lnz_at(x: Tensor, q: Tensor, tau: Tensor | float) -> Tensor:
    """ΔlnZ_j(τ) for every unit (sums over rows and directions); τ broadcasts over units."""
    tau = torch.as_tensor(tau, dtype=x.dtype)
    while tau.dim() < x.dim():
        tau = tau.unsqueeze(-1)
    tx = tau * x
    return (0.5 * torch.log1p(tx) - 0.5 * q * tx / (1.0 + tx)).sum((-1, -2))


def ard_unit_evidence(factors: LayerFactors, units: Tensor, nu: float, *,
                      chunk_elems: int = 2_000_000) -> UnitEvidence:
    """ΔlnZ of removing each unit (see the module docstring), its Occam part at τ* and its
    compensated distortion. units: LongTensor (num_units, k); float64 results (num_units,)."""
    n, k = units.shape
    rows = factors.w0.shape[0]
    step = max(1, chunk_elems // max(rows * k * k, 1))
    out, occ, dis = [], [], []
    for lo in range(0, n, step):
        x, q = ard_terms(factors, units[lo:lo + step], nu)
        best, arg = _search(x, q)
        one = ard_delta_lnz_at(x, q, 1.0)
        out.append(torch.where(best < 0, best, one.clamp_min(0.0)))
        occ.append((0.5 * torch.log1p(arg[:, None, None] * x)).sum((-1, -2)))
        dis.append(q.sum((-1, -2)) / nu)
    return UnitEvidence(torch.cat(out), torch.cat(occ), torch.cat(dis))


def _search(x: Tensor, q: Tensor) -> tuple[Tensor, Tensor]:
    """min over τ of ΔlnZ_j(τ) per unit and the minimising τ (0 when no τ gives a negative
    value): the best point of a ln τ grid, then Newton steps in u = ln τ kept inside the
    grid cell on either side (with y = τx: ∂F/∂u = ½ Σ y(1 + y − q)/(1 + y)²,
    ∂²F/∂u² = ½ Σ y((1 + y) − q(1 − y))/(1 + y)³)."""
    c = x.shape[0]
    vals = torch.stack([ard_delta_lnz_at(x, q, math.exp(float(t))) for t in _GRID])  # (G, c)
    best, i = vals.min(0)
    step = float(_GRID[1] - _GRID[0])
    lo, hi = _GRID[i] - step, _GRID[i] + step
    u = _GRID[i].clone()
    for _ in range(_NEWTON):
        y = u.exp()[:, None, None] * x
        d1 = 0.5 * (y * (1.0 + y - q) / (1.0 + y) ** 2).sum((-1, -2))
        d2 = 0.5 * (y * ((1.0 + y) - q * (1.0 - y)) / (1.0 + y) ** 3).sum((-1, -2))
        move = torch.where(d2 > 0, -d1 / d2.clamp_min(1e-300), -torch.sign(d1) * 0.25 * step)
        u = torch.minimum(torch.maximum(u + move, lo), hi)
    fu = ard_delta_lnz_at(x, q, u.exp())
    better = fu < best
    best = torch.where(better, fu, best)
    ln_tau = torch.where(better, u, _GRID[i])
    tau = torch.where(best < 0, ln_tau.exp(), torch.zeros(c, dtype=torch.float64))
    return best.clamp_max(0.0), tau

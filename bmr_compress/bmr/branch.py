"""Evidence for removing a whole residual branch (every unit of one group) jointly.

Sign convention (docs/theory.md §1): ΔlnZ = ln p̃(D) − ln p(D); ΔlnZ ≥ 0 ⇒ prune.
The derivation: docs/theory.md §7c.

A branch (all heads of one attention block, all neurons of one FFN) is consumed by one layer
whose columns are the branch's units P plus at most one more column k, its bias. Removing
the branch zeroes every column in P at once; the bias stays free and moves to its reduced
mean, so the branch is reduced to a *constant*: its bias plus the branch's mean output
(bmr.structured.column_reduced_means with K = {bias}). Under the same row posterior as the
per-unit scores (bmr/structured.py, bmr/ard.py), with C = A_PP, a = A_Pk, α = A_kk and
t_i = ν b_i s², integrating the bias out gives, per consumer row i,

    M_i = s² H_i = t_i C − γ_i a aᵀ,     γ_i = t_i² / (t_i α + 1)     (γ_i = 0 with no bias)

(H_i = Σ_i[P,P]⁻¹ − I/s², bmr/ard.py). One eigendecomposition C = V diag(c) Vᵀ serves
every row: in that basis M_i is diagonal minus rank one, so determinants and solves follow
from the matrix determinant lemma and Sherman–Morrison in O(rows · |P|), where the
per-unit code would need a |P| × |P| factorisation per row.

* "ard" (one prior scale t² = τ s² for the whole branch, set by type-II maximum likelihood):
      F(τ) = Σ_i ½ ln det(I + τ M_i) − (τ / 2s²) ŵ_iᵀ M_i (I + τ M_i)⁻¹ M_i ŵ_i,
  ŵ_i = w0_iP; ΔlnZ = min_τ F(τ) (≤ 0, 0 exactly when the data prefer the branch gone).
* "layer" (the layer's s² for every weight, Savage–Dickey as bmr/structured.py):
      ΔlnZ = Σ_i ½ ln det(I + M_i) − ½ μ_iPᵀ (I + M_i) μ_iP / s².

The distortion is Σ_i ŵ_iᵀ M_i ŵ_i / (s² ν): the relative output distortion of replacing
the branch by its constant, bias compensated (plus the prior's share).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from bmr_compress.bmr.structured import LayerFactors, UnitEvidence

_GRID = torch.linspace(-8.0, 8.0, 33, dtype=torch.float64) * math.log(10.0)
_GOLDEN = 40
ROUNDING = 1e-6  # nats: a type-II minimum above −ROUNDING is 0 (τ* at the grid's floor)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _basis(factors: LayerFactors, cols: Tensor, k: int | None,
           ) -> tuple[Tensor, Tensor, Tensor, float]:
    """(c, V, ã = Vᵀ A_Pk, α = A_kk) with C = A_PP = V diag(c) Vᵀ, A from the factors' s² A
    (ã = 0, α = 1 without a bias column k)."""
    up = factors.u[cols] * factors.e  # (p, d): rows P of U diag(e)
    c = up @ factors.u[cols].T / factors.prior_var  # A_PP
    c_eig, v = torch.linalg.eigh(0.5 * (c + c.T))
    if k is None:
        return c_eig.clamp_min(0.0), v, torch.zeros_like(c_eig), 1.0
    a_pk = up @ factors.u[k] / factors.prior_var  # (p,)
    alpha = float((factors.u[k] ** 2 * factors.e).sum() / factors.prior_var)
    return c_eig.clamp_min(0.0), v, a_pk @ v, alpha


class _Branch:
    """The per-row pieces of M_i in the eigenbasis of C (see the module docstring)."""

    def __init__(self, factors: LayerFactors, columns: Tensor, nu: float) -> None:
        _check(nu > 0 and math.isfinite(nu), "nu must be finite and > 0")
        rows, d = factors.w0.shape
        cols = columns.flatten().long()
        _check(cols.numel() > 0 and int(cols.min()) >= 0 and int(cols.max()) < d
               and len(set(cols.tolist())) == cols.numel(),
               f"branch columns must be distinct column indices below {d}")
        rest = sorted(set(range(d)) - set(cols.tolist()))
        _check(len(rest) <= 1, "a branch must own every column of its consumer but the bias; "
               f"{len(rest)} columns are left")
        s2 = factors.prior_var
        key = ("branch", tuple(cols.tolist()))
        if key not in factors.cache:  # independent of ν: once per layer and branch
            factors.cache[key] = _basis(factors, cols, rest[0] if rest else None)
        self.c, v, self.a, alpha = factors.cache[key]
        self.t = nu * factors.row_scale * s2  # (rows,)
        self.w = factors.w0[:, cols] @ v  # (rows, p): ŵ_i in the basis V
        self.v, self.cols, self.s2, self.nu = v, cols, s2, nu
        # γ_i = t_i² / (t_i α + 1); 0 without a bias column (ã = 0 then too)
        self.gamma = self.t ** 2 / (self.t * alpha + 1.0) if rest else torch.zeros_like(self.t)

    def times_m(self, x: Tensor) -> Tensor:
        """M_i x_i for every row; x: (rows, p) in the basis V."""
        return self.t[:, None] * self.c[None, :] * x - self.gamma[:, None] * (x @ self.a)[:, None] \
            * self.a[None, :]

    def solve_logdet(self, tau: float, x: Tensor) -> tuple[Tensor, Tensor]:
        """((I + τ M_i)⁻¹ x_i, ln det(I + τ M_i)) for every row: diagonal minus rank one."""
        e = 1.0 + tau * self.t[:, None] * self.c[None, :]  # (rows, p)
        u2 = tau * self.gamma[:, None] * self.a[None, :] ** 2  # u² with u = √(τγ) ã
        shrink = (1.0 - (u2 / e).sum(1)).clamp_min(1e-300)  # 1 − uᵀE⁻¹u > 0 (M ⪰ 0)
        y = x / e
        coef = tau * self.gamma * (y @ self.a) / shrink  # (rows,)
        z = y + coef[:, None] * self.a[None, :] / e
        return z, torch.log(e).sum(1) + torch.log(shrink)

    def ard_value(self, tau: float) -> float:
        """F(τ) summed over rows (F(0) = 0)."""
        if tau <= 0.0:
            return 0.0
        mw = self.times_m(self.w)
        z, logdet = self.solve_logdet(tau, mw)
        return float((0.5 * logdet - 0.5 * tau / self.s2 * (mw * z).sum(1)).sum())

    def distortion(self) -> float:
        return float((self.w * self.times_m(self.w)).sum() / (self.s2 * self.nu))


def branch_evidence(factors: LayerFactors, columns: Tensor, nu: float,
                    prior: str = "ard") -> UnitEvidence:
    """ΔlnZ of removing all of `columns` (a branch's units) from one consumer layer jointly,
    its bias (the one column left, if any) compensating; float64 tensors of shape (1,)."""
    br = _Branch(factors, columns, nu)
    if prior == "layer":
        mu = factors.posterior_means(nu)[:, br.cols] @ br.v  # μ_iP in the basis V
        logdet = br.solve_logdet(1.0, mu)[1]
        quad = (mu * mu).sum(1) + (mu * br.times_m(mu)).sum(1)
        occam = float(0.5 * logdet.sum())
        value = occam - float(0.5 * quad.sum() / br.s2)
        return _evidence(value, occam, br.distortion())
    _check(prior == "ard", f"unit prior must be 'ard' or 'layer', got {prior!r}")
    best, tau = _minimise(br.ard_value)
    occam = float(0.5 * br.solve_logdet(tau, br.w)[1].sum()) if tau > 0 else 0.0
    # as bmr/ard.py: a branch the evidence removes (τ* = 0) is reported at τ = 1, clamped ≥ 0
    value = best if best < -ROUNDING else max(br.ard_value(1.0), 0.0)
    return _evidence(value, occam, br.distortion())


def ard_branch_delta_lnz_at(factors: LayerFactors, columns: Tensor, nu: float,
                            tau: float) -> float:
    """F(τ): ΔlnZ of removing the branch against keeping it at prior scale t² = τ s²."""
    return _Branch(factors, columns, nu).ard_value(tau)


def _evidence(value: float, occam: float, distortion: float) -> UnitEvidence:
    def one(x: float) -> Tensor:
        return torch.tensor([x], dtype=torch.float64)

    return UnitEvidence(one(value), one(occam), one(distortion))


def _minimise(f) -> tuple[float, float]:
    """(min over τ ≥ 0 of f, the minimising τ; 0 when no grid point is negative): the best
    point of a ln τ grid, then golden-section search in ln τ over its neighbouring cells."""
    vals = [f(math.exp(float(g))) for g in _GRID]
    i = min(range(len(vals)), key=vals.__getitem__)
    if vals[i] >= -ROUNDING:
        return 0.0, 0.0
    step = float(_GRID[1] - _GRID[0])
    lo, hi = float(_GRID[i]) - step, float(_GRID[i]) + step
    r = (math.sqrt(5.0) - 1.0) / 2.0
    x1, x2 = hi - r * (hi - lo), lo + r * (hi - lo)
    f1, f2 = f(math.exp(x1)), f(math.exp(x2))
    for _ in range(_GOLDEN):
        if f1 < f2:
            hi, x2, f2 = x2, x1, f1
            x1 = hi - r * (hi - lo)
            f1 = f(math.exp(x1))
        else:
            lo, x1, f1 = x1, x2, f2
            x2 = lo + r * (hi - lo)
            f2 = f(math.exp(x2))
    cand = [(vals[i], float(_GRID[i])), (f1, x1), (f2, x2)]
    best, x = min(cand)
    return best, math.exp(x)

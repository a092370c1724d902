"""Evidence for removing whole units under a row-correlated (Kronecker-factored) posterior.

Sign convention (docs/theory.md §1): ΔlnZ = ln p̃(D) − ln p(D); ΔlnZ ≥ 0 ⇒ prune.
This posterior: docs/theory.md §6; the score: §7a.

A unit (an FFN neuron, an attention head, a conv filter) is removed by zeroing the columns
P of the layer that *consumes* it (its producer rows then no longer reach the output, so
they are removed for free). Score it once, there, with the survivors free to move.

Posterior of consumer row i (weights w_i ∈ R^d, input second moment A = E[x xᵀ]):

    q(w_i) = N(μ_i, Λ_i⁻¹),   Λ_i = ν b_i A + I/s²,   μ_i = Λ_i⁻¹ ν b_i A w0_i

— the Laplace approximation of the tempered distillation likelihood, a quadratic
exp(−½ ν b_i (w − w0_i)ᵀ A (w − w0_i)) around the pretrained row w0_i (in self-distillation
the original fits itself exactly) with K-FAC's input factor A and output factor
b_i = E‖∂f/∂y_i‖², times the prior N(0, s² I). The mean is the posterior mode: directions the
data barely constrain (ν b_i e ≲ 1) shrink towards 0, which is what lets a redundant unit go.
ν is the likelihood's precision: ν·δ/2 nats for a relative output distortion δ
(scoring/tolerance.py turns the user's stated tolerance into ν).

Removing P (docs/theory.md §7a; the Savage–Dickey ratio of the Gaussian marginal of w_iP):

    ΔlnZ_i = ½ ln det(s² S_i) − ½ μ_iPᵀ S_i μ_iP,     S_i = (Σ_i[P, P])⁻¹

S_i is the Schur complement Λ_PP − Λ_PK Λ_KK⁻¹ Λ_KP: what is left of the cost after the
survivors K move to their reduced means (bmr/correlated.py), i.e. the compensation the cut
applies is counted in the decision. Rows of one layer are independent given the factors,
so a unit's ΔlnZ is the sum over rows (and over consumer layers, for units read by several).

With s²A = U diag(e) Uᵀ and f_i = 1/(1 + ν b_i e): Σ_i = s² U diag(f_i) Uᵀ, so every row
shares one eigendecomposition and Σ_i[P, P] = s² U_P diag(f_i) U_Pᵀ.

The *predicted distortion* of removing the unit from the pretrained weights, survivors
compensated, is δ_j = Σ_i w0_iPᵀ S_i w0_iP / ν: the relative output distortion
Σ_i b_i w0_iPᵀ (A/A_KK) w0_iP plus the prior's share (so never below it). The kept units are
written at their compensated values, not at the shrunk μ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor



def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


@dataclass(frozen=True)
class UnitEvidence:
    """Per unit: ΔlnZ (nats), its Occam part ½ Σ ln det(s² S) and the predicted distortion."""

    delta_lnz: Tensor  # (units,) float64
    occam: Tensor  # (units,) float64, ≥ 0
    distortion: Tensor  # (units,) float64, ≥ 0: relative output distortion, from w0


@dataclass(frozen=True)
class LayerFactors:
    """What scoring needs from one consumer layer, computed once per layer.

    w0: (rows, d) weight rows (a bias as the last column); eig: eigenvalues e ≥ 0 of s² A;
    u: (d, d) eigenvectors; row_scale: (rows,) b_i ≥ 0; prior_var: s².
    """

    w0: Tensor
    e: Tensor
    u: Tensor
    row_scale: Tensor
    prior_var: float
    # what a scorer derives from these factors and reuses across ν (bmr/branch.py)
    cache: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def build(cls, w0: Tensor, a_in: Tensor, row_scale: Tensor, prior_var: float) -> LayerFactors:
        w0 = w0.double()
        rows, d = w0.shape
        _check(a_in.shape == (d, d), f"input moment must be ({d}, {d}), got {tuple(a_in.shape)}")
        _check(row_scale.shape == (rows,), f"row scales must be ({rows},)")
        _check(prior_var > 0 and math.isfinite(prior_var), "prior variance must be finite, > 0")
        a = a_in.double() * prior_var
        e, u = torch.linalg.eigh(0.5 * (a + a.T))
        return cls(w0, e.clamp_min(0.0), u, row_scale.double().clamp_min(0.0), float(prior_var))

    def filters(self, nu: float) -> Tensor:
        """f_i = 1/(1 + ν b_i e), (rows, d): Σ_i = s² U diag(f_i) Uᵀ."""
        return 1.0 / (1.0 + nu * self.row_scale[:, None] * self.e[None, :])

    def posterior_means(self, nu: float) -> Tensor:
        """μ_i = U diag(1 − f_i) Uᵀ w0_i, (rows, d): w0 shrunk along weakly determined directions."""
        return ((self.w0 @ self.u) * (1.0 - self.filters(nu))) @ self.u.T


def unit_evidence(factors: LayerFactors, units: Tensor, nu: float, *,
                  chunk_elems: int = 4_000_000) -> UnitEvidence:
    """ΔlnZ of removing each unit's columns from one consumer layer (see module docstring).

    units: LongTensor (num_units, k), unit j owns columns units[j] of w0 (the bias column is
    never a unit's). nu > 0. Returns float64 tensors of shape (num_units,).
    """
    _check(nu > 0 and math.isfinite(nu), "nu must be finite and > 0")
    rows, d = factors.w0.shape
    _check(units.dim() == 2 and int(units.max()) < d and int(units.min()) >= 0,
            f"units must be (num_units, k) column indices below {d}")
    f = factors.filters(nu)  # (rows, d)
    mu = factors.posterior_means(nu)
    s2 = factors.prior_var
    n, k = units.shape
    step = max(1, chunk_elems // max(rows * k * k, 1))
    occ, dat, dis = [], [], []
    for lo in range(0, n, step):
        idx = units[lo:lo + step]  # (c, k)
        up = factors.u[idx]  # (c, k, d): rows P of U
        m = mu[:, idx].permute(1, 0, 2)  # (c, rows, k)
        m0 = factors.w0[:, idx].permute(1, 0, 2)  # (c, rows, k)
        if k == 1:
            c_ii = torch.einsum("cd,id->ci", up[:, 0] ** 2, f)  # (c, rows): U_P f U_Pᵀ
            logdet = torch.log(c_ii)
            quad = m[..., 0] ** 2 / c_ii
            quad0 = m0[..., 0] ** 2 / c_ii
        else:
            pairs = (up[:, :, None, :] * up[:, None, :, :]).reshape(len(idx), k * k, -1)
            cmat = torch.matmul(f, pairs.transpose(1, 2)).reshape(len(idx), rows, k, k)
            chol = torch.linalg.cholesky(cmat)
            logdet = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
            z = torch.cholesky_solve(m.unsqueeze(-1), chol).squeeze(-1)
            quad = (m * z).sum(-1)
            z0 = torch.cholesky_solve(m0.unsqueeze(-1), chol).squeeze(-1)
            quad0 = (m0 * z0).sum(-1)
        # ΔlnZ_i = −½ ln det(U_P f U_Pᵀ) − ½ μᵀ (s² U_P f U_Pᵀ)⁻¹ μ
        occ.append((-0.5 * logdet).sum(1))
        dat.append((0.5 * quad / s2).sum(1))
        dis.append((quad0 / s2).sum(1) / nu)
    occam, data = torch.cat(occ), torch.cat(dat)
    return UnitEvidence(occam - data, occam, torch.cat(dis))


def column_reduced_means(mu: Tensor, drop: Tensor, a_in: Tensor, row_scale: Tensor,
                         prior_precision: float) -> Tensor:
    """Reduced means of every row when the same columns `drop` go from all rows.

    Minimises (w − μ_i)ᵀ Λ_i (w − μ_i) subject to w[drop] = 0 with Λ_i = a_i A + D·I:
    w_K = μ_K + (a_i A_KK + D)⁻¹ a_i A_KP μ_P (the Gaussian conditional mean; the kept-set
    form of bmr/correlated.py for a structured cut, one eigendecomposition of A_KK for all
    rows). mu: (rows, d); drop: bool (d,); a_in: (d, d); row_scale: (rows,) a_i ≥ 0; D > 0.
    Returns float64 (rows, d), exactly zero on the dropped columns.
    """
    mu = mu.double()
    _check(drop.shape == (mu.shape[1],), "drop must be a bool mask over the columns")
    _check(prior_precision > 0, "prior precision must be > 0")
    out = mu.clone()
    out[:, drop] = 0.0
    keep = ~drop
    if not bool(drop.any()) or not bool(keep.any()):
        return out
    a = a_in.double()
    lam, v = torch.linalg.eigh(0.5 * (a[keep][:, keep] + a[keep][:, keep].T))  # A_KK = V λ Vᵀ
    r = (mu[:, drop] @ a[drop][:, keep]) @ v  # (rows, |K|): (A_KP μ_P)ᵀ V
    s = row_scale.double().clamp_min(0.0)[:, None]
    coef = s / (s * lam.clamp_min(0.0)[None, :] + prior_precision)
    out[:, keep] = mu[:, keep] + (r * coef) @ v.T
    return out

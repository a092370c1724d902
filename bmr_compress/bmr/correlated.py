"""Reduced posterior means, and joint spike evidence, under a correlated Gaussian posterior.

Mean-field ΔlnZ (docs/theory.md §2) decides *which* weights go. Bayesian model reduction
also gives the reduced posterior of the weights that stay: under the mean-field posterior it
is the posterior itself, so zeroing is all there is to do. Under a posterior that couples
the weights of one output row i of a layer,

    q(w_i) = N(μ_i, Σ_i),   Σ_i⁻¹ = Λ_i = a_i H + D,

the general Gaussian reduction with the reduced prior precision Π̃ = Π + diag(κ on the set
P of reduced coordinates), κ → ∞ (a spike at zero on P, the prior unchanged elsewhere),
gives P̃ = Λ_i + diag(κ·1_P) and μ̃_i = P̃⁻¹ Λ_i μ_i, whose limit is the Gaussian
conditional mean

    μ̃_i = μ_i − Σ_i[:, P] Σ_i[P, P]⁻¹ μ_i[P]          (so μ̃_i[P] = 0 exactly),

the point that minimises (w − μ_i)ᵀ Λ_i (w − μ_i) subject to w[P] = 0: the survivors move
to make up for what was removed (the Optimal Brain Surgeon update, obtained here as a BMR
reduced posterior).

Here H = E[x xᵀ] is the second moment of the layer's input over calibration data (for a
linear layer y_i = w_i·x it is, up to the output-side factor a_i, the Gauss-Newton curvature
of y_i with respect to w_i: K-FAC's input factor), D the diagonal prior precisions 1/s², and
a_i ≥ 0 the row's output-side scale. a_i is fitted so that the diagonal of Λ_i matches the
fitted mean-field precisions, a_i H_jj + D_j ≈ 1/σ_ij², in least squares; a row whose
precisions carry no data signal (a_i = 0) keeps its mean.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._special import require


def row_scales(precision: Tensor, h_diag: Tensor, prior_precision: Tensor) -> Tensor:
    """Least-squares a_i ≥ 0 in a_i·H_jj + D_j ≈ P_ij over j, per row i.

    precision: (rows, d) fitted mean-field precisions 1/σ²; h_diag: (d,) diagonal of H;
    prior_precision: (d,) or scalar D. Returns (rows,) float64.
    """
    p = precision.double()
    h = h_diag.double()
    d0 = torch.as_tensor(prior_precision, dtype=torch.float64).expand(h.shape)
    den = float((h * h).sum())
    if den <= 0.0:
        return torch.zeros(p.shape[0], dtype=torch.float64)
    return (((p - d0) * h).sum(1) / den).clamp_min(0.0)


def reduced_row_means(mu: Tensor, keep: Tensor, h: Tensor, row_scale: Tensor,
                      prior_precision: Tensor | float) -> Tensor:
    """μ̃ of every row after reducing its pruned coordinates (keep False) to a spike at zero.

    mu, keep: (rows, d); h: (d, d) symmetric positive semi-definite; row_scale: (rows,) a_i ≥ 0;
    prior_precision: (d,) or scalar D > 0. Returns float64 (rows, d) with exact zeros where
    keep is False. Cost per row with p pruned coordinates: O(p² d + d²) after one d×d
    eigendecomposition per layer.
    """
    mu = mu.double()
    rows, d = mu.shape
    if keep.shape != mu.shape or h.shape != (d, d):
        raise ValueError(f"need keep of shape {tuple(mu.shape)} and h of shape ({d}, {d}), "
                         f"got {tuple(keep.shape)} and {tuple(h.shape)}")
    d0 = torch.as_tensor(prior_precision, dtype=torch.float64).expand(d).clone()
    require(d0 > 0, "prior precisions must be > 0")
    a = row_scale.double()
    require(torch.isfinite(a) & (a >= 0), "row scales must be finite and >= 0")
    # whiten by D: Λ_i = D^½ (a_i Hw + I) D^½ with Hw = D^-½ H D^-½ = U diag(e) Uᵀ, hence
    # Σ_i = V diag(1 / (a_i e + 1)) Vᵀ with V = D^-½ U
    s = d0.rsqrt()
    hw = h.double() * s[:, None] * s[None, :]
    e, u = torch.linalg.eigh(0.5 * (hw + hw.T))
    e = e.clamp_min(0.0)
    v = s[:, None] * u
    out = mu.clone()
    for i in range(rows):
        pr = (~keep[i]).nonzero().flatten()
        if pr.numel() == 0:
            continue
        if pr.numel() == d or float(a[i]) == 0.0:
            out[i, pr] = 0.0  # all gone, or Σ_i diagonal: the survivors do not move
            continue
        f = 1.0 / (a[i] * e + 1.0)
        b = v[pr]  # rows P of V: Σ_i[P, :] = (b * f) Vᵀ
        s_pp = (b * f) @ b.T
        z = torch.linalg.solve(s_pp, mu[i, pr])
        out[i] = mu[i] - v @ (f * (b.T @ z))
        out[i, pr] = 0.0
    return out


def joint_spike_delta_lnz(mu: Tensor, precision: Tensor, pruned: Tensor,
                          prior_log_var: Tensor | float) -> Tensor:
    """ΔlnZ of reducing the coordinates P (pruned True) jointly to a spike at zero.

    docs/theory.md §7a.

    Posterior N(μ, Λ⁻¹) with dense precision Λ (d×d, symmetric positive definite), prior
    N(0, s_i²) per coordinate; with K the rest and S = Λ_PP − Λ_PK Λ_KK⁻¹ Λ_KP (= (Σ_PP)⁻¹):

        ΔlnZ = ½ Σ_{i∈P} ln s_i² + ½ ln det S − ½ μ_Pᵀ S μ_P

    (Savage–Dickey with the marginal of w_P: ln N(0; μ_P, Σ_PP) − ln N(0; 0, diag s_P²)).
    Sign: ΔlnZ ≥ 0 ⇒ prune. For diagonal Λ it is the sum of :func:`.gaussian.spike_delta_lnz`
    over P; coupling makes it differ (the survivors' move is credited). float64, 0-d.
    """
    mu = mu.double()
    if mu.dim() != 1 or precision.shape != (mu.numel(), mu.numel()) or pruned.shape != mu.shape:
        raise ValueError(f"need mu (d,), precision (d, d), pruned (d,); got {tuple(mu.shape)}, "
                         f"{tuple(precision.shape)}, {tuple(pruned.shape)}")
    if pruned.dtype != torch.bool:
        raise ValueError(f"pruned must be a bool tensor, got dtype {pruned.dtype}")
    p, k = pruned.nonzero().flatten(), (~pruned).nonzero().flatten()
    if p.numel() == 0:
        return torch.zeros((), dtype=torch.float64)
    lam = precision.double()
    lam = 0.5 * (lam + lam.T)
    v0 = torch.as_tensor(prior_log_var, dtype=torch.float64).expand(mu.shape)
    s = lam[p][:, p]
    if k.numel():
        l_kk, info = torch.linalg.cholesky_ex(lam[k][:, k])
        require(info == 0, "precision must be positive definite")
        s = s - lam[p][:, k] @ torch.cholesky_solve(lam[k][:, p], l_kk)
    l_s, info = torch.linalg.cholesky_ex(s)
    require(info == 0, "precision must be positive definite")
    m = mu[p]
    return 0.5 * (v0[p].sum() + 2.0 * torch.log(torch.diagonal(l_s)).sum() - m @ (s @ m))

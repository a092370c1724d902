"""Evidence for storing a weight matrix on a quantisation grid: BMR decides precision.

Sign convention (as everywhere in bmr_compress.bmr): ΔlnZ = ln p̃(D) − ln p(D);
**ΔlnZ ≥ 0 ⇒ the quantised (reduced) model is at least as good ⇒ quantise.**

Posterior of row i of a layer (weights w_i ∈ R^d, input second moment A = E[x xᵀ]), the same
row-correlated Laplace posterior as bmr/structured.py:

    q(w_i) = N(μ_i, Λ_i⁻¹),   Λ_i = ν b_i A + I/s²,   μ_i = Λ_i⁻¹ ν b_i A w0_i

Quantising the matrix replaces the prior N(0, s² I) of each row by a point mass at its
rounded weights w̃_i (the grid point the export stores). Savage–Dickey for a point mass:

    ΔlnZ_i = ln q(w̃_i) − ln p(w̃_i)
           = ½ ln det(s² Λ_i) − ½ (w̃_i − μ_i)ᵀ Λ_i (w̃_i − μ_i) + ½ ‖w̃_i‖² / s²

With s² A = U diag(e) Uᵀ, x_ik = ν b_i e_k, ŵ = Uᵀ w0_i and ε̂ = Uᵀ (w̃_i − w0_i) this is
(expand the quadratic around w0 and use Λ_i μ_i = ν b_i A w0_i):

    ΔlnZ_i = ½ Σ_k ln(1 + x_ik)                  Occam: the volume the data pinned down
           + ½ Σ_k ŵ_k² x_ik / ((1 + x_ik) s²)    what the full model's prior costs its mean
           − ½ Σ_k x_ik ε̂_k² / s²                 = ½ ν δ_i, δ_i = b_i εᵀ A ε

δ = Σ_i δ_i is the relative output distortion the rounding causes (the currency of the
stated tolerance, scoring/tolerance.py), so the data term is ν δ / 2 nats, exactly as for a
removed unit. Rows are independent given the factors: the matrix's ΔlnZ is the sum over
rows. The first two terms do not depend on the grid, so a finer grid always has the larger
ΔlnZ; the evidence is the acceptance test (ΔlnZ ≥ 0: the grid explains the data at least as
well as the continuous weights) and, as for units, every reduction that passes is taken:
the smallest grid that passes is chosen (`choose_grid`).

Grids (`round_to_grid`) match onnxruntime's blockwise symmetric quantiser (MatMulNBits,
GatherBlockQuantized): per block of `block` consecutive weights along the last axis, the
weight m of largest magnitude sets scale = m / (−2^(bits−1)), codes are
clamp(round(w / scale) + 2^(bits−1), 0, 2^bits − 1) and dequantise to (code − 2^(bits−1))·scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

KEEP = "fp32"


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


@dataclass(frozen=True)
class Grid:
    """A blockwise symmetric grid: `bits` per weight, one fp32 scale per `block` weights."""

    name: str
    bits: int
    block: int

    @property
    def bits_per_weight(self) -> float:
        return self.bits + 32.0 / self.block


# the candidates the tool scores, largest first (KEEP, 32 bits per weight, is always allowed)
GRIDS: dict[str, Grid] = {g.name: g for g in (
    Grid("int8", 8, 128),
    Grid("int4-b32", 4, 32),
    Grid("int4-b128", 4, 128),
)}


def block_for(n: int, block: int) -> int:
    """The block a grid uses on rows of n weights: `block`, or for n < block the largest power
    of two <= n (at least 16): onnxruntime pads a row to whole blocks, so one 128-block on a
    32-wide row would store 4x the codes it needs."""
    return max(16, min(block, 1 << (max(n, 1).bit_length() - 1)))


def grid_codes(w: Tensor, bits: int, block: int) -> tuple[Tensor, Tensor]:
    """Codes and scales of w (..., n) on the blockwise symmetric grid along its last axis.

    Returns codes (..., blocks, block) as integers 0 .. 2^bits − 1 in w's dtype (the last axis
    padded with zeros to a whole number of blocks, as onnxruntime does: the padding never
    sets a scale) and scales (..., blocks); a block of zeros has scale 0 and codes 2^(bits−1)."""
    _check(bits in (2, 3, 4, 5, 6, 7, 8), f"bits must be in 2..8, got {bits}")
    _check(block >= 1, f"block must be >= 1, got {block}")
    n = w.shape[-1]
    pad = (-n) % block
    x = torch.nn.functional.pad(w, (0, pad)) if pad else w
    x = x.reshape(*w.shape[:-1], -1, block)  # (..., blocks, block)
    i = x.abs().argmax(-1, keepdim=True)
    m = torch.gather(x, -1, i)  # signed value of largest magnitude
    mid = float(1 << (bits - 1))
    scale = m / -mid
    safe = torch.where(scale == 0, torch.ones_like(scale), scale)
    code = torch.clamp(torch.round(x / safe) + mid, 0.0, 2.0 * mid - 1.0)
    code = torch.where(scale == 0, torch.full_like(code, mid), code)
    return code, scale[..., 0]


def round_to_grid(w: Tensor, bits: int, block: int) -> Tensor:
    """w (..., n) dequantised from its grid codes (`grid_codes`): same shape and dtype."""
    code, scale = grid_codes(w, bits, block)
    mid = float(1 << (bits - 1))
    out = (code - mid) * scale[..., None]
    return out.reshape(*w.shape[:-1], -1)[..., :w.shape[-1]]


@dataclass(frozen=True)
class GridEvidence:
    """One matrix on one grid: ΔlnZ (nats, summed over rows) and its parts."""

    delta_lnz: float
    occam: float  # ½ Σ ln(1 + x)
    prior_gain: float  # ½ Σ ŵ² x / ((1 + x) s²)
    distortion: float  # δ: relative output distortion of the rounding (data term ν δ / 2)


@dataclass(frozen=True)
class RowPosterior:
    """The factors of one matrix's row posteriors.

    w0: (rows, d); e: (d,) eigenvalues of s² A; u: (d, d) eigenvectors, or None when A is
    diagonal (then e is s² diag(A) in column order: an embedding table's token frequencies);
    row_scale: (rows,) b_i; prior_var: s².
    """

    w0: Tensor
    e: Tensor
    u: Tensor | None
    row_scale: Tensor
    prior_var: float

    @classmethod
    def build(cls, w0: Tensor, a_in: Tensor, row_scale: Tensor, prior_var: float) -> RowPosterior:
        """From A (d, d), or from its diagonal (d,) when the inputs are one-hot."""
        w0 = w0.double()
        rows, d = w0.shape
        _check(prior_var > 0 and math.isfinite(prior_var), "prior variance must be finite, > 0")
        _check(row_scale.shape == (rows,), f"row scales must be ({rows},)")
        a = a_in.double() * prior_var
        if a.dim() == 1:
            _check(a.shape == (d,), f"a diagonal input moment must be ({d},)")
            return cls(w0, a.clamp_min(0.0), None, row_scale.double().clamp_min(0.0), prior_var)
        _check(a.shape == (d, d), f"input moment must be ({d}, {d}), got {tuple(a.shape)}")
        e, u = torch.linalg.eigh(0.5 * (a + a.T))
        return cls(w0, e.clamp_min(0.0), u, row_scale.double().clamp_min(0.0), float(prior_var))

    def project(self, w: Tensor) -> Tensor:
        """Rows in A's eigenbasis: w U (w itself when A is diagonal)."""
        return w if self.u is None else w @ self.u

    def _x(self, nu: float) -> Tensor:
        return nu * self.row_scale[:, None] * self.e[None, :]  # (rows, d)


def grid_evidence(post: RowPosterior, w_q: Tensor, nu: float) -> GridEvidence:
    """ΔlnZ of storing the matrix as `w_q` (rows, d) instead of continuous weights (module
    docstring), summed over rows; float64."""
    _check(w_q.shape == post.w0.shape, f"w_q must have shape {tuple(post.w0.shape)}")
    eps = post.project(w_q.double() - post.w0)
    return projected_evidence(post, post.project(post.w0), {"": eps}, nu)[""]


def projected_evidence(post: RowPosterior, w_hat: Tensor, eps_hat: dict[str, Tensor],
                       nu: float) -> dict[str, GridEvidence]:
    """`grid_evidence` of several grids from ŵ = Uᵀ w0 and each grid's ε̂ = Uᵀ (w̃ − w0)
    (`RowPosterior.project`), which do not depend on ν: computed once when many ν are tried;
    the grid-free terms are computed once per call."""
    _check(nu > 0 and math.isfinite(nu), "nu must be finite and > 0")
    s2 = post.prior_var
    x = post._x(nu)
    occam = 0.5 * float(torch.log1p(x).sum())
    gain = 0.5 * float((w_hat ** 2 * x / (1.0 + x)).sum()) / s2
    out = {}
    for name, eps in eps_hat.items():
        data = float((x * eps ** 2).sum()) / s2  # ν δ
        out[name] = GridEvidence(occam + gain - 0.5 * data, occam, gain, data / nu)
    return out


def choose_grid(evidence: dict[str, GridEvidence], grids: dict[str, Grid] | None = None) -> str:
    """The grid with the fewest bits per weight among those with ΔlnZ ≥ 0; KEEP when none."""
    grids = GRIDS if grids is None else grids
    ok = [name for name, ev in evidence.items() if ev.delta_lnz >= 0]
    return min(ok, key=lambda n: grids[n].bits_per_weight) if ok else KEEP

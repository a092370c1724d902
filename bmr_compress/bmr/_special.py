"""Numerical helpers shared by the bmr formulas (torch + stdlib only).

The key helper is :func:`log_ndtr_diff`, ln(Φ(u) − Φ(l)) for l < u, returned in a *scaled*
form ``(s, anchor)`` with ln(Φ(u) − Φ(l)) = s − anchor²/2. Keeping the Gaussian exponent
``anchor²/2`` separate lets callers cancel it algebraically against other quadratic terms
instead of subtracting two huge numbers (both tails). :func:`trunc_normal_entropy` does the
same for the truncated normal's entropy, whose ln Z and (lφ(l) − uφ(u))/(2Z) cancel in a
tail. Both are accurate in float32 in value and in autograd gradient: the tails use erfcx
with its own series beyond x = 8 (:func:`erfcx_gap`), and every torch.where branch sees
only inputs it can take, so no inf/NaN of an unused branch leaks into a gradient.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_SQRT_HALF = math.sqrt(0.5)


def as_tensor_like(x: Tensor | float, ref: Tensor) -> Tensor:
    """`x` as a tensor with `ref`'s dtype and device (no copy when it already is one)."""
    return torch.as_tensor(x, dtype=ref.dtype, device=ref.device)


def float_dtype(*xs: Tensor | float) -> torch.dtype:
    """The floating dtype the inputs promote to (float32 default for Python numbers)."""
    dtype = None
    for x in xs:
        if isinstance(x, Tensor):
            if not x.is_floating_point():
                raise ValueError(f"expected floating-point tensors, got dtype {x.dtype}")
            dtype = x.dtype if dtype is None else torch.promote_types(dtype, x.dtype)
    return torch.get_default_dtype() if dtype is None else dtype


def const_minus(c: float, x: Tensor) -> Tensor:
    """c − x for a Python float c, keeping c's full precision in float32: c is split into its
    rounding to x's dtype and the remainder, (c_hi − x) + c_lo (c_hi − x is exact near x)."""
    hi = float(torch.tensor(c, dtype=x.dtype))
    return (hi - x) + (c - hi)


def require(cond: Tensor, message: str) -> None:
    """Raise ValueError(message) unless every element of `cond` is true."""
    if not bool(torch.all(cond)):
        bad = int((~cond).sum())
        raise ValueError(f"{message} ({bad} of {cond.numel()} elements violate it)")


_SERIES_FROM = 8.0  # x >= this: erfcx and g from their asymptotic series
# g(x)·√π/y = Σ_{n≥1} (−1)^{n+1} (2n−1)!! y^{n−1}, y = 1/(2x²); 8 terms: error < 1e-9 rel at x = 8
_GAP_SERIES = (1.0, -3.0, 15.0, -105.0, 945.0, -10395.0, 135135.0, -2027025.0)
_INV_SQRT_PI = 1.0 / math.sqrt(math.pi)
_LOG_HALF = math.log(0.5)
BOUND = 1e18  # |standardised bound| cap: keeps t² finite in float32 (inputs this far are limits)


def erfcx_gap(x: Tensor) -> tuple[Tensor, Tensor]:
    """(erfcx(x), g(x)) for x ≥ 0 with g(x) = 1/√π − x·erfcx(x) = −erfcx'(x)/2 > 0.

    Accurate in value *and* autograd gradient in float32. torch's erfcx backward is
    2x·erfcx(x) − 2/√π, which cancels to relative error ~eps·2x² for large x, and so does g
    computed by that difference (g' = −erfcx − x·erfcx' cancels by another factor ~x²).
    Below x = 8 both are therefore computed in float64 (relative error ≤ ~1e-11 there) and
    returned in the input dtype; from x = 8 on both come from the asymptotic series
    g = (y/√π) Σ (−1)^{n+1}(2n−1)!! y^{n−1}, erfcx = (1/√π − g)/x, y = 1/(2x²): polynomials
    whose derivatives do not cancel. Where-safe: each branch sees only inputs it can take.
    """
    big = x >= _SERIES_FROM
    xs = torch.where(big, x, torch.full_like(x, _SERIES_FROM))  # series branch input
    xd = torch.where(big, torch.ones_like(x), x)  # direct branch input
    y = 0.5 / (xs * xs)
    poly = torch.full_like(x, _GAP_SERIES[-1])
    for c in reversed(_GAP_SERIES[:-1]):
        poly = poly * y + c
    g_series = _INV_SQRT_PI * y * poly
    xd64 = xd.double()
    e64 = torch.special.erfcx(xd64)
    e_direct, g_direct = e64.to(x.dtype), (_INV_SQRT_PI - xd64 * e64).to(x.dtype)
    e = torch.where(big, (_INV_SQRT_PI - g_series) / xs, e_direct)
    g = torch.where(big, g_series, g_direct)
    return e, g


def tail_sides(l: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    """(left, right): where [l, u] lies in the left tail (u ≤ −1) or the right one (l ≥ 1).

    These select the anchors of :func:`log_ndtr_diff`: u, l, else 0.
    """
    left = u <= -1.0
    return left, (l >= 1.0) & ~left


def _branches(l: Tensor, u: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Split l < u into tail (u ≤ −1: left, l ≥ 1: right) and middle cases.

    Returns (left, right, xn, xf, lm, um): for the tails the nearer bound xn and the farther
    xf, both reflected into the left tail and scaled, xn = −u/√2 (left) or l/√2 (right), xf
    likewise, 1/√2 ≤ xn < xf; (lm, um) the bounds where in the middle. Elsewhere each
    branch gets harmless placeholders, so no inf/NaN reaches a gradient through torch.where.
    """
    l, u = torch.broadcast_tensors(l.clamp(-BOUND, BOUND), u.clamp(-BOUND, BOUND))
    left, right = tail_sides(l, u)
    tail = left | right
    one = torch.ones_like(l)
    xn = torch.where(tail, torch.where(left, -u, l) * _SQRT_HALF, one)
    xf = torch.where(tail, torch.where(left, -l, u) * _SQRT_HALF, 2.0 * one)
    lm = torch.where(tail, -one, l)
    um = torch.where(tail, one, u)
    return left, right, xn, xf, lm, um


def _tail_mass(xn: Tensor, xf: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """S = erfcx(xn) − d·erfcx(xf), d = e^{xn² − xf²}: 2·e^{t_n²/2}·(mass between the bounds).

    Also returns (d, ln d, erfcx(xf), g(xn), g(xf)) for callers. Floored at the smallest
    normal number (S > 0 exactly; only a near-zero-width interval could round it to 0).
    """
    en, gn = erfcx_gap(xn)
    ef, gf = erfcx_gap(xf)
    log_d = -(xf - xn) * (xf + xn)
    d = torch.exp(log_d)
    s = (en - d * ef).clamp_min(torch.finfo(xn.dtype).tiny)
    return s, d, log_d, ef, gn, gf


def _mid_mass(lm: Tensor, um: Tensor) -> Tensor:
    """Φ(um) − Φ(lm) = ½[erf(um/√2) − erf(lm/√2)] (no tail exponent to factor out)."""
    z = 0.5 * (torch.special.erf(um * _SQRT_HALF) - torch.special.erf(lm * _SQRT_HALF))
    return z.clamp_min(torch.finfo(lm.dtype).tiny)


def log_ndtr_diff(l: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    """ln(Φ(u) − Φ(l)) for l < u (element-wise, broadcast) as ``(s, anchor)``.

    ln(Φ(u) − Φ(l)) = s − anchor²/2 with anchor = u (u ≤ −1, both bounds in the left tail:
    Φ(t) = ½e^{−t²/2}erfcx(−t/√2)), l (l ≥ 1, the right tail by symmetry) or 0 (the middle,
    an erf difference). Finite with finite gradients for finite l < u in float32 and float64.
    """
    left, right, xn, xf, lm, um = _branches(l, u)
    s_tail = torch.log(_tail_mass(xn, xf)[0]) + _LOG_HALF
    s = torch.where(left | right, s_tail, torch.log(_mid_mass(lm, um)))
    l, u = l.clamp(-BOUND, BOUND), u.clamp(-BOUND, BOUND)  # the bounds exactly as used
    anchor = torch.where(left, u, torch.where(right, l, torch.zeros_like(s)))
    return s, anchor


def trunc_normal_entropy(l: Tensor, u: Tensor) -> Tensor:
    """Entropy of N(0, 1) truncated to [l, u] (add ln σ for scale σ).

    h = ½ln(2πe) + ln Z + (l φ(l) − u φ(u))/(2Z), Z = Φ(u) − Φ(l). In a tail the last two
    terms cancel to O(1/t²) (h → 1 − ln|t_n|), so there, with xn, xf, S, d as in
    :func:`_tail_mass` and g(x) = 1/√π − x·erfcx(x) (h is symmetric under reflection):

        h = ½ln(2πe) + ln(S/2) + N/(2S),  N = 2xn·g(xn) + 2d[(xn² − xf²)·erfcx(xf) − xf·g(xf)]

    which has no cancelling terms in value or gradient.
    """
    left, right, xn, xf, lm, um = _branches(l, u)
    s, d, log_d, ef, gn, gf = _tail_mass(xn, xf)
    num = 2.0 * xn * gn + 2.0 * d * (log_d * ef - xf * gf)
    h_tail = torch.log(s) + _LOG_HALF + num / (2.0 * s)
    z = _mid_mass(lm, um)
    log_z = torch.log(z)
    r_l = torch.exp(-0.5 * lm * lm - HALF_LOG_2PI - log_z)  # φ(l)/Z
    r_u = torch.exp(-0.5 * um * um - HALF_LOG_2PI - log_z)
    h_mid = log_z + 0.5 * (lm * r_l - um * r_u)
    return 0.5 * (math.log(2.0 * math.pi) + 1.0) + torch.where(left | right, h_tail, h_mid)


def log_ndtr_diff_shift(l: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    """(s₁, s₂): first two derivatives at c = 0 of s(c) = ln(Φ(u − c) − Φ(l − c)) + A_c²/2.

    A_c is :func:`log_ndtr_diff`'s anchor carried along with the shift (A − c in a tail, 0 in
    the middle), so s(0) is its `s`. With r_l = φ(l)/Z, r_u = φ(u)/Z: s₁ = r_l − r_u − A and
    s₂ = l r_l − u r_u − (r_l − r_u)² + [tail]. In the left tail r_u + u cancels, so
    s₁ = √2[d(g(xf) + (xf − xn) erfcx(xf)) − g(xn)]/S (right tail: its negative), with xn, xf,
    d, S of :func:`_tail_mass`. For small shifts c, s(c) − s(0) ≈ c s₁ + c² s₂/2 without the
    cancellation of the difference.
    """
    left, right, xn, xf, lm, um = _branches(l, u)
    s, d, _, ef, gn, gf = _tail_mass(xn, xf)
    k = math.sqrt(2.0) * (d * (gf + (xf - xn) * ef) - gn) / s
    r_near = math.sqrt(2.0 / math.pi) / s  # φ(near bound)/Z; φ(far bound)/Z = d·r_near
    r_far = d * r_near
    s2_tail = math.sqrt(2.0) * (xn * r_near - xf * r_far) - (r_near - r_far) ** 2 + 1.0
    log_z = torch.log(_mid_mass(lm, um))
    r_l = torch.exp(-0.5 * lm * lm - HALF_LOG_2PI - log_z)
    r_u = torch.exp(-0.5 * um * um - HALF_LOG_2PI - log_z)
    s2_mid = lm * r_l - um * r_u - (r_l - r_u) ** 2
    tail = left | right
    return (torch.where(tail, torch.where(left, k, -k), r_l - r_u),
            torch.where(tail, s2_tail, s2_mid))

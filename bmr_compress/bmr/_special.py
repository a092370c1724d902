"""Numerical helpers shared by the bmr formulas (torch + stdlib only).

The key helper is :func:`log_ndtr_diff`, ln(Φ(u) − Φ(l)) for l < u, returned in a *scaled*
form ``(s, anchor)`` with ln(Φ(u) − Φ(l)) = s − anchor²/2. Keeping the Gaussian exponent
``anchor²/2`` separate lets callers cancel it algebraically against other quadratic terms
instead of subtracting two huge numbers (both tails), and the centre uses erf differences
so that a narrow interval is not lost to cancellation of two Φ values near ½.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_SQRT_HALF = math.sqrt(0.5)
_CENTRE = 1.0  # |l|, |u| <= this: erf difference (no tail exponent to factor out)


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


def require(cond: Tensor, message: str) -> None:
    """Raise ValueError(message) unless every element of `cond` is true."""
    if not bool(torch.all(cond)):
        bad = int((~cond).sum())
        raise ValueError(f"{message} ({bad} of {cond.numel()} elements violate it)")


def log_ndtr_diff(l: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    """ln(Φ(u) − Φ(l)) for l < u (element-wise, broadcast) as ``(s, anchor)``.

    ln(Φ(u) − Φ(l)) = s − anchor²/2 with anchor = u (both in the left tail), l (both in the
    right tail) or 0 (straddling or near the centre). All branches are finite for finite
    l < u in float32 and float64.
    """
    l, u = torch.broadcast_tensors(l, u)
    zero = torch.zeros((), dtype=l.dtype, device=l.device)
    centre = torch.maximum(l.abs(), u.abs()) <= _CENTRE
    left = (u <= 0) & ~centre  # both below 0: Φ(t) = ½ e^{-t²/2} erfcx(−t/√2)
    right = (l >= 0) & ~centre
    # left tail, scaled by e^{u²/2}: ½[erfcx(−u/√2) − e^{(u²−l²)/2} erfcx(−l/√2)]
    d_left = torch.exp(0.5 * (u - l) * (u + l))  # <= 1 where used (u + l < 0)
    s_left = torch.special.erfcx(-u * _SQRT_HALF) - d_left * torch.special.erfcx(-l * _SQRT_HALF)
    # right tail by symmetry (Φ(u) − Φ(l) = Φ(−l) − Φ(−u)), scaled by e^{l²/2}
    d_right = torch.exp(0.5 * (l - u) * (l + u))
    s_right = torch.special.erfcx(l * _SQRT_HALF) - d_right * torch.special.erfcx(u * _SQRT_HALF)
    # straddling 0 away from the centre: 1 − Φ(l) − Φ(−u) >= 1/3, no cancellation
    mid = -torch.special.ndtr(l) - torch.special.ndtr(-u)
    # centre: ½[erf(u/√2) − erf(l/√2)]
    s_centre = torch.special.erf(u * _SQRT_HALF) - torch.special.erf(l * _SQRT_HALF)
    log_half = math.log(0.5)
    s = torch.where(
        left,
        torch.log(s_left) + log_half,
        torch.where(
            right,
            torch.log(s_right) + log_half,
            torch.where(centre, torch.log(s_centre) + log_half, torch.log1p(mid)),
        ),
    )
    anchor = torch.where(left, u, torch.where(right, l, zero))
    return s, anchor

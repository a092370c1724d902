"""Independent float64 / arbitrary-precision references for the bmr formulas.

Nothing here reuses bmr_compress code: every value is an integral evaluated numerically
(mpmath quadrature at 30 digits, or scipy) or a textbook density.
"""

from __future__ import annotations

import math

import mpmath as mp

mp.mp.dps = 30


def gaussian_reduction_quad(mu: float, var: float, s2: float, g2: float) -> tuple[float, float, float]:
    """ln ∫ q(w) p̃(w)/p(w) dw and the reduced posterior mean/variance, by quadrature."""
    mu, var, s2, g2 = (mp.mpf(x) for x in (mu, var, s2, g2))

    def log_ratio(w):  # ln q(w) + ln p̃(w) − ln p(w)
        return (
            -((w - mu) ** 2) / (2 * var) - mp.log(2 * mp.pi * var) / 2
            - w**2 / (2 * g2) - mp.log(g2) / 2 + w**2 / (2 * s2) + mp.log(s2) / 2
        )

    prec = 1 / var + 1 / g2 - 1 / s2  # integrand is Gaussian with this precision
    centre, sd = mu / var / prec, 1 / mp.sqrt(prec)
    shift = log_ratio(centre)
    pts = [centre + k * sd for k in (-40, -10, -3, 0, 3, 10, 40)]
    f = lambda w: mp.exp(log_ratio(w) - shift)  # noqa: E731
    z = mp.quad(f, pts)
    m1 = mp.quad(lambda w: w * f(w), pts) / z
    m2 = mp.quad(lambda w: (w - m1) ** 2 * f(w), pts) / z
    return float(mp.log(z) + shift), float(m1), float(m2)


def _trunc(mu: float, sigma: float, la: float, lb: float):
    mu, sigma = mp.mpf(mu), mp.mpf(sigma)
    la, lb = mp.mpf(la), mp.mpf(lb)

    def logpdf_unnorm(x):
        return -((x - mu) ** 2) / (2 * sigma**2) - mp.log(sigma) - mp.log(2 * mp.pi) / 2

    # split the range at the mode and at ±k σ around it so quadrature sees the peak
    mode = min(max(mu, la), lb)
    pts = sorted({la, lb} | {min(max(mode + k * sigma, la), lb) for k in (-30, -8, -2, 0, 2, 8, 30)})
    shift = logpdf_unnorm(mode)
    z = mp.quad(lambda x: mp.exp(logpdf_unnorm(x) - shift), pts)
    log_z = mp.log(z) + shift
    return logpdf_unnorm, log_z, pts


def bmrs_n_quad(mu: float, sigma: float, la: float = -20.0, lb: float = 0.0) -> float:
    """ln q_x(ln a) + ln(ln b − ln a) with the normaliser Z by quadrature."""
    logpdf, log_z, _ = _trunc(mu, sigma, la, lb)
    return float(logpdf(mp.mpf(la)) - log_z + mp.log(lb - la))


def bmrs_u_quad(mu: float, sigma: float, la_r: float, lb_r: float, la: float = -20.0, lb: float = 0.0) -> float:
    """ln ∫ q(x) p̃(x)/p(x) dx for the reduced log-uniform prior on [la_r, lb_r]."""
    logpdf, log_z, pts = _trunc(mu, sigma, la, lb)
    inner = sorted({la_r, lb_r} | {p for p in pts if la_r < p < lb_r})
    shift = max(logpdf(p) for p in inner)
    q = mp.quad(lambda x: mp.exp(logpdf(x) - shift), inner)
    return float(mp.log(q) + shift - log_z + mp.log((lb - la) / (lb_r - la_r)))


def trunc_kl_quad(mu: float, sigma: float, la: float = -20.0, lb: float = 0.0) -> float:
    """∫ q ln(q/p) dx with p uniform on [la, lb] in x = ln θ."""
    logpdf, log_z, pts = _trunc(mu, sigma, la, lb)
    logq = lambda x: logpdf(x) - log_z  # noqa: E731
    return float(mp.quad(lambda x: mp.exp(logq(x)) * logq(x), pts) + mp.log(lb - la))


def trunc_mean_quad(mu: float, sigma: float, la: float = -20.0, lb: float = 0.0) -> float:
    """E[e^x] under the truncated normal, by quadrature."""
    logpdf, log_z, pts = _trunc(mu, sigma, la, lb)
    return float(mp.quad(lambda x: mp.exp(x + logpdf(x) - log_z), pts))


def trunc_log_mass(mu: float, sigma: float, la_r: float, lb_r: float, la: float = -20.0, lb: float = 0.0) -> float:
    """ln Q(la_r ≤ x ≤ lb_r) from mpmath's normal CDF (independent of the quadrature above)."""
    mu, sigma = mp.mpf(mu), mp.mpf(sigma)

    def mass(lo: float, hi: float):  # Φ(zb) − Φ(za), taken in the tail where it is small
        za, zb = (lo - mu) / sigma, (hi - mu) / sigma
        return mp.ncdf(-za) - mp.ncdf(-zb) if za > 0 else mp.ncdf(zb) - mp.ncdf(za)

    return float(mp.log(mass(la_r, lb_r)) - mp.log(mass(la, lb)))


def _mass_mp(za, zb):
    """Φ(zb) − Φ(za) in mpmath, taken in the tail where it is small (no cancellation)."""
    return mp.ncdf(-za) - mp.ncdf(-zb) if za > 0 else mp.ncdf(zb) - mp.ncdf(za)


def _trunc_kl_mp(mu, log_sigma, la, lb):
    s = mp.exp(log_sigma)
    za, zb = (la - mu) / s, (lb - mu) / s
    z = _mass_mp(za, zb)
    return (mp.log(lb - la) - log_sigma - mp.log(z) - mp.log(2 * mp.pi * mp.e) / 2
            - (za * mp.npdf(za) - zb * mp.npdf(zb)) / (2 * z))


def _trunc_log_mean_mp(mu, log_sigma, la, lb):
    s = mp.exp(log_sigma)
    za, zb = (la - mu) / s, (lb - mu) / s
    return mu + s * s / 2 + mp.log(_mass_mp(za - s, zb - s)) - mp.log(_mass_mp(za, zb))


def _with_grad(fn, mu: float, log_sigma: float, la: float, lb: float) -> tuple[float, float, float]:
    """(f, ∂f/∂μ, ∂f/∂ln σ) at 50 digits; derivatives by mpmath's high-precision differences."""
    with mp.workdps(50):
        m, ls = mp.mpf(mu), mp.mpf(log_sigma)
        f = lambda a, b: fn(a, b, mp.mpf(la), mp.mpf(lb))  # noqa: E731
        return (float(f(m, ls)), float(mp.diff(f, (m, ls), (1, 0))),
                float(mp.diff(f, (m, ls), (0, 1))))


def trunc_kl_grad_mp(mu: float, log_sigma: float, la: float = -20.0, lb: float = 0.0
                     ) -> tuple[float, float, float]:
    """KL of the truncated log-normal gate and its gradient in (μ, ln σ), closed form at 50
    digits (exact arithmetic: the closed form itself is checked by trunc_kl_quad)."""
    return _with_grad(_trunc_kl_mp, mu, log_sigma, la, lb)


def trunc_log_mean_grad_mp(mu: float, log_sigma: float, la: float = -20.0, lb: float = 0.0
                           ) -> tuple[float, float, float]:
    """ln E[θ] and its gradient in (μ, ln σ), closed form at 50 digits."""
    return _with_grad(_trunc_log_mean_mp, mu, log_sigma, la, lb)


def eq8_finite_width(mu: float, sigma: float, sigma_p: float, la: float = -20.0, lb: float = 0.0) -> float:
    """The paper's finite-width BMRS_N formula (Eq. 8, with 2π), plain float64 as published."""
    from scipy.special import ndtr

    mu_p = la
    var_q, var_p = sigma**2, sigma_p**2
    var_t = 1.0 / (1.0 / var_q + 1.0 / var_p)
    mu_t = var_t * (mu / var_q + mu_p / var_p)
    z = lambda m, s: ndtr((lb - m) / s) - ndtr((la - m) / s)  # noqa: E731
    z_q, z_p, z_t = z(mu, sigma), z(mu_p, sigma_p), z(mu_t, math.sqrt(var_t))
    return (
        math.log(z_t * (lb - la) / (z_p * z_q))
        + 0.5 * math.log(var_t / (2 * math.pi * var_p * var_q))
        - 0.5 * (mu**2 / var_q + mu_p**2 / var_p - mu_t**2 / var_t)
    )


def log_beta_fn(conc: list[float]) -> float:
    return float(sum(mp.loggamma(c) for c in conc) - mp.loggamma(sum(conc)))

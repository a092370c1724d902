"""Fast path for per-weight spike scoring: ΔlnZ = ½(v0 − v) − ½(μ e^{−v/2})², v = ln σ².

Scoring is memory-bound in principle (read μ and ln σ², write ΔlnZ: 12 bytes per float32
weight), but the plain eager expression makes five full-size temporaries and runs ~20× below
the copy bandwidth. Two backends write into a caller-supplied output in one sweep:

* ``compiled``: the expression compiled once per process by ``torch.compile`` (inductor emits
  one fused, vectorised C++ loop; dynamic shapes, the prior as a 0-d tensor so it does not
  force recompiles). Used for large tensors when compilation works; any failure disables it
  for the rest of the process with a logged warning and falls back to ``chunked``.
* ``chunked``: the same arithmetic as in-place torch ops over cache-sized blocks, so the
  temporaries live in L2 and the big tensors are read once and written once.

The backend is chosen by ``score_spike_(..., backend="auto")``: compiled for tensors of at
least ``COMPILE_MIN_NUMEL`` elements unless the environment sets ``BMR_COMPILE=0``.
"""

from __future__ import annotations

import logging
import os
from typing import Callable, Literal

import torch
from torch import Tensor

log = logging.getLogger(__name__)

FAST_MIN_NUMEL = 1 << 16  # below this the plain expression is as fast
COMPILE_MIN_NUMEL = 1 << 22  # compiling (seconds, cached on disk) only pays for big tensors
CHUNK = 1 << 18  # elements per block: 1 MiB of float32, two blocks fit in L2 (measured best)

Backend = Literal["auto", "compiled", "chunked", "eager"]
_compiled: Callable[[Tensor, Tensor, Tensor, Tensor], None] | None = None
_compile_failed = False


def compile_failed() -> bool:
    """Whether compiling the fused kernel failed in this process (the chunked path is used)."""
    return _compile_failed


def fast_path_ok(
    mu: Tensor, log_var: Tensor, prior_log_var: Tensor | float, out: Tensor | None
) -> bool:
    """True when `score_spike_` applies: big, contiguous, same shape/dtype/device, no grad."""
    if not (isinstance(mu, Tensor) and isinstance(log_var, Tensor)):
        return False
    if isinstance(prior_log_var, Tensor) and prior_log_var.numel() != 1:
        return False
    tensors = [mu, log_var] + ([out] if out is not None else [])
    return (
        mu.numel() >= FAST_MIN_NUMEL
        and mu.dtype in (torch.float32, torch.float64)
        and all(t.shape == mu.shape and t.dtype == mu.dtype for t in tensors)
        and all(t.device == mu.device for t in tensors)
        and all(t.is_contiguous() for t in tensors)
        and not (torch.is_grad_enabled() and (mu.requires_grad or log_var.requires_grad))
    )


def _kernel(out: Tensor, mu: Tensor, log_var: Tensor, prior_log_var: Tensor) -> None:
    # [n] each; (v0 − v) first so that v = v0, μ ≠ 0 gives a strictly negative score
    out.copy_(0.5 * (prior_log_var - log_var) - 0.5 * torch.square(mu * torch.exp(-0.5 * log_var)))


def _get_compiled() -> Callable[[Tensor, Tensor, Tensor, Tensor], None] | None:
    global _compiled, _compile_failed
    if _compiled is None and not _compile_failed:
        try:
            _compiled = torch.compile(_kernel, dynamic=True, fullgraph=True)
        except Exception as exc:  # noqa: BLE001 - any compiler problem means "use eager"
            _disable_compile(exc)
    return _compiled


def _disable_compile(exc: BaseException) -> None:
    global _compiled, _compile_failed
    _compiled, _compile_failed = None, True
    log.warning("torch.compile unavailable for spike scoring (%s); using the chunked path", exc)


def _score_chunked_(out: Tensor, mu: Tensor, log_var: Tensor, v0: float) -> None:
    o_all, m_all, v_all = out.view(-1), mu.view(-1), log_var.view(-1)
    n = o_all.numel()
    scratch = torch.empty(min(CHUNK, n), dtype=out.dtype, device=out.device)
    for lo in range(0, n, CHUNK):
        hi = min(lo + CHUNK, n)
        o, s, v = o_all[lo:hi], scratch[: hi - lo], v_all[lo:hi]
        torch.sub(v, v0, out=o)  # v − v0
        o.mul_(-0.5)  # ½(v0 − v), exact
        torch.mul(v, -0.5, out=s)
        s.exp_().mul_(m_all[lo:hi])  # μ e^{−v/2}
        o.addcmul_(s, s, value=-0.5)


def score_spike_(
    out: Tensor,
    mu: Tensor,
    log_var: Tensor,
    prior_log_var: Tensor | float,
    *,
    backend: Backend = "auto",
) -> Tensor:
    """Write the spike ΔlnZ of every weight into `out` (same shape/dtype as `mu`); returns it.

    `prior_log_var` is one number for the whole tensor (per-tensor empirical-Bayes scale).
    """
    if not all(t.shape == mu.shape and t.dtype == mu.dtype for t in (out, log_var)):
        raise ValueError("score_spike_: out, mu and log_var must share shape and dtype")
    if not (out.is_contiguous() and mu.is_contiguous() and log_var.is_contiguous()):
        raise ValueError("score_spike_: tensors must be contiguous")
    if backend == "auto":
        use_compile = mu.numel() >= COMPILE_MIN_NUMEL and os.environ.get("BMR_COMPILE", "1") != "0"
        backend = "compiled" if use_compile and not _compile_failed else "chunked"
    with torch.no_grad():
        if backend == "compiled":
            fn = _get_compiled()
            if fn is not None:
                v0t = torch.as_tensor(float(prior_log_var), dtype=mu.dtype, device=mu.device)
                try:
                    fn(out, mu, log_var, v0t)
                    return out
                except Exception as exc:  # noqa: BLE001
                    _disable_compile(exc)
            backend = "chunked"
        if backend == "chunked":
            _score_chunked_(out, mu, log_var, float(prior_log_var))
        elif backend == "eager":
            _kernel(out, mu, log_var, torch.as_tensor(float(prior_log_var), dtype=mu.dtype))
        else:
            raise ValueError(f"unknown backend {backend!r}")
    return out

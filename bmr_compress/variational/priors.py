"""Closed-form prior scales of the wrapped tensors (empirical Bayes or Markovic et al.'s gamma).

Works on the wrap state alone, so that `wrap_` can set the first priors without importing the
posterior module that reads its state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from bmr_compress.variational.wrap import WrapState


def prior_s2(spec, total: torch.Tensor, n: torch.Tensor | int) -> torch.Tensor:
    """s^2 from the summed second moments `total` over `n` weights under `spec.prior`."""
    if spec.prior == "gamma":
        s2 = (spec.gamma_b0 + 0.5 * total) / (spec.gamma_a0 + 0.5 * n)
    else:
        s2 = total / max(float(n), 1.0)
    return torch.as_tensor(s2).clamp_min(1e-30)


@torch.no_grad()
def update_state_priors_(st: WrapState) -> dict[str, float]:
    """Closed-form prior scale per tensor (over unmasked entries); returns name -> s^2.

    empirical_bayes: s^2 = mean(mu^2 + sigma^2).
    gamma (Markovic et al.): prior precision tau ~ Gamma(a0, b0), mean-field q(tau) =
    Gamma(a0 + n/2, b0 + sum(mu^2 + sigma^2)/2); s^2 = 1/E[tau].
    """
    out: dict[str, float] = {}
    for name, e in st.entries.items():
        second = e.mu.to(e.log_var.dtype) ** 2 + e.log_var.exp()
        m = e.mask()
        n = second.numel() if m is None else m.sum()
        total = second.sum() if m is None else (second * m).sum()
        s2 = prior_s2(st.spec, total, n)
        e.prior_log_var().copy_(s2.log().to(e.prior_log_var().dtype))
        out[name] = float(s2)
    return out

"""Plain data for a fitted posterior: what the fine-tune produces and BMR consumes.

Kept free of nn.Module so that scoring and planning can run from `posterior.safetensors`
alone (re-planning without refitting).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PosteriorTensor:
    """Mean-field Gaussian posterior N(mu, exp(log_var)) of one parameter tensor.

    `prior_log_var` is the log-variance of the zero-mean Gaussian prior of this tensor
    (a 0-d tensor: one empirical-Bayes scale per tensor), or a tensor broadcastable to mu.
    """

    mu: torch.Tensor
    log_var: torch.Tensor
    prior_log_var: torch.Tensor


@dataclass(frozen=True)
class GateTensor:
    """Per-unit multiplicative gates on the output of `module` (qualified name).

    One gate per unit along `axis` of the module's output; `unit_size` consecutive output
    channels share one gate (1 for neurons/filters, head_dim for attention heads).
    kind "lognormal": truncated log-normal in x = ln(theta) on [log_a, log_b] with
    parameters (mu, log_sigma) (BMRS). kind "gaussian": N(mu, exp(2*log_sigma)) on theta.
    """

    module: str
    axis: int
    unit_size: int
    mu: torch.Tensor
    log_sigma: torch.Tensor
    kind: str = "lognormal"
    log_a: float = -20.0
    log_b: float = 0.0

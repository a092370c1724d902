"""Reading and steering a wrapped model: KL, priors, masks, posterior tensors, gates.

KL per Gaussian tensor (mean field, zero-mean prior N(0, s^2)):
    KL = 1/2 sum_i [ (sigma_i^2 + mu_i^2)/s^2 - 1 - ln sigma_i^2 + ln s^2 ]
summed over unmasked entries only (masked weights are pinned at exactly zero).
"""

from __future__ import annotations

import torch
from torch import nn

from bmr_compress.errors import InputError
from bmr_compress.variational import gates as G
from bmr_compress.variational.state import GateTensor, PosteriorTensor
from bmr_compress.variational.priors import prior_s2, update_state_priors_
from bmr_compress.variational.wrap import Entry, ddp_inner, wrap_state


def _tensor_kl(e: Entry) -> torch.Tensor:
    lv = e.log_var
    mu = e.mu.to(lv.dtype)
    plv = e.prior_log_var()
    t = 0.5 * ((lv.exp() + mu * mu) * torch.exp(-plv) - 1.0 - lv + plv)
    m = e.mask()
    return (t if m is None else t * m).sum()


def kl_divergence(model: nn.Module) -> torch.Tensor:
    """Sum of KL(q || p) over every wrapped tensor and every gate (float32, 0-d)."""
    st = wrap_state(model)
    parts = [_tensor_kl(e) for e in st.entries.values()]
    for g in st.gates.values():
        parts.append(G.gate_kl(g.kind, g.mu.float(), g.log_sigma.float(), g.log_a, g.log_b).sum())
    if not parts:
        return torch.zeros(())
    return torch.stack(parts).sum()


def gate_kl(model: nn.Module) -> torch.Tensor:
    """KL of the gates only (autograd; 0-d)."""
    st = wrap_state(model)
    parts = [G.gate_kl(g.kind, g.mu.float(), g.log_sigma.float(), g.log_a, g.log_b).sum()
             for g in st.gates.values()]
    return torch.stack(parts).sum() if parts else torch.zeros(())


def _add_grad(p: torch.Tensor, g: torch.Tensor, alpha: float) -> None:
    if not p.requires_grad:
        return
    if p.grad is None:
        p.grad = (g * alpha).to(p.dtype)
    else:
        p.grad.add_(g.to(p.grad.dtype), alpha=alpha)


@torch.no_grad()
def gaussian_kl_grad_(model: nn.Module, scale: float, *, update_prior: bool = False
                      ) -> tuple[float, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Value of the Gaussian-tensor KL, and add scale * dKL/d(mu, log_var) to the grads.

    Closed-form gradient (no autograd graph over every weight): dKL/dmu = mu / s^2,
    dKL/dlog_var = (sigma^2 / s^2 - 1) / 2. With update_prior the empirical-Bayes scale is
    is computed from the same sums and returned as pending (buffer, value) pairs, for the
    caller to apply once the step is known to be finite. Masked entries get zero gradient.
    """
    st = wrap_state(model)
    total = 0.0
    pending: list[tuple[torch.Tensor, torch.Tensor]] = []
    for e in st.entries.values():
        lv, mu, m = e.log_var, e.mu, e.mask()
        plv = e.prior_log_var().to(lv.dtype)
        inv = float(torch.exp(-plv))
        v = lv.exp()  # the only temporary: passes over each tensor are kept few (hot loop)
        mu_ = mu.to(lv.dtype)
        if m is None:
            n, second, slv = lv.numel(), v.sum() + torch.dot(mu_.flatten(), mu_.flatten()), lv.sum()
        else:
            n, second, slv = m.sum(), (v * m).sum() + (mu_.square() * m).sum(), (lv * m).sum()
        total += float(0.5 * (inv * second - n - slv + n * plv))
        if scale:
            g_lv = v.sub_(1.0 / inv).mul_(0.5 * scale * inv)  # (sigma^2/s^2 - 1) / 2, in place
            if m is None:
                _add_grad(mu, mu, inv * scale)
                _add_grad(lv, g_lv, 1.0)
            else:
                _add_grad(mu, mu * m.to(mu.dtype), inv * scale)
                _add_grad(lv, g_lv.mul_(m), 1.0)
        if update_prior:
            pending.append((e.prior_log_var(), prior_s2(st.spec, second, n).log()))
    return total, pending


@torch.no_grad()
def update_priors_(model: nn.Module) -> dict[str, float]:
    """Closed-form prior scale per tensor (over unmasked entries); returns name -> s^2
    (see `variational.priors.update_state_priors_`)."""
    return update_state_priors_(wrap_state(model))


def set_masks_(model: nn.Module, masks: dict[str, torch.Tensor]) -> list[str]:
    """Pin pruned weights (mask False) at exactly zero: mu = 0, no noise, no gradient.

    Keys are original parameter names; True keeps a weight. Calling again replaces a
    tensor's mask. Returns the names masked. The trainer re-applies masks after each step.
    """
    st = wrap_state(model)
    for name, m in masks.items():  # validate before mutating
        if name not in st.entries:
            raise InputError(f"set_masks_: {name!r} is not a wrapped parameter")
        if tuple(m.shape) != tuple(st.entries[name].mu.shape):
            raise InputError(f"set_masks_: mask for {name} has shape {tuple(m.shape)}, "
                             f"parameter has {tuple(st.entries[name].mu.shape)}")
    for name, m in masks.items():
        e = st.entries[name]
        keep = m.to(device=e.mu.device, dtype=torch.float32)
        attr = f"bmr_{e.local}_mask"
        if hasattr(e.module, attr):
            getattr(e.module, attr).copy_(keep)
        else:
            e.module.register_buffer(attr, keep)
            buf = getattr(e.module, attr)
            e.mu._bmr_mask_hook = e.mu.register_hook(lambda g, b=buf: g * b.to(g.dtype))
            e.log_var._bmr_mask_hook = e.log_var.register_hook(lambda g, b=buf: g * b)
    enforce_masks_(model)
    return list(masks)


@torch.no_grad()
def enforce_masks_(model: nn.Module) -> None:
    for e in wrap_state(model).entries.values():
        m = e.mask()
        if m is not None:
            e.mu.mul_(m.to(e.mu.dtype))


def masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """Current masks (bool, True = kept) of masked tensors."""
    ents = wrap_state(model).entries
    return {n: e.mask().bool() for n, e in ents.items() if e.mask() is not None}


def posterior_tensors(model: nn.Module) -> dict[str, PosteriorTensor]:
    """Detached float32 posterior per original parameter name."""
    return {
        n: PosteriorTensor(e.mu.detach().float().clone(), e.log_var.detach().clone(),
                           e.prior_log_var().detach().clone())
        for n, e in wrap_state(model).entries.items()
    }


def gate_tensors(model: nn.Module) -> dict[str, GateTensor]:
    st = wrap_state(model)
    return {
        n: GateTensor(n, g.axis, g.unit_size, g.mu.detach().float().clone(),
                      g.log_sigma.detach().float().clone(), g.kind, g.log_a, g.log_b)
        for n, g in st.gates.items()
    }


def variance_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(means and deterministic parameters, log-variances and gate parameters)."""
    st = wrap_state(model)
    special = {id(e.log_var) for e in st.entries.values()}
    for g in st.gates.values():
        special |= {id(g.mu), id(g.log_sigma)}
    base = ddp_inner(model)
    mean, var = [], []
    for p in base.parameters():
        (var if id(p) in special else mean).append(p)
    return mean, var


def set_noise_source_(model: nn.Module, generator: torch.Generator | None, rank: int = 0,
                      world: int = 1) -> None:
    st = wrap_state(model)
    st.noise.generator, st.noise.rank, st.noise.world = generator, rank, world

"""Laplace start for the variational posterior: a diagonal Gauss–Newton posterior around the
pretrained weights, so that a short fine-tune refines a posterior instead of building one.

Why: the fine-tune moves each log σ² by Adam steps whose direction, for weights the data
barely constrains, is dominated by minibatch noise; on a 22 M-parameter encoder 150 steps
moved the KL by 4 %. The quadratic (Laplace) approximation of the same tempered ELBO gives
the answer those steps are walking towards, in closed form:

    precision  P = N·F/λ + 1/s²        (F: per-example Fisher / GGN diagonal)
    mean       m = (N·F/λ) / P · w      (the pretrained weight w shrunk by the prior)
    variance   σ² = 1/P

F is estimated without per-example gradients: with targets sampled from the model's own
likelihood (categorical for logits, Gaussian for hidden states / embeddings), independently
per example, the squared gradient of the batch's summed NLL is an unbiased estimate of the
summed per-example Fisher diagonals (cross terms vanish in expectation).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from bmr_compress.tasks import mean_pool, output_tensor
from bmr_compress.variational.objective import output_is_logits
from bmr_compress.variational.settings import FinetuneSettings
from bmr_compress.variational.wrap import wrap_state

log = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]


def _gaussian_sampled(y: torch.Tensor, tau: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Σ ½‖y − (y + τ r)‖²/τ² with r ~ N(0, I): gradient −Jᵀr/τ (Fisher-sampled)."""
    r = torch.randn(y.shape, generator=gen, device=y.device, dtype=y.dtype)
    target = y.detach() + tau * r
    return (0.5 * (y - target).pow(2) / tau.pow(2)).sum()


def sampled_nll(out: object, attention_mask: torch.Tensor | None, labels: torch.Tensor | None,
                settings: FinetuneSettings, gen: torch.Generator) -> torch.Tensor:
    """Summed (not averaged) NLL of the batch under targets drawn from the model itself, in the
    same likelihood the fine-tune uses (variational.objective.data_term)."""
    y = output_tensor(out).float()
    mode = settings.distill
    if labels is not None and labels.is_floating_point():
        return _gaussian_sampled(y, torch.tensor(settings.hidden_noise_std, device=y.device), gen)
    if mode == "logits_kl" or (mode == "auto" and output_is_logits(out, y)):
        t = settings.distill_temperature
        logits = y / t
        probs = logits.detach().softmax(-1).reshape(-1, logits.shape[-1])
        draw = torch.multinomial(probs, 1, generator=gen).squeeze(-1)
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), draw, reduction="none")
        if y.dim() == 3 and attention_mask is not None and attention_mask.shape == y.shape[:2]:
            ce = ce * attention_mask.reshape(-1).to(ce.dtype)
        return ce.sum() * (t * t)
    if mode == "pooled_gaussian" and y.dim() == 3:
        pooled = mean_pool(y, attention_mask)
        tau = settings.hidden_noise_std * pooled.detach().pow(2).mean().sqrt().clamp_min(1e-8)
        return _gaussian_sampled(pooled, tau, gen)
    tau = settings.hidden_noise_std * y.detach().pow(2).mean().sqrt().clamp_min(1e-8)
    if y.dim() == 3 and attention_mask is not None and attention_mask.shape == y.shape[:2]:
        y = y * attention_mask.unsqueeze(-1).to(y.dtype)  # padded positions carry no data
    return _gaussian_sampled(y, tau, gen)


def fisher_diagonal(model: torch.nn.Module, batches: Sequence[Batch], settings: FinetuneSettings,
                    max_batches: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Per-example Fisher (GGN) diagonal of every wrapped parameter, at the posterior mean."""
    st = wrap_state(model)
    entries = list(st.entries.values())
    params = [e.mu for e in entries]
    sums = [torch.zeros_like(p, dtype=torch.float32) for p in params]
    gen = torch.Generator(device=device).manual_seed(settings.seed + 7919)
    was_training = model.training
    model.eval()  # deterministic forward at the mean: no posterior sampling
    seen = 0
    try:
        for batch in list(batches)[:max_batches]:
            inputs = {k: v.to(device) for k, v in batch.items()}
            labels = inputs.pop("labels", None)
            loss = sampled_nll(model(**inputs), inputs.get("attention_mask"), labels, settings, gen)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            for acc, g in zip(sums, grads):
                if g is not None:
                    acc.add_(g.detach().float().pow(2))
            seen += int(next(iter(inputs.values())).shape[0])
    finally:
        model.train(was_training)
    return {e.name: acc / max(seen, 1) for e, acc in zip(entries, sums)}


@torch.no_grad()
def laplace_init_(model: torch.nn.Module, batches: Sequence[Batch], settings: FinetuneSettings,
                  n_data: int, device: torch.device) -> dict[str, float]:
    """Set every wrapped tensor's (μ, log σ²) to the diagonal Laplace posterior (module doc).

    Returns, per tensor, the fraction of weights whose prior dominates (N·F/λ < 1/s²)."""
    if settings.laplace_batches <= 0:
        return {}
    st = wrap_state(model)
    with torch.enable_grad():
        fisher = fisher_diagonal(model, batches, settings, settings.laplace_batches, device)
    lam = max(settings.temperature, 1e-12)
    summary = {}
    for name, e in st.entries.items():
        prior_prec = torch.exp(-e.prior_log_var().float())
        lik = fisher[name] * (n_data / lam)
        prec = lik + prior_prec
        e.log_var.copy_((-torch.log(prec)).to(e.log_var.dtype))
        e.mu.mul_((lik / prec).to(e.mu.dtype))
        m = e.mask()
        if m is not None:
            e.mu.mul_(m.to(e.mu.dtype))
        summary[name] = float((lik < prior_prec).float().mean())
    log.info("Laplace start from %d batches: prior-dominated weights %.1f%% (median tensor)",
             min(len(batches), settings.laplace_batches),
             100 * _median(list(summary.values())))
    return summary


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else math.nan

"""The data term of the tempered ELBO: supervised or distillation negative log-likelihoods.

Every function returns the **mean over examples of the per-example NLL** (a 0-d float32
tensor); per-example means summed over positions and output dimensions, so that
N * data_term is the data part of -ELBO for N examples.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bmr_compress.variational.settings import FinetuneSettings


def _positions_mask(logits: torch.Tensor,
                    attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    if (logits.dim() == 3 and attention_mask is not None
            and attention_mask.shape == logits.shape[:2]):
        return attention_mask.to(torch.float32)
    return None


def logits_kl(student: torch.Tensor, teacher: torch.Tensor, attention_mask: torch.Tensor | None,
              temperature: float = 1.0) -> torch.Tensor:
    """KL(softmax(t/T) || softmax(s/T)) * T^2, summed over valid positions, mean over batch."""
    t = temperature
    log_p = F.log_softmax(teacher.float() / t, dim=-1)
    log_q = F.log_softmax(student.float() / t, dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1) * (t * t)  # (B,) or (B, T)
    m = _positions_mask(student, attention_mask)
    if m is not None:
        kl = kl * m
    return kl.reshape(kl.shape[0], -1).sum(1).mean()


def hidden_gaussian(student: torch.Tensor, teacher: torch.Tensor,
                    attention_mask: torch.Tensor | None,
                    noise_std: float) -> torch.Tensor:
    """-ln N(teacher; student, tau^2 I) up to a constant, tau = noise_std * RMS(teacher)."""
    t = teacher.float()
    tau2 = (noise_std * t.pow(2).mean().sqrt().clamp_min(1e-8)) ** 2
    sq = 0.5 * (student.float() - t).pow(2) / tau2
    m = _positions_mask(student, attention_mask)
    sq = sq.sum(-1) if sq.dim() >= 2 else sq
    if m is not None:
        sq = sq * m
    return sq.reshape(sq.shape[0], -1).sum(1).mean()


def pooled_gaussian(student: torch.Tensor, teacher: torch.Tensor,
                    attention_mask: torch.Tensor | None, noise_std: float) -> torch.Tensor:
    """Gaussian likelihood on the sentence embedding: -ln N(pool(t); pool(s), tau^2 I) up to
    a constant, pool = mean over unmasked tokens, tau = noise_std * RMS(pool(teacher)).

    For embedding models this is the output the task uses (cosine / nearest neighbours), so
    the likelihood asks the posterior to keep what moves the embedding, not every token state.
    """
    from bmr_compress.tasks import mean_pool

    if student.dim() != 3:
        return hidden_gaussian(student, teacher, attention_mask, noise_std)
    s = mean_pool(student.float(), attention_mask)  # (B, H)
    t = mean_pool(teacher.float(), attention_mask)
    tau2 = (noise_std * t.pow(2).mean().sqrt().clamp_min(1e-8)) ** 2
    return (0.5 * (s - t).pow(2) / tau2).sum(-1).mean()


def supervised_nll(output: torch.Tensor, labels: torch.Tensor,
                   noise_std: float = 1.0) -> torch.Tensor:
    """Cross-entropy for integer labels (causal-LM labels shifted, -100 ignored), else Gaussian."""
    out = output.float()
    if labels.dtype in (torch.long, torch.int32, torch.int64):
        if out.dim() == 3:  # causal LM: predict token t+1 from position t
            logit, lab = out[:, :-1], labels[:, 1:]
            ce = F.cross_entropy(logit.reshape(-1, logit.shape[-1]), lab.reshape(-1),
                                 ignore_index=-100, reduction="none")
            return ce.view(lab.shape).sum(1).mean()
        return F.cross_entropy(out, labels)
    sq = 0.5 * (out.reshape(labels.shape) - labels.float()).pow(2) / noise_std**2
    return sq.reshape(sq.shape[0], -1).sum(1).mean()


def data_term(student: torch.Tensor, teacher: torch.Tensor | None, labels: torch.Tensor | None,
              attention_mask: torch.Tensor | None, settings: FinetuneSettings,
              is_logits: bool = True) -> torch.Tensor:
    """Per-example mean NLL chosen by settings.objective / settings.distill."""
    use_sup = labels is not None and settings.objective in ("auto", "supervised", "both")
    use_dist = (settings.objective in ("distill", "both")
                or (settings.objective == "auto" and labels is None))
    if settings.objective == "supervised" and labels is None:
        from bmr_compress.errors import InputError

        raise InputError("objective 'supervised' needs batches with labels")
    total = torch.zeros((), device=student.device)
    if use_sup:
        total = total + supervised_nll(student, labels, settings.hidden_noise_std)
    if use_dist:
        assert teacher is not None
        mode = settings.distill
        if mode == "auto":
            mode = "logits_kl" if is_logits else "hidden_gaussian"
        if mode == "logits_kl":
            total = total + logits_kl(student, teacher, attention_mask,
                                      settings.distill_temperature)
        elif mode == "pooled_gaussian":
            total = total + pooled_gaussian(student, teacher, attention_mask,
                                            settings.hidden_noise_std)
        else:
            total = total + hidden_gaussian(student, teacher, attention_mask,
                                            settings.hidden_noise_std)
    return total


def output_is_logits(out: object, tensor: torch.Tensor) -> bool:
    """Logits when the output carries `.logits`, or is a plain tensor with more than one column."""
    if getattr(out, "logits", None) is not None:
        return True
    return isinstance(out, torch.Tensor) and tensor.dim() >= 2 and tensor.shape[-1] > 1

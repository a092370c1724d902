"""Task metric of the original vs the compressed model on held-out batches (PyTorch, CPU).

classification: top-1 agreement (+ accuracy when labels exist); embedding: mean-pooled cosine
and nearest-neighbour agreement; causal_lm: perplexity of each and their ratio; regression:
R^2 of the compressed outputs against the original's (+ R^2 against labels when present).
Each result names one `gate` value that `validate` compares with its threshold.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from bmr_compress.errors import InputError
from bmr_compress.tasks import Task, mean_pool, output_tensor

if TYPE_CHECKING:
    import torch
    from torch import nn


def _outputs(model: nn.Module, batches: list[dict[str, torch.Tensor]]) -> list[torch.Tensor]:
    import torch

    outs = []
    with torch.no_grad():
        for b in batches:
            kwargs = {k: v for k, v in b.items() if k != "labels"}
            outs.append(output_tensor(model(**kwargs)).float())
    return outs


def task_metric(
    original: nn.Module, compressed: nn.Module, batches: Iterable[dict[str, torch.Tensor]], task: Task | str
) -> dict[str, Any]:
    """Metric dict: {task, name, gate, original: {...}, compressed: {...}, n}."""
    task = Task.parse(task) if isinstance(task, str) else task
    batches = list(batches)
    if not batches:
        raise InputError("no held-out batches for the task metric")
    orig, comp = _outputs(original, batches), _outputs(compressed, batches)
    fn = {Task.CLASSIFICATION: _classification, Task.EMBEDDING: _embedding,
          Task.CAUSAL_LM: _causal_lm, Task.REGRESSION: _regression}[task]
    result = fn(batches, orig, comp)
    result["task"] = task.value
    return result


def _classification(batches: list[dict], orig: list, comp: list) -> dict[str, Any]:
    agree, total, correct_o, correct_c, labelled = 0, 0, 0, 0, 0
    for b, o, c in zip(batches, orig, comp, strict=True):
        po, pc = o.argmax(-1), c.argmax(-1)  # (B,) or (B, T)
        agree += int((po == pc).sum())
        total += po.numel()
        if "labels" in b:
            y = b["labels"].reshape(po.shape)
            valid = y >= 0  # -100 = ignore
            correct_o += int(((po == y) & valid).sum())
            correct_c += int(((pc == y) & valid).sum())
            labelled += int(valid.sum())
    agreement = agree / total
    out: dict[str, Any] = {"name": "top1_agreement", "gate": agreement, "n": total,
                           "original": {"top1_agreement": 1.0}, "compressed": {"top1_agreement": agreement}}
    if labelled:
        out["original"]["accuracy"] = correct_o / labelled
        out["compressed"]["accuracy"] = correct_c / labelled
    return out


def _embedding(batches: list[dict], orig: list, comp: list) -> dict[str, Any]:
    import torch

    eo = torch.cat([mean_pool(o, b.get("attention_mask")) for b, o in zip(batches, orig, strict=True)])
    ec = torch.cat([mean_pool(c, b.get("attention_mask")) for b, c in zip(batches, comp, strict=True)])
    cos = float(torch.nn.functional.cosine_similarity(eo, ec, dim=-1).mean())  # (N,) -> mean
    nn_agree = None
    if eo.shape[0] >= 3:
        nn_agree = float((_nearest(eo) == _nearest(ec)).float().mean())
    return {"name": "cosine", "gate": cos, "n": int(eo.shape[0]),
            "original": {"cosine": 1.0, "nn_agreement": 1.0 if nn_agree is not None else None},
            "compressed": {"cosine": cos, "nn_agreement": nn_agree}}


def _nearest(e: torch.Tensor) -> torch.Tensor:
    import torch

    e = torch.nn.functional.normalize(e, dim=-1)
    sim = e @ e.T  # (N, N)
    sim.fill_diagonal_(-float("inf"))
    return sim.argmax(-1)


def _causal_lm(batches: list[dict], orig: list, comp: list) -> dict[str, Any]:
    import math

    import torch

    def nll(logits: torch.Tensor, b: dict) -> tuple[float, int]:
        ids = b.get("labels", b["input_ids"])
        mask = b.get("attention_mask", torch.ones_like(ids))[:, 1:].bool() & (ids[:, 1:] >= 0)
        lp = torch.log_softmax(logits[:, :-1], dim=-1)  # (B, T-1, V)
        tok = lp.gather(-1, ids[:, 1:].clamp_min(0).unsqueeze(-1)).squeeze(-1)  # (B, T-1)
        return float(-(tok * mask).sum()), int(mask.sum())

    so = [nll(o, b) for b, o in zip(batches, orig, strict=True)]
    sc = [nll(c, b) for b, c in zip(batches, comp, strict=True)]
    n = sum(k for _, k in so)
    if n == 0:
        raise InputError("held-out batches have no predictable tokens for perplexity")
    ppl_o = math.exp(sum(v for v, _ in so) / n)
    ppl_c = math.exp(sum(v for v, _ in sc) / n)
    ratio = ppl_c / ppl_o
    return {"name": "perplexity_ratio", "gate": ratio, "n": n,
            "original": {"perplexity": ppl_o}, "compressed": {"perplexity": ppl_c, "perplexity_ratio": ratio}}


def _r2(pred: torch.Tensor, target: torch.Tensor) -> float:
    ss_res = float(((pred - target) ** 2).sum())
    ss_tot = float(((target - target.mean(0)) ** 2).sum())
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res == 0 else 0.0)


def _regression(batches: list[dict], orig: list, comp: list) -> dict[str, Any]:
    import torch

    o, c = torch.cat(orig), torch.cat(comp)
    r2 = _r2(c, o)
    out: dict[str, Any] = {"name": "r2_vs_original", "gate": r2, "n": int(o.shape[0]),
                           "original": {"r2_vs_original": 1.0}, "compressed": {"r2_vs_original": r2}}
    if all("labels" in b for b in batches):
        y = torch.cat([b["labels"].float().reshape(x.shape) for b, x in zip(batches, orig, strict=True)])
        out["original"]["r2"] = _r2(o, y)
        out["compressed"]["r2"] = _r2(c, y)
    return out

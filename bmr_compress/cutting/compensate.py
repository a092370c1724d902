"""Move the surviving weights to their BMR reduced posterior mean before the cut.

The plan zeroes weights and whole units (keep-masks over the original shapes). Under the
mean-field posterior the survivors would stay where they are; under a posterior that couples
each output row of a layer through its input statistics (bmr/correlated.py) BMR gives them a
new mean that makes up for what was removed. This module collects H = E[x xᵀ] of every
supported layer's input on calibration batches (a bias joins as a constant input 1), fits
the row scales from the fitted mean-field precisions, and writes the reduced means into the
plain model. Removed units end up exactly zero, so `apply_plan_` cuts them as before.

Supported: every layer type whose `rows_ok` holds (bmr_compress.layers: nn.Linear, nn.Conv2d
with groups 1 and zero padding, inputs unfolded into patches, and transformers' Conv1D).
Other layers are only zeroed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from bmr_compress.layers import layer_type

log = logging.getLogger(__name__)


@dataclass
class CompensationReport:
    """Per layer: the posterior-metric cost (w − μ)ᵀΛ(w − μ) summed over rows, for plain
    zeroing and for the reduced means (never larger), and the calibration output error
    ‖X(w − μ)‖² / ‖Xμ‖² for both."""

    layers: dict[str, dict[str, float]] = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        z = sum(v["output_error_zeroed"] * v["output_norm"] for v in self.layers.values())
        c = sum(v["output_error_reduced"] * v["output_norm"] for v in self.layers.values())
        n = sum(v["output_norm"] for v in self.layers.values())
        return {"layers": float(len(self.layers)),
                "output_error_zeroed": z / n if n else 0.0,
                "output_error_reduced": c / n if n else 0.0}


def _inputs(mod: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Layer input as (examples, inputs), in the column order of its weight's rows."""
    return layer_type(mod).input_rows(mod, x).flatten(0, 1)


def _second_moments(model: nn.Module, layers: Mapping[str, nn.Module],
                    batches: Iterable[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
    sums: dict[str, list[Any]] = {}
    hooks = []
    for name, mod in layers.items():
        def hook(m: nn.Module, inp: tuple[Any, ...], _out: Any, key: str = name) -> None:
            x = _inputs(m, inp[0].detach().float())
            if getattr(m, "bias", None) is not None:
                x = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)], 1)
            acc = sums.setdefault(key, [0.0, 0])
            acc[0] = acc[0] + (x.T @ x).cpu()
            acc[1] += x.shape[0]
        hooks.append(mod.register_forward_hook(hook))
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            for b in batches:
                model(**{k: v.to(device) if isinstance(v, torch.Tensor) else v
                         for k, v in b.items()})
    finally:
        for h in hooks:
            h.remove()
    return {k: (s / max(n, 1)).double() for k, (s, n) in sums.items()}


def compensate_(model: nn.Module, posterior: Mapping[str, Any], masks: Mapping[str, torch.Tensor],
                batches: Iterable[Mapping[str, Any]]) -> CompensationReport:
    """Write the reduced posterior means of every supported layer with pruned weights.

    model: the plain (unwrapped) model, weights = posterior means (gates folded);
    posterior: name -> PosteriorTensor (mu, log_var, prior_log_var) of the wrapped tensors;
    masks: name -> bool keep-mask over the original shape (structured and unstructured
    together); batches: calibration inputs (no labels). Layers whose weight is not in the
    posterior or has nothing pruned are left alone. Mutates `model`; returns the errors.
    """
    layers = _pruned_layers(model, posterior, masks)
    report = CompensationReport()
    if not layers:
        return report
    moments = _second_moments(model, layers, batches)
    for name, mod in layers.items():
        h = moments.get(name)
        if h is None:  # never called on the calibration data
            continue
        report.layers[name] = _reduce_layer_(name, mod, h, posterior, masks)
    s = report.summary()
    log.info("reduced means: %d layers, calibration output error %.3g (zeroed) -> %.3g",
             len(report.layers), s["output_error_zeroed"], s["output_error_reduced"])
    return report


def _pruned_layers(model: nn.Module, posterior: Mapping[str, Any],
                   masks: Mapping[str, torch.Tensor]) -> dict[str, nn.Module]:
    """Modules whose layer type reads the weight as rows, with a posterior and pruned weights."""
    params = dict(model.named_parameters())
    layers = {}
    for name, mod in model.named_modules():
        key = f"{name}.weight" if name else "weight"
        m = masks.get(key)
        if layer_type(mod).rows_ok(mod) and key in posterior and m is not None \
                and not bool(m.all()) and params.get(key) is mod.weight:
            layers[name] = mod
    return layers


def _reduce_layer_(name: str, mod: nn.Module, h: torch.Tensor, posterior: Mapping[str, Any],
                   masks: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Write one layer's reduced means (h = E[x xᵀ], bias column last); returns its errors."""
    from bmr_compress.bmr import reduced_row_means, row_scales

    lt = layer_type(mod)
    key = f"{name}.weight" if name else "weight"
    post, w, bias = posterior[key], mod.weight, getattr(mod, "bias", None)
    mu = lt.rows(mod, w.detach()).double().cpu()  # (out, in·k)
    keep = lt.rows(mod, masks[key]).cpu()
    prec = lt.rows(mod, post.log_var.neg().exp()).double().cpu()
    d0 = torch.as_tensor(post.prior_log_var, dtype=torch.float64).neg().exp()
    d0 = lt.rows(mod, d0.expand(post.mu.shape)).mean(0) if d0.dim() else d0.expand(mu.shape[1])
    bkey = f"{name}.bias" if name else "bias"
    if bias is not None:
        bpost = posterior.get(bkey)
        bmask = masks.get(bkey, torch.ones(mu.shape[0], dtype=torch.bool))
        mu = torch.cat([mu, bias.detach().double().cpu()[:, None]], 1)
        keep = torch.cat([keep, bmask.cpu()[:, None]], 1)
        b0 = (torch.as_tensor(bpost.prior_log_var, dtype=torch.float64).neg().exp().mean()
              if bpost is not None else d0.mean())
        d0 = torch.cat([d0, b0.reshape(1)])
    a = row_scales(prec, torch.diagonal(h)[: prec.shape[1]], d0[: prec.shape[1]])
    new = reduced_row_means(mu, keep, h, a, d0)
    zeroed = mu * keep
    err = {}
    for tag, v in (("zeroed", zeroed), ("reduced", new)):
        diff = v - mu
        err[tag] = float(torch.einsum("ij,jk,ik->", diff, h, diff))
    norm = float(torch.einsum("ij,jk,ik->", mu, h, mu))
    with torch.no_grad():
        nw = new[:, : prec.shape[1]]
        w.copy_(lt.from_rows(mod, nw, w.shape).to(dtype=w.dtype, device=w.device))
        if bias is not None:
            bias.copy_(new[:, -1].to(dtype=bias.dtype, device=bias.device))
    return {"output_norm": norm, "output_error_zeroed": err["zeroed"] / max(norm, 1e-30),
            "output_error_reduced": err["reduced"] / max(norm, 1e-30)}

"""Row-correlated (Kronecker-factored Laplace) posteriors of the layers that consume units.

For every unit group whose units reach the rest of the network through one layer whose type
reads its weight as rows (bmr_compress.layers: nn.Linear, nn.Conv2d, transformers' Conv1D;
the FFN output projection for FFN neurons, the attention output projection for heads, the
next layer for neurons and filters of generic nets), this module measures what bmr/structured.py needs:

* A = E[x xᵀ] of the consumer's input over calibration tokens (padding excluded; a bias
  joins as a constant input 1), recomputed through the already-reduced network when asked;
* b_i, the output-side factor of consumer row i: the trace of the row's Gauss–Newton block
  (per-example weight gradients of a Gaussian probe vᵀf̃, f̃ the task output relative to its
  RMS size, tasks.probe_output) divided by tr(A);
* s², the layer's empirical-Bayes prior variance mean(w0²).

Groups read by several layers, or owning norm/embedding slices (hidden dimensions), are not
scored here: they are reported as unsupported and kept.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from bmr_compress.layers import layer_type
from bmr_compress.coupling.groups import UnitGroup
from bmr_compress.variational.ddp import batch_size, current_shard

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Site:
    """One consumer layer and, per group it consumes, the columns each unit owns there."""

    module: str
    columns: dict[str, torch.Tensor]  # group name -> LongTensor (num_units, k) into rows(W)


def consumer_sites(model: nn.Module, groups: Iterable[UnitGroup],
                   kinds: Iterable[str]) -> tuple[dict[str, Site], list[str]]:
    """(module name -> Site) for scoreable groups of the given kinds, and the names of the
    groups of those kinds that cannot be scored here (kept)."""
    mods = dict(model.named_modules())
    kinds = set(kinds)
    sites: dict[str, Site] = {}
    unsupported: list[str] = []
    for g in groups:
        if g.kind not in kinds or g.num_units == 0:  # a branch an earlier round removed
            continue
        ins = [s for s in g.slices if s.role == "in"]
        if any(s.role in ("norm", "embed") for s in g.slices) or not ins:
            unsupported.append(g.name)
            continue
        owners = {s.param.rpartition(".")[0] for s in ins}
        name = owners.pop() if len(owners) == 1 else None
        mod = mods.get(name) if name is not None else None
        lt = layer_type(mod) if mod is not None else None
        if lt is None or not lt.rows_ok(mod) or any(s.param != f"{name}.weight" for s in ins):
            unsupported.append(g.name)
            continue
        cols = [lt.columns(mod, s.dim, s.index) for s in ins]
        if any(c is None for c in cols):
            unsupported.append(g.name)
            continue
        site = sites.setdefault(name, Site(name, {}))
        site.columns[g.name] = torch.cat(cols, 1)
    return sites, unsupported


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _to(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


class _Captured(Exception):
    """Raised from a hook once every requested layer has seen its input."""


def input_moments(model: nn.Module, names: Iterable[str],
                  batches: Iterable[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
    """A = E[x xᵀ] (float64, bias column last when the layer has one) of each named layer's
    input over the real tokens of `batches` (positions with attention_mask 0 excluded).
    Under a Shard (variational.ddp) each process reads its slice of every batch and the sums
    are added over the processes."""
    mods = dict(model.named_modules())
    names = list(names)
    sums: dict[str, list[Any]] = {}
    state: dict[str, Any] = {"mask": None, "seen": set()}
    hooks = []
    for name in names:
        def hook(m: nn.Module, inp: tuple[Any, ...], _out: Any, key: str = name) -> None:
            x = inp[0].detach()
            mask = state["mask"]
            if mask is not None and x.dim() == 3 and tuple(x.shape[:2]) == tuple(mask.shape):
                x = x[mask.bool()]  # (tokens, d)
            x = layer_type(m).input_rows(m, x.float()).flatten(0, 1).double()  # (N, d)
            if getattr(m, "bias", None) is not None:
                x = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)], 1)
            acc = sums.setdefault(key, [0.0, 0])
            acc[0] = acc[0] + (x.T @ x).cpu()
            acc[1] += x.shape[0]
            state["seen"].add(key)
            if len(state["seen"]) == len(names):
                raise _Captured  # every layer has its input: skip the rest of the forward
        hooks.append(mods[name].register_forward_hook(hook))
    device, shard = _device(model), current_shard()
    try:
        with torch.no_grad():
            for b in batches:
                b = b if shard is None else shard.local(b)
                state["mask"] = b.get("attention_mask")
                state["seen"] = set()
                try:
                    model(**_to(b, device))
                except _Captured:
                    pass
    finally:
        for h in hooks:
            h.remove()
    if shard is not None:  # every process's hooks saw the same layers
        totals = shard.sum_dict({k: s for k, (s, _) in sums.items()})
        counts = dict(zip(sorted(sums), shard.total([sums[k][1] for k in sorted(sums)])))
        sums = {k: [totals[k], counts[k]] for k in sums}
    return {k: s / max(n, 1) for k, (s, n) in sums.items()}


def row_scales(model: nn.Module, names: Iterable[str], batches: Iterable[Mapping[str, Any]],
               task: str, scale: float, a_in: Mapping[str, torch.Tensor], *,
               seed: int = 0) -> dict[str, torch.Tensor]:
    """Output-side Kronecker factor b_i of every output row i of each named layer.

    The Gauss–Newton block of row i is C_i = E_n[g_ni g_niᵀ] with g_ni = ∇_{w_i} vᵀ(f_n/scale)
    for a Gaussian probe v (E_v gives JᵀJ); it sums over the tokens of an example *before*
    squaring, so errors that agree across tokens (which mean pooling adds up) are counted.
    b_i is matched in trace to the Kronecker form: b_i = tr(C_i) / tr(A) with A = a_in[name]
    (bias column included on both sides). One probe per example.
    """
    mods = dict(model.named_modules())
    sums: dict[str, torch.Tensor] = {}
    hooks = []
    for name in names:
        def hook(m: nn.Module, inp: tuple[Any, ...], out: Any, key: str = name) -> None:
            if not isinstance(out, torch.Tensor) or not out.requires_grad:
                return
            x = _per_example_inputs(m, inp[0].detach())  # (B, positions, d[+1])

            def grad_hook(g: torch.Tensor, key: str = key, m: nn.Module = m,
                          x: torch.Tensor = x) -> None:
                u = _per_example_grads(m, g.detach())  # (B, positions, rows)
                gw = torch.einsum("bpr,bpd->brd", u.double(), x.double())  # per-example ∇W
                sums[key] = sums.get(key, 0.0) + (gw ** 2).sum((0, 2)).cpu()
            out.register_hook(grad_hook)
        hooks.append(mods[name].register_forward_hook(hook))
    count = probe_backward(model, batches, task, scale, hooks, seed=seed)
    shard = current_shard()
    if shard is not None:
        sums = shard.sum_dict(sums)
    return {k: s / max(count, 1) / max(float(torch.trace(a_in[k])), 1e-30)
            for k, s in sums.items()}


def probe_backward(model: nn.Module, batches: Iterable[Mapping[str, Any]], task: str,
                   scale: float, hooks: list[Any], *, seed: int = 0,
                   before: Callable[[Mapping[str, Any]], None] | None = None) -> int:
    """One backward pass of a Gaussian probe vᵀ(f_n/scale) per batch, every parameter
    requiring grad meanwhile: the gradient hooks the caller registered (`hooks`, removed
    here at the end) accumulate their Gauss–Newton statistics. `before(batch)` runs ahead of
    each forward. Returns the number of examples seen; requires_grad and .grad are restored.

    Under a Shard each process runs its slice of every batch (`before` gets that slice) with
    its rows of the probe one process would draw for the whole batch; the count returned is
    the global one, the caller sums its statistics over the processes."""
    from bmr_compress.tasks import probe_output

    flags = [(p, p.requires_grad) for p in model.parameters()]
    gen = torch.Generator().manual_seed(seed)
    device, count, shard = _device(model), 0, current_shard()
    try:
        for p, _ in flags:
            p.requires_grad_(True)
        with torch.enable_grad():
            for b in batches:
                if shard is not None:
                    n = batch_size(b)
                    start, stop = shard.bounds(n)
                    b = shard.local(b)
                if before is not None:
                    before(b)
                f = probe_output(model, _to(b, device), task)  # (B, m)
                if shard is None:
                    v = torch.randn(f.shape, generator=gen).to(f)
                else:  # this rank's rows of the whole batch's probe
                    v = torch.randn((n, *f.shape[1:]), generator=gen)[start:stop].to(f)
                ((v * f).sum() / scale).backward()
                count += f.shape[0] if shard is None else n
    finally:
        for h in hooks:
            h.remove()
        for p, flag in flags:
            p.requires_grad_(flag)
            p.grad = None
    return count


def _per_example_inputs(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, positions, d) layer inputs in the rows' column order, a 1 appended for a bias."""
    x = layer_type(m).input_rows(m, x)
    if getattr(m, "bias", None) is not None:
        x = torch.cat([x, torch.ones(*x.shape[:2], 1, dtype=x.dtype, device=x.device)], 2)
    return x


def _per_example_grads(m: nn.Module, g: torch.Tensor) -> torch.Tensor:
    """(B, positions, rows) gradients with respect to the layer's output rows."""
    return layer_type(m).output_rows(m, g)


def output_scale(model: nn.Module, batches: Iterable[Mapping[str, Any]], task: str) -> float:
    """RMS size sqrt(E_n ‖f_n‖²) of the task output (1 for normalised embeddings)."""
    from bmr_compress.tasks import probe_output

    total, n = 0.0, 0
    device, shard = _device(model), current_shard()
    with torch.no_grad():
        for b in batches:
            f = probe_output(model, _to(b if shard is None else shard.local(b), device), task)
            total += float((f.double() ** 2).sum())
            n += f.shape[0]
    if shard is not None:
        total, n = shard.total([total, n])
    return max(total / max(n, 1), 1e-30) ** 0.5


def layer_weight(model: nn.Module, name: str) -> torch.Tensor:
    """The consumer's weight as (rows, d) rows, its bias appended as the last column."""
    mod = model.get_submodule(name)
    w = layer_type(mod).rows(mod, mod.weight.detach()).double().cpu()
    if getattr(mod, "bias", None) is not None:
        w = torch.cat([w, mod.bias.detach().double().cpu()[:, None]], 1)
    return w


def prior_variance(model: nn.Module, name: str) -> float:
    """Empirical-Bayes prior variance of the layer: mean(w0²) over its weight."""
    w = model.get_submodule(name).weight.detach().double()
    return max(float((w ** 2).mean()), 1e-30)

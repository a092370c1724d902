"""Shared helpers for surgery tests: random plans and the zeroed reference model."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bmr_compress.planning import Plan, PlanSettings, structured_masks
from bmr_compress.coupling import UnitGroup
from bmr_compress.cutting.saved import ARCHITECTURES, register_architecture
from tests.tiny_models import ResConcatNet, TinyMLP


def random_keep(groups: list[UnitGroup], seed: int = 0, frac: float = 0.4) -> dict[str, list[int]]:
    """Remove a random ~frac of every group's units (always keep at least one)."""
    g = torch.Generator().manual_seed(seed)
    keep = {}
    for grp in groups:
        n_rm = max(1, int(round(frac * grp.num_units))) if grp.num_units > 1 else 0
        n_rm = min(n_rm, grp.num_units - 1)
        perm = torch.randperm(grp.num_units, generator=g)
        keep[grp.name] = sorted(int(i) for i in perm[n_rm:])
    return keep


def plan_for(keep: dict[str, list[int]]) -> Plan:
    return Plan(keep, {}, PlanSettings(round_to=0))


def _masked_norm_forward(module: nn.Module, keep: torch.Tensor):
    """Normalise over kept hidden dims only; removed dims output 0 (the cut model's math)."""
    if isinstance(module, nn.LayerNorm):
        def fwd(x: torch.Tensor) -> torch.Tensor:
            y = torch.zeros_like(x)
            w = module.weight[keep] if module.weight is not None else None
            b = module.bias[keep] if module.bias is not None else None
            y[..., keep] = F.layer_norm(x[..., keep], (len(keep),), w, b, module.eps)
            return y
    else:  # RMSNorm (LLaMA-style): x * rsqrt(mean(x^2) + eps) * w
        def fwd(x: torch.Tensor) -> torch.Tensor:
            xk = x[..., keep].float()
            xk = xk * torch.rsqrt(xk.pow(2).mean(-1, keepdim=True) + module.variance_epsilon)
            y = torch.zeros_like(x)
            y[..., keep] = module.weight[keep] * xk.to(x.dtype)
            return y
    return fwd


def zeroed_reference(model: nn.Module, groups: list[UnitGroup], plan: Plan) -> nn.Module:
    """Same-shape model whose removed units' slices are all zero.

    Zeroing all of a unit's slices (producing rows/biases, norm parameters, consuming
    columns) makes its contribution vanish for neurons, filters, heads (q=k=v=0: the head
    outputs 0) and KV groups. A hidden dim under LayerNorm/RMSNorm is different: zeroing
    it still changes the norm's mean/variance over the other dims, so the equivalent
    reference additionally normalises over the kept dims only.
    """
    ref = copy.deepcopy(model)
    shapes = {k: v.shape for k, v in ref.state_dict().items()}
    masks = structured_masks(groups, plan, shapes)
    state = ref.state_dict(keep_vars=True)
    with torch.no_grad():
        for k, m in masks.items():
            state[k].mul_(m.to(state[k].dtype))
    for grp in groups:
        if grp.kind != "hidden" or len(plan.keep[grp.name]) == grp.num_units:
            continue
        keep = torch.tensor(plan.keep[grp.name])
        for s in grp.slices:
            if s.role == "norm" and s.param.endswith(".weight"):
                mod = ref.get_submodule(s.param.rpartition(".")[0])
                mod.forward = _masked_norm_forward(mod, keep)
    return ref


def out_tensor(out) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if getattr(out, "logits", None) is not None:
        return out.logits
    return out.last_hidden_state


def assert_close_rel(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-5) -> None:
    err = (a - b).abs().max().item()
    scale = max(b.abs().max().item(), 1e-12)
    assert err <= rel * scale, f"max abs err {err:.3e} > {rel} * {scale:.3e}"


@pytest.fixture(scope="session", autouse=True)
def _tiny_architectures():
    """Register the generic tiny nets so load_compressed can rebuild them by name."""
    if "tiny_mlp" not in ARCHITECTURES:
        register_architecture("tiny_mlp")(lambda cfg: TinyMLP(**cfg))
    if "res_concat" not in ARCHITECTURES:
        register_architecture("res_concat")(lambda cfg: ResConcatNet(**cfg))
    yield

"""Scoring: a unit's ΔlnZ is the sum of its weights' ΔlnZ over every coupled slice."""

from __future__ import annotations

import math

import torch

from bmr_compress.bmr import bmrs_n_delta_lnz, spike_delta_lnz
from bmr_compress.planning import structured_masks
from bmr_compress.scoring import score_groups, score_weights
from bmr_compress.coupling import discover_groups
from bmr_compress.planning.plan import Plan, PlanSettings
from bmr_compress.variational.state import GateTensor, PosteriorTensor
from tests.tiny_models import ResConcatNet, tiny_llama


def _posterior(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, p in model.named_parameters():
        mu = p.detach().double()
        log_var = torch.log(mu.pow(2).mean() + 1e-6) + torch.randn(mu.shape, generator=g,
                                                                   dtype=torch.float64)
        out[name] = PosteriorTensor(mu, log_var, torch.log(mu.pow(2).mean() + 1e-4))
    return out


def _brute_force(groups, weight_scores, shapes):
    """Unit j's score = sum over the union of elements it owns (mask-based, no shortcuts)."""
    out = {}
    for g in groups:
        vals = []
        for j in range(g.num_units):
            keep = [i for i in range(g.num_units) if i != j]
            masks = structured_masks([g], Plan({g.name: keep}, {}, PlanSettings()), shapes)
            vals.append(sum(float(weight_scores[k][~m].sum()) for k, m in masks.items()
                            if k in weight_scores))
        out[g.name] = torch.tensor(vals, dtype=torch.float64)
    return out


def test_weight_scores_are_spike():
    model = ResConcatNet()
    post = _posterior(model)
    ws = score_weights(post)
    p = post["stem.weight"]
    half = 0.5 * (p.prior_log_var - p.log_var - p.mu.pow(2) / p.log_var.exp())
    torch.testing.assert_close(ws["stem.weight"], half)
    torch.testing.assert_close(ws["stem.weight"], spike_delta_lnz(p.mu, p.log_var, p.prior_log_var))


def test_unit_scores_sum_every_coupled_slice():
    """ResConcatNet's stem/res group owns res.weight rows *and* columns (overlap counted once),
    BatchNorm parameters and both branch inputs; llama KV groups own q, k, v rows and o columns."""
    cases = [(ResConcatNet().double(), torch.randn(1, 3, 8, 8).double()), (tiny_llama(), None)]
    for model, x in cases:
        groups = discover_groups(model, x)
        post = _posterior(model)
        ws = score_weights(post)
        shapes = {k: v.shape for k, v in model.state_dict().items()}
        got = score_groups(groups, post)
        want = _brute_force(groups, ws, shapes)
        for name in want:
            torch.testing.assert_close(got[name], want[name], rtol=1e-9, atol=1e-9)
        assert any(len({s.dim for s in g.slices if s.param == "res.weight"}) == 2 for g in groups) \
            or model.__class__.__name__ != "ResConcatNet"


def test_gate_scores_bmrs_n():
    model = tiny_llama()
    groups = [g for g in discover_groups(model) if g.name == "layers.0.ffn"]
    n = groups[0].num_units
    mu = torch.linspace(-15, -1, n, dtype=torch.float64)
    gate = GateTensor("model.layers.0.mlp.up_proj", -1, 1, mu, torch.zeros(n, dtype=torch.float64))
    got = score_groups(groups, {}, {"model.layers.0.mlp.up_proj": gate}, rule="bmrs_n")
    want = bmrs_n_delta_lnz(mu, torch.zeros(n, dtype=torch.float64), -20.0, 0.0)
    torch.testing.assert_close(got["layers.0.ffn"], want.double())
    assert got["layers.0.ffn"][0] > got["layers.0.ffn"][-1]  # gates near ln a prune first
    # head gates with unit_size = head_dim sum over the KV group's query heads
    heads = [g for g in discover_groups(model) if g.name == "layers.1.attention"]
    hmu = torch.tensor([-1.0, -2.0, -3.0, -4.0, -5.0, -6.0], dtype=torch.float64)
    zeros = torch.zeros(6, dtype=torch.float64)
    gate = GateTensor("model.layers.1.self_attn.q_proj", -1, 8, hmu, zeros)
    got = score_groups(heads, {}, {gate.module: gate}, rule="bmrs_n")["layers.1.attention"]
    per = bmrs_n_delta_lnz(hmu, torch.zeros(6, dtype=torch.float64), -20.0, 0.0).double()
    torch.testing.assert_close(got, torch.stack([per[:3].sum(), per[3:].sum()]))
    assert math.isfinite(float(got.sum()))


import pytest  # noqa: E402

from tests.tiny_models import TRANSFORMER_BUILDERS, TinyMLP  # noqa: E402


@pytest.mark.parametrize("name", sorted(TRANSFORMER_BUILDERS) + ["mlp", "resconcat"])
def test_gate_sites_wrap_and_score(name):
    """gate_sites gives PosteriorSpec.gates that wrap_ accepts; BMRS scores cover gated groups
    and a gate pushed to ln a makes its unit the most prunable."""
    from bmr_compress.scoring import gate_site, gate_sites
    from bmr_compress.variational import PosteriorSpec, gate_tensors, posterior_tensors, wrap_

    if name == "mlp":
        model, x = TinyMLP(), torch.randn(2, 64)
    elif name == "resconcat":
        model, x = ResConcatNet(), torch.randn(2, 3, 8, 8)
    else:
        model, x = TRANSFORMER_BUILDERS[name](), None
    groups = discover_groups(model, x)
    sites = gate_sites(groups)
    assert sites or name == "resconcat"
    wrap_(model, PosteriorSpec(gates=tuple(sites)))
    gates = gate_tensors(model)
    gated = [g for g in groups if gate_site(g) is not None]
    with torch.no_grad():
        for g in gated:
            mod = gate_site(g)[0]
            model.get_submodule(mod).bmr_gate_mu[0] = -19.0  # unit 0 of each gated module
    gates = gate_tensors(model)
    scores = score_groups(groups, posterior_tensors(model), gates, rule="bmrs_n")
    for g in groups:
        assert torch.isfinite(scores[g.name]).all(), g.name
    for g in gated:
        assert int(scores[g.name].argmax()) == 0, g.name
    if name in ("gpt2",):  # fused qkv: heads fall back to the spike rule
        assert all(g.kind != "head" for g in gated)

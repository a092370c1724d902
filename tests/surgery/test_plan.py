"""Planning: ΔlnZ ≥ 0 rule, Beta–Bernoulli option, rounding, budgets, JSON round trip."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bmr_compress.errors import InputError
from bmr_compress.planning import Plan, PlanSettings, make_plan
from bmr_compress.coupling import Slice, UnitGroup
from bmr_compress.coupling.groups import column
from bmr_compress.planning.plan import rounded_count, unstructured_masks


def _group(name: str, n: int, width: int = 1, kind: str = "neuron") -> UnitGroup:
    return UnitGroup(name, kind, n, (Slice(f"{name}.weight", 0, column(n)),), unit_width=width,
                     numel_per_unit=10)


def test_zero_threshold_prunes_nonnegative_only():
    g = _group("a", 5)
    scores = {"a": torch.tensor([-1.0, 0.0, 2.0, -0.5, 3.0], dtype=torch.float64)}
    plan = make_plan([g], scores, None, PlanSettings(round_to=0, unstructured=False))
    assert plan.keep["a"] == [0, 3]


def test_keeps_at_least_min_units():
    g = _group("a", 4)
    scores = {"a": torch.tensor([1.0, 2.0, 3.0, 0.5], dtype=torch.float64)}
    plan = make_plan([g], scores, None, PlanSettings(round_to=0))
    assert plan.keep["a"] == [3]  # the unit losing the most evidence (lowest ΔlnZ) survives


def test_beta_bernoulli_threshold_is_used():
    g = _group("a", 6)
    scores = {"a": torch.tensor([-3.0, -2.0, 0.2, 0.1, -1.0, -4.0], dtype=torch.float64)}
    plan = make_plan([g], scores, None, PlanSettings(round_to=0, threshold="beta_bernoulli"))
    zeta = plan.summary["a"]["threshold"]
    assert zeta > 0.2  # mostly-kept layer: ζ > 0 keeps the slightly positive units
    assert plan.keep["a"] == list(range(6))


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 70), width=st.sampled_from([1, 3, 8, 12, 24]),
       multiple=st.sampled_from([2, 8, 16]), seed=st.integers(0, 10_000))
def test_rounding_gives_multiples(n, width, multiple, seed):
    g = _group("a", n, width)
    gen = torch.Generator().manual_seed(seed)
    scores = {"a": torch.randn(n, generator=gen, dtype=torch.float64)}
    plan = make_plan([g], scores, None, PlanSettings(round_to=multiple))
    kept = len(plan.keep["a"])
    step = multiple // math.gcd(multiple, width)
    if n >= step:
        assert (kept * width) % multiple == 0, (kept, width, multiple)
    else:  # the whole structure would vanish: kept unrounded, never empty
        assert kept >= 1
    # rounding follows the ranking: every kept unit scores <= every removed one
    removed = sorted(set(range(n)) - set(plan.keep["a"]))
    if removed:
        assert scores["a"][plan.keep["a"]].max() <= scores["a"][removed].min()


def test_rounding_nearest_and_bounds():
    g = _group("a", 37)
    assert rounded_count(g, 13, 8, 1) == 16
    assert rounded_count(g, 11, 8, 1) == 8
    assert rounded_count(g, 12, 8, 1) == 16  # ties go up
    assert rounded_count(g, 1, 8, 1) == 8  # never round to zero
    assert rounded_count(g, 37, 8, 1) == 40 - 8  # never above num_units
    assert rounded_count(_group("b", 5), 3, 8, 1) == 3  # no multiple fits: unrounded
    assert rounded_count(g, 13, 0, 1) == 13  # off


def test_budget_removes_in_delta_lnz_order():
    a, b = _group("a", 4), _group("b", 4)
    scores = {"a": torch.tensor([-5.0, -1.0, -2.0, -9.0], dtype=torch.float64),
              "b": torch.tensor([-3.0, -0.5, -7.0, -8.0], dtype=torch.float64)}
    # all ΔlnZ < 0: nothing would be pruned without a budget; 80 params = 8 units kept -> 5
    plan = make_plan([a, b], scores, None, PlanSettings(round_to=0, max_params=50))
    removed = {(k, j) for k, v in plan.keep.items() for j in range(4) if j not in v}
    assert removed == {("b", 1), ("a", 1), ("a", 2)}


def test_plan_json_round_trip_and_strict_settings():
    g = _group("a", 5)
    scores = {"a": torch.tensor([-1.0, 0.0, 2.0, -0.5, 3.0], dtype=torch.float64)}
    ws = {"a.weight": torch.tensor([[0.5, -1.0], [2.0, -3.0]])}
    plan = make_plan([g], scores, ws, PlanSettings(round_to=0))
    again = Plan.from_json(json.loads(json.dumps(plan.to_json(), allow_nan=False)))
    assert again == plan
    masks = unstructured_masks(again, ws)
    assert masks["a.weight"].tolist() == [[False, True], [False, True]]
    with pytest.raises(InputError):
        PlanSettings.from_dict({"round_to": 8, "ratio": 0.5})
    with pytest.raises(InputError):
        PlanSettings(threshold="magic")


def test_plan_is_remade_from_posterior_safetensors(tmp_path):
    """Re-planning needs only posterior.safetensors (and the groups): no refit, same plan."""
    from bmr_compress.scoring import score_groups, score_weights
    from bmr_compress.coupling import discover_groups
    from bmr_compress.variational import load_posterior, save_posterior
    from tests.surgery.test_scoring import _posterior
    from tests.tiny_models import tiny_gpt2

    model = tiny_gpt2()
    groups = discover_groups(model)
    post = {k: type(v)(v.mu.float(), v.log_var.float(), v.prior_log_var.float())
            for k, v in _posterior(model).items()}
    settings_ = PlanSettings(round_to=4, threshold="beta_bernoulli")
    plan = make_plan(groups, score_groups(groups, post), score_weights(post), settings_)
    path = save_posterior(tmp_path / "posterior.safetensors", post, {"seed": 0})
    again = load_posterior(path).tensors
    plan2 = make_plan(groups, score_groups(groups, again), score_weights(again), settings_)
    assert plan2.keep == plan.keep
    assert {k: v.num_pruned for k, v in plan2.unstructured.items()} == \
        {k: v.num_pruned for k, v in plan.unstructured.items()}


def test_budget_with_rounding_rounds_down():
    g = _group("a", 40)
    scores = {"a": -torch.arange(40, dtype=torch.float64)}  # nothing prunable by evidence
    plan = make_plan([g], scores, None, PlanSettings(round_to=8, max_params=10 * 21))
    assert len(plan.keep["a"]) == 16  # 21 fit the budget; 16 is the multiple below
    assert plan.keep["a"] == list(range(24, 40))  # the most important (lowest ΔlnZ) stay


def test_latency_budget_in_macs():
    from bmr_compress.cutting import apply_plan_
    from bmr_compress.scoring import unit_macs
    from bmr_compress.coupling import discover_groups
    from tests.tiny_models import ResConcatNet, TinyMLP

    mlp = TinyMLP()
    groups = discover_groups(mlp, torch.randn(2, 64))
    macs = unit_macs(mlp, groups, torch.randn(3, 64))
    assert macs == {"net.0": 64 + 29, "net.2": 37 + 10}
    net = ResConcatNet()
    cgroups = discover_groups(net, torch.randn(1, 3, 8, 8))
    cm = unit_macs(net, cgroups, torch.randn(2, 3, 8, 8))
    assert cm["branch_b"] == 7 * 9 * 64 + 9 * 64  # its filter + its column of the 1x1 fuse
    scores = {g.name: torch.linspace(-3, -1, g.num_units, dtype=torch.float64) for g in groups}
    full = sum(macs[g.name] * g.num_units for g in groups)
    plan = make_plan(groups, scores, None, PlanSettings(round_to=0, max_macs=0.5 * full),
                     unit_macs=macs)
    cost = sum(macs[g] * len(k) for g, k in plan.keep.items())
    assert 0.5 * full - max(macs.values()) < cost <= 0.5 * full
    before = sum(p.numel() for p in mlp.parameters())
    record = apply_plan_(mlp, groups, plan)
    assert record.params_after < before
    with pytest.raises(InputError):
        make_plan(groups, scores, None, PlanSettings(max_macs=1.0))


def test_rounding_direction_follows_evidence():
    g = _group("a", 24)
    # 13 units have ΔlnZ < 0 (keep by evidence); 11 are prunable
    keep_s = torch.tensor([-9.0] * 8 + [-0.01] * 5, dtype=torch.float64)
    cheap_add = torch.cat([keep_s, torch.full((11,), 0.01, dtype=torch.float64)])
    plan = make_plan([g], {"a": cheap_add}, None, PlanSettings(round_to=8))
    assert len(plan.keep["a"]) == 16  # adding back 3 × 0.01 = 0.03 < dropping 5 × 0.01
    slightly = torch.cat([keep_s, torch.full((11,), 0.02, dtype=torch.float64)])
    assert len(make_plan([g], {"a": slightly}, None, PlanSettings(round_to=8)).keep["a"]) == 8
    costly_add = torch.cat([keep_s, torch.full((11,), 5.0, dtype=torch.float64)])
    plan2 = make_plan([g], {"a": costly_add}, None, PlanSettings(round_to=8))
    assert len(plan2.keep["a"]) == 8  # adding back clearly prunable units costs more
    important = torch.cat([torch.full((13,), -9.0, dtype=torch.float64),
                           torch.full((11,), 5.0, dtype=torch.float64)])
    plan3 = make_plan([g], {"a": important}, None, PlanSettings(round_to=8))
    assert len(plan3.keep["a"]) == 16  # dropping 5 important units costs 45 > 15
    pinned = torch.cat([keep_s, torch.full((11,), math.inf, dtype=torch.float64)])
    plan4 = make_plan([g], {"a": pinned}, None, PlanSettings(round_to=8))
    assert len(plan4.keep["a"]) == 16  # pinned-at-zero units come back for free

"""bench/common.py: baseline plans hit BMR's sparsity exactly and cut a real model."""

from __future__ import annotations

import pytest
import torch

from bench import baselines as B
from bench import common as C
from tests.tiny_models import TinyMLP


@pytest.fixture(scope="module")
def fitted():
    from bmr_compress.coupling import discover_groups
    from bmr_compress.variational import PosteriorSpec, posterior_tensors, wrap_

    torch.manual_seed(0)
    model = TinyMLP()
    x = torch.randn(16, 64)
    groups = discover_groups(model, {"pixel_values": x})
    wrap_(model, PosteriorSpec(init_std_ratio=0.5))  # wide posterior: BMR prunes something
    post = posterior_tensors(model)
    return model, groups, post, x


@pytest.mark.parametrize("method", ["magnitude", "snr", "wanda", "random"])
def test_equal_plan_matches_bmr_nonzero_count(fitted, method):
    from bmr_compress.scoring import score_groups, score_weights

    model, groups, post, x = fitted
    shapes = C.shapes_of(post)
    ref = C.bmr_plan(groups, score_groups(groups, post), score_weights(post), shapes)
    total = sum(m.numel() for m in ref.masks.values())
    assert 0 < ref.nonzero() < total  # BMR chose some sparsity
    plain = C.plain_copy(model)
    units, weights = B.baseline_scores(method, groups, post, plain,
                                       [{"pixel_values": x}], seed=0)
    assert set(units) == {g.name for g in groups}
    assert all(weights[k].shape == shapes[k] for k in shapes)
    mp = C.equal_plan(groups, units, weights, shapes, ref)
    assert mp.nonzero() == ref.nonzero()
    cut, _ = C.apply_method(plain, groups, mp)
    assert C.count_nonzero(cut) <= ref.nonzero()
    assert cut(pixel_values=x).shape == (16, 10)


def test_structured_reference_is_matched_exactly(fitted):
    from bmr_compress.planning import PlanSettings, make_plan

    model, groups, post, x = fitted
    shapes = C.shapes_of(post)
    keep = {g.name: list(range(g.num_units // 2)) for g in groups}  # a reference that cuts half
    plan = make_plan(groups, {g.name: -torch.ones(g.num_units, dtype=torch.float64)
                              for g in groups}, None, PlanSettings(round_to=1))
    ref = C.MethodPlan(keep, {k: torch.ones(s, dtype=torch.bool) for k, s in shapes.items()}, plan)
    ref.masks = C.keep_masks(groups, type(plan)(keep, {}, plan.settings), shapes)
    units, weights = B.baseline_scores("magnitude", groups, post, C.plain_copy(model), [], 0)
    mp = C.equal_plan(groups, units, weights, shapes, ref)
    assert any(len(mp.keep[g.name]) < g.num_units for g in groups)  # it cut structure too
    assert mp.nonzero() == ref.nonzero()

"""Iterative BMR loop against a scripted refit: stops by itself, cumulative, best round kept."""

from __future__ import annotations

import torch

from bmr_compress.planning import PlanSettings, iterate_bmr
from bmr_compress.coupling import Slice, UnitGroup
from bmr_compress.coupling.groups import column

N = 10


def _setup():
    g = UnitGroup("fc", "neuron", N, (Slice("fc.weight", 0, column(N)),
                                      Slice("fc.bias", 0, column(N))), numel_per_unit=4)
    shapes = {"fc.weight": torch.Size([N, 3]), "fc.bias": torch.Size([N])}
    return [g], shapes


def test_stops_when_a_round_prunes_nothing():
    groups, shapes = _setup()
    calls = {"n": 0}

    def score():
        # round r: units 0..2r+1 look prunable (drifting evidence, as after a refit)
        r = calls["n"]
        calls["n"] += 1
        unit = torch.full((N,), -1.0, dtype=torch.float64)
        unit[: min(2 * r + 2, 5)] = 1.0
        weights = {k: torch.full(s, -1.0) for k, s in shapes.items()}
        return {"fc": unit}, weights

    seen = []

    def refit(masks):
        seen.append({k: m.clone() for k, m in masks.items()})
        return -float((~masks["fc.bias"]).sum()) * 0.0 + len(seen)  # improving ELBO

    res = iterate_bmr(groups, shapes, score, refit, PlanSettings(round_to=0), max_rounds=20)
    assert res.stop_reason == "a round pruned nothing"
    assert [r.newly_pruned for r in res.rounds] == [8, 8, 4]
    assert res.rounds[-1].pruned_fraction == (5 * 4) / (N * 4)
    fr = [r.pruned_fraction for r in res.rounds]
    assert fr == sorted(fr)  # cumulative: once pruned, stays pruned
    assert res.masks["fc.bias"].tolist() == [False] * 5 + [True] * 5
    assert res.pruned_units == {"fc": [0, 1, 2, 3, 4]}


def test_stops_when_heldout_elbo_stops_improving():
    groups, shapes = _setup()
    r = {"n": 0}

    def score():
        r["n"] += 1
        unit = torch.full((N,), -1.0, dtype=torch.float64)
        unit[: r["n"]] = 1.0  # one more unit per round, forever
        return {"fc": unit}, {}

    elbos = iter([-3.0, -2.0, -2.5, -1.0])
    res = iterate_bmr(groups, shapes, score, lambda m: next(elbos), PlanSettings(round_to=0))
    assert res.stop_reason == "held-out ELBO stopped improving"
    assert [x.heldout_elbo for x in res.rounds] == [-3.0, -2.0, -2.5]
    assert res.best_round == 1
    assert int((~res.masks["fc.bias"]).sum()) == 2  # the best round's masks, not the last
    assert res.to_json()["rounds"][0]["pruned_fraction"] > 0


def test_final_plan_after_iteration_is_strict_json():
    import json

    from bmr_compress.planning import make_plan, pin_scores

    groups, shapes = _setup()
    unit = torch.full((N,), -1.0, dtype=torch.float64)
    unit[:3] = 1.0
    res = iterate_bmr(groups, shapes, lambda: ({"fc": unit}, {}), lambda m: 0.0,
                      PlanSettings(round_to=0))
    plan = make_plan(groups, pin_scores({"fc": unit}, res), None, PlanSettings(round_to=4))
    # 7 survivors round to 8: one pinned unit (its weights pinned at zero) is added back
    assert len(plan.keep["fc"]) == 8 and set(range(3, 10)) <= set(plan.keep["fc"])
    json.dumps(plan.to_json(), allow_nan=False)
    json.dumps(res.to_json(), allow_nan=False)

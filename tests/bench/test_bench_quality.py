"""bench/quality.py verdict: strict wins / ties / losses per seed, compensated baselines
against BMR with its step, choices alone against BMR zeroed; independent calibration splits."""

from __future__ import annotations

import torch

from bench import common as C
from bench import quality as Q


def _res(name: str, **runs: list[float]) -> dict:
    return {"model": name, "task": "classification",
            "runs": {m: {"metric": v} for m, v in runs.items()}}


def test_verdict_is_strict_and_pairs_like_with_like():
    base = dict(magnitude=[0.99, 0.99, 0.99], snr=[0.5, 0.5, 0.5], wanda=[0.5, 0.5, 0.5],
                random=[0.1, 0.1, 0.1], tp_magnitude=[0.8, 0.8, 0.8],
                magnitude_comp=[0.94, 0.96, 0.99], snr_comp=[0.1, 0.1, 0.1],
                wanda_comp=[0.95, 0.95, 0.95])
    results = [_res("m1", bmr=[0.95, 0.96, 0.98], bmr_zeroed=[0.9, 0.9, 0.99], **base),
               _res("m2", bmr=[0.95, 0.95, 0.95], bmr_zeroed=[0.5, 0.6, 0.4], **base)]
    text, totals = Q.verdict(results)
    # BMR (with the step) is paired with the compensated rows, never with the zeroed ones
    assert totals["vs magnitude_comp"] == [1 + 1, 1 + 0, 1 + 2]
    assert totals["vs wanda_comp"] == [2 + 0, 1 + 3, 0 + 0]  # equal metrics are ties, not wins
    assert totals["vs snr_comp"] == [6, 0, 0]
    # BMR's choice alone is paired with each baseline's choice alone
    assert totals["alone vs magnitude"] == [0, 1, 5]
    assert totals["alone vs snr"] == [3 + 1, 0 + 1, 0 + 1]
    assert "| **all models** |" in text and "0.9000 → 0.9600" in text  # the step's effect


def test_paired_counts_per_seed():
    assert Q.paired([1, 2, 3, 4], [0, 2, 5, 4]) == (1, 2, 1)


def test_each_seed_gets_its_own_calibration_split_and_the_same_heldout():
    x = torch.arange(40.0).reshape(20, 2)
    y = torch.arange(20)
    train = [{"x": x[i:i + 5], "labels": y[i:i + 5]} for i in range(0, 20, 5)]
    case = C.Case("t", torch.nn.Identity(), train, [{"x": x[:2]}], "classification", [], "toy")
    a, b, a2 = Q.reshuffled(case, 0), Q.reshuffled(case, 1), Q.reshuffled(case, 0)
    firsts = [torch.cat([bt["labels"] for bt in c.train]) for c in (a, b, a2)]
    assert sorted(firsts[0].tolist()) == list(range(20))  # a permutation, nothing lost
    assert not torch.equal(firsts[0], firsts[1]) and torch.equal(firsts[0], firsts[2])
    for c in (a, b):
        assert c.heldout is case.heldout and len(c.train) == 4
        for bt in c.train:  # rows stay together across keys
            assert torch.equal(bt["x"][:, 0], 2.0 * bt["labels"])

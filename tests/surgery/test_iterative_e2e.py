"""Iterative BMR end to end with the real variational fine-tune: it stops by itself on the
digits MLP (classification) and on the diabetes regression set, reporting every round's
pruned fraction and held-out ELBO; the final plan is cut and the model still works."""

from __future__ import annotations

import math

import pytest
import torch

from bmr_compress.cutting import apply_plan_
from bmr_compress.planning import PlanSettings, make_plan, pin_scores, unstructured_masks
from bmr_compress.scoring import score_groups, score_weights
from bmr_compress.coupling import discover_groups
from bmr_compress.algorithms.refit import iterate_with_finetune
from bmr_compress.variational import (
    FinetuneSettings, PosteriorSpec, finetune, posterior_tensors, unwrap_, wrap_,
)
from tests.tiny_models import TinyMLP

pytestmark = pytest.mark.slow


def _data(name: str):
    from sklearn.datasets import load_diabetes, load_digits

    if name == "digits":
        X, y = load_digits(return_X_y=True)
        X, y = torch.tensor(X / 16.0, dtype=torch.float32), torch.tensor(y)
    else:
        X, y = load_diabetes(return_X_y=True)
        X = torch.tensor((X - X.mean(0)) / X.std(0), dtype=torch.float32)
        y = torch.tensor((y - y.mean()) / y.std(), dtype=torch.float32)
    perm = torch.randperm(len(X), generator=torch.Generator().manual_seed(0))
    cut = int(0.78 * len(X))
    return X, y, perm[:cut], perm[cut:]


def _metric(model, X, y, name) -> float:
    with torch.no_grad():
        out = model(X)
    if name == "digits":
        return float((out.argmax(1) == y).float().mean())
    return float(1 - (out.squeeze(1) - y).pow(2).mean() / y.var())  # R²


@pytest.mark.parametrize("name", ["digits", "diabetes"])
def test_iterative_bmr_stops_by_itself(name):
    X, y, tr, te = _data(name)
    torch.manual_seed(0)
    model = TinyMLP(d_in=X.shape[1], n_out=10 if name == "digits" else 1)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(100):  # a quick deterministic "pretrained" net
        opt.zero_grad()
        out = model(X[tr])
        loss = (torch.nn.functional.cross_entropy(out, y[tr]) if name == "digits"
                else (out.squeeze(1) - y[tr]).pow(2).mean())
        loss.backward()
        opt.step()
    before = _metric(model, X[te], y[te], name)
    groups = discover_groups(model, X[:2])
    wrap_(model, PosteriorSpec(init_std_ratio=1e-2))
    n = len(tr)
    batches = [{"pixel_values": X[tr[i:i + n // 4]], "labels": y[tr[i:i + n // 4]]}
               for i in range(0, n - n // 4 + 1, n // 4)]
    held = [{"pixel_values": X[te], "labels": y[te]}]
    fs = FinetuneSettings(steps=100, lr=1e-3, log_var_lr=3e-2, n_data=200_000, device="cpu",
                          progress=False, bf16=False, hidden_noise_std=0.75)
    finetune(model, None, batches, fs)
    res = iterate_with_finetune(model, groups, None, batches, held, fs, PlanSettings(round_to=0),
                                refit_steps=30, max_rounds=12)
    print(name, res.to_json())  # each round's pruned fraction and ELBO, for the report
    assert res.stop_reason in ("a round pruned nothing", "held-out ELBO stopped improving")
    assert res.rounds and all(math.isfinite(r.heldout_elbo) for r in res.rounds)
    assert all(0 < r.pruned_fraction < 1 for r in res.rounds)
    # final plan from the refit posterior, iteration decisions pinned, widths rounded to 8
    post = posterior_tensors(model)
    ws = {k: v.masked_fill(~res.masks[k], math.inf) for k, v in score_weights(post).items()}
    plan = make_plan(groups, pin_scores(score_groups(groups, post), res), ws, PlanSettings())
    unwrap_(model)
    record = apply_plan_(model, groups, plan, weight_masks=unstructured_masks(plan, ws))
    after = _metric(model, X[te], y[te], name)
    print(name, "metric before/after", before, after, "params", record.params_before,
          record.params_after, "zeros", record.unstructured_zeros)
    assert record.params_after <= record.params_before
    assert after > before - 0.1

"""Reduced means written into real models before the cut (cutting/compensate.py)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from bmr_compress.coupling import discover_groups
from bmr_compress.cutting import apply_plan_
from bmr_compress.planning import make_plan, plan_masks, unstructured_masks
from bmr_compress.scoring import score_groups, score_weights
from bmr_compress.cutting.compensate import compensate_
from bmr_compress.planning.plan import PlanSettings
from bmr_compress.tasks import output_tensor
from bmr_compress.variational import PosteriorSpec, posterior_tensors, unwrap_, wrap_
from tests.tiny_models import ResConcatNet, TinyMLP, inputs_for, tiny_gpt2


def _posterior(model, seed=0):
    torch.manual_seed(seed)
    wrapped = copy.deepcopy(model)
    wrap_(wrapped, PosteriorSpec(init_std_ratio=0.5))  # wide: the spike rule prunes a lot
    post = posterior_tensors(wrapped)
    unwrap_(wrapped)
    return post


def _random_masks(post, frac, seed):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.rand(p.mu.shape, generator=g) > frac for k, p in post.items()
            if p.mu.dim() >= 2}


CASES = {
    "mlp": (lambda: TinyMLP(), lambda s: {"pixel_values": torch.randn(64, 64,
                                                                      generator=torch.Generator().manual_seed(s))}),
    "conv": (lambda: ResConcatNet(), lambda s: {"pixel_values": torch.randn(8, 3, 8, 8,
                                                                            generator=torch.Generator().manual_seed(s))}),
    "gpt2": (tiny_gpt2, lambda s: inputs_for("gpt2", batch=8, seq=12, seed=s)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_reduced_means_beat_zeroing_on_every_layer(case):
    make, data = CASES[case]
    torch.manual_seed(0)
    model = make().eval()
    calib = [data(s) for s in range(3)]
    post = _posterior(model)
    masks = _random_masks(post, 0.3, seed=1)
    zeroed = copy.deepcopy(model)
    with torch.no_grad():
        for n, p in zeroed.named_parameters():
            if n in masks:
                p.mul_(masks[n])
    comp = copy.deepcopy(model)
    report = compensate_(comp, post, masks, calib)
    expected = {"mlp": 3, "conv": 6, "gpt2": 8}[case]  # Linear / Conv2d / Conv1D layers
    assert len(report.layers) == expected
    for name, v in report.layers.items():
        assert v["output_error_reduced"] <= v["output_error_zeroed"] + 1e-12, name
    s = report.summary()
    assert s["output_error_reduced"] < 0.9 * s["output_error_zeroed"]
    params = dict(comp.named_parameters())
    for layer in report.layers:
        n = f"{layer}.weight"
        assert bool((params[n][~masks[n]] == 0).all()), n  # pruned entries are exactly zero
    # end to end, on held-out inputs: closer to the original model than plain zeroing
    x = data(99)
    with torch.no_grad():
        ref = output_tensor(model(**x))
        e_zero = (output_tensor(zeroed(**x)) - ref).pow(2).mean()
        e_comp = (output_tensor(comp(**x)) - ref).pow(2).mean()
    assert e_comp < e_zero


def test_structured_cut_after_reduced_means_reloads_and_runs():
    """Masks from a real plan (units + single weights): removed units are exactly zero after
    compensation, so apply_plan_ cuts them, and the cut model stays closer to the original."""
    torch.manual_seed(0)
    model = TinyMLP().eval()
    calib = [{"pixel_values": torch.randn(64, 64, generator=torch.Generator().manual_seed(s))}
             for s in range(3)]
    groups = discover_groups(copy.deepcopy(model).requires_grad_(True), calib[0])
    post = _posterior(model)
    shapes = {k: p.mu.shape for k, p in post.items()}
    weights = score_weights(post)
    owned = sum(g.numel_per_unit * g.num_units for g in groups)  # a size budget forces units out
    plan = make_plan(groups, score_groups(groups, post), weights,
                     PlanSettings(round_to=1, max_params=int(0.7 * owned)))
    assert any(len(plan.keep[g.name]) < g.num_units for g in groups)
    wm = unstructured_masks(plan, weights)
    masks = plan_masks(groups, plan, shapes, wm)
    outs = {}
    for tag in ("zeroed", "reduced"):
        m = copy.deepcopy(model)
        if tag == "reduced":
            compensate_(m, post, masks, calib)
        apply_plan_(m, groups, plan, weight_masks=wm)
        with torch.no_grad():
            outs[tag] = m(pixel_values=calib[0]["pixel_values"])
    with torch.no_grad():
        ref = model(pixel_values=calib[0]["pixel_values"])
    assert (outs["reduced"] - ref).pow(2).mean() < (outs["zeroed"] - ref).pow(2).mean()


def test_unsupported_or_unpruned_layers_are_left_alone():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(6, 5)
            self.conv = nn.Conv1d(1, 2, 3)  # not supported: zeroed by the cut only

        def forward(self, x):
            return self.conv(self.lin(x).unsqueeze(1))

    net = Net().eval()
    post = _posterior(net)
    before = copy.deepcopy(net.state_dict())
    masks = {"lin.weight": torch.ones(5, 6, dtype=torch.bool),  # nothing pruned
             "conv.weight": torch.rand(2, 1, 3) > 0.5}
    report = compensate_(net, post, masks, [{"x": torch.randn(4, 6)}])
    assert report.layers == {}
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())

"""Wrapping: identity at the mean, registry coverage, masks, gates, unwrap."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bmr_compress.errors import InputError
from bmr_compress.tasks import output_tensor
from bmr_compress.layers import LAYER_TYPES, class_path, layer_type
from bmr_compress.variational import (
    PosteriorSpec, fit_mode_, kl_divergence, posterior_tensors, set_masks_, unwrap_, wrap_,
)
from bmr_compress.variational.wrap import wrap_state
from tests.tiny_models import tiny_llama, tiny_vit, inputs_for
from tests.variational.models import CASES


def _out(model, x):
    return output_tensor(model(**x))


@pytest.mark.parametrize("name", sorted(CASES))
def test_wrap_sample_unwrap(name):
    build, inputs = CASES[name]
    model, x = build(), inputs()
    ref = _out(model, x).detach()
    classes_before = {n: type(m) for n, m in model.named_modules()}
    report = wrap_(model)
    assert not [k for k, v in report.coverage.items() if v.startswith("skipped")]
    assert {n: type(m) for n, m in model.named_modules()} == classes_before
    assert torch.equal(_out(model, x), ref)  # eval: deterministic at the mean
    fit_mode_(model)  # posterior sampling; dropout off, BatchNorm on running stats
    y1, y2 = _out(model, x), _out(model, x)
    assert torch.isfinite(y1).all() and not torch.equal(y1, y2)
    (y1.float().pow(2).sum() + kl_divergence(model)).backward()
    for e in wrap_state(model).entries.values():
        assert e.log_var.grad is not None and torch.isfinite(e.log_var.grad).all(), e.name
        assert e.log_var.grad.abs().sum() > 0, e.name
    model.eval()
    assert torch.equal(_out(model, x), ref)
    unwrap_(model)
    assert not [k for k in model.state_dict() if "bmr_" in k]
    assert torch.equal(_out(model, x), ref)
    fit_mode_(model)  # unwrapped: no hooks left, train mode no longer samples
    assert torch.equal(_out(model, x), ref)


def test_every_registered_layer_type_is_exercised():
    seen = set()
    for build, _ in CASES.values():
        for m in build().modules():
            if m._parameters:
                lt = layer_type(m)
                mro = {class_path(c) for c in type(m).__mro__}
                seen |= {t for t, tt in LAYER_TYPES.items() if tt is lt and t in mro}
    assert set(LAYER_TYPES) - {class_path(nn.Module)} <= seen, set(LAYER_TYPES) - seen


def test_conv1d_layer_type_uses_in_out_layout():
    from transformers.pytorch_utils import Conv1D

    assert type(layer_type(Conv1D(5, 3))).__name__ == "HFConv1DLayer"


@pytest.mark.parametrize("builder", [tiny_llama, tiny_vit])
def test_coverage_report_names_generic_holders(builder):
    model = builder()
    report = wrap_(model)
    assert set(report.coverage) >= {n for n, _ in model.named_parameters() if "bmr_" not in n}
    generic = {k: v for k, v in report.coverage.items() if "generic" in v}
    assert generic, "unknown holders must be reported"
    name = "vit" if builder is tiny_vit else "llama"
    x = inputs_for(name)
    fit_mode_(model)
    assert torch.isfinite(_out(model, x)).all()
    report2 = wrap_(builder(), PosteriorSpec(wrap_norms=False))
    assert all(report2.coverage[k].startswith("skipped: unknown holder") for k in generic)


def test_masks_pin_zero_and_block_gradient():
    build, inputs = CASES["mlp"]
    model = build()
    wrap_(model)
    w = model.net[0].weight
    mask = torch.rand(w.shape, generator=torch.Generator().manual_seed(0)) > 0.5
    lv_before = wrap_state(model).entries["net.0.weight"].log_var.detach().clone()
    set_masks_(model, {"net.0.weight": mask})
    assert (w[~mask] == 0).all()
    model.train()
    (_out(model, inputs()).pow(2).sum() + kl_divergence(model)).backward()
    assert (w.grad[~mask] == 0).all() and (w.grad[mask] != 0).any()
    lv = wrap_state(model).entries["net.0.weight"].log_var
    assert (lv.grad[~mask] == 0).all()
    assert torch.equal(lv.detach()[~mask], lv_before[~mask])
    # all of a layer masked => that layer's output has no noise at all
    model.zero_grad()
    full = {"net.4.weight": torch.zeros_like(model.net[4].weight, dtype=torch.bool),
            "net.4.bias": torch.zeros_like(model.net[4].bias, dtype=torch.bool)}
    set_masks_(model, full)
    y = _out(model, inputs())
    assert torch.equal(y, torch.zeros(4, 10))
    (y.sum() + kl_divergence(model)).backward()  # zero variance: finite (zero) gradients
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    with pytest.raises(InputError):
        set_masks_(model, {"net.0.weight": mask[:, :3]})
    post = posterior_tensors(model)
    assert (post["net.0.weight"].mu[~mask] == 0).all()


@pytest.mark.parametrize("kind", ["lognormal", "gaussian"])
def test_gates_fold_into_weights(kind):
    build, inputs = CASES["convnet"]
    model, x = build(), inputs()
    spec = PosteriorSpec(gate_kind=kind, gates=(("stem", 1), ("fuse", 1), ("head", 2)))
    wrap_(model, spec)
    with torch.no_grad():
        for g in wrap_state(model).gates.values():
            g.mu.uniform_(-1.5, -0.1) if kind == "lognormal" else g.mu.uniform_(0.3, 1.2)
            g.log_sigma.fill_(-0.5)
    ref = _out(model, x).detach()
    fit_mode_(model)
    assert not torch.allclose(_out(model, x), ref)
    model.eval()
    rep = unwrap_(model)
    assert set(rep.gates_folded) == {"stem", "fuse", "head"}
    torch.testing.assert_close(_out(model, x), ref, rtol=1e-5, atol=1e-6)


def test_head_gates_on_bert_value():
    build, inputs = CASES["bert"]
    model, x = build(), inputs()
    gates = tuple((f"encoder.layer.{i}.attention.self.value", 12) for i in range(2))
    wrap_(model, PosteriorSpec(gates=gates))
    st = wrap_state(model)
    assert all(g.mu.shape == (3,) for g in st.gates.values())
    with torch.no_grad():
        st.gates[gates[0][0]].mu.copy_(torch.tensor([-0.2, -3.0, -0.7]))
    ref = _out(model, x).detach()
    unwrap_(model)
    torch.testing.assert_close(_out(model, x), ref, rtol=1e-5, atol=1e-5)


def test_wrap_validates_before_mutating():
    model = CASES["mlp"][0]()
    with pytest.raises(InputError):
        wrap_(model, PosteriorSpec(gates=(("nope", 1),)))
    assert not [n for n, _ in model.named_parameters() if "bmr_" in n]
    with pytest.raises(InputError):
        wrap_(model, PosteriorSpec(gates=(("net.0", 5),)))  # 37 not divisible by 5
    wrap_(model)
    with pytest.raises(InputError):
        wrap_(model)

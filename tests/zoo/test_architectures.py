"""Seed architectures: registry, shapes, rebuild from config, a few training steps."""

from __future__ import annotations

import json

import pytest
import torch

from bmr_compress.errors import InputError
from bmr_compress.zoo.architectures import (
    ZOO_ARCHITECTURES, build_from_config_dict, build_model, register_zoo,
)
from bmr_compress.zoo.train import (
    TrainSettings, fit_digits, load_zoo_checkpoint, train_zoo_model,
)

ARCHS = sorted(ZOO_ARCHITECTURES)


def test_registry_has_seed_architectures() -> None:
    assert {"mlp", "lenet5", "mixer", "vit"} <= set(ARCHS)


def test_registering_twice_is_an_error() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_zoo("mlp", object)(torch.nn.Module)


@pytest.mark.parametrize("arch", ARCHS)
def test_forward_shape_and_rebuild(arch: str) -> None:
    torch.manual_seed(0)
    model = build_model(arch).eval()
    x = torch.rand(3, 1, 8, 8)
    out = model(x)
    assert out.shape == (3, 10)
    cfg = json.loads(json.dumps(model.zoo_config_dict()))  # survives a JSON round trip
    twin = build_from_config_dict(cfg)
    twin.load_state_dict(model.state_dict())
    torch.testing.assert_close(twin.eval()(x), out)


def test_non_uniform_widths_rebuild() -> None:
    model = build_model("vit", {"num_heads": [3, 1], "mlp_dims": [17, 5]})
    assert model.layers[0].attn.q_proj.out_features == 24
    assert model.layers[1].mlp.fc1.out_features == 5
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 10)


def test_unknown_config_key_is_input_error() -> None:
    with pytest.raises(InputError, match="widthz"):
        build_from_config_dict({"bmr_zoo_architecture": "mlp", "widthz": [3]})
    with pytest.raises(InputError, match="unknown zoo architecture"):
        build_model("resnet9000")


@pytest.mark.parametrize("arch", ARCHS)
def test_each_architecture_trains(arch: str) -> None:
    """A few steps of Adam lower the loss: gradients reach every parameter."""
    torch.manual_seed(0)
    model = build_model(arch)
    x = torch.rand(16, 1, 8, 8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    steps, acc_tr, acc_ho = fit_digits(model, TrainSettings(epochs=1, max_steps=5, lr=1e-2))
    assert steps == 5 and 0.0 <= acc_ho <= 1.0
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert set(changed) == set(before)  # every tensor received an update
    assert model(x).isfinite().all()


def test_train_save_load_is_deterministic(tmp_path) -> None:
    s = TrainSettings(epochs=1, max_steps=8, seed=3)
    r1 = train_zoo_model("mlp", {"widths": [20]}, tmp_path / "a", s, name="mlp-tiny")
    r2 = train_zoo_model("mlp", {"widths": [20]}, tmp_path / "b", s, name="mlp-tiny")
    assert r1.heldout_accuracy == r2.heldout_accuracy
    for f in ("model.safetensors", "config.json", "README.md"):
        assert (tmp_path / "a" / f).is_file()
    from safetensors.torch import load_file

    wa, wb = (load_file(str(tmp_path / d / "model.safetensors")) for d in "ab")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), {k: (wa[k] - wb[k]).abs().max() for k in wa}
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    assert cfg["bmr_zoo_architecture"] == "mlp" and cfg["widths"] == [20]
    model = load_zoo_checkpoint(tmp_path / "a")
    from bmr_compress.io.digits import digits_split

    _, _, x_ho, y_ho = digits_split()
    with torch.no_grad():
        acc = (model(torch.from_numpy(x_ho.copy())).argmax(-1) == torch.from_numpy(y_ho.copy())).float().mean()
    assert float(acc) == pytest.approx(r1.heldout_accuracy)


def test_train_refuses_non_empty_out_without_overwrite(tmp_path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("k")
    with pytest.raises(InputError, match="overwrite"):
        train_zoo_model("mlp", None, tmp_path / "x", TrainSettings(max_steps=1))
    assert (tmp_path / "x" / "keep.txt").is_file()

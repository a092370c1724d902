"""Converters write real files and verify them by reading back."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bmr_compress.converters.pt_to_safetensors import convert_state_dict, main
from bmr_compress.converters.to_hub_layout import weights_to_hub_layout
from bmr_compress.errors import InputError


def test_state_dict_to_safetensors_with_tied_weights(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from tests.tiny_models import tiny_gpt2

    model = tiny_gpt2()  # lm_head.weight is tied to wte.weight (shared storage)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    r = convert_state_dict(tmp_path / "pytorch_model.bin", tmp_path / "model.safetensors")
    back = load_file(str(r.target))
    assert set(back) == set(model.state_dict())
    assert all(torch.equal(back[k], v) for k, v in model.state_dict().items())
    with pytest.raises(InputError, match="target exists"):
        convert_state_dict(tmp_path / "pytorch_model.bin", tmp_path / "model.safetensors")
    assert main([str(tmp_path / "pytorch_model.bin"), str(tmp_path / "m2.safetensors")]) == 0
    assert main([str(tmp_path / "missing.bin"), str(tmp_path / "m3.safetensors")]) == 2


def test_weights_to_hub_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bmr_compress.pipeline.sources import resolve_source
    from bmr_compress.zoo.architectures import build_model

    torch.manual_seed(0)
    model = build_model("lenet5").eval()
    torch.save(model.state_dict(), tmp_path / "w.pt")
    out = weights_to_hub_layout(tmp_path / "w.pt", "lenet5-digits", tmp_path / "hub")
    src = resolve_source(str(out))
    x = torch.rand(3, 1, 8, 8)
    torch.testing.assert_close(src.model(x), model(x))
    with pytest.raises(InputError, match="not a zoo architecture"):
        weights_to_hub_layout(tmp_path / "w.pt", "gpt2", tmp_path / "hub2")

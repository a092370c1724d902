"""Zoo models survive real surgery and reload from their own files through resolve_source."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bmr_compress.pipeline.sources import resolve_source
from bmr_compress.zoo.adapters import register_with_surgery
from bmr_compress.zoo.architectures import ZOO_ARCHITECTURES, build_model


def test_vit_heads_follow_projection_width() -> None:
    """Dropping head 1 of layer 0 by slicing q/k/v rows and o columns equals a 3-head model."""
    torch.manual_seed(0)
    model = build_model("vit").eval()
    x = torch.rand(2, 1, 8, 8)
    attn = model.layers[0].attn
    keep = torch.cat([torch.arange(0, 8), torch.arange(16, 32)])  # heads 0, 2, 3 (head_dim 8)
    small = build_model("vit", {"num_heads": [3, 4], "mlp_dims": [64, 64]}).eval()
    state = model.state_dict()
    for n in ("q_proj", "k_proj", "v_proj"):
        state[f"layers.0.attn.{n}.weight"] = state[f"layers.0.attn.{n}.weight"][keep]
        state[f"layers.0.attn.{n}.bias"] = state[f"layers.0.attn.{n}.bias"][keep]
    state["layers.0.attn.o_proj.weight"] = state["layers.0.attn.o_proj.weight"][:, keep]
    small.load_state_dict(state)
    for n in ("q_proj", "k_proj", "v_proj"):  # same cut in place on the original
        lin = getattr(attn, n)
        lin.weight = torch.nn.Parameter(lin.weight[keep].clone())
        lin.bias = torch.nn.Parameter(lin.bias[keep].clone())
        lin.out_features = len(keep)
    attn.o_proj.weight = torch.nn.Parameter(attn.o_proj.weight[:, keep].clone())
    attn.o_proj.in_features = len(keep)
    torch.testing.assert_close(model(x), small(x))


@pytest.mark.parametrize("arch", sorted(ZOO_ARCHITECTURES))
def test_prune_save_reload(arch: str, tmp_path: Path) -> None:
    from bmr_compress.cutting import apply_plan_, save_compressed
    from bmr_compress.planning import PlanSettings, make_plan
    from bmr_compress.coupling import discover_groups

    register_with_surgery()
    torch.manual_seed(0)
    model = build_model(arch).eval()
    init = model.zoo_config_dict()
    x = torch.rand(3, 1, 8, 8)
    groups = discover_groups(model, {"pixel_values": x})
    assert groups, f"{arch}: no prunable unit groups found"
    # prune every other unit: ΔlnZ > 0 means prune
    scores = {g.name: torch.tensor([1.0 if j % 2 else -1.0 for j in range(g.num_units)]) for g in groups}
    plan = make_plan(groups, scores, None, PlanSettings(unstructured=False, round_to=1))
    record = apply_plan_(model, groups, plan)
    assert record.params_after < record.params_before
    out = model(x)
    assert out.shape == (3, 10)
    save_compressed(model, record, tmp_path, architecture=register_with_surgery(), init_config=init)
    src = resolve_source(str(tmp_path))
    assert src.family == f"zoo:{arch}" and src.task == "classification"
    torch.testing.assert_close(src.model(x), out)
    if arch in ("vit", "mixer"):  # adapters keep the zoo config in step with the cut
        cfg = src.model.zoo_config
        widths = cfg.mlp_dims if arch == "vit" else cfg.channel_mlp_dims
        assert widths == (32, 32)
    if arch == "vit":
        assert src.model.zoo_config.num_heads == (2, 2)
        assert any(g["kind"] == "head" for g in record.groups.values())

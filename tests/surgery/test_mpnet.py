"""MPNet's shared relative-position bias: every cut layer reads its own heads' columns."""

from __future__ import annotations

import torch

from bmr_compress.cutting import apply_plan_, load_compressed, save_compressed
from bmr_compress.coupling import discover_groups
from tests.surgery.conftest import assert_close_rel, plan_for, zeroed_reference
from tests.tiny_models import inputs_for, tiny_mpnet


def _keep(groups, heads: dict[int, list[int]]) -> dict[str, list[int]]:
    keep = {g.name: list(range(g.num_units)) for g in groups}
    for i, kept in heads.items():
        keep[f"layers.{i}.attention"] = kept
    return keep


def test_each_layer_reads_its_own_heads_columns(tmp_path):
    model = tiny_mpnet().double()
    groups = [g for g in discover_groups(model) if g.kind != "hidden"]
    plan = plan_for(_keep(groups, {0: [0, 2], 1: [1]}))
    ref = zeroed_reference(model, groups, plan)
    record = apply_plan_(model, groups, plan)
    x = inputs_for("mpnet", batch=3, seq=9, seed=4)
    with torch.no_grad():
        got, want = model(**x).last_hidden_state, ref(**x).last_hidden_state
    assert_close_rel(got, want)
    attn0 = model.encoder.layer[0].attention.attn
    assert attn0.relative_heads.index.tolist() == [0, 2]
    assert record.shapes["encoder.layer.1.attention.attn.relative_heads.index"] == [1]
    with torch.no_grad():  # reading the first two columns instead is a different model
        attn0.relative_heads.index.copy_(torch.tensor([0, 1]))
        wrong = model(**x).last_hidden_state
        attn0.relative_heads.index.copy_(torch.tensor([0, 2]))
    assert (wrong - want).abs().max() > 1e-3
    save_compressed(model, record, tmp_path)
    again = load_compressed(tmp_path).double()
    with torch.no_grad():
        assert_close_rel(again(**x).last_hidden_state, got, rel=1e-8)


def test_layers_with_every_head_read_the_table_as_transformers_does():
    """An FFN-only cut leaves no RelativeHeads child: config.json states the model exactly."""
    model = tiny_mpnet()
    groups = [g for g in discover_groups(model) if g.kind == "neuron"]
    assert any(k.endswith("relative_heads.index") for k in model.state_dict())  # for the cut
    keep = {g.name: list(range(0, g.num_units, 2)) for g in groups}
    record = apply_plan_(model, groups, plan_for(keep))
    assert not any("relative_heads" in k for k in model.state_dict())
    assert record.plain_transformers and record.config_updates["intermediate_size"] == 19

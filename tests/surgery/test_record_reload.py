"""Coverage report, manifest contents, config edits and plain-transformers reload."""

from __future__ import annotations

import json

import pytest
import torch

from bmr_compress.cutting import (
    apply_plan_, coverage_report, load_compressed, read_manifest, save_compressed,
)
from bmr_compress.planning import PlanSettings, make_plan, unstructured_masks
from bmr_compress.scoring import score_groups, score_weights
from bmr_compress.coupling import discover_groups
from tests.surgery.conftest import out_tensor
from tests.surgery.test_scoring import _posterior
from tests.tiny_models import TRANSFORMER_BUILDERS, inputs_for, tiny_bert, tiny_llama

STATUSES = ("pruned structurally", "pruned unstructured", "pruned structurally + unstructured",
            "kept")


def test_coverage_lists_every_parameter_with_a_status():
    model = tiny_bert()
    with torch.no_grad():  # five dead FFN neurons in layer 0: they must go
        ffn = model.encoder.layer[0]
        ffn.intermediate.dense.weight[:5] = 0
        ffn.intermediate.dense.bias[:5] = 0
        ffn.output.dense.weight[:, :5] = 0
    groups = discover_groups(model)
    post = _posterior(model)
    post = {k: v for k, v in post.items() if "LayerNorm" not in k}  # some tensors unscored
    ws = score_weights(post)
    plan = make_plan(groups, score_groups(groups, post), ws, PlanSettings(round_to=0))
    record = apply_plan_(model, groups, plan, weight_masks=unstructured_masks(plan, ws))
    cov = coverage_report(record)
    assert set(cov) == {n for n, _ in model.named_parameters(remove_duplicate=False)}
    for name, status in cov.items():
        assert status in STATUSES or status.startswith("skipped: "), (name, status)
    assert record.unstructured_zeros > 0
    assert any(s.startswith("pruned structurally") for s in cov.values())
    assert cov["encoder.layer.0.intermediate.dense.weight"].startswith("pruned structurally")
    assert cov["embeddings.LayerNorm.weight"] in STATUSES  # in the hidden group, not scored
    assert model.encoder.layer[0].intermediate.dense.out_features <= 37 - 5


def groups_of(model):
    return [g for g in discover_groups(model) if g.kind != "hidden"]


@pytest.mark.parametrize("family", ["bert", "llama", "gpt2"])
def test_uniform_cut_reloads_with_plain_transformers(family, tmp_path):
    model = TRANSFORMER_BUILDERS[family]()
    groups = [g for g in discover_groups(model) if g.kind != "hidden"]
    keep = {g.name: list(range(g.num_units - 1)) if g.kind != "neuron" else list(range(16))
            for g in groups}  # same width in every layer
    from tests.surgery.conftest import plan_for

    if family != "llama":  # head_dim = hidden / heads in these configs: heads cannot be stated
        probe = TRANSFORMER_BUILDERS[family]()
        assert not apply_plan_(probe, groups_of(probe), plan_for(keep)).plain_transformers
        keep = {k: (v if "ffn" in k else list(range(3))) for k, v in keep.items()}
    record = apply_plan_(model, groups, plan_for(keep))
    assert record.plain_transformers
    save_compressed(model, record, tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    if family == "llama":
        assert cfg["num_key_value_heads"] == 1 and cfg["num_attention_heads"] == 3
        assert cfg["intermediate_size"] == 16
    import transformers

    plain = getattr(transformers, type(model).__name__).from_pretrained(str(tmp_path)).eval()
    x = inputs_for(family, seq=9)
    with torch.no_grad():
        torch.testing.assert_close(out_tensor(plain(**x)), out_tensor(model(**x)))


def test_non_uniform_widths_in_manifest(tmp_path):
    model = tiny_llama()
    groups = discover_groups(model)
    keep = {g.name: list(range(g.num_units)) for g in groups}
    keep["layers.0.ffn"] = list(range(0, 37, 2))
    keep["layers.1.attention"] = [1]
    from tests.surgery.conftest import plan_for

    record = apply_plan_(model, groups, plan_for(keep))
    assert not record.plain_transformers  # per-layer widths differ: config cannot say it
    save_compressed(model, record, tmp_path, extra={"source": "tiny", "seed": 0})
    man = read_manifest(tmp_path)
    assert man["groups"]["layers.0.ffn"]["final_width"] == 19
    assert man["groups"]["layers.1.ffn"]["final_width"] == 37
    assert man["widths"]["layers.1.attention"] == 24 and man["widths"]["hidden"] == 48
    assert man["groups"]["layers.1.attention"]["kept"] == [1]
    assert man["shapes"]["model.layers.1.self_attn.k_proj.weight"] == [8, 48]
    again = load_compressed(tmp_path)
    assert again.model.layers[1].self_attn.q_proj.out_features == 24
    x = inputs_for("llama", seq=6)
    with torch.no_grad():
        torch.testing.assert_close(again(**x).logits, model(**x).logits)


def test_rounded_plan_gives_multiple_widths_after_surgery():
    model = tiny_bert()
    groups = discover_groups(model)
    post = _posterior(model, seed=4)
    plan = make_plan(groups, score_groups(groups, post), None, PlanSettings(round_to=8))
    apply_plan_(model, groups, plan)
    for layer in model.encoder.layer:
        assert layer.intermediate.dense.out_features % 8 == 0
        assert layer.attention.self.all_head_size % 8 == 0  # heads of 12: even counts only
    assert model.embeddings.word_embeddings.embedding_dim % 8 == 0

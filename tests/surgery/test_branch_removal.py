"""Whole blocks removed by evidence (LaplaceSettings.branches): a tiny BERT whose layer-0 FFN
and layer-1 attention do nothing loses those blocks entirely and keeps the other two; the cut
model (zero-width blocks that add their biases) exports to ONNX, runs in onnxruntime, and
reloads from its own files and from the padded transformers twin."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bmr_compress.pipeline.config import CompressConfig, LaplaceSettings, PlanConfig
from tests.tiny_models import tiny_bert


def _useless_ffn_bert() -> torch.nn.Module:
    model = tiny_bert()
    with torch.no_grad():
        first, second = model.encoder.layer
        first.output.dense.weight.mul_(1e-6)  # layer 0's FFN only adds its bias
        second.attention.output.dense.weight.mul_(1e-6)  # so does layer 1's attention
        first.attention.output.dense.weight.mul_(30.0)  # the other two blocks matter
        second.output.dense.weight.mul_(100.0)
    return model


def _batches(n: int = 10, seed: int = 3) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(0, 97, (16, 9), generator=g)
        mask = torch.ones(16, 9, dtype=torch.long)
        mask[:4, 6:] = 0  # some padding
        out.append({"input_ids": ids, "attention_mask": mask})
    return out


def _compress(branches: bool, prior: str = "ard"):
    import bmr_compress as bc

    model = _useless_ffn_bert()
    config = CompressConfig(progress=False, plan=PlanConfig(round_to=1, unit_prior=prior),
                            laplace=LaplaceSettings(tolerance=0.01, rounds=1, recovery_steps=0,
                                                    branches=branches))
    return bc.compress_(model, _batches(), config, task="embedding")


@pytest.fixture(scope="module")
def removed():
    return _compress(branches=True)


def test_evidence_removes_the_useless_blocks_and_keeps_the_rest(removed):
    from bmr_compress.coupling.removed import RemovedAttention

    rec = removed
    for name in ("layers.0.ffn", "layers.1.attention"):
        assert rec.plan.keep[name] == [] and rec.surgery.groups[name]["kept"] == [], name
    for name in ("layers.1.ffn", "layers.0.attention"):
        assert rec.plan.keep[name], name
    first, second = rec.model.encoder.layer
    assert first.intermediate.dense.out_features == 0 and first.output.dense.in_features == 0
    assert second.intermediate.dense.out_features > 0
    assert isinstance(second.attention.self, RemovedAttention)
    assert second.attention.self.query.out_features == 0
    assert second.attention.output.dense.in_features == 0
    assert not isinstance(first.attention.self, RemovedAttention)
    assert rec.final_distortion <= rec.tolerance


def test_under_the_layer_prior_the_useless_blocks_go_too():
    rec = _compress(branches=True, prior="layer")
    assert rec.plan.keep["layers.0.ffn"] == [] and rec.plan.keep["layers.1.attention"] == []
    assert rec.plan.keep["layers.1.ffn"] and rec.plan.keep["layers.0.attention"]


def test_off_by_default_every_block_keeps_a_unit():
    assert LaplaceSettings().branches is False
    rec = _compress(branches=False)
    assert all(rec.plan.keep[g] for g in rec.plan.keep)


def test_removed_block_exports_to_onnx_and_matches_in_onnxruntime(removed, tmp_path: Path):
    import onnxruntime as ort

    from bmr_compress.export.onnx_export import export_onnx

    model = removed.model.eval()
    sample = {k: v[:2, :7] for k, v in _batches(1, seed=8)[0].items()}
    art = export_onnx(model, tmp_path / "model.onnx", sample)
    sess = ort.InferenceSession(str(art.path), providers=["CPUExecutionProvider"])
    batch = _batches(1, seed=9)[0]  # another batch size and length than the export's
    feed = {k: batch[k][:5].numpy() for k in ("input_ids", "attention_mask")}
    got = sess.run(None, feed)[0]
    with torch.no_grad():
        want = model(input_ids=batch["input_ids"][:5],
                     attention_mask=batch["attention_mask"][:5]).last_hidden_state.numpy()
    assert got.shape == want.shape
    assert np.abs(got - want).max() < 1e-4


def _inputs() -> dict[str, torch.Tensor]:
    batch = _batches(1, seed=11)[0]
    return {k: batch[k][:6, :8] for k in ("input_ids", "attention_mask")}


def test_removed_block_reloads_from_its_own_files(removed, tmp_path: Path):
    """model.safetensors with the zero-width tensors + the manifest rebuild the cut model."""
    from bmr_compress.cutting import load_compressed, read_manifest, save_compressed

    save_compressed(removed.model, removed.surgery, tmp_path)
    man = read_manifest(tmp_path)
    assert man["shapes"]["encoder.layer.0.intermediate.dense.weight"] == [0, 36]
    assert man["shapes"]["encoder.layer.0.output.dense.weight"] == [36, 0]
    assert man["shapes"]["encoder.layer.1.attention.self.query.weight"] == [0, 36]
    again = load_compressed(tmp_path)
    assert again.encoder.layer[0].intermediate.dense.out_features == 0
    assert again.encoder.layer[1].attention.self.num_attention_heads == 0
    x = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(again(**x).last_hidden_state,
                                   removed.model(**x).last_hidden_state, rtol=0, atol=0)


def test_removed_block_in_the_padded_transformers_twin(removed, tmp_path: Path):
    """The files plain transformers reads: the removed FFN zero-padded to the config's width
    (it still adds only its bias); the project's loader un-pads them back to width 0."""
    from transformers import BertModel

    from bmr_compress.cutting import load_compressed, save_compressed
    from bmr_compress.cutting.hf_layout import transformers_layout
    from bmr_compress.export import export_safetensors

    x = _inputs()
    twin, layout = transformers_layout(removed.model, x)
    assert layout["layout"] == "padded"
    save_compressed(removed.model, removed.surgery, tmp_path,
                    extra={"transformers_layout": layout})
    export_safetensors(twin, tmp_path, {})
    plain = BertModel.from_pretrained(str(tmp_path), add_pooling_layer=False).eval()
    again = load_compressed(tmp_path)
    assert again.encoder.layer[0].intermediate.dense.out_features == 0
    with torch.no_grad():
        want = removed.model(**x).last_hidden_state
        torch.testing.assert_close(plain(**x).last_hidden_state, want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(again(**x).last_hidden_state, want, rtol=0, atol=0)


def test_zoo_vit_layer_removed_whole_reloads_and_runs_in_onnxruntime(tmp_path: Path):
    """Both blocks of the zoo ViT's layer 1 at width 0 (what dropping a layer is here): the
    function is the layer's two biases added to the stream, through reload and onnxruntime."""
    import onnxruntime as ort

    from bmr_compress.coupling import discover_groups
    from bmr_compress.cutting import apply_plan_, save_compressed
    from bmr_compress.export.onnx_export import export_onnx
    from bmr_compress.pipeline.sources import resolve_source
    from bmr_compress.planning.plan import Plan, PlanSettings
    from bmr_compress.zoo.adapters import register_with_surgery
    from bmr_compress.zoo.architectures import build_model

    register_with_surgery()
    torch.manual_seed(0)
    model = build_model("vit").eval()
    init = model.zoo_config_dict()
    x = torch.rand(3, 1, 8, 8)
    groups = discover_groups(model, {"pixel_values": x})
    assert all(g.extra["zero_width"] for g in groups if g.kind != "hidden")
    blk = model.layers[1]
    with torch.no_grad():  # the stream after layer 0, plus layer 1's two biases
        h = model.layers[0](torch.cat([model.cls_token.expand(3, -1, -1),
                                       model.patch_embed(x)], 1) + model.pos_embed)
        want = model.head(model.norm((h + blk.attn.o_proj.bias + blk.mlp.fc2.bias)[:, 0]))
    keep = {g.name: list(range(g.num_units)) for g in groups}
    keep["layers.1.attention"] = keep["layers.1.ffn"] = []
    record = apply_plan_(model, groups, Plan(keep, {}, PlanSettings(unstructured=False), {}))
    assert record.config_updates["num_heads"] == [4, 0]
    assert record.config_updates["mlp_dims"] == [64, 0]
    with torch.no_grad():
        torch.testing.assert_close(model(x), want)
    save_compressed(model, record, tmp_path / "cut", architecture=register_with_surgery(),
                    init_config=init)
    again = resolve_source(str(tmp_path / "cut")).model.eval()
    art = export_onnx(model, tmp_path / "vit.onnx", {"pixel_values": x})
    sess = ort.InferenceSession(str(art.path), providers=["CPUExecutionProvider"])
    x2 = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(again(x2), model(x2), rtol=0, atol=0)
        got = sess.run(None, {"pixel_values": x2.numpy()})[0]
        assert np.abs(got - model(x2).numpy()).max() < 1e-4


def test_a_recipe_or_the_cli_option_turns_block_removal_on():
    from bmr_compress.pipeline.config import build_config, flat_record, from_recipe

    assert build_config({"source": "x", "blocks": True}).laplace.branches is True
    assert build_config({"source": "x"}).laplace.branches is False

    config = from_recipe({"laplace": {"branches": True}}, "recipe.toml")
    assert config.laplace.branches is True
    assert flat_record(config)["blocks"] is True  # recorded in report.json / the manifest


def test_without_any_attention_the_onnx_file_still_takes_the_mask(tmp_path: Path):
    """Every attention block removed: no node reads attention_mask, and the export keeps it
    in the signature anyway (the feeds of every other export still work)."""
    import onnxruntime as ort

    from bmr_compress.coupling import discover_groups
    from bmr_compress.cutting import apply_plan_
    from bmr_compress.export.onnx_export import export_onnx
    from bmr_compress.planning.plan import Plan, PlanSettings

    model = tiny_bert()
    groups = discover_groups(model)
    keep = {g.name: [] if g.name.endswith("attention") else list(range(g.num_units))
            for g in groups}
    apply_plan_(model, groups, Plan(keep, {}, PlanSettings(unstructured=False), {}))
    art = export_onnx(model, tmp_path / "m.onnx", _inputs())
    sess = ort.InferenceSession(str(art.path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input_ids", "attention_mask"]
    batch = _batches(1, seed=12)[0]
    feed = {k: batch[k][:3].numpy() for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        want = model(input_ids=batch["input_ids"][:3]).last_hidden_state.numpy()
    assert np.abs(sess.run(None, feed)[0] - want).max() < 1e-4


@pytest.mark.slow
def test_cli_compress_with_blocks_passes_validation_and_reloads(tmp_path: Path):
    """`compress --blocks` end to end (export, parity at other shapes, report, the padded
    twin): the removed blocks are width 0 in the manifest and the output reloads."""
    import json

    from click.testing import CliRunner

    from bmr_compress.cli.main import cli
    from bmr_compress.cutting import load_compressed
    from tests.snapshots import _save_text_snapshot

    src = _save_text_snapshot(tmp_path / "snap", _useless_ffn_bert(), False)
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["compress", str(src), "--out", str(out), "--max-samples", "96",
                                 "--rounds", "1", "--recovery-steps", "3", "--blocks",
                                 "--tolerance", "0.05", "--round-to", "1"])
    assert r.exit_code == 0, r.output
    man = json.loads((out / "bmr_manifest.json").read_text())
    widths = {k: v["final_width"] for k, v in man["groups"].items()}
    assert widths["layers.0.ffn"] == 0, widths
    again = load_compressed(out)
    assert again.encoder.layer[0].intermediate.dense.out_features == 0

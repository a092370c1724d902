"""safetensors and ONNX artefacts: metadata, compact zeros, tied weights, IR/opset pinning,
sparse initializers, external data, int8 quantisation with its own validation."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from bmr_compress.export import (
    export_onnx,
    export_safetensors,
    load_state_dict,
    ort_max_ir_version,
    ort_max_opset,
    quantize_int8,
    read_metadata,
)
from bmr_compress.export.validation_checks import check_int8
from bmr_compress.export.validation import ValidationResult, ValidationSettings
from tests.tiny_models import TinyMLP, inputs_for, tiny_bert, tiny_gpt2

META = {"source": "tiny", "revision": "abc123", "tool_version": "0.1.0", "manifest_sha256": "f" * 64}


def _zeroed_mlp(frac: float = 0.85) -> TinyMLP:
    torch.manual_seed(0)
    m = TinyMLP().eval()
    with torch.no_grad():
        w = m.net[0].weight  # (37, 64)
        w[torch.rand_like(w) < frac] = 0.0
    return m


@pytest.mark.parametrize("compact", [False, True])
def test_safetensors_roundtrip_with_metadata(tmp_path, compact):
    m = _zeroed_mlp()
    path = export_safetensors(m, tmp_path, {**META, "settings": {"a": 1}}, compact_zeros=compact)
    meta = read_metadata(path)
    assert {k: meta[k] for k in META} == META and json.loads(meta["settings"]) == {"a": 1}
    back = load_state_dict(path)
    assert back.keys() == m.state_dict().keys()
    assert all(torch.equal(back[k], v) for k, v in m.state_dict().items())
    compacted = json.loads(meta["bmr_compact_zeros"])
    assert ("net.0.weight" in compacted) == compact
    assert "net.2.weight" not in compacted  # dense tensors stay dense


def test_compact_zeros_make_the_file_smaller(tmp_path):
    m = _zeroed_mlp(0.95)
    dense = export_safetensors(m, tmp_path / "d", META).stat().st_size
    compact = export_safetensors(m, tmp_path / "c", META, compact_zeros=True).stat().st_size
    assert compact < dense


def test_safetensors_tied_weights_and_config(tmp_path):
    m = tiny_gpt2()
    assert m.lm_head.weight is m.transformer.wte.weight
    path = export_safetensors(m, tmp_path, META)
    meta = read_metadata(path)
    assert json.loads(meta["bmr_aliases"]) == {"lm_head.weight": "transformer.wte.weight"}
    assert (tmp_path / "config.json").is_file()
    from transformers import GPT2LMHeadModel

    re = GPT2LMHeadModel.from_pretrained(tmp_path).eval()  # plain transformers reload
    x = inputs_for("gpt2")
    with torch.no_grad():
        assert torch.allclose(re(**x).logits, m(**x).logits, atol=1e-6)


def test_onnx_versions_axes_and_names(tmp_path):
    m = tiny_bert()
    art = export_onnx(m, tmp_path / "model.onnx", inputs_for("bert"))
    proto = onnx.load(str(art.path))
    # the product: versions the installed onnxruntime loads (whether or not they are below
    # what this onnx writes by default: onnx 1.23 + onnxruntime 1.31 needed the pin, 1.32 not)
    assert proto.ir_version == art.ir_version <= min(ort_max_ir_version(), onnx.IR_VERSION)
    assert art.opset <= ort_max_opset()
    sess = ort.InferenceSession(str(art.path), providers=["CPUExecutionProvider"])
    feed = {k: v.numpy() for k, v in inputs_for("bert").items()}
    with torch.no_grad():
        ref = m(**inputs_for("bert")).last_hidden_state.numpy()
    np.testing.assert_allclose(sess.run(None, feed)[0], ref, atol=1e-4, rtol=1e-3)
    ins = {i.name: [d.dim_param for d in i.type.tensor_type.shape.dim] for i in proto.graph.input}
    assert ins == {"input_ids": ["batch", "sequence"], "attention_mask": ["batch", "sequence"]}
    out = proto.graph.output[0]
    assert out.name == "last_hidden_state"
    assert [d.dim_param for d in out.type.tensor_type.shape.dim][:2] == ["batch", "sequence"]


def test_sparse_initializer_only_where_smaller(tmp_path):
    m = _zeroed_mlp(0.85)
    sample = {"pixel_values": torch.randn(2, 64)}
    art = export_onnx(m, tmp_path / "sparse.onnx", sample)
    dense = export_onnx(m, tmp_path / "dense.onnx", sample, sparse=False)
    names = set(art.sparse_initializers)
    assert any(n.endswith("net.0.weight") for n in names)  # the 85 %-zero matrix
    assert not any("net.2.weight" in n for n in names)  # dense layer stays dense
    proto = onnx.load(str(art.path))
    for sp in proto.graph.sparse_initializer:
        assert sp.indices.data_type == onnx.TensorProto.INT64
    onnx.checker.check_model(str(art.path))
    assert art.initializer_bytes < dense.initializer_bytes
    x = np.random.default_rng(0).standard_normal((5, 64)).astype(np.float32)
    ys = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"pixel_values": x})[0]
          for p in (art.path, dense.path)]
    np.testing.assert_array_equal(ys[0], ys[1])


def test_external_data_above_threshold(tmp_path):
    m = _zeroed_mlp(0.0)
    art = export_onnx(m, tmp_path / "model.onnx", {"pixel_values": torch.randn(2, 64)},
                      external_data_threshold=1000)  # stands in for 2 GB
    assert art.external_data and [p.name for p in art.files] == ["model.onnx", "model.onnx.data"]
    assert art.files[1].stat().st_size > 0
    x = np.ones((3, 64), np.float32)
    y = ort.InferenceSession(str(art.path), providers=["CPUExecutionProvider"]).run(None, {"pixel_values": x})[0]
    with torch.no_grad():
        np.testing.assert_allclose(y, m(torch.from_numpy(x)).numpy(), atol=1e-5)


def test_int8_quantisation_is_its_own_validated_artifact(tmp_path):
    m = tiny_bert()
    sample = inputs_for("bert")
    fp32 = export_onnx(m, tmp_path / "model.onnx", sample)
    q = quantize_int8(fp32.path, tmp_path / "model_int8.onnx")
    assert q.ir_version <= ort_max_ir_version()
    assert q.initializer_bytes < fp32.initializer_bytes
    assert q.io_spec.input_names == fp32.io_spec.input_names
    res = ValidationResult()
    check_int8(res, q.path, fp32.path, sample, m, ValidationSettings())
    assert res.passed, res.checks
    assert res.int8["max_rel_error"] == 0.15 and max(res.int8["rel_error_vs_fp32"]) > 0
    strict = ValidationResult()
    check_int8(strict, q.path, fp32.path, sample, m, ValidationSettings(int8_max_rel_error=1e-9))
    assert not strict.passed

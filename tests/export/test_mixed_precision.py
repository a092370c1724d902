"""Mixed precision export (export/mixed_precision.py) run by onnxruntime CPU on a tiny BERT."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from bmr_compress.bmr.precision import GRIDS, KEEP, block_for, round_to_grid
from bmr_compress.errors import InputError
from bmr_compress.export import export_onnx
from bmr_compress.export.latency import cpu_session
from bmr_compress.export.mixed_precision import match_initializers, matrices, quantize_mixed
from tests.tiny_models import inputs_for, tiny_bert


def _weights(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """Rows views of every Linear weight and embedding table (as `matrices` lists them)."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Embedding)):
            out[f"{name}.weight"] = m.weight.detach().numpy()
    return out


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    path = tmp_path_factory.mktemp("mixed") / "m.onnx"
    model = tiny_bert()
    art = export_onnx(model, path, inputs_for("bert"), sparse=False)
    proto = onnx.load(str(art.path))
    return model, art.path, match_initializers(proto, _weights(model))


def _choices(params: dict[str, str]) -> dict[str, str]:
    """A mix of every grid over the model's matrices, the word embedding on 4 bits."""
    names = sorted(params)
    cycle = [KEEP, *GRIDS]
    out = {p: cycle[i % len(cycle)] for i, p in enumerate(names)}
    out["embeddings.word_embeddings.weight"] = "int4-b32"
    return out


def test_every_linear_and_the_word_embedding_are_found(bert):
    model, _, params = bert
    linears = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    assert all(f"{n}.weight" in params for n in linears)
    assert "embeddings.word_embeddings.weight" in params


def test_mixed_onnx_equals_the_model_with_rounded_weights(bert, tmp_path):
    """At fp32 compute (accuracy level 0) the quantised graph computes exactly the model whose
    weights are the grid's dequantised values: what the evidence scored is what is stored.
    Checked at a batch and length other than the export sample's."""
    model, path, params = bert
    choice = _choices(params)
    out = quantize_mixed(path, tmp_path / "mixed.onnx",
                         {params[p]: g for p, g in choice.items()}, accuracy_level=0)
    ops = [n.op_type for n in onnx.load(str(out.path)).graph.node]
    assert "GatherBlockQuantized" in ops and "MatMulNBits" in ops
    bits = {a.i for n in onnx.load(str(out.path)).graph.node if n.op_type == "MatMulNBits"
            for a in n.attribute if a.name == "bits"}
    assert bits == {4, 8}
    rounded = tiny_bert()
    with torch.no_grad():
        for name, m in rounded.named_modules():
            g = choice.get(f"{name}.weight", KEEP)
            if g != KEEP:
                gr = GRIDS[g]
                w = m.weight
                m.weight.copy_(round_to_grid(w, gr.bits, block_for(w.shape[1], gr.block)))
    x = inputs_for("bert", batch=3, seq=11, seed=4)
    with torch.no_grad():
        ref = rounded(**x).last_hidden_state.numpy()
        fp = model(**x).last_hidden_state.numpy()
    got = cpu_session(out.path).run(None, {k: v.numpy() for k, v in x.items()})[0]
    assert np.abs(got - ref).max() < 1e-4
    assert np.abs(got - fp).max() > 1e-3  # the rounding is really there


def test_smaller_grids_give_smaller_files_and_default_accuracy_runs(bert, tmp_path):
    _, path, params = bert
    sizes = {}
    for g in ("int8", "int4-b32"):
        art = quantize_mixed(path, tmp_path / f"{g}.onnx", {v: g for v in params.values()})
        sizes[g] = art.path.stat().st_size
        x = inputs_for("bert", batch=2, seq=9, seed=2)
        y = cpu_session(art.path).run(None, {k: v.numpy() for k, v in x.items()})[0]
        assert np.isfinite(y).all()
    assert sizes["int4-b32"] < sizes["int8"] < path.stat().st_size


def test_bad_choices_are_input_errors(bert, tmp_path):
    _, path, params = bert
    name = next(iter(params.values()))
    with pytest.raises(InputError, match="unknown precision"):
        quantize_mixed(path, tmp_path / "x.onnx", {name: "int3"})
    with pytest.raises(InputError, match="not a quantisable weight"):
        quantize_mixed(path, tmp_path / "x.onnx", {"nope": "int8"})


@pytest.mark.parametrize("bits", [8, 4])
def test_grid_matches_onnxruntime_matmul_nbits_quantizer(tmp_path, bits):
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    k, n = 96, 20
    w = np.random.default_rng(bits).standard_normal((k, n)).astype(np.float32)
    g = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", k])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", n])],
                          [numpy_helper.from_array(w, "W")])
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 9
    assert list(matrices(proto)) == ["W"]
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        q = MatMulNBitsQuantizer(proto, bits=bits, block_size=32, is_symmetric=True,
                                 accuracy_level=0, op_types_to_quantize=("MatMul",))
        q.process()
    finally:
        root.setLevel(level)
    onnx.save(q.model.model, str(tmp_path / "q.onnx"))
    got = cpu_session(tmp_path / "q.onnx").run(None, {"x": np.eye(k, dtype=np.float32)})[0]
    ours = round_to_grid(torch.from_numpy(w.T.copy()), bits, 32).numpy().T
    assert np.array_equal(got, ours)

"""int8 per output channel; int8 latency beside fp32 at batch 1 and 8, 1 and up to 4 threads."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from bmr_compress.export import export_onnx, quantize_int8
from bmr_compress.export.report import render_markdown
from tests.export._flow import run_flow
from tests.export._surgery import surgery_compress
from tests.tiny_models import inputs_for, tiny_bert


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    return run_flow("bert", tmp_path_factory.mktemp("int8"), surgery_compress, int8=True)


def _weight_scales(path) -> list[np.ndarray]:
    proto = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    return [v for k, v in inits.items() if k.endswith("_scale")]  # activation scales are dynamic


def test_dynamic_scheme_has_per_channel_scales_by_default(tmp_path):
    art = export_onnx(tiny_bert(), tmp_path / "m.onnx", inputs_for("bert"))
    pc = _weight_scales(quantize_int8(art.path, tmp_path / "pc.onnx", scheme="dynamic").path)
    pt = _weight_scales(quantize_int8(art.path, tmp_path / "pt.onnx", scheme="dynamic",
                                      per_channel=False).path)
    assert any(s.ndim == 1 and s.size > 1 for s in pc)  # one scale per output channel
    assert not any(s.ndim == 1 and s.size > 1 for s in pt)


def _run(path, feed):
    from bmr_compress.export.latency import cpu_session

    return cpu_session(path, threads=1).run(None, feed)[0]


def test_blockwise_default_keeps_closer_to_fp32_than_dynamic(tmp_path):
    """Default scheme: MatMulNBits (8 bits, blocks of up to 128 input channels) for every
    constant MatMul weight, int8 embedding rows with one scale each; no large float weight is
    left, the file is smaller (~3.9x on MiniLM; this tiny model's 36-wide layers pad to a
    64-wide block), and the outputs are closer to fp32 than dynamic int8's (activations
    quantised per tensor)."""
    import torch

    from tests.tiny_models import tiny_bert as build

    torch.manual_seed(0)
    model = build()
    x = inputs_for("bert")
    art = export_onnx(model, tmp_path / "m.onnx", x, sparse=False)
    blk = quantize_int8(art.path, tmp_path / "b.onnx").path
    dyn = quantize_int8(art.path, tmp_path / "d.onnx", scheme="dynamic").path
    proto = onnx.load(str(blk))
    ops = [n.op_type for n in proto.graph.node]
    nbits = [n for n in proto.graph.node if n.op_type == "MatMulNBits"]
    assert nbits and "MatMul" in ops  # attention's activation x activation products stay float
    for n in nbits:
        attrs = {a.name: a.i for a in n.attribute}
        want = min(128, 1 << (attrs["K"].bit_length() - 1))  # K < 128: the largest 2^j ≤ K
        assert attrs["bits"] == 8 and attrs["block_size"] == max(16, want)
        assert attrs["accuracy_level"] == 4
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    tables = {k: v for k, v in inits.items() if k.endswith("_int8")}
    assert tables and all(v.dtype == np.int8 for v in tables.values())
    for k, v in tables.items():
        assert inits[k[:-5] + "_scale"].shape == (v.shape[0], 1)  # one scale per row
    big_float = [k for k, v in inits.items() if v.dtype == np.float32 and v.ndim == 2 and v.size > 4096]
    assert not big_float, big_float
    stored = sum(v.nbytes for v in inits.values())  # this tiny graph's file is mostly nodes
    assert stored < art.initializer_bytes / 2  # 36-wide layers pad to a 64-wide block
    feed = {k: v.numpy() for k, v in x.items()}
    ref = _run(art.path, feed)
    err = {n: float(np.abs(_run(p, feed) - ref).max()) for n, p in (("blk", blk), ("dyn", dyn))}
    assert err["blk"] < err["dyn"], err


def test_unknown_int8_scheme_is_a_clear_error(tmp_path):
    from bmr_compress.errors import InputError

    art = export_onnx(tiny_bert(), tmp_path / "m.onnx", inputs_for("bert"))
    with pytest.raises(InputError, match="blockwise, dynamic"):
        quantize_int8(art.path, tmp_path / "q.onnx", scheme="fp4")


def test_int8_latency_beside_fp32_at_batch_and_thread_grid(flow):
    lat = flow.result.latency
    assert {"original", "compressed", "int8"} <= set(lat)
    grid = {(g["batch"], g["threads"]): g for g in lat["grid"]}
    t = min(4, os.cpu_count() or 1)  # never more threads than the machine has
    assert set(grid) == {(1, 1), (8, 1), (1, t), (8, t)}
    for g in grid.values():
        assert all(g[k]["median_ms"] > 0 for k in ("original", "compressed", "int8"))
    md = render_markdown({**flow.report, "source": {**flow.report["source"],
                                                    "heldout": "12 paragraphs of test text"}})
    assert "| compressed int8 |" in md and "Median ms by batch and threads" in md
    assert f"| 8 | {t} |" in md and "Held-out data: 12 paragraphs of test text." in md


def test_grid_threads_never_exceed_the_cores() -> None:
    from bmr_compress.export.validation_checks import grid_points

    grid = ((1, 1), (8, 1), (1, 4), (8, 4))
    assert grid_points(grid, 2) == [(1, 1), (8, 1), (1, 2), (8, 2)]
    assert grid_points(grid, 1) == [(1, 1), (8, 1)]
    assert grid_points(grid, 16) == list(grid)

"""Acceptance: tiny BERT, GPT-2, ViT and the digits CNN go compress -> export -> validate -> report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
import pytest

from bmr_compress.export import ort_max_ir_version
from bmr_compress.export.validation_checks import initializer_bytes
from tests.export._flow import run_flow
from tests.export._surgery import surgery_compress

MODELS = ["bert", "gpt2", "vit", "cnn"]


@pytest.fixture(scope="module", params=MODELS)
def flow(request, tmp_path_factory):
    name = request.param
    return run_flow(name, tmp_path_factory.mktemp(name), surgery_compress, int8=name == "bert")


def test_validation_passes_with_parity_at_two_unseen_shapes(flow):
    assert flow.result.passed, [c for c in flow.result.checks if not c.passed]
    shapes = flow.result.parity["shapes"]
    export_shape = tuple(flow.result.parity["export_shape"])
    assert len(shapes) == 2 and all(s["passed"] for s in shapes)
    assert all((s["batch"], s["seq"]) != export_shape for s in shapes)
    assert all(s["batch"] != export_shape[0] for s in shapes)
    if export_shape[1] is not None:  # text models: the sequence axis varies too
        assert all(s["seq"] != export_shape[1] for s in shapes)
    assert flow.result.parity["max_abs_error"] <= 1e-4


def test_onnx_is_smaller_than_uncompressed_export(flow):
    stored, _ = initializer_bytes(flow.onnx.path)
    stored0, _ = initializer_bytes(flow.original_onnx.path)
    assert stored < stored0
    m = onnx.load(str(flow.onnx.path))
    assert m.ir_version <= ort_max_ir_version()
    assert [i.name for i in m.graph.input] == list(flow.onnx.io_spec.input_names)
    assert [o.name for o in m.graph.output] == [flow.onnx.io_spec.output_name]
    for init in m.graph.initializer:  # dense ones would not be smaller as sparse (int64 indices)
        a = numpy_helper.to_array(init)
        if a.dtype.kind == "f" and a.size >= 16:
            assert np.count_nonzero(a) * (a.itemsize + 8) >= a.nbytes, init.name
    for sp in m.graph.sparse_initializer:
        dense = np.prod(sp.dims) * numpy_helper.to_array(sp.values).itemsize
        assert numpy_helper.to_array(sp.values).nbytes + numpy_helper.to_array(sp.indices).nbytes < dense
    assert not flow.onnx.external_data and len(flow.onnx.files) == 1


def test_report_fields_match_disk(flow):
    out: Path = flow.out
    rep = json.loads((out / "report.json").read_text())
    assert (out / "report.md").read_text().startswith("# bmr-compress report")
    assert rep["validation"]["passed"] is True
    p = rep["parameters"]
    assert p["compressed"] == sum(t.numel() for t in flow.compressed.parameters()) < p["original"]
    for rel, size in rep["files"]["after"].items():
        assert (out / rel).stat().st_size == size, rel
    assert {"model.safetensors", "model.onnx", "config.json" if flow.name != "cnn" else "model.onnx"} <= set(
        rep["files"]["after"])
    assert rep["onnx_sizes"]["onnx_file_bytes"]["compressed"] == (out / "model.onnx").stat().st_size
    assert rep["files"]["before"]["model.onnx"] == flow.original_onnx.file_bytes
    sp = rep["sparsity"]
    assert 0 < sp["structured"]["removed_fraction"] < 1
    assert sp["unstructured"]["zero_fraction"] > 0
    assert any(v["kept_fraction"] < 1 for v in sp["per_layer"].values())
    m = rep["metric"]
    assert m["task"] in ("embedding", "causal_lm", "classification") and np.isfinite(m["gate"])
    assert "original" in m and "compressed" in m
    lat = rep["latency"]
    assert lat["threads"] >= 1 and lat["batch"] >= 1 and lat["interleaved"]
    for k in ("original", "compressed"):
        assert 0 < lat[k]["median_ms"] <= lat[k]["p90_ms"]
    assert rep["parity"]["max_abs_error"] == flow.result.parity["max_abs_error"]
    assert set(rep["stage_seconds"]) >= {"compress", "export", "validate"}
    for plot in rep["plots"]:
        assert (out / plot).read_bytes()[:4] == b"\x89PNG"
    assert len(rep["plots"]) == 3

    if flow.name == "bert":  # the int8 artefact (BERT flow only) has its own checks and sizes
        names = {c.name for c in flow.result.checks}
        assert {"onnx_checker[int8]", "int8_metric"} <= names
        assert rep["int8"]["metric"]["n"] > 0  # the int8 ONNX model scored on held-out data
        q = rep["int8"]
        assert q["file_bytes"] == (out / "model_int8.onnx").stat().st_size
        assert q["initializer_bytes"] < rep["onnx_sizes"]["onnx_initializer_bytes"]["compressed"]

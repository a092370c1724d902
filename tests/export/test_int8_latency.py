"""int8 per output channel; int8 latency beside fp32 at batch 1 and 8, 1 and 4 threads."""

from __future__ import annotations

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


def test_per_channel_scales_by_default(tmp_path):
    art = export_onnx(tiny_bert(), tmp_path / "m.onnx", inputs_for("bert"))
    pc = _weight_scales(quantize_int8(art.path, tmp_path / "pc.onnx").path)
    pt = _weight_scales(quantize_int8(art.path, tmp_path / "pt.onnx", per_channel=False).path)
    assert any(s.ndim == 1 and s.size > 1 for s in pc)  # one scale per output channel
    assert not any(s.ndim == 1 and s.size > 1 for s in pt)


def test_int8_latency_beside_fp32_at_batch_and_thread_grid(flow):
    lat = flow.result.latency
    assert {"original", "compressed", "int8"} <= set(lat)
    grid = {(g["batch"], g["threads"]): g for g in lat["grid"]}
    assert set(grid) == {(1, 1), (8, 1), (1, 4), (8, 4)}
    for g in grid.values():
        assert all(g[k]["median_ms"] > 0 for k in ("original", "compressed", "int8"))
    md = render_markdown({**flow.report, "source": {**flow.report["source"],
                                                    "heldout": "12 paragraphs of test text"}})
    assert "| compressed int8 |" in md and "Median ms by batch and threads" in md
    assert "| 8 | 4 |" in md and "Held-out data: 12 paragraphs of test text." in md

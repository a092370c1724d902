"""export/bench.py pieces: feeds built from real ONNX inputs at the recorded shape, and paths
from report.json confined to the output directory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bmr_compress.errors import InputError
from bmr_compress.export.bench import build_feeds, inside


def identity_model(path: Path, inputs: dict[str, tuple[int, list]]) -> Path:
    """A graph that returns each input unchanged (`inputs`: name -> (onnx elem type, dims))."""
    import onnx
    from onnx import helper

    ins = [helper.make_tensor_value_info(n, t, dims) for n, (t, dims) in inputs.items()]
    outs = [helper.make_tensor_value_info(f"{n}_out", t, dims) for n, (t, dims) in inputs.items()]
    nodes = [helper.make_node("Identity", [n], [f"{n}_out"]) for n in inputs]
    model = helper.make_model(helper.make_graph(nodes, "id", ins, outs),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_token_inputs_at_the_recorded_batch_and_sequence(tmp_path: Path) -> None:
    from onnx import TensorProto as T

    m = identity_model(tmp_path / "m.onnx", {
        "input_ids": (T.INT64, ["b", "s"]), "attention_mask": (T.INT64, ["b", "s"]),
        "token_type_ids": (T.INT32, ["b", "s"]), "position_ids": (T.INT64, ["b", "s"])})
    feeds = build_feeds([m], {"batch": 3, "seq": 9}, {}, vocab=50)
    assert {k: v.shape for k, v in feeds.items()} == {k: (3, 9) for k in feeds}
    assert feeds["input_ids"].dtype == np.int64 and 0 <= feeds["input_ids"].min()
    assert feeds["input_ids"].max() < 50 and len(np.unique(feeds["input_ids"])) > 5
    assert (feeds["attention_mask"] == 1).all() and (feeds["token_type_ids"] == 0).all()
    assert feeds["token_type_ids"].dtype == np.int32
    assert (feeds["position_ids"] == np.arange(9)).all()


def test_float_inputs_take_static_dims_or_the_export_sample(tmp_path: Path) -> None:
    from onnx import TensorProto as T

    img = identity_model(tmp_path / "img.onnx", {"pixel_values": (T.FLOAT, ["batch", 3, 8, 8])})
    x = build_feeds([img], {"batch": 2, "seq": None}, {})["pixel_values"]
    assert x.shape == (2, 3, 8, 8) and x.dtype == np.float32 and x.std() > 0.5
    tab = identity_model(tmp_path / "tab.onnx", {"inputs": (T.FLOAT, ["batch", "features"])})
    sample = {"inputs": {"shape": [16, 7], "dtype": "float32", "max": 1.0}}
    assert build_feeds([tab], {"batch": 1, "seq": None}, sample)["inputs"].shape == (1, 7)
    with pytest.raises(InputError, match="dynamic axis 1 of unknown size"):
        build_feeds([tab], {"batch": 1, "seq": None}, {})


def test_an_unloadable_file_is_an_input_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(InputError, match="onnxruntime cannot load it"):
        build_feeds([bad], {"batch": 1, "seq": 8}, {})


def test_paths_stay_inside_the_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "candidates").mkdir(parents=True)
    (tmp_path / "secret.onnx").write_bytes(b"x")
    (out / "link.onnx").symlink_to(tmp_path / "secret.onnx")
    assert inside(out, "candidates/a.onnx") == (out / "candidates/a.onnx").resolve()
    for rel in ("../secret.onnx", str(tmp_path / "secret.onnx"), "link.onnx", "", None, 3):
        assert inside(out, rel) is None, rel

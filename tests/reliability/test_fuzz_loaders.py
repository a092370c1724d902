"""Random and mutated bytes into every loader: nothing escapes but the tool's typed errors.

Each property writes the bytes to a file and calls the loader; a BmrError subclass is the only
acceptable failure. Budgets are small (derandomized, a fixed number of examples) so the whole
module stays within seconds; raise FUZZ_EXAMPLES to search harder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from bmr_compress.errors import BmrError

N = int(os.environ.get("FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=N, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# for the known-bug (xfail) properties: stop at the first failure, no shrinking
FUZZ_KNOWN_BUG = settings(FUZZ, phases=[Phase.explicit, Phase.generate], report_multiple_bugs=False)


def mutations(valid: bytes, head: int = 256) -> st.SearchStrategy[bytes]:
    """Random bytes, byte flips (biased to the first `head` bytes), truncations, insertions."""
    n = len(valid)

    def flip(edits: list[tuple[int, int]]) -> bytes:
        b = bytearray(valid)
        for i, v in edits:
            b[i % n] = v
        return bytes(b)

    pos = st.one_of(st.integers(0, min(head, n) - 1), st.integers(0, n - 1))
    return st.one_of(
        st.binary(max_size=512),
        st.lists(st.tuples(pos, st.integers(0, 255)), min_size=1, max_size=6).map(flip),
        st.integers(0, n - 1).map(lambda k: valid[:k]),
        st.tuples(st.integers(0, n), st.binary(min_size=1, max_size=32)).map(
            lambda t: valid[: t[0]] + t[1] + valid[t[0]:]),
    )


def only_typed_errors(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except BmrError:
        pass


@pytest.fixture(scope="module")
def valid(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Valid files of each kind to mutate."""
    import numpy as np
    import onnx
    import torch
    from onnx import TensorProto, helper, numpy_helper
    from safetensors.torch import save_file

    d = tmp_path_factory.mktemp("fuzz-valid")
    torch.manual_seed(0)
    save_file({"a.weight": torch.randn(3, 4), "a.bias": torch.randn(3), "n": torch.arange(5)},
              str(d / "w.safetensors"), metadata={"format": "pt"})
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32), "W")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])], [w])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(d / "m.onnx"))
    np.savez(d / "x.npz", x=np.zeros((4, 1, 8, 8), np.float32), y=np.arange(4))
    torch.save({"x": torch.zeros(4, 3)}, d / "x.pt")
    from importlib import resources

    return {
        "safetensors": (d / "w.safetensors").read_bytes(),
        "onnx": (d / "m.onnx").read_bytes(),
        "npz": (d / "x.npz").read_bytes(),
        "pt": (d / "x.pt").read_bytes(),
        "recipe": (resources.files("bmr_compress.model_zoo") / "mlp-digits.toml").read_bytes(),
        "jsonl": b'{"text": "a b", "label": 1}\n{"text": "c", "label": 0}\n',
        "config": json.dumps({"bmr_zoo_architecture": "mlp", "widths": [5, 3], "task": "classification",
                              "num_labels": 10}).encode(),
    }


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


# ---------------------------------------------------------------- weights


@FUZZ
@given(data=st.data())
def test_safetensors_weight_file(valid: dict[str, bytes], tmp_path: Path, data: st.DataObject) -> None:
    from bmr_compress.io.checks import read_safetensors_header
    from bmr_compress.io.sources import load_weight_file

    p = _write(tmp_path, "w.safetensors", data.draw(mutations(valid["safetensors"])))
    only_typed_errors(lambda: read_safetensors_header(p))
    only_typed_errors(lambda: load_weight_file(p))


@FUZZ
@given(data=st.data())
def test_export_load_state_dict(valid: dict[str, bytes], tmp_path: Path, data: st.DataObject) -> None:
    from bmr_compress.export.safetensors_export import load_state_dict

    p = _write(tmp_path, "model.safetensors", data.draw(mutations(valid["safetensors"])))
    only_typed_errors(lambda: load_state_dict(p))


@FUZZ
@given(data=st.data())
def test_pickled_state_dict_weights_only(valid: dict[str, bytes], tmp_path: Path, data: st.DataObject) -> None:
    from bmr_compress.io.sources import load_weight_file

    p = _write(tmp_path, "w.pt", data.draw(mutations(valid["pt"])))
    only_typed_errors(lambda: load_weight_file(p))  # refused (no opt-in)
    only_typed_errors(lambda: load_weight_file(p, allow_pickle=True))


# ---------------------------------------------------------------- onnx


@FUZZ
@given(data=st.data())
def test_onnx_file(valid: dict[str, bytes], tmp_path: Path, data: st.DataObject) -> None:
    from bmr_compress.io.checks import check_onnx_file

    p = _write(tmp_path, "model.onnx", data.draw(mutations(valid["onnx"], head=64)))
    only_typed_errors(lambda: check_onnx_file(p))


@FUZZ
@given(data=st.data())
def test_onnx_validation_check_never_raises(valid: dict[str, bytes], tmp_path: Path, data: st.DataObject) -> None:
    """export.validation_checks.check_onnx_files records an unreadable model as a failed check."""
    from bmr_compress.export.validation_checks import check_onnx_files
    from bmr_compress.export.validation import ValidationResult

    p = _write(tmp_path, "model.onnx", data.draw(mutations(valid["onnx"], head=64)))
    check_onnx_files(ValidationResult(), {"compressed": p})


# ---------------------------------------------------------------- configs and recipes


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 300) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=12,
)


@FUZZ
@given(data=st.data())
def test_zoo_config_json(valid: dict[str, bytes], tmp_path: Path, data: st.DataObject) -> None:
    """A zoo snapshot whose config.json is mutated bytes or valid JSON with random values."""
    from bmr_compress.pipeline.sources import resolve_source

    base = json.loads(valid["config"])
    key = data.draw(st.sampled_from(sorted(base) + ["extra"]))
    structured = json.dumps({**base, key: data.draw(json_values)}).encode()
    raw = data.draw(st.one_of(mutations(valid["config"], head=64), st.just(structured)))
    d = tmp_path / "snap"
    d.mkdir(exist_ok=True)
    _write(d, "config.json", raw)
    _write(d, "model.safetensors", valid["safetensors"])
    only_typed_errors(lambda: resolve_source(str(d)))


@FUZZ
@given(text=st.text(max_size=300))
def test_recipe_random_text(text: str) -> None:
    from bmr_compress.io.recipes import parse_recipe

    only_typed_errors(lambda: parse_recipe(text, "fuzz.toml"))


@FUZZ
@given(data=st.data())
def test_recipe_mutated(valid: dict[str, bytes], tmp_path: Path, data: st.DataObject) -> None:
    from bmr_compress.io.recipes import load_recipe

    raw = data.draw(mutations(valid["recipe"], head=len(valid["recipe"])))
    p = _write(tmp_path, "mlp-digits.toml", raw)
    only_typed_errors(lambda: load_recipe(str(p)))


@FUZZ
@given(data=st.data())
def test_recipe_structured_values(valid: dict[str, bytes], data: st.DataObject) -> None:
    """Valid TOML with one value replaced by a random scalar/array/table."""
    import tomllib

    from bmr_compress.io.recipes import parse_recipe

    table = tomllib.loads(valid["recipe"].decode())
    section = data.draw(st.sampled_from(["source", "train", "data", "settings", None]))
    scalars = st.integers(-3, 10**6) | st.text(max_size=6) | st.booleans() | st.floats(allow_nan=False)
    value = data.draw(scalars | st.lists(scalars, max_size=3) | st.dictionaries(st.text(max_size=4), scalars, max_size=2))
    target = table if section is None else table[section]
    key = data.draw(st.sampled_from(sorted(target) + ["zz"]))
    target[key] = value
    only_typed_errors(lambda: parse_recipe(_toml(table), "fuzz.toml", expected_name="mlp-digits"))


def _toml(table: dict[str, Any], prefix: str = "") -> str:
    """A minimal TOML writer for the fuzzed tables (scalars, arrays, nested tables)."""
    def val(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(float(v)) if isinstance(v, float) and v in (float("inf"), -float("inf")) is False else json.dumps(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        return "{" + ", ".join(f"{json.dumps(k)} = {val(x)}" for k, x in v.items()) + "}"

    lines = [f"{json.dumps(k)} = {val(v)}" for k, v in table.items() if not isinstance(v, dict)]
    for k, v in table.items():
        if isinstance(v, dict):
            name = f"{prefix}.{json.dumps(k)}" if prefix else json.dumps(k)
            lines.append(f"[{name}]")
            lines.append(_toml(v, name))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- data files


@FUZZ
@given(data=st.data())
def test_tensor_data_files(valid: dict[str, bytes], tmp_path: Path, data: st.DataObject) -> None:
    from bmr_compress.io.userdata import load_tensor_file

    kind = data.draw(st.sampled_from(["npz", "pt"]))
    p = _write(tmp_path, f"data.{kind}", data.draw(mutations(valid[kind])))
    only_typed_errors(lambda: load_tensor_file(p))


@FUZZ
@given(data=st.data())
def test_text_data_files(valid: dict[str, bytes], tmp_path: Path, data: st.DataObject) -> None:
    from bmr_compress.io.userdata import load_texts

    kind = data.draw(st.sampled_from(["txt", "jsonl"]))
    raw = data.draw(st.one_of(mutations(valid["jsonl"], head=64),
                              st.lists(json_values, max_size=4).map(
                                  lambda rows: "\n".join(json.dumps(r) for r in rows).encode())))
    p = _write(tmp_path, f"data.{kind}", raw)
    only_typed_errors(lambda: load_texts(p))


# ---------------------------------------------------------------- compressed directories, posteriors
# Loaders owned by cutting/ and variational/: a crash with an untyped error is a known bug,
# reported to their owners; strict xfail flips to a failure once it is fixed.


@pytest.fixture(scope="module")
def compressed_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real compressed zoo MLP (surgery.save_compressed) to mutate."""
    import torch

    from bmr_compress.cutting import apply_plan_, save_compressed
    from bmr_compress.coupling import discover_groups
    from bmr_compress.planning.plan import Plan
    from bmr_compress.zoo.adapters import register_with_surgery
    from bmr_compress.zoo.architectures import build_model

    arch = register_with_surgery()
    torch.manual_seed(0)
    model = build_model("mlp", {"widths": [6, 5]}).eval()
    groups = discover_groups(model, {"pixel_values": torch.rand(2, 1, 8, 8)})
    keep = {g.name: list(range(max(1, g.num_units - 2))) for g in groups}
    record = apply_plan_(model, groups, Plan(keep=keep, unstructured={}, settings={}, summary={}))
    d = tmp_path_factory.mktemp("fuzz-compressed") / "c"
    save_compressed(model, record, d, architecture=arch, init_config=model.zoo_config_dict())
    return d


def _mutated_dir(src: Path, dst: Path, name: str, raw: bytes) -> Path:
    import shutil

    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    (dst / name).write_bytes(raw)
    return dst


@FUZZ_KNOWN_BUG
@given(data=st.data())
def test_read_manifest(compressed_dir: Path, tmp_path: Path, data: st.DataObject) -> None:
    from bmr_compress.cutting import read_manifest

    raw = data.draw(mutations((compressed_dir / "bmr_manifest.json").read_bytes(), head=4096))
    d = _mutated_dir(compressed_dir, tmp_path / "m", "bmr_manifest.json", raw)
    only_typed_errors(lambda: read_manifest(d))


@FUZZ_KNOWN_BUG
@given(data=st.data())
def test_load_compressed(compressed_dir: Path, tmp_path: Path, data: st.DataObject) -> None:
    from bmr_compress.cutting import load_compressed

    name = data.draw(st.sampled_from(["bmr_manifest.json", "config.json", "model.safetensors"]))
    raw = data.draw(mutations((compressed_dir / name).read_bytes(), head=4096))
    d = _mutated_dir(compressed_dir, tmp_path / "m", name, raw)
    only_typed_errors(lambda: load_compressed(d))


def test_compressed_dir_as_source_is_typed(compressed_dir: Path, tmp_path: Path) -> None:
    """Through io.resolve_source (which checks the files first) the same damage is an InputError."""
    from bmr_compress.errors import InputError
    from bmr_compress.pipeline.sources import resolve_source

    assert resolve_source(str(compressed_dir)).model is not None
    for name in ("bmr_manifest.json", "config.json", "model.safetensors"):
        raw = (compressed_dir / name).read_bytes()
        for bad in (raw[: len(raw) // 2], b"\xff" + raw[1:], b"[]"):
            d = _mutated_dir(compressed_dir, tmp_path / "m", name, bad)
            with pytest.raises(InputError, match=name.replace(".", r"\.")):
                resolve_source(str(d))


@FUZZ_KNOWN_BUG
@given(data=st.data())
def test_load_posterior(compressed_dir: Path, tmp_path: Path, data: st.DataObject) -> None:
    import torch
    from safetensors.torch import save_file

    from bmr_compress.variational import load_posterior

    p = tmp_path / "posterior.safetensors"
    meta = data.draw(st.fixed_dictionaries({}, optional={
        "bmr_gates": st.one_of(st.text(max_size=20), json_values.map(json.dumps)),
        "bmr_settings": st.one_of(st.text(max_size=20), json_values.map(json.dumps)),
    }))
    save_file({"a::mu": torch.zeros(2), "a::log_var": torch.zeros(2), "a::prior_log_var": torch.zeros(())},
              str(p), metadata=meta)
    raw = data.draw(st.one_of(st.just(p.read_bytes()), mutations(p.read_bytes())))
    p.write_bytes(raw)
    only_typed_errors(lambda: load_posterior(p))

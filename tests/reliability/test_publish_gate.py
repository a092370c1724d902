"""No model is exported, re-validated or pushed with NaN parameters or unreadable files.

One real `compress` output (zoo MLP) is copied and damaged; `push --dry-run`, `validate` and
`export` must refuse each copy: NaN/Inf -> exit 1 (validation failed, nothing published),
unreadable file -> exit 2, both as one line naming the file, the directory unchanged.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.reliability._sources import Sources
from tests.reliability.test_bad_inputs import snapshot
from tests.reliability._cli import log_lines


@pytest.fixture(scope="module")
def good_out(sources: Sources, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bmr_compress.cli.main import cli

    out = tmp_path_factory.mktemp("publish") / "good"
    mp = pytest.MonkeyPatch()
    mp.setenv("BMR_COMPRESS_CACHE", str(sources.cache))
    try:
        r = CliRunner().invoke(cli, ["compress", "zoo:mlp-digits", "--out", str(out), "--steps", "5",
                                     "--max-samples", "240"])
    finally:
        mp.undo()
    assert r.exit_code == 0, r.output
    return out


def _nan_safetensors(d: Path) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    p = d / "model.safetensors"
    with safe_open(str(p), framework="pt") as f:
        meta = f.metadata()
        st = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    k = next(k for k, v in st.items() if v.is_floating_point())
    st[k] = st[k].clone()
    st[k].view(-1)[0] = float("nan")
    save_file(st, str(p), metadata=meta)


def _nan_onnx(d: Path) -> None:
    import numpy as np
    import onnx
    from onnx import numpy_helper

    p = d / "model.onnx"
    m = onnx.load(str(p))
    init = next(i for i in m.graph.initializer if numpy_helper.to_array(i).dtype.kind == "f")
    a = numpy_helper.to_array(init).copy()
    a.flat[0] = np.inf
    init.CopyFrom(numpy_helper.from_array(a, init.name))
    onnx.save(m, str(p))


def _garbage_onnx(d: Path) -> None:
    b = (d / "model.onnx").read_bytes()
    (d / "model.onnx").write_bytes(b[: len(b) // 3])


DAMAGE: dict[str, tuple[Callable[[Path], None], int, str]] = {
    "nan-safetensors": (_nan_safetensors, 1, "model.safetensors"),
    "inf-onnx-initializer": (_nan_onnx, 1, "model.onnx"),
    "truncated-onnx": (_garbage_onnx, 2, "model.onnx"),
}


def test_good_output_can_be_pushed(good_out: Path) -> None:
    from bmr_compress.cli.main import cli

    r = CliRunner().invoke(cli, ["push", str(good_out), "me/mlp-bmr", "--dry-run"])
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("damage", sorted(DAMAGE))
@pytest.mark.parametrize("command", ["push", "validate", "export"])
def test_damaged_output_is_refused(command: str, damage: str, good_out: Path, tmp_path: Path) -> None:
    from bmr_compress.cli.main import cli

    fn, code, name = DAMAGE[damage]
    if command == "export" and name == "model.onnx":
        pytest.skip("export rewrites model.onnx from model.safetensors: a damaged ONNX is repaired")
    d = tmp_path / "copy"
    shutil.copytree(good_out, d)
    fn(d)
    before = snapshot(d)
    argv = {"push": ["push", str(d), "me/mlp-bmr", "--dry-run"], "validate": ["validate", str(d)],
            "export": ["export", str(d)]}[command]
    r = CliRunner().invoke(cli, argv)
    lines = log_lines(r.stderr)
    assert r.exit_code == code, r.output
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(d / name) in lines[0], r.stderr
    assert snapshot(d) == before

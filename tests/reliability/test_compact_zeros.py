"""Issue 16 #2: a `--compact-zeros` output reloads: `model.safetensors` has one writer
(export.write_weights, plain or compact) and load_compressed reads what it wrote, so
`validate`, `export` and `push --dry-run` agree. Real CLI processes, real files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.reliability._cli import run_cli_process
from tests.reliability._sources import Sources

UNSTRUCTURED = ["--steps", "5", "--n-data", "10", "--max-samples", "240", "--unstructured"]


def _compact_entries(d: Path) -> dict:
    from bmr_compress.export.safetensors_export import read_metadata

    return json.loads(read_metadata(d / "model.safetensors")["bmr_compact_zeros"])


@pytest.fixture(scope="module")
def unstructured(sources: Sources, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("unstructured") / "un"
    r = run_cli_process(["compress", "zoo:mlp-digits", "--out", str(out), *UNSTRUCTURED], sources.cache)
    assert r.returncode == 0, r.stderr
    return out


def test_compress_compact_zeros_reloads(sources: Sources, tmp_path: Path) -> None:
    out = tmp_path / "cz"
    r = run_cli_process(["compress", "zoo:mlp-digits", "--out", str(out), *UNSTRUCTURED, "--compact-zeros"],
                        sources.cache)
    assert r.returncode == 0, r.stderr
    assert _compact_entries(out), "the run zeroed weights, so some tensors are stored compactly"
    for argv in (["validate", str(out)], ["push", str(out), "me/x", "--dry-run"]):  # export: next test
        r = run_cli_process(argv, sources.cache)
        assert r.returncode == 0, f"{argv[0]}: {r.stderr}"


def test_export_compact_zeros_keeps_a_good_directory_good(unstructured: Path, sources: Sources,
                                                         tmp_path: Path) -> None:
    d = tmp_path / "copy"
    shutil.copytree(unstructured, d)
    r = run_cli_process(["export", str(d), "--compact-zeros"], sources.cache)
    assert r.returncode == 0, r.stderr
    assert _compact_entries(d)
    r = run_cli_process(["validate", str(d)], sources.cache)
    assert r.returncode == 0, r.stderr


def test_load_compressed_reads_both_forms(unstructured: Path, tmp_path: Path) -> None:
    import torch

    from bmr_compress.export.safetensors_export import write_weights
    from bmr_compress.pipeline.commands import _load_compressed

    plain = _load_compressed(unstructured)
    d = tmp_path / "copy"
    shutil.copytree(unstructured, d)
    write_weights(plain, d, {}, compact_zeros=True)
    back = _load_compressed(d)
    for (k, a), (_, b) in zip(plain.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), k

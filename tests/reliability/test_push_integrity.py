"""Issue 16 #3: `push` checks the files, not only report.json.

report.json records the sha256 of every file it validated; `push --dry-run` refuses a
directory whose files differ (changed, missing, added), a report whose `passed` contradicts
its own checks, and a manifest that disagrees with the weights. Real CLI processes on real
`compress` outputs (one validated, one rejected by the gate)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.reliability._cli import one_error_line, run_cli_process
from tests.reliability._sources import Sources


def _copy(src: Path, tmp: Path) -> Path:
    d = tmp / "copy"
    shutil.copytree(src, d)
    return d


def _push(d: Path, sources: Sources):
    return run_cli_process(["push", str(d), "me/mlp-bmr", "--dry-run"], sources.cache)


def _other_valid_onnx(d: Path) -> None:
    """Another valid ONNX: the same graph with one initializer scaled."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(d / "model.onnx"))
    init = max(m.graph.initializer, key=lambda i: numpy_helper.to_array(i).size)
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 3.0, init.name))
    onnx.checker.check_model(m)
    onnx.save(m, str(d / "model.onnx"))


def _edit_manifest(d: Path, fn) -> None:
    p = d / "bmr_manifest.json"
    m = json.loads(p.read_text())
    fn(m)
    p.write_text(json.dumps(m))


def _swap_kept(m: dict) -> None:
    g = m["groups"]["net.0"]
    g["kept"] = sorted(set(range(g["num_units"])) - {g["kept"][0]})[: len(g["kept"])]


@pytest.fixture(scope="module")
def rejected(sources: Sources, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rejected") / "r"
    r = run_cli_process(["compress", "zoo:mlp-digits", "--out", str(out), "--steps", "5", "--max-samples", "240",
                         "--size-budget", "0.05"], sources.cache)
    assert r.returncode == 1, r.stderr
    return out.with_name("r.rejected")


def test_replaced_onnx_is_refused(compressed: Path, sources: Sources, tmp_path: Path) -> None:
    d = _copy(compressed, tmp_path)
    assert _push(d, sources).returncode == 0
    _other_valid_onnx(d)
    r = _push(d, sources)
    assert r.returncode == 1 and "model.onnx changed after validation" in one_error_line(r)
    r = run_cli_process(["validate", str(d)], sources.cache)  # the re-validation fails (parity) ...
    assert r.returncode == 1, r.stderr
    r = _push(d, sources)  # ... and still nothing is published
    assert r.returncode == 1 and "validation did not pass" in one_error_line(r)


def test_rejected_report_edited_to_passed_is_refused(rejected: Path, sources: Sources, tmp_path: Path) -> None:
    d = _copy(rejected, tmp_path)
    report = json.loads((d / "report.json").read_text())
    report["validation"]["passed"] = True
    (d / "report.json").write_text(json.dumps(report))
    r = _push(d, sources)
    assert r.returncode == 1 and "task_metric failed" in one_error_line(r)


@pytest.mark.parametrize("edit", ["swap-kept", pytest.param("drop-kept", marks=pytest.mark.slow)])
def test_edited_kept_lists_are_refused(edit: str, compressed: Path, sources: Sources, tmp_path: Path) -> None:
    d = _copy(compressed, tmp_path)
    if edit == "swap-kept":  # same count: only the hash can tell
        _edit_manifest(d, _swap_kept)
        r = _push(d, sources)
        assert r.returncode == 1 and "bmr_manifest.json changed after validation" in one_error_line(r)
    else:  # inconsistent with final_units and the weights: validate refuses it as well
        _edit_manifest(d, lambda m: m["groups"]["net.0"]["kept"].pop())
        for argv in (["validate", str(d)], ["push", str(d), "me/x", "--dry-run"]):
            r = run_cli_process(argv, sources.cache)
            assert r.returncode == 1, r.stderr
            assert "net.0" in one_error_line(r) or "changed after validation" in one_error_line(r)


def test_added_or_removed_files_are_refused(compressed: Path, sources: Sources, tmp_path: Path) -> None:
    d = _copy(compressed, tmp_path)
    (d / "extra.onnx").write_bytes((d / "model.onnx").read_bytes())
    r = _push(d, sources)
    assert r.returncode == 1 and "was not part of the validation" in one_error_line(r)
    (d / "extra.onnx").unlink()
    (d / "posterior.safetensors").unlink()
    r = _push(d, sources)
    assert r.returncode == 1 and "missing" in one_error_line(r)


def test_report_without_hashes_needs_revalidation(compressed: Path, sources: Sources, tmp_path: Path) -> None:
    d = _copy(compressed, tmp_path)
    report = json.loads((d / "report.json").read_text())
    del report["integrity"]
    (d / "report.json").write_text(json.dumps(report))
    r = _push(d, sources)
    assert r.returncode == 1 and "no file hashes" in one_error_line(r)
    assert run_cli_process(["validate", str(d)], sources.cache).returncode == 0
    assert _push(d, sources).returncode == 0


def test_bench_results_beside_a_validated_output_keep_it_pushable(
        compressed: Path, sources: Sources, tmp_path: Path) -> None:
    """`bench` writes bench/<cpu signature>.json into a validated output: outside the seal,
    never uploaded, and still a result bmr-compress wrote (a later failed run may replace it)."""
    from bmr_compress.io.integrity import file_hashes, tool_written

    d = _copy(compressed, tmp_path)
    (d / "bench").mkdir()
    (d / "bench" / "0123456789ab.json").write_text(json.dumps({"recommended": "original"}))
    r = run_cli_process(["push", str(d), "me/mlp-bmr", "--dry-run", "--json"], sources.cache)
    assert r.returncode == 0, r.stderr
    files = json.loads(r.stdout)["files"]
    assert "model.onnx" in files and not any(f.startswith("bench") for f in files)
    assert not any(k.startswith("bench") for k in file_hashes(d)["sha256"])
    assert tool_written(d) is None
    (d / "bench" / "notes.txt").write_text("mine")  # not something bench writes
    assert tool_written(d) == "bench/notes.txt is not part of a result"
    # its operating points are re-timed here: bench adds its own file, the output stays pushable
    (d / "bench" / "notes.txt").unlink()
    r = run_cli_process(["bench", str(d)], sources.cache)
    assert r.returncode == 0 and "deploy here:" in r.stdout, r.stderr
    assert len(list((d / "bench").iterdir())) == 2 and tool_written(d) is None

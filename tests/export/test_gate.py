"""The validation gate: a corrupted ONNX, a parity failure, NaN weights or a metric drop fail it
(ValidationFailed, exit code 1), and push_to_hub then refuses the directory."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from bmr_compress.errors import ValidationFailed
from bmr_compress.export import ValidationSettings, build_report, validate, write_report
from bmr_compress.io.hub import push_to_hub
from tests.export._flow import FLOW, heldout, run_flow, sample_for
from tests.export._surgery import surgery_compress
from tests.tiny_models import tiny_bert


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return run_flow("vit", tmp_path_factory.mktemp("gate"), surgery_compress)


def _validate(flow, onnx_path, compressed=None, settings=FLOW):
    return validate(flow.original, compressed or flow.compressed, onnx_path=onnx_path,
                    original_onnx_path=flow.original_onnx.path, sample_inputs=sample_for("vit"),
                    heldout_batches=heldout("vit"), task="classification", settings=settings)


def _publishable_dir(flow, tmp_path, result):
    d = tmp_path / "pub"
    shutil.copytree(flow.out, d)
    rep = build_report(source={"id": "tiny-vit"}, settings={}, original=flow.original,
                       compressed=flow.compressed, validation=result, files_before={},
                       stage_seconds={"validate": 0.1})
    from bmr_compress.io.integrity import INTEGRITY_KEY, file_hashes

    rep[INTEGRITY_KEY] = file_hashes(d)  # as finish_stage seals what it validated
    write_report(d, rep, plots=False)
    if result.passed:  # as finish_stage: a real validation signs its record
        from bmr_compress.io.integrity import seal_report_file

        seal_report_file(d)
    return d


def test_weight_bytes_corrupted_fails_parity(good, tmp_path):
    bad = tmp_path / "model.onnx"
    data = bytearray(good.onnx.path.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = b"\xff" * 64  # NaN payload inside a weight
    bad.write_bytes(bytes(data))
    with pytest.raises(ValidationFailed, match="onnx_parity.*max \\|err\\| inf"):
        _validate(good, bad)


def test_corrupted_onnx_fails_and_push_refuses(good, tmp_path):
    bad = tmp_path / "model.onnx"
    data = good.onnx.path.read_bytes()
    bad.write_bytes(data[: len(data) // 3])  # truncated protobuf
    with pytest.raises(ValidationFailed, match="onnx_checker") as ei:
        _validate(good, bad)
    assert ei.value.exit_code == 1
    result = ei.value.result
    assert not result.passed and any(c.name == "onnx_checker[compressed]" and not c.passed for c in result.checks)
    d = _publishable_dir(good, tmp_path, result)
    assert json.loads((d / "report.json").read_text())["validation"]["passed"] is False
    with pytest.raises(ValidationFailed, match="did not pass") as pe:
        push_to_hub(d, "user/tiny-vit-bmr", dry_run=True)
    assert pe.value.exit_code == 1


def test_parity_failure_when_onnx_is_another_model(good, tmp_path):
    """The ONNX of the *original* model does not match the compressed PyTorch model."""
    with pytest.raises(ValidationFailed, match="onnx_parity"):
        _validate(good, good.original_onnx.path)


def test_nan_parameter_fails(good):
    broken = __import__("copy").deepcopy(good.compressed)
    with torch.no_grad():
        next(broken.parameters()).view(-1)[0] = float("nan")
    with pytest.raises(ValidationFailed, match="finite_parameters"):
        _validate(good, good.onnx.path, compressed=broken)


def test_metric_gate_fails_on_strict_threshold(good):
    strict = ValidationSettings(min_top1_agreement=1.01, latency_runs=2, latency_warmup=0)
    with pytest.raises(ValidationFailed, match="task_metric"):
        _validate(good, good.onnx.path, settings=strict)


def test_push_refuses_without_report(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"x")
    with pytest.raises(ValidationFailed, match="no report.json"):
        push_to_hub(tmp_path, "user/x", dry_run=True)


def test_gate_passes_on_good_export_and_push_dry_run_lists_files(good, tmp_path):
    result = _validate(good, good.onnx.path)
    assert result.passed
    d = _publishable_dir(good, tmp_path, result)
    res = push_to_hub(d, "user/tiny-vit-bmr", dry_run=True)
    assert res.dry_run and "model.onnx" in res.files and "README.md" in res.files
    assert not (d / "README.md").exists()  # dry run writes nothing


def test_unrelated_model_parity_uses_unseen_shapes(tmp_path):
    """Parity inputs never equal the export sample's shape (text: batch and sequence)."""
    from bmr_compress.export.validation import parity_shapes

    sample = sample_for("bert")
    shapes = parity_shapes(sample, tiny_bert().config.max_position_embeddings)
    b, s = sample["input_ids"].shape
    assert len(shapes) == 2 and all(x != b and y != s for x, y in shapes)

"""--mixed-precision (pipeline/mixed.py): model.mixed.onnx for the shipped model of a run, on a
tiny BERT built in-process: real ONNX, real onnxruntime sessions, the validation gate and
the report."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest

from bmr_compress.bmr.precision import GRIDS, KEEP
from bmr_compress.export import ValidationSettings, export_onnx, validate
from bmr_compress.export.latency import cpu_session
from bmr_compress.export.report import render_markdown
from bmr_compress.pipeline.config import CompressConfig, ExportConfig, build_config
from bmr_compress.pipeline.finish import GATE_FACTOR
from bmr_compress.pipeline.mixed import MIXED_FILE, finalize_, write_mixed_precision
from bmr_compress.pipeline.summary import format_summary, mixed_of
from tests.tiny_models import text_inputs, tiny_bert


def _run(budget: float, n_train: int = 6, batch: int = 4) -> SimpleNamespace:
    """What finish_stage hands write_mixed_precision: the model shipped (a copy of the
    original here), calibration and held-out batches, the config; no tokenizer, so retention
    is the task metric on batches (export/retention.BatchRetention)."""
    original = tiny_bert()
    train = [text_inputs(batch=batch, seq=13, seed=s) for s in range(n_train)]
    held = [text_inputs(batch=3, seq=11, seed=100 + s) for s in range(2)]
    config = CompressConfig().replace(export=ExportConfig(max_quality_loss=budget,
                                                          mixed_precision=True))
    return SimpleNamespace(
        original=original, model=copy.deepcopy(original), config=config,
        data=SimpleNamespace(train_batches=train, heldout_batches=held),
        source=SimpleNamespace(task="embedding", tokenizer_or_processor=None))


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed-stage")
    f = _run(budget=0.05)
    example = text_inputs(batch=2, seq=9, seed=7)
    base = export_onnx(f.original, root / "original" / "model.onnx", example, sparse=False).path
    stage = root / "out"
    stage.mkdir()
    mixed = write_mixed_precision(f, stage, root / "work", example, base)
    return f, example, base, stage, mixed


def test_the_smallest_file_that_keeps_the_budget_on_selection_ships(written):
    f, _, base, stage, mixed = written
    rec = mixed.record
    assert mixed.path == stage / MIXED_FILE and mixed.path.is_file()
    assert rec["file"] == MIXED_FILE and rec["retention"]["selection"] >= 1 - 0.05
    assert rec["times_smaller"] == pytest.approx(base.stat().st_size / mixed.path.stat().st_size)
    # every Linear and the word embedding were scored and found in the graph
    linears = sum(1 for m in f.model.modules() if type(m).__name__ == "Linear")
    assert rec["matrices"]["in_onnx"] >= linears + 1
    assert "embeddings.word_embeddings.weight" in rec["grids"]
    # scored smallest first: nothing smaller than the shipped one qualified, and a file not
    # scored is larger than it
    ladder = rec["ladder"]
    assert [c["tolerance"] for c in ladder] == sorted((c["tolerance"] for c in ladder), reverse=True)
    for c in ladder:
        if c["size_bytes"] < rec["size_bytes"]:
            assert c["retention"] and not c["qualifies"]
        if not c["retention"]:
            assert c["size_bytes"] >= rec["size_bytes"] and c["reason"].startswith("not scored")
    assert sum(rec["counts"].values()) == rec["matrices"]["in_onnx"]
    assert set(rec["counts"]) == {KEEP, *GRIDS}


def test_the_file_holds_the_chosen_grids_and_runs_on_onnxruntime(written):
    f, _, _, _, mixed = written
    nodes = onnx.load(str(mixed.path)).graph.node
    ops = {n.op_type for n in nodes}
    chosen = set(mixed.record["grids"].values())
    assert ("MatMulNBits" in ops) == any(g != KEEP for p, g in mixed.record["grids"].items()
                                         if "embeddings" not in p)
    if mixed.record["grids"]["embeddings.word_embeddings.weight"] != KEEP:
        assert "GatherBlockQuantized" in ops
    bits = {a.i for n in nodes if n.op_type in ("MatMulNBits", "GatherBlockQuantized")
            for a in n.attribute if a.name == "bits"}
    assert bits == {GRIDS[g].bits for g in chosen if g != KEEP}
    x = text_inputs(batch=3, seq=17, seed=5)  # unlike the export sample
    got = cpu_session(mixed.path).run(None, {k: v.numpy() for k, v in x.items()})[0]
    ref = f.model(**x).last_hidden_state.detach().numpy()
    assert got.shape == ref.shape and np.isfinite(got).all()
    cos = (got * ref).sum(-1) / (np.linalg.norm(got, axis=-1) * np.linalg.norm(ref, axis=-1))
    assert cos.mean() > 0.95


def test_validation_times_and_gates_it_and_the_report_says_so(written, tmp_path):
    f, example, base, stage, mixed = written
    onnx_path = export_onnx(f.model, stage / "model.onnx", example).path
    result = validate(f.original, f.model, onnx_path=onnx_path, original_onnx_path=base,
                      sample_inputs=example, heldout_batches=f.data.heldout_batches,
                      task="embedding", mixed_path=mixed.path, raise_on_failure=False,
                      settings=ValidationSettings(latency_runs=5, latency_grid=((1, 1), (2, 1))))
    rec = finalize_(mixed, result, GATE_FACTOR)
    checks = {c.name: c for c in result.checks}
    for name in ("onnx_checker[mixed_precision]", "mixed_precision_metric",
                 "mixed_precision_retention"):
        assert checks[name].passed, checks[name]
    assert result.passed, [c for c in result.checks if not c.passed]
    assert "mixed" in result.latency and rec["speedup"] > 0 and rec["median_ms"] > 0
    assert all("mixed" in row for row in result.latency["grid"])
    assert rec["validation"]["path"] == MIXED_FILE
    assert len(rec["validation"]["rel_error_vs_fp32"]) == 2
    report = {"source": {"id": "tiny"}, "validation": result.to_dict(),
              "parameters": {"original": 1, "compressed": 1, "ratio": 1.0},
              "sparsity": {"structured": {"removed_fraction": 0.0},
                           "unstructured": {"zero_fraction": 0.0}},
              "latency": result.latency, "stage_seconds": {}, "files": {},
              "mixed_precision": json.loads(json.dumps(rec, default=str))}
    md = render_markdown(report)
    assert "## Mixed precision (BMR per matrix)" in md and f"`{MIXED_FILE}`" in md
    assert "| compressed mixed precision |" in md
    text = format_summary({"mixed_precision": mixed_of(report), "out": "OUT"})
    assert f"ort.InferenceSession('OUT/{MIXED_FILE}'" in text


def test_no_file_when_nothing_keeps_the_budget(tmp_path):
    """A zero budget: every rounded file moves the output, so none qualifies on selection
    data; nothing is written and the record says why."""
    f = _run(budget=0.0, n_train=2, batch=2)
    example = text_inputs(batch=2, seq=9, seed=7)
    base = export_onnx(f.original, tmp_path / "o" / "model.onnx", example, sparse=False).path
    mixed = write_mixed_precision(f, tmp_path, tmp_path / "work", example, base)
    assert mixed.path is None and not (tmp_path / MIXED_FILE).exists()
    assert "no file of the ladder" in mixed.record["reason"]
    assert all(c["retention"] and not c["qualifies"] for c in mixed.record["ladder"])


def test_the_option_reaches_the_config() -> None:
    assert build_config({"mixed_precision": True}).export.mixed_precision is True
    assert CompressConfig().export.mixed_precision is False


def test_help_names_the_option() -> None:
    from click.testing import CliRunner

    from bmr_compress.cli.main import cli

    out = CliRunner().invoke(cli, ["compress", "--help"]).output
    assert "--mixed-precision" in out and "model.mixed.onnx" in out


@pytest.mark.slow
def test_compress_with_mixed_precision_end_to_end(tmp_path: Path) -> None:
    """The CLI on a tiny sentence-transformers snapshot: model.mixed.onnx beside model.onnx,
    validated, timed, in report.json / report.md, the summary and the model card."""
    from click.testing import CliRunner

    from bmr_compress.cli.main import cli
    from bmr_compress.io.card import build_model_card
    from tests.snapshots import st_snapshot

    src = st_snapshot(tmp_path / "snap")
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["compress", str(src), "--out", str(out), "--max-samples", "160",
                                 "--rounds", "1", "--recovery-steps", "2", "--mixed-precision"])
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "report.json").read_text())
    mp = rep["mixed_precision"]
    assert mp["file"] == MIXED_FILE and (out / MIXED_FILE).is_file()
    assert mp["metric"] == "retrieval MRR@10" and mp["retention"]["selection"] >= 0.99
    assert mp["speedup"] > 0 and "mixed" in rep["latency"]
    assert rep["settings"]["mixed_precision"] is True
    assert MIXED_FILE in rep["integrity"]["sha256"]
    names = {c["name"] for c in rep["validation"]["checks"] if c["passed"]}
    assert {"mixed_precision_metric", "mixed_precision_retention"} <= names
    assert "## Mixed precision (BMR per matrix)" in (out / "report.md").read_text()
    assert f"mixed precision: {MIXED_FILE}" in r.output
    card = build_model_card(rep, "me/tiny", out)
    assert f'hf_hub_download("me/tiny", "{MIXED_FILE}")' in card

"""No --data: calibration data chosen by the checkpoint's input modality; unfit data names the fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from bmr_compress.errors import InputError
from bmr_compress.io.data import make_dataset
from bmr_compress.pipeline.sources import resolve_source
from tests.snapshots import MAX_POS, bert_snapshot, vit_snapshot


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory) -> Path:
    return bert_snapshot(tmp_path_factory.mktemp("bare") / "bert")


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory) -> Path:
    return vit_snapshot(tmp_path_factory.mktemp("bare") / "vit")


def test_text_model_defaults_to_docstrings(bert_dir: Path, caplog) -> None:
    src = resolve_source(str(bert_dir))
    with caplog.at_level("WARNING", logger="bmr_compress"):
        data = make_dataset(None, src, max_samples=64, batch_size=16)
    assert data.name == "stdlib docstrings"
    assert data.choice and "text model" in data.choice and "docstring" in data.choice
    assert any("no --data" in r.getMessage() for r in caplog.records)  # the one-line note
    assert "standard-library docstrings" in data.heldout
    b = data.train_batches[0]
    assert {"input_ids", "attention_mask"} <= set(b)
    assert b["input_ids"].shape[1] <= MAX_POS  # capped at the model's positions
    assert "labels" not in b


def test_the_docs_corpus_never_trains_on_a_retrieval_pair_text() -> None:
    """What `--data docs` trains the recovery on shares no paragraph with the retrieval pairs
    that choose operating points (selection) or are reported (held-out)."""
    from bmr_compress.io.package_corpus import docs_corpus, split_texts

    corpus = docs_corpus(2048)
    assert len(corpus.train) > 1000  # broader than the standard library's ~700 paragraphs
    train = set(corpus.train)
    for split in ("selection", "heldout"):
        assert not train & set(split_texts(split))
    assert not train & set(corpus.heldout)


def test_image_model_defaults_to_digits_as_its_images(vit_dir: Path) -> None:
    src = resolve_source(str(vit_dir))
    data = make_dataset(None, src, max_samples=40, batch_size=8)
    assert "digits" in data.name and data.choice and "image model" in data.choice
    b = data.train_batches[0]
    assert tuple(b["pixel_values"].shape[1:]) == (3, 16, 16)  # converted by the processor
    assert "labels" not in b  # digit classes are not this model's classes
    assert sum(len(x["pixel_values"]) for x in data.train_batches + data.heldout_batches) == 40


def test_unfit_data_names_the_fix(bert_dir: Path, vit_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"does not fit.*text model: use --data docstrings"):
        make_dataset("digits", resolve_source(str(bert_dir)))
    p = tmp_path / "lines.txt"
    p.write_text("one line\nanother line\n")
    with pytest.raises(InputError, match="no tokenizer"):
        make_dataset(str(p), resolve_source(str(vit_dir)))


def test_bare_text_snapshot_compresses_without_data(bert_dir: Path, tmp_path: Path) -> None:
    from bmr_compress.cli.main import cli

    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["compress", str(bert_dir), "--out", str(out), "--steps", "2",
                                 "--max-samples", "64"])
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "report.json").read_text())
    assert rep["source"]["dataset"] == "stdlib docstrings"
    assert "docstrings" in rep["source"]["heldout"]
    assert "no --data" in r.output or "docstring" in rep["source"]["data_choice"]


def test_bare_image_snapshot_picks_image_data(vit_dir: Path, tmp_path: Path) -> None:
    from bmr_compress.cli.main import cli

    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["compress", str(vit_dir), "--out", str(out), "--steps", "1",
                                 "--max-samples", "48"])
    # an untrained 5-class ViT has near-tied logits: the top-1 gate may reject (exit 1)
    assert r.exit_code in (0, 1), r.output
    done = out if out.is_dir() else out.with_name("out.rejected")
    rep = json.loads((done / "report.json").read_text())
    assert "digits" in rep["source"]["dataset"] and "image model" in rep["source"]["data_choice"]

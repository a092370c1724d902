"""Data sources: digits split, docstring corpus, user files of each kind -> batches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bmr_compress.errors import InputError
from bmr_compress.io.corpus import docstring_corpus
from bmr_compress.io.data import make_dataset, parse_data_spec
from bmr_compress.io.digits import digits_split
from bmr_compress.io.sources import LoadedSource
from bmr_compress.zoo.architectures import build_model


@pytest.fixture(scope="module")
def mlp_source() -> LoadedSource:
    model = build_model("mlp", {"widths": [16]}).eval()
    return LoadedSource(model, "zoo:mlp", "classification", model.zoo_config_dict(), None, "test", None)


@pytest.fixture(scope="module")
def minilm() -> LoadedSource:
    from bmr_compress.pipeline.sources import resolve_source

    return resolve_source("zoo:all-minilm-l6-v2")


def test_digits_split_sizes_and_determinism() -> None:
    x_tr, y_tr, x_ho, y_ho = digits_split()
    assert x_tr.shape == (1437, 1, 8, 8) and x_ho.shape == (360, 1, 8, 8)
    assert len(y_tr) == 1437 and len(y_ho) == 360 and set(y_ho.tolist()) == set(range(10))
    assert 0.0 <= x_tr.min() and x_tr.max() <= 1.0
    digits_split.cache_clear()
    assert np.array_equal(digits_split()[3], y_ho)


def test_digits_batches(mlp_source: LoadedSource) -> None:
    b = make_dataset("digits", mlp_source, max_samples=10_000, batch_size=100)
    n_tr = sum(len(x["labels"]) for x in b.train_batches)
    n_ho = sum(len(x["labels"]) for x in b.heldout_batches)
    assert (n_tr, n_ho) == (1437, 360)
    first = b.train_batches[0]
    assert set(first) == {"pixel_values", "labels"} and first["pixel_values"].dtype == torch.float32
    assert mlp_source.model(first["pixel_values"]).shape == (100, 10)
    small = make_dataset("digits", mlp_source, max_samples=100, batch_size=32)
    assert sum(len(x["labels"]) for x in small.train_batches + small.heldout_batches) == 100


def test_docstring_corpus_deterministic_and_disjoint() -> None:
    train, held = docstring_corpus(500)
    assert len(train) > 300 and len(held) > 20
    assert not set(train) & set(held)
    assert all(len(t) >= 40 for t in train)
    docstring_corpus.cache_clear()
    assert docstring_corpus(500) == (train, held)
    # the held-out rule is per text: a larger corpus keeps earlier texts on the same side
    big_train, big_held = docstring_corpus(800)
    assert set(held) <= set(big_held) and set(train) <= set(big_train)


def test_docstrings_tokenised_with_checkpoint_tokenizer(minilm: LoadedSource) -> None:
    b = make_dataset("docstrings", minilm, max_samples=40, batch_size=8)
    x = b.train_batches[0]
    assert {"input_ids", "attention_mask"} <= set(x) and x["input_ids"].shape[1] <= 128
    assert minilm.model(**x).last_hidden_state.shape[0] == 8
    assert b.heldout_batches


def test_npz_and_pt_files(tmp_path: Path, mlp_source: LoadedSource) -> None:
    x = np.random.default_rng(0).random((30, 1, 8, 8), dtype=np.float32)
    y = np.arange(30) % 10
    np.savez(tmp_path / "d.npz", x=x, y=y)
    torch.save({"pixel_values": torch.from_numpy(x), "labels": torch.from_numpy(y)}, tmp_path / "d.pt")
    for f in ("d.npz", "d.pt"):
        b = make_dataset(str(tmp_path / f), mlp_source, batch_size=8)
        tr = torch.cat([t["pixel_values"] for t in b.train_batches])
        ho = torch.cat([t["pixel_values"] for t in b.heldout_batches])
        assert len(tr) == 24 and len(ho) == 6
        assert "labels" in b.train_batches[0]
        # train and held-out together are exactly the file's rows
        rows = torch.cat([tr, ho]).flatten(1).sum(1).sort().values
        torch.testing.assert_close(rows, torch.from_numpy(x).flatten(1).sum(1).sort().values)


def test_txt_and_jsonl_files(tmp_path: Path, minilm: LoadedSource) -> None:
    lines = [f"sentence number {i} about pruning" for i in range(15)]  # 3 held out: the minimum
    (tmp_path / "t.txt").write_text("\n".join(lines) + "\n\n")
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps({"text": s, "label": i % 2}) for i, s in enumerate(lines)))
    b = make_dataset(str(tmp_path / "t.txt"), minilm, batch_size=4)
    assert sum(len(t["input_ids"]) for t in b.train_batches + b.heldout_batches) == 15
    j = make_dataset(str(tmp_path / "t.jsonl"), minilm, batch_size=4)
    assert "labels" in j.train_batches[0]
    (tmp_path / "bad.jsonl").write_text('{"txt": 1}\n')
    with pytest.raises(InputError, match="bad.jsonl:1: no text field"):
        make_dataset(str(tmp_path / "bad.jsonl"), minilm)


def test_image_folder(tmp_path: Path, mlp_source: LoadedSource) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("zero", "one"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(8):  # 16 images: 3 held out, the minimum
            Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    b = make_dataset(str(tmp_path / "imgs"), mlp_source, batch_size=4)
    x = b.train_batches[0]
    assert x["pixel_values"].shape[1:] == (1, 8, 8)  # grey + resized to the model's image_size
    labels = torch.cat([t["labels"] for t in b.train_batches + b.heldout_batches])
    assert sorted(labels.tolist()) == [0] * 8 + [1] * 8


def test_bad_data_specs(tmp_path: Path, mlp_source: LoadedSource) -> None:
    with pytest.raises(InputError, match="data path not found"):
        make_dataset(str(tmp_path / "none.npz"), mlp_source)
    (tmp_path / "x.csv").write_text("1,2\n")
    with pytest.raises(InputError, match="unsupported data file"):
        make_dataset(str(tmp_path / "x.csv"), mlp_source)
    with pytest.raises(InputError, match="no tokenizer"):
        make_dataset("docstrings", mlp_source)
    assert parse_data_spec("hf:imdb::test").split == "test"
    with pytest.raises(InputError, match="bad hf data spec"):
        parse_data_spec("hf:")

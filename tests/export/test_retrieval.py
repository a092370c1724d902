"""The retrieval task and task retention (export/retrieval.py, export/retention.py)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from bmr_compress.export.retrieval import (
    make_pairs, ranking_metrics, retention, retrieval_metrics, split_paragraph,
)
from bmr_compress.io.corpus import docstring_corpus, split_texts, text_split

TEXTS = [
    "Return the number of items in the queue. The size is approximate because other threads "
    "may add or remove items.",
    "Open a file for reading. The mode may be text or binary and defaults to text.",
    "Too short. Tiny.",
    "No sentence end here so no pair can be made from it at all",
    "Return the number of items in the queue. A duplicate query must be skipped by the builder.",
    "Close the connection to the server. Pending requests are cancelled and their callbacks run.",
]


class WordHashTokenizer:
    """Deterministic word-level tokenizer with the transformers call signature (numpy out)."""

    def __call__(self, texts, padding=True, truncation=True, max_length=32, return_tensors="np"):
        ids = [[int(hashlib.md5(w.encode()).hexdigest()[:4], 16) % 97 + 1 for w in t.split()][:max_length]
               for t in texts]
        n = max(len(i) for i in ids)
        arr = np.zeros((len(ids), n), np.int64)
        mask = np.zeros((len(ids), n), np.int64)
        for r, i in enumerate(ids):
            arr[r, :len(i)], mask[r, :len(i)] = i, 1
        return {"input_ids": arr, "attention_mask": mask}


def bag_encoder(table: np.ndarray):
    def encode(feed):
        return table[feed["input_ids"]]  # (B, T, H); mean-pooled by embed_texts
    return encode


def test_pairs_put_the_first_sentence_in_the_query_and_the_rest_in_the_document() -> None:
    pairs = make_pairs(TEXTS)
    assert len(pairs) == 3  # too short, no sentence end and the duplicate query are skipped
    for q, d, text in zip(pairs.queries, pairs.documents, [TEXTS[0], TEXTS[1], TEXTS[5]]):
        assert " ".join(text.split()) == f"{q} {d}"
        assert q not in d and q.endswith(".")
    assert make_pairs(TEXTS) == pairs  # deterministic
    assert make_pairs(TEXTS, max_pairs=2).queries == pairs.queries[:2]
    assert split_paragraph("Short one. Two.") is None


def test_selection_heldout_and_train_texts_are_disjoint_and_stable() -> None:
    held, sel, train = split_texts("heldout"), split_texts("selection"), set(docstring_corpus(800)[0])
    assert held and sel and train
    assert not set(held) & set(sel) and not set(sel) & train and not set(held) & train
    assert all(text_split(t) == "selection" for t in sel[:50])
    assert all(text_split(t) == "heldout" for t in held[:50])
    # the split of a text is a property of the text alone
    assert text_split(sel[0]) == text_split(str(sel[0]))
    with pytest.raises(ValueError):
        split_texts("test")


def test_ranking_metrics_on_known_rankings() -> None:
    docs = np.eye(4)
    assert ranking_metrics(docs, docs) == {"mrr@10": 1.0, "recall@1": 1.0, "n": 4}
    # query 0 sits nearest document 1, then its own: rank 2
    q = docs.copy()
    q[0] = [0.6, 0.8, 0.0, 0.0]
    m = ranking_metrics(q, docs)
    assert m["recall@1"] == 0.75 and m["mrr@10"] == pytest.approx((0.5 + 3) / 4)
    # beyond k: reciprocal rank 0
    m = ranking_metrics(q, docs, k=1)
    assert m["mrr@1"] == pytest.approx(0.75)


def test_retention_is_the_artefacts_metric_over_the_originals() -> None:
    rng = np.random.default_rng(0)
    table = rng.normal(size=(100, 16)).astype(np.float32)
    tok = WordHashTokenizer()
    pairs = make_pairs(TEXTS * 1)
    ref = retrieval_metrics(bag_encoder(table), tok, pairs)
    same = retrieval_metrics(bag_encoder(table.copy()), tok, pairs)
    assert retention(same, ref) == 1.0
    noisy = retrieval_metrics(bag_encoder(rng.normal(size=(100, 16)).astype(np.float32)), tok, pairs)
    assert retention(noisy, ref) == pytest.approx(noisy["mrr@10"] / ref["mrr@10"])


def test_onnx_retention_of_the_original_against_itself_is_one(tmp_path) -> None:
    """A real exported tiny BERT on onnxruntime, scored by RetrievalRetention."""
    from bmr_compress.export import export_onnx
    from bmr_compress.export.retention import RetrievalRetention
    from tests.tiny_models import inputs_for, tiny_bert

    model = tiny_bert().eval()
    path = export_onnx(model, tmp_path / "m.onnx", inputs_for("bert")).path
    pairs = make_pairs(TEXTS)
    ev = RetrievalRetention(WordHashTokenizer(), {"selection": pairs, "heldout": pairs}, path)
    got = ev.measure(path)
    assert got["selection"]["retention"] == 1.0 and got["heldout"]["retention"] == 1.0
    assert ev.describe()["pairs"] == {"selection": 3, "heldout": 3}


def test_paired_retention_se_measures_sampling_noise() -> None:
    """Zero for the reference itself; for a model that flips a few answers it is the
    standard error of the ratio of means, which shrinks as 1/sqrt(n) with more pairs."""
    from bmr_compress.export.retrieval import paired_retention_se, reciprocal_ranks

    rng = np.random.default_rng(0)
    ref_rank = rng.integers(1, 20, size=4000)
    ref = reciprocal_ranks(ref_rank)
    assert paired_retention_se(ref, ref) == 0.0
    flipped = np.where(rng.random(4000) < 0.1, ref_rank + 1, ref_rank)  # 10 % of answers drop a rank
    rr = reciprocal_ranks(flipped)
    se_all, se_quarter = paired_retention_se(rr, ref), paired_retention_se(rr[:1000], ref[:1000])
    assert 0 < se_all < se_quarter
    assert se_quarter / se_all == pytest.approx(2.0, rel=0.25)  # 1/sqrt(n)
    # the delta method against resampling: bootstrap SD of the ratio of means
    boots = [(rr[i].mean() / ref[i].mean()) for i in
             (rng.integers(0, 4000, 4000) for _ in range(400))]
    assert se_all == pytest.approx(float(np.std(boots)), rel=0.2)

"""A retrieval task from plain text: the task metric an embedding model's users decide by.

Each paragraph is split into a short query (its first sentence) and a document (the rest),
so the query's words are never part of its document. Every document of the set is the
corpus; a query is answered by ranking all documents by cosine similarity, and its own
document is the one relevant answer. MRR@10 and recall@1 of an artefact divided by the
original model's on the same pairs is its *retention*.

The pairs are deterministic (the paragraphs' order and a fixed split rule). Which paragraphs
feed them is the caller's choice: the tool takes calibration ("selection") pairs and held-out
pairs from disjoint hash buckets of its corpus (io/corpus.py `text_split`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

QUERY_WORDS = (3, 30)  # a query is a first sentence of this many words
DOC_MIN_WORDS = 5
_SENTENCE = re.compile(r"^(.+?[.!?])\s+(\S.*)$", re.S)

Encoder = Callable[[Mapping[str, np.ndarray]], np.ndarray]  # token inputs -> (B, T, H) or (B, H)


@dataclass(frozen=True)
class Pairs:
    """Query i's one relevant document is documents[i]."""

    queries: tuple[str, ...]
    documents: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.queries)


def split_paragraph(text: str) -> tuple[str, str] | None:
    """(first sentence, the rest) when both are long enough to be a query and a document."""
    m = _SENTENCE.match(" ".join(text.split()))
    if m is None:
        return None
    query, doc = m.group(1).strip(), m.group(2).strip()
    nq = len(query.split())
    if not QUERY_WORDS[0] <= nq <= QUERY_WORDS[1] or len(doc.split()) < DOC_MIN_WORDS:
        return None
    return query, doc


def make_pairs(texts: Sequence[str], max_pairs: int | None = None) -> Pairs:
    """Query/document pairs from `texts` in their order (duplicate queries or documents
    after the first are skipped: two identical documents would make the answer ambiguous)."""
    queries: list[str] = []
    docs: list[str] = []
    seen_q: set[str] = set()
    seen_d: set[str] = set()
    for text in texts:
        pair = split_paragraph(text)
        if pair is None or pair[0] in seen_q or pair[1] in seen_d:
            continue
        seen_q.add(pair[0])
        seen_d.add(pair[1])
        queries.append(pair[0])
        docs.append(pair[1])
        if max_pairs is not None and len(queries) >= max_pairs:
            break
    return Pairs(tuple(queries), tuple(docs))


def ranks(queries: np.ndarray, documents: np.ndarray) -> np.ndarray:
    """(N,) rank of query i's own document documents[i] among all documents (1 = first).

    queries, documents: (N, H) embeddings (normalised here). Ties count against the query
    (its document must score strictly higher than another to rank above it)."""
    if queries.shape != documents.shape or queries.ndim != 2 or len(queries) == 0:
        raise ValueError(f"need (N, H) queries and documents of one shape, got "
                         f"{queries.shape} and {documents.shape}")
    q = _normalise(queries.astype(np.float64))
    d = _normalise(documents.astype(np.float64))
    sim = q @ d.T  # (N, N)
    own = np.diag(sim)[:, None]
    return (sim >= own).sum(axis=1)


def reciprocal_ranks(rank: np.ndarray, k: int = 10) -> np.ndarray:
    """Per query 1/rank, 0 beyond rank k (MRR@k is their mean)."""
    return np.where(rank <= k, 1.0 / rank, 0.0)


def ranking_metrics(queries: np.ndarray, documents: np.ndarray, k: int = 10) -> dict[str, float]:
    """MRR@k and recall@1 when query i's relevant document is documents[i] (see `ranks`)."""
    rank = ranks(queries, documents)
    rr = reciprocal_ranks(rank, k)
    return {f"mrr@{k}": float(rr.mean()), "recall@1": float((rank == 1).mean()), "n": int(len(rank))}


def paired_retention_se(rr: np.ndarray, rr_reference: np.ndarray) -> float:
    """Standard error of the retention mean(rr) / mean(rr_reference) over the queries, both
    models answering the same queries (paired: the delta method on the per-query differences
    ratio-adjusted). How far two retentions on these pairs may differ by sampling alone."""
    n = len(rr)
    ref = float(rr_reference.mean())
    if n < 2 or ref <= 0:
        return 0.0
    ratio = float(rr.mean()) / ref
    resid = rr - ratio * rr_reference  # the ratio estimator's linearisation
    return float(resid.std(ddof=1) / np.sqrt(n) / ref)


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def embed_texts(encode: Encoder, tokenizer: Any, texts: Sequence[str], *, max_length: int = 128,
                batch_size: int = 32, input_names: Sequence[str] | None = None) -> np.ndarray:
    """Mean-pooled sentence embeddings (N, H) of `texts`, batched by length.

    encode: token inputs (numpy, as the tokenizer returns them, restricted to `input_names`
    when given) -> token states (B, T, H) or pooled vectors (B, H)."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out: list[np.ndarray | None] = [None] * len(texts)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        enc = tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                        max_length=max_length, return_tensors="np")
        feed = {k: np.asarray(v, dtype=np.int64) for k, v in enc.items()
                if input_names is None or k in input_names}
        hidden = np.asarray(encode(feed), dtype=np.float32)
        if hidden.ndim == 3:
            mask = feed.get("attention_mask", np.ones(hidden.shape[:2], np.int64))
            m = mask.astype(np.float32)[..., None]  # (B, T, 1)
            hidden = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
        for j, i in enumerate(idx):
            out[i] = hidden[j]
    return np.stack(out)  # type: ignore[arg-type]


def retrieval_ranks(encode: Encoder, tokenizer: Any, pairs: Pairs, *, max_length: int = 128,
                    input_names: Sequence[str] | None = None) -> np.ndarray:
    """(N,) rank of each query's own document under an encoder (see `ranks`)."""
    q = embed_texts(encode, tokenizer, pairs.queries, max_length=max_length, input_names=input_names)
    d = embed_texts(encode, tokenizer, pairs.documents, max_length=max_length,
                    input_names=input_names)
    return ranks(q, d)


def retrieval_metrics(encode: Encoder, tokenizer: Any, pairs: Pairs, *, max_length: int = 128,
                      input_names: Sequence[str] | None = None) -> dict[str, float]:
    """MRR@10 and recall@1 of an encoder on `pairs`."""
    rank = retrieval_ranks(encode, tokenizer, pairs, max_length=max_length, input_names=input_names)
    rr = reciprocal_ranks(rank)
    return {"mrr@10": float(rr.mean()), "recall@1": float((rank == 1).mean()), "n": int(len(rank))}


def retention(metrics: Mapping[str, float], reference: Mapping[str, float],
              key: str = "mrr@10") -> float:
    """metrics[key] / reference[key] (1.0 when the reference scores 0 and so does this)."""
    ref = float(reference[key])
    if ref <= 0:
        return 1.0 if float(metrics[key]) <= 0 else float("inf")
    return float(metrics[key]) / ref


def onnx_encoder(session: Any) -> tuple[Encoder, list[str]]:
    """An onnxruntime session as an Encoder, and the input names it takes."""
    names = [i.name for i in session.get_inputs()]

    def encode(feed: Mapping[str, np.ndarray]) -> np.ndarray:
        return session.run(None, {k: v for k, v in feed.items() if k in names})[0]

    return encode, names

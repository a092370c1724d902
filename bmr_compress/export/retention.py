"""Task retention of ONNX artefacts: the quality currency operating points are chosen by.

An artefact's retention is its task metric divided by the original model's, on the same
examples: retrieval MRR@10 for sentence embeddings (export/retrieval.py), accuracy for a
classifier with labels (top-1 agreement with the original without), the original's
perplexity over the artefact's for a causal LM, R² against the original's outputs for
regression. Each is measured on two disjoint sets: *selection* (calibration examples that
choose the operating point and never train) and *held-out* (reported, decide nothing).
Every artefact is scored as the ONNX file that would ship, on onnxruntime CPU.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bmr_compress.export.retrieval import (
    Pairs, onnx_encoder, paired_retention_se, reciprocal_ranks, retention, retrieval_ranks,
)

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger(__name__)

SPLITS = ("selection", "heldout")


def retrieval_pairs(max_pairs: int = 1000) -> dict[str, Pairs]:
    """Up to `max_pairs` query→document pairs per split ("selection", "heldout") from the
    installed-documentation corpus (io/package_corpus.split_texts): the pairs the operating
    points of a text-embedding run are scored on."""
    from bmr_compress.export.retrieval import make_pairs
    from bmr_compress.io.package_corpus import split_texts

    return {s: make_pairs(split_texts(s), max_pairs) for s in SPLITS}


def _session(path: str | Path) -> Any:
    from bmr_compress.export.latency import cpu_session

    return cpu_session(path, threads=max(1, os.cpu_count() or 1))


class RetrievalRetention:
    """Retrieval MRR@10 / recall@1 on query→document pairs, relative to the original ONNX."""

    metric = "retrieval MRR@10"

    def __init__(self, tokenizer: Any, pairs: Mapping[str, Pairs], reference: str | Path, *,
                 max_length: int = 128, source: str = "") -> None:
        self.tokenizer, self.pairs, self.max_length = tokenizer, dict(pairs), max_length
        self.source = source
        self.reference_path = Path(reference).resolve()
        self.reference = self._reference_metrics(reference)

    def describe(self) -> dict[str, Any]:
        return {"metric": self.metric, "pairs": {k: len(v) for k, v in self.pairs.items()},
                "pairs_from": self.source, "reference": self.reference}

    def _ranks(self, path: str | Path) -> dict[str, np.ndarray]:
        encode, names = onnx_encoder(_session(path))
        return {split: retrieval_ranks(encode, self.tokenizer, self.pairs[split],
                                       max_length=self.max_length, input_names=names)
                for split in SPLITS}

    def _reference_metrics(self, path: str | Path) -> dict[str, dict[str, float]]:
        """The original's metrics; its per-query reciprocal ranks are kept for the paired
        standard errors."""
        ranks = self._ranks(path)
        self._reference_rr = {s: reciprocal_ranks(r) for s, r in ranks.items()}
        return {s: {"mrr@10": float(self._reference_rr[s].mean()),
                    "recall@1": float((r == 1).mean()), "n": int(len(r))}
                for s, r in ranks.items()}

    def measure(self, path: str | Path) -> dict[str, dict[str, float]]:
        """{split: {mrr@10, recall@1, n, retention, retention_se}} of the ONNX model at
        `path`; retention_se: the paired standard error of the retention on these pairs. The
        reference file itself is not encoded twice."""
        if Path(path).resolve() == self.reference_path:
            return {s: {**m, "retention": 1.0, "retention_se": 0.0}
                    for s, m in self.reference.items()}
        out: dict[str, dict[str, float]] = {}
        for split, rank in self._ranks(path).items():
            rr, ref = reciprocal_ranks(rank), self._reference_rr[split]
            m = {"mrr@10": float(rr.mean()), "recall@1": float((rank == 1).mean()),
                 "n": int(len(rank))}
            m["retention"] = retention(m, self.reference[split])
            m["retention_se"] = paired_retention_se(rr, ref)
            out[split] = m
        return out


class BatchRetention:
    """The task metric on token/image batches (classification, causal LM, regression, or
    embeddings without text), each artefact against the original PyTorch model."""

    def __init__(self, original: nn.Module, task: str,
                 batches: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
        self.original, self.task, self.batches = original, task, dict(batches)
        self.metric = {"classification": "accuracy (top-1 agreement without labels)",
                       "causal_lm": "perplexity (original / artefact)",
                       "regression": "R² against the original",
                       "embedding": "mean cosine to the original"}.get(task, task)

    def describe(self) -> dict[str, Any]:
        return {"metric": self.metric, "batches": {k: len(v) for k, v in self.batches.items()}}

    def measure(self, path: str | Path) -> dict[str, dict[str, float]]:
        from bmr_compress.export.validation_checks import OrtModule
        from bmr_compress.export.metrics import task_metric

        ort = OrtModule(_session(path))
        out = {}
        for split in SPLITS:
            m = task_metric(self.original, ort, list(self.batches[split]), self.task)
            out[split] = {"retention": metric_retention(m), "gate": float(m["gate"]),
                          "n": int(m["n"])}
        return out


def metric_retention(m: Mapping[str, Any]) -> float:
    """A task_metric result as artefact ÷ original (higher is better, 1 = no loss)."""
    orig, comp = m.get("original", {}), m.get("compressed", {})
    name = m["name"]
    if name == "top1_agreement" and orig.get("accuracy"):
        return float(comp["accuracy"]) / float(orig["accuracy"])
    if name == "perplexity_ratio":
        return 1.0 / float(m["gate"])
    return float(m["gate"])

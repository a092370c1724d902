"""Compress settings, their merge with recipes and defaults, and the stage timer."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


FIT_RECORD = "bmr_fit.json"  # written by finetune_only: how to reload source and data


@dataclass(frozen=True)
class CompressSettings:
    """Everything `compress` needs. CLI flags and recipe `[settings]` map onto these fields.

    None means "the recipe's value, else DEFAULTS". `n_data` and `temperature` set how far the
    posterior widens (and so how much BMR prunes): see variational.FinetuneSettings.
    """

    source: str
    out: str
    overwrite: bool = False
    recipe: str | None = None
    revision: str | None = None
    trust_remote_code: bool = False
    allow_pickle: bool = False  # read .pt/.pth/.bin state dicts (always weights_only=True)
    task: str | None = None
    data: str | None = None
    max_samples: int | None = None
    batch_size: int | None = None
    # "laplace": tolerance-calibrated BMR on Kronecker-factored Laplace unit posteriors, cut
    # sequentially, with recovery rounds (pipeline/laplace.py); "variational": the mean-field
    # variational fine-tune and per-weight/gate scores of the seed papers
    posterior: str | None = None
    tolerance: float | None = None  # relative output distortion the user accepts (laplace)
    rounds: int | None = None  # prune → recover → re-score rounds at most (laplace)
    recovery_steps: int | None = None  # distillation steps after each round's cut (laplace)
    recovery_lr: float | None = None  # Adam learning rate of those steps (laplace)
    # fine-tune
    steps: int | None = None
    lr: float | None = None
    n_data: int | None = None
    temperature: float | None = None
    noise_std: float | None = None  # distillation likelihood std, relative to the output RMS
    laplace_batches: int | None = None  # start from the diagonal Laplace posterior (0: off)
    seed: int | None = None
    device: str = "auto"
    # planning
    structured: bool | None = None
    unstructured: bool | None = None
    gates: str | None = None  # none | bmrs_n | bmrs_u
    threshold: str | None = None  # zero | beta_bernoulli
    iterative: bool | None = None
    # move the survivors to their reduced posterior mean under a row-correlated posterior
    compensate: bool | None = None
    round_to: int | None = None
    size_budget: float | None = None  # ≤ 1: fraction of the original parameters; > 1: count
    # fraction of the prunable units' multiply-accumulates to keep (a MAC proxy for latency,
    # at the export sample's shape; the report measures real ORT latency)
    latency_budget: float | None = None
    # export
    int8: bool | None = None
    compact_zeros: bool = False
    progress: bool = True


DEFAULTS: dict[str, Any] = {
    "posterior": "laplace", "rounds": 3, "recovery_steps": 100,
    "recovery_lr": 1e-4,
    "steps": 200, "seed": 0, "structured": True, "unstructured": False, "gates": "none",
    "threshold": "zero", "iterative": False, "compensate": True, "round_to": 8,
}


# Default tolerance (relative output distortion, tasks.probe_output) per task. Embeddings:
# 0.1 = 2(1 − cos) at cosine 0.95. Logits (centred): 0.03 kept digits top-1 agreement ≥ 0.98
# (tolerance 0.02 / 0.04 / 0.1 on the digits MLP: 1.43x / 1.67x / 2.23x fewer parameters at
# held-out accuracy −0.8 / −1.1 / −1.4 points).
DEFAULT_TOLERANCE = {"embedding": 0.1, "classification": 0.03, "causal_lm": 0.03,
                     "regression": 0.03}


_FIT_KEYS = ("lr", "n_data", "temperature", "laplace_batches")


_DISTILL = {"embedding": "pooled_gaussian"}


@dataclass
class CompressResult:
    out: Path
    report: dict[str, Any]
    passed: bool
    summary: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "passed": self.passed, "summary": self.summary,
                "report": self.report}


class StageTimer:
    """Wall time per stage, in the order the stages ran."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.t0 = time.perf_counter()

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        log.info("stage: %s", name)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0

    def total(self) -> dict[str, float]:
        return {**self.seconds, "total": time.perf_counter() - self.t0}


def resolve_settings(settings: CompressSettings, recipe_settings: Any | None) -> dict[str, Any]:
    """Merge: explicit settings > recipe [settings] > DEFAULTS. Returns a plain dict."""
    merged = dict(DEFAULTS)
    for layer in (recipe_settings, settings):
        if layer is not None:
            merged.update({k: v for k, v in dataclasses.asdict(layer).items() if v is not None})
    return merged


def _recipe_for(recipe: str | None, source: str) -> Any | None:
    from bmr_compress.io.recipes import load_recipe

    if recipe:
        return load_recipe(recipe)
    if source.startswith("zoo:"):
        return load_recipe(source[4:])
    return None


def _strip_labels(batch: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in batch.items() if k != "labels"}


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))

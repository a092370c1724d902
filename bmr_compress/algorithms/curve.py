"""Operating points of one run, and the artefact to recommend on this machine.

From one fit, the candidates a user could ship: the dense original and every kept round of
the reduction, each in fp32 and under each int8 scheme (export/quantize.py). Every
candidate is exported to ONNX and timed on *this* CPU interleaved with all the others
(export/latency.py); the ones that can matter are scored by task retention on selection and
held-out examples (export/retention.py), fastest first (`_score_needed`). The recommended artefact is the fastest whose *selection*
retention stays within the quality budget, an int8 file qualifying only when it is faster
here than the fp32 model it was quantised from (export/choice.py); the held-out figure is
what the report quotes, and decided nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

SNAPSHOT_MAX_PARAMS = 300_000_000  # above this, rounds are not kept in memory for the curve
CURVE_RUNS = 20
AUTO_SCHEMES = ("dynamic", "dynamic-per-tensor", "blockwise")
SCHEME_WORDS = {"dynamic": "dynamic per-channel", "dynamic-per-tensor": "dynamic per-tensor",
                "blockwise": "blockwise"}


@dataclass
class Point:
    label: str
    base: str  # "original" or a round's label
    precision: str  # "fp32" | "int8"
    scheme: str | None
    source: str | None  # int8: the fp32 point it was quantised from
    path: Path  # the ONNX file measured (in the work directory)
    params: int | None
    size_bytes: int
    median_ms: float = 0.0
    speedup: float = 0.0
    retention: dict[str, float] = field(default_factory=dict)  # split -> retention
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    qualifies: bool = False
    reason: str = ""
    recommended: bool = False
    file: str | None = None  # where it lies in the output directory, when shipped

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("path")
        return out


@dataclass
class OperatingPoints:
    points: list[Point]
    metric: str
    max_quality_loss: float
    latency_shape: dict[str, Any]
    runs: int
    cpu: dict[str, Any]
    evaluation: dict[str, Any]
    recommended: str
    best_int8: dict[str, str | None]  # base -> its fastest qualifying int8 point's label

    def point(self, label: str) -> Point:
        return next(p for p in self.points if p.label == label)

    def to_json(self) -> dict[str, Any]:
        return {"metric": self.metric, "max_quality_loss": self.max_quality_loss,
                "latency_shape": self.latency_shape, "runs": self.runs, "cpu": self.cpu,
                "evaluation": self.evaluation, "recommended": self.recommended,
                "reference_file": next((p.file for p in self.points if p.base == "original"
                                        and p.precision == "fp32" and p.file),
                                       "candidates/original.onnx"),
                "points": [p.to_json() for p in self.points]}


def _candidates(original_onnx: Path, rounds: Sequence[tuple[str, nn.Module]], work: Path,
                example: Mapping[str, torch.Tensor], schemes: Sequence[str],
                original_params: int) -> list[Point]:
    """Every candidate's ONNX file: the original and each round, fp32 and per int8 scheme."""
    from bmr_compress.export import export_onnx, quantize_int8
    from bmr_compress.io.checks import count_params

    work.mkdir(parents=True, exist_ok=True)
    bases: list[tuple[str, Path, int]] = [("original", original_onnx, original_params)]
    for i, (label, m) in enumerate(rounds):
        path = export_onnx(m, work / f"round{i + 1}.onnx", dict(example)).path
        bases.append((label, path, count_params(m)))
    points = []
    for label, path, params in bases:
        points.append(Point(label, label, "fp32", None, None, path, params, _size(path)))
        for s in schemes:
            stem = label.replace(" ", "")
            try:
                q = quantize_int8(path, work / f"{stem}.int8-{s}.onnx", scheme=s).path
            except Exception as e:  # noqa: BLE001  (one scheme failing leaves the others)
                log.warning("int8 %s of %s not measured: %s", s, label, e)
                continue
            points.append(Point(f"{label} + int8 ({SCHEME_WORDS.get(s, s)})", label, "int8", s,
                                label, q, None, _size(q)))
    return points


def _candidate(p: Point) -> Any:
    from bmr_compress.export.choice import Candidate

    return Candidate(p.label, p.base, p.precision, p.scheme, p.retention.get("selection"),
                     p.median_ms, p.source)


def _score(p: Point, evaluator: Any, note: str) -> None:
    log.info("operating points: scoring %s (%.2fx; %s)", p.label, p.speedup, note)
    p.metrics = evaluator.measure(p.path)
    p.retention = {k: float(v["retention"]) for k, v in p.metrics.items()}


def _score_needed(points: Sequence[Point], evaluator: Any, max_quality_loss: float) -> Any:
    """Score the candidates that can matter, fastest first, and choose (export/choice.py).

    Scoring (encoding every retrieval pair with the artefact) costs far more than timing, so
    the candidates are scored in order of their measured speed until one is recommended:
    nothing slower could be, and it is left unscored (its row says so). An int8 file not
    faster than its fp32 source here never qualifies and is not scored either. Scored as
    well, whatever their speed: every artefact of the recommended base (the files shipped
    beside it, which `bmr-compress bench` may pick on another CPU) and the original's int8
    files (what a user would do instead). Every candidate that could dominate the
    recommended one -- anything faster -- thus has its held-out retention.
    """
    from bmr_compress.export.choice import choose

    by_label = {p.label: p for p in points}

    def scorable(p: Point) -> bool:
        return p.precision == "fp32" or p.median_ms < by_label[str(p.source)].median_ms

    ref = next(p for p in points if p.base == "original" and p.precision == "fp32")
    _score(ref, evaluator, "the reference")
    order = sorted((p for p in points if p is not ref and scorable(p)),
                   key=lambda p: (p.median_ms, p.precision != "fp32"))
    for i, p in enumerate(order):
        if p.median_ms >= ref.median_ms:
            break  # the reference itself is recommended: nothing slower can be
        _score(p, evaluator, f"fastest first, {i + 1} of at most {len(order)}")
        if choose([_candidate(q) for q in points], max_quality_loss).recommended == p.label:
            break
    best = by_label[choose([_candidate(q) for q in points], max_quality_loss).recommended]
    for p in points:
        if not p.metrics and scorable(p) and (
                p.base == best.base or (p.base == "original" and p.precision == "int8")):
            _score(p, evaluator, "shipped beside the recommended" if p.base == best.base
                   else "the original's int8, for comparison")
    return choose([_candidate(q) for q in points], max_quality_loss)


def _size(path: Path) -> int:
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.is_file() else 0)


def measure_points(original_onnx: Path, rounds: Sequence[tuple[str, nn.Module]], *, work: Path,
                   example: Mapping[str, torch.Tensor], latency_shape: Mapping[str, Any],
                   evaluator: Any, schemes: Sequence[str], max_quality_loss: float,
                   original_params: int, runs: int = CURVE_RUNS) -> OperatingPoints:
    """Time every candidate, score the ones that can matter, then choose. `rounds`: (label, model) of each kept
    round, the last being the run's final model. `evaluator`: export/retention.py's
    RetrievalRetention or BatchRetention, built with the original as its reference."""
    from bmr_compress.export.cpu import cpu_info
    from bmr_compress.export.latency import measure_latency
    from bmr_compress.export.validation import make_inputs_like, to_numpy

    points = _candidates(original_onnx, rounds, work, example, schemes, original_params)
    batch, seq = int(latency_shape.get("batch", 1)), latency_shape.get("seq")
    threads = int(latency_shape.get("threads", 1))
    feed = to_numpy(make_inputs_like(dict(example), batch, seq, seed=99))
    log.info("operating points: timing %d candidates on this CPU (%d thread(s), interleaved)",
             len(points), threads)
    lat = measure_latency({p.label: str(p.path) for p in points}, feed, threads=threads,
                          runs=runs)
    base_ms = lat["original"]["median_ms"]
    for p in points:
        p.median_ms = float(lat[p.label]["median_ms"])
        p.speedup = base_ms / p.median_ms
    choice = _score_needed(points, evaluator, max_quality_loss)
    for p in points:
        p.qualifies = bool(choice.qualifies[p.label])
        p.reason = choice.reasons.get(p.label, "")
        p.recommended = p.label == choice.recommended
    bases = dict.fromkeys(p.base for p in points)
    return OperatingPoints(
        points, evaluator.metric, max_quality_loss,
        {"threads": threads, "batch": batch, "seq": seq}, runs, cpu_info(),
        evaluator.describe(), choice.recommended, {b: choice.best_int8(b) for b in bases})

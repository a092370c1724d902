"""Operating points are scored fastest first until one qualifies (algorithms/curve.py): the
choice is the one scoring every candidate would give, and only what can matter is scored."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from bmr_compress.algorithms.curve import Point, _score_needed
from bmr_compress.export.choice import NOT_SCORED, Candidate, choose

SCHEMES = ("dynamic", "blockwise")


class TableEvaluator:
    """Retention per file from a table; records which files were encoded."""

    def __init__(self, retention: dict[str, float]) -> None:
        self.retention, self.scored = retention, []

    def measure(self, path: Path) -> dict[str, dict[str, float]]:
        self.scored.append(path.name)
        r = self.retention[path.name]
        return {"selection": {"retention": r}, "heldout": {"retention": r - 0.001}}


def toy_points(ms: dict[str, float]) -> list[Point]:
    points = []
    for label, t in ms.items():
        base, _, scheme = label.partition(" + ")
        int8 = bool(scheme)
        points.append(Point(label, base, "int8" if int8 else "fp32", scheme or None,
                            base if int8 else None, Path(label), None, 1, median_ms=t,
                            speedup=ms["original"] / t))
    return points


def curve(rng: random.Random, rounds: int) -> tuple[dict[str, float], dict[str, float]]:
    ms, ret = {"original": 40.0}, {"original": 1.0}
    for i, base in enumerate(["original"] + [f"round {r + 1}" for r in range(rounds)]):
        if base != "original":
            ms[base] = 40.0 * (1 - 0.1 * i) * rng.uniform(0.9, 1.1)
            ret[base] = rng.uniform(0.96, 1.01)
        for s in SCHEMES:
            ms[f"{base} + {s}"] = ms[base] * rng.uniform(0.5, 1.4)
            ret[f"{base} + {s}"] = ret[base] - rng.uniform(0.0, 0.02)
    return ms, ret


def full_choice(ms: dict[str, float], ret: dict[str, float], budget: float) -> str:
    return choose([Candidate(p.label, p.base, p.precision, p.scheme, ret[p.label], p.median_ms,
                             p.source) for p in toy_points(ms)], budget).recommended


@pytest.mark.parametrize("seed", range(40))
def test_the_lazy_choice_is_the_full_choice(seed: int) -> None:
    rng = random.Random(seed)
    ms, ret = curve(rng, rounds=rng.randint(1, 3))
    budget = rng.choice([0.0, 0.01, 0.02, 0.05])
    points, ev = toy_points(ms), TableEvaluator(ret)
    choice = _score_needed(points, ev, budget)
    assert choice.recommended == full_choice(ms, ret, budget)
    best = next(p for p in points if p.label == choice.recommended)
    by = {p.label: p for p in points}
    for p in points:
        faster_than_source = p.precision == "fp32" or p.median_ms < by[p.source].median_ms
        if p.median_ms < best.median_ms and faster_than_source:
            assert p.retention, f"{p.label} could dominate the recommended one: it must be scored"
        if p.base == best.base and faster_than_source:
            assert p.retention, f"{p.label} ships beside the recommended one"
        if not faster_than_source:
            assert not p.retention  # never qualifies: never encoded
        if not p.retention:
            assert not choice.qualifies[p.label]
            assert "not faster" in choice.reasons[p.label] or choice.reasons[p.label] == NOT_SCORED
    assert len(ev.scored) == len(set(ev.scored))  # nothing encoded twice


def test_scoring_stops_at_the_first_point_within_the_budget() -> None:
    ms = {"original": 40.0, "original + dynamic": 26.0, "original + blockwise": 50.0,
          "round 1": 32.0, "round 1 + dynamic": 20.0, "round 1 + blockwise": 45.0,
          "round 2": 28.0, "round 2 + dynamic": 18.0, "round 2 + blockwise": 30.0}
    ret = {k: 1.0 for k in ms} | {"round 2 + dynamic": 0.95, "round 2 + blockwise": 0.99}
    points, ev = toy_points(ms), TableEvaluator(ret)
    choice = _score_needed(points, ev, 0.01)
    assert choice.recommended == "round 1 + dynamic"
    # round 2 + dynamic (faster, out of budget) first, then the recommended one, then the
    # original's int8 and the recommended one's fp32 sibling; round 2 and every blockwise file
    # are slower (than the recommended one, or than their own fp32 source): not scored
    assert ev.scored == ["original", "round 2 + dynamic", "round 1 + dynamic",
                         "original + dynamic", "round 1"]
    for label in ("round 2", "round 2 + blockwise", "original + blockwise", "round 1 + blockwise"):
        assert not choice.qualifies[label]
    assert choice.reasons["round 2"] == NOT_SCORED
    assert "not faster than its fp32 source" in choice.reasons["original + blockwise"]


def test_the_reference_is_recommended_when_nothing_faster_qualifies() -> None:
    ms = {"original": 40.0, "original + dynamic": 30.0, "round 1": 35.0,
          "round 1 + dynamic": 25.0}
    ret = {"original": 1.0, "original + dynamic": 0.9, "round 1": 0.9, "round 1 + dynamic": 0.9}
    points, ev = toy_points(ms), TableEvaluator(ret)
    assert _score_needed(points, ev, 0.01).recommended == "original"
    assert sorted(ev.scored) == sorted(ms)  # everything was faster than the original
    assert ev.scored[0] == "original"

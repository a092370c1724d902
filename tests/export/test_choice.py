"""export/choice.py: the fastest operating point within a quality budget, int8 only where it
is faster than its own fp32 source on this machine (timings injected)."""

from __future__ import annotations

import pytest

from bmr_compress.errors import InputError
from bmr_compress.export.choice import Candidate, choose


def fp32(label: str, retention: float, ms: float, base: str | None = None) -> Candidate:
    return Candidate(label, base or label, "fp32", None, retention, ms)


def int8(base: str, scheme: str, retention: float, ms: float) -> Candidate:
    return Candidate(f"{base} + int8 ({scheme})", base, "int8", scheme, retention, ms, source=base)


def toy_curve() -> list[Candidate]:
    """Three rounds spending more quality for more speed, each with two int8 schemes."""
    return [
        fp32("original", 1.0, 10.0),
        int8("original", "dynamic-per-tensor", 0.998, 7.2),
        int8("original", "dynamic-per-channel", 0.995, 7.0),
        fp32("round 1", 0.997, 8.0),
        int8("round 1", "dynamic-per-channel", 0.993, 5.5),
        fp32("round 2", 0.990, 6.0),
        int8("round 2", "dynamic-per-channel", 0.985, 4.0),
        fp32("round 3", 0.960, 4.5),
        int8("round 3", "dynamic-per-channel", 0.955, 3.0),
    ]


@pytest.mark.parametrize(("budget", "expected"), [
    (0.0, "original"),  # nothing loses nothing: the reference
    (0.003, "original + int8 (dynamic-per-tensor)"),  # 0.998 >= 0.997, 0.995 is not
    (0.005, "original + int8 (dynamic-per-channel)"),  # edge: 0.995 == 1 - 0.005 qualifies
    (0.01, "round 1 + int8 (dynamic-per-channel)"),  # round 2 fp32 (0.990) is slower at 6 ms
    (0.015, "round 2 + int8 (dynamic-per-channel)"),
    (0.05, "round 3 + int8 (dynamic-per-channel)"),
])
def test_budget_selects_the_fastest_point_within_it(budget: float, expected: str) -> None:
    cands = toy_curve()
    choice = choose(cands, budget)
    assert choice.recommended == expected
    floor = 1 - budget
    # recommended = argmin latency over exactly the candidates within the budget
    within = [c for c in cands if c.retention >= floor - 1e-12]
    assert choice.recommended == min(within, key=lambda c: c.median_ms).label
    assert {k for k, v in choice.qualifies.items() if v} == {c.label for c in within}
    assert "fastest within the budget" in choice.reasons[expected] or expected == "original"
    for c in cands:
        if c.retention < floor - 1e-12:
            assert "below the budget" in choice.reasons[c.label]


def test_int8_slower_than_its_fp32_source_is_refused() -> None:
    # on a CPU without VNNI a blockwise scheme runs slower than the fp32 model it came from
    cands = [fp32("original", 1.0, 10.0), fp32("round 2", 0.995, 6.0),
             int8("round 2", "blockwise", 0.994, 6.4), int8("round 2", "dynamic-per-channel", 0.993, 6.0)]
    choice = choose(cands, 0.01)
    for label, ms in (("round 2 + int8 (blockwise)", "6.400"), ("round 2 + int8 (dynamic-per-channel)", "6.000")):
        assert choice.qualifies[label] is False  # slower, and equal is not faster
        assert "not faster than its fp32 source 'round 2'" in choice.reasons[label]
        assert f"{ms} ms vs 6.000 ms" in choice.reasons[label]
    assert choice.recommended == "round 2"
    assert choice.best_int8("round 2") is None
    # the same scheme timed faster than its source on another machine qualifies
    faster = [*cands[:2], int8("round 2", "blockwise", 0.994, 5.0)]
    assert choose(faster, 0.01).recommended == "round 2 + int8 (blockwise)"


def test_int8_is_judged_against_its_own_source_not_the_original() -> None:
    # 8 ms beats the original (10 ms) but not round 1's fp32 (7 ms) it was quantised from
    cands = [fp32("original", 1.0, 10.0), fp32("round 1", 0.999, 7.0),
             int8("round 1", "blockwise", 0.999, 8.0)]
    choice = choose(cands, 0.01)
    assert not choice.qualifies["round 1 + int8 (blockwise)"]
    assert choice.recommended == "round 1"


def test_only_the_original_qualifies() -> None:
    cands = [fp32("original", 1.0, 10.0), int8("original", "blockwise", 0.999, 11.0),
             fp32("round 1", 0.97, 7.0), int8("round 1", "dynamic-per-channel", 0.96, 5.0)]
    choice = choose(cands, 0.01)
    assert choice.recommended == "original"
    assert choice.qualifies == {"original": True, "original + int8 (blockwise)": False,
                                "round 1": False, "round 1 + int8 (dynamic-per-channel)": False}
    assert "dense original" in choice.reasons["original"]
    assert choice.best_int8("original") is None


def test_the_original_always_qualifies_even_when_slowest() -> None:
    cands = [fp32("original", 1.0, 10.0), fp32("round 1", 0.999, 7.0)]
    choice = choose(cands, 0.01)
    assert choice.qualifies["original"] and choice.recommended == "round 1"
    assert "slower than 'round 1'" in choice.reasons["original"]


def test_best_int8_is_the_fastest_qualifying_scheme_of_that_base() -> None:
    cands = toy_curve() + [int8("round 1", "blockwise", 0.996, 5.0),  # fastest round-1 int8
                           int8("round 1", "dynamic-per-tensor", 0.98, 4.0)]  # faster, over budget
    choice = choose(cands, 0.01)
    assert choice.best_int8("round 1") == "round 1 + int8 (blockwise)"
    assert choice.best_int8("original") == "original + int8 (dynamic-per-channel)"
    assert choice.best_int8("round 3") is None  # over budget
    assert choice.best_int8("round 9") is None  # no such base


def test_ties_prefer_higher_retention_then_fp32() -> None:
    cands = [fp32("original", 1.0, 10.0), fp32("round 1", 0.995, 5.0),
             int8("round 1", "a", 0.999, 4.0), fp32("round 2", 0.996, 4.0)]
    assert choose(cands, 0.01).recommended == "round 1 + int8 (a)"  # 0.999 > 0.996 at 4 ms
    cands = [fp32("original", 1.0, 10.0), fp32("round 1", 0.995, 5.0),
             int8("round 1", "a", 0.996, 4.0), fp32("round 2", 0.996, 4.0)]
    assert choose(cands, 0.01).recommended == "round 2"  # same speed and retention: fp32


@pytest.mark.parametrize(("cands", "budget", "match"), [
    ([fp32("original", 1.0, 1.0)], 1.0, "in \\[0, 1\\)"),
    ([fp32("original", 1.0, 1.0)], -0.1, "in \\[0, 1\\)"),
    ([fp32("original", 1.0, 1.0)], float("nan"), "in \\[0, 1\\)"),
    ([fp32("original", 1.0, 1.0), fp32("original", 1.0, 2.0)], 0.01, "two operating points"),
    ([fp32("round 1", 1.0, 1.0)], 0.01, "exactly one candidate must be the dense original"),
    ([fp32("original", 1.0, 1.0), int8("round 1", "x", 1.0, 0.5)], 0.01, "source 'round 1' is not"),
    ([fp32("original", 1.0, 1.0), fp32("round 1", 1.0, 1.0),
      Candidate("r1 int8", "round 2", "int8", "x", 1.0, 0.5, source="round 1")], 0.01, "same base"),
    ([fp32("original", 1.0, 1.0), Candidate("x", "round 1", "fp16", None, 1.0, 1.0)], 0.01, "precision"),
    ([fp32("original", 1.0, float("nan"))], 0.01, "positive number of ms"),
    ([fp32("original", 1.0, 1.0), fp32("round 1", float("inf"), 1.0)], 0.01, "finite"),
])
def test_bad_inputs_are_input_errors(cands: list[Candidate], budget: float, match: str) -> None:
    with pytest.raises(InputError, match=match):
        choose(cands, budget)

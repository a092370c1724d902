"""bench/precision.py: the recommendation is made on selection pairs only, and the issue's
target (>= 6x smaller at >= 99 % held-out retention) is judged on held-out pairs, saying the
best size at 99 % and the best retention at 6x when it is not met."""

from __future__ import annotations

from bench import precision as P


def _row(mb: float, selection: float, heldout: float) -> dict:
    return {"bytes": mb * 1e6, "retrieval": {"selection": {"retention": selection, "retention_se": 0.01},
                                             "heldout": {"retention": heldout, "retention_se": 0.01}}}


def _rows() -> dict:
    return {"fp32": _row(90, 1, 1), "uniform int8": _row(23, 0.995, 0.999),
            "uniform int4-b32": _row(14.5, 0.97, 0.985),
            "BMR tolerance 0.01": _row(16, 0.991, 0.97),  # chosen on selection, poor held out
            "BMR tolerance 0.04": _row(13, 0.98, 0.992)}


def test_recommendation_uses_selection_retention_only():
    assert P.recommended(_rows()) == "BMR tolerance 0.01"


def test_verdict_states_the_target_and_the_best_of_each_side():
    met = P.verdict(_rows())  # BMR 0.04: 90 / 13 = 6.92x at 99.2 % held out
    assert "**met** (BMR tolerance 0.04)" in met
    rows = _rows()
    rows["BMR tolerance 0.04"] = _row(16, 0.98, 0.992)  # 5.62x: short of the target
    text = P.verdict(rows)
    assert "**not met**" in text
    assert "Smallest at ≥ 99 % held-out: BMR tolerance 0.04, 5.62x at 99.20 %" in text
    assert "Best held-out retention at ≥ 6x: uniform int4-b32, 6.21x at 98.50 %" in text

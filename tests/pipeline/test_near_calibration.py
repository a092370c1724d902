"""Later rounds search ν near the previous round's value, and fall back when it is not there."""

from __future__ import annotations

import math

from bmr_compress.algorithms.laplace_reduce import NEAR_STEPS, _bisect_near


def _measured(nu_star: float, calls: list[float]):
    def f(nu: float) -> tuple[float, int]:  # distortion falls with ν; 0.1 reached at nu_star
        calls.append(nu)
        return 0.1 * nu_star / nu, int(1000 * nu_star / nu)
    return f


def test_near_bisection_finds_the_precision_within_the_bracket() -> None:
    calls: list[float] = []
    nu, d, n = _bisect_near(_measured(3e6, calls), 0.1, near=1e6)
    assert d <= 0.1 and n > 0
    assert 3e6 <= nu <= 3e6 * math.exp(math.log(100) / 2 ** NEAR_STEPS)  # smallest ν within
    assert len(calls) == NEAR_STEPS  # no endpoint evaluations


def test_near_bisection_gives_up_when_the_answer_is_outside() -> None:
    assert _bisect_near(_measured(5e8, []), 0.1, near=1e6) is None  # every point over budget
    assert _bisect_near(_measured(1e3, []), 0.1, near=1e6) is None  # every point within

"""From a stated distortion tolerance to the likelihood's precision ν, and unit decisions.

The user states how far the output may move: a relative distortion
δ = E‖f − f₀‖² / E‖f₀‖² (tasks.probe_output; for normalised embeddings δ = 2(1 − cos)).
In self-distillation the original fits itself exactly, so the data cannot set the noise of
the distillation likelihood: the tolerance does. ν is the precision at which the
distortion predicted for the BMR reduction equals the tolerance (the discrepancy principle):

    D(ν) = Σ_{j : ΔlnZ_j(ν) ≥ 0} δ_j(ν) = τ

with ΔlnZ_j and δ_j from bmr/ard.py (the default per-unit prior scale; bmr/structured.py
for one scale per layer). D falls as ν grows (each δ_j falls and fewer
units have ΔlnZ ≥ 0), so ν is found by bisection in ln ν. The decision itself is BMR's:
a unit goes iff ΔlnZ_j(ν) ≥ 0. The Occam term makes it cost-aware without a ratio: it grows
with the number of weights a unit owns, so a head (many weights) must cost more distortion
than a neuron before BMR keeps it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from bmr_compress.bmr.ard import unit_score
from bmr_compress.bmr.structured import LayerFactors, UnitEvidence

NU_RANGE = (1e-3, 1e12)


@dataclass(frozen=True)
class Calibration:
    """ν for a tolerance, and what the reduction at that ν predicts."""

    nu: float
    tolerance: float
    predicted_distortion: float
    units_removed: int


def distortion_at(factors: Mapping[str, LayerFactors],
                  columns: Mapping[str, Mapping[str, torch.Tensor]], nu: float,
                  prior: str = "ard") -> tuple[float, int]:
    """D(ν): the predicted distortion of the removals BMR makes at ν (the kept units are
    written at their compensated values, not shrunk, so shrinkage costs nothing here)."""
    return predicted_distortion(score_sites(factors, columns, nu, prior))


def score_sites(factors: Mapping[str, LayerFactors], columns: Mapping[str, Mapping[str, torch.Tensor]],
                nu: float, prior: str = "ard") -> dict[str, UnitEvidence]:
    """Group name -> UnitEvidence at ν (each group is consumed by one site) under the unit
    prior `prior` (bmr.ard.UNIT_PRIORS)."""
    out: dict[str, UnitEvidence] = {}
    for site, cols in columns.items():
        for group, idx in cols.items():
            out[group] = unit_score(factors[site], idx, nu, prior)
    return out


def predicted_distortion(evidence: Mapping[str, UnitEvidence]) -> tuple[float, int]:
    """(Σ δ_j over units with ΔlnZ_j ≥ 0, their number)."""
    total, count = 0.0, 0
    for ev in evidence.values():
        gone = ev.delta_lnz >= 0
        total += float(ev.distortion[gone].sum())
        count += int(gone.sum())
    return total, count


def calibrate_nu(evaluate: Callable[[float], tuple[float, int]], tolerance: float, *,
                 steps: int = 24, nu_range: tuple[float, float] = NU_RANGE) -> Calibration:
    """Smallest ν (most removal) in nu_range whose predicted distortion D(ν) ≤ tolerance.

    evaluate(ν) -> (D(ν), units removed). Bisection in ln ν; D is taken as non-increasing.
    """
    if not (tolerance >= 0 and math.isfinite(tolerance)):
        raise ValueError(f"tolerance must be finite and >= 0, got {tolerance}")
    lo, hi = math.log(nu_range[0]), math.log(nu_range[1])
    d_lo, n_lo = evaluate(math.exp(lo))
    if d_lo <= tolerance:
        return Calibration(math.exp(lo), tolerance, d_lo, n_lo)
    d_hi, n_hi = evaluate(math.exp(hi))
    if d_hi > tolerance:  # even the largest precision removes too much: remove nothing
        return Calibration(math.inf, tolerance, 0.0, 0)
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        d, n = evaluate(math.exp(mid))
        if d <= tolerance:
            hi, d_hi, n_hi = mid, d, n
        else:
            lo = mid
    return Calibration(math.exp(hi), tolerance, d_hi, n_hi)

"""Which artefact to deploy: the fastest operating point within a quality budget.

Pure (standard library only), so the same rule runs at compress time and in `bmr-compress
bench` on the deploy machine. A candidate is one artefact: the dense original or a BMR round,
in fp32 or under one int8 scheme, with its task retention (its metric / the original's, on
the calibration -- "selection" -- data, never the held-out data reported afterwards) and its
median latency measured on the running CPU, every candidate timed interleaved in one run.

A candidate without a retention (None: not scored, because it could not be recommended
anyway -- see algorithms/curve.py) never qualifies. A candidate qualifies iff

* its retention is at least ``1 - max_quality_loss`` (up to a 1e-9 tolerance), and
* for int8, it is strictly faster than the fp32 model it was quantised from, on this
  machine: an int8 scheme that is slower than its own fp32 source never qualifies.

The dense original in fp32 is the reference and always qualifies. The recommendation is the
fastest qualifying candidate; ties go to the higher retention, then fp32 before int8, then
the order given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from bmr_compress.errors import InputError

PRECISIONS = ("fp32", "int8")
ORIGINAL = "original"
EPS = 1e-9  # retention at the budget's edge still qualifies despite float rounding
REFERENCE_REASON = "the reference (the dense original in fp32)"
NOT_SCORED = "not scored: it could not be recommended (slower than the recommended artefact here)"


@dataclass(frozen=True)
class Candidate:
    label: str  # e.g. "round 2 + int8 (dynamic per-channel)"
    base: str  # "original" or "round N"
    precision: str  # "fp32" | "int8"
    scheme: str | None  # None for fp32; e.g. "dynamic-per-channel", "dynamic-per-tensor", "blockwise"
    retention: float | None  # task metric of this artefact / the original's, on selection
    # (calibration) data; None when it was not scored
    median_ms: float  # measured on this machine, interleaved with the others
    source: str | None = None  # int8: the label of the fp32 candidate it was quantised from

    @property
    def is_reference(self) -> bool:
        return self.base == ORIGINAL and self.precision == "fp32"


@dataclass(frozen=True)
class Choice:
    recommended: str  # label of the fastest qualifying candidate
    qualifies: dict[str, bool]
    reasons: dict[str, str]  # label -> why it does (not) qualify, or why it is recommended
    max_quality_loss: float
    candidates: tuple[Candidate, ...] = field(default=(), repr=False)

    def best_int8(self, base: str) -> str | None:
        """The fastest qualifying int8 candidate quantised from `base` ("original",
        "round N"); None when no int8 scheme of that base qualifies."""
        ok = [c for c in self.candidates
              if c.base == base and c.precision == "int8" and self.qualifies[c.label]]
        return min(ok, key=_rank).label if ok else None


def _rank(c: Candidate) -> tuple[float, float, int]:
    """Sort key: faster first, then higher retention, then fp32 before int8."""
    return (c.median_ms, -(c.retention if c.retention is not None else -math.inf),
            PRECISIONS.index(c.precision))


def _check(cands: Sequence[Candidate], max_quality_loss: float) -> dict[str, Candidate]:
    if not (isinstance(max_quality_loss, (int, float)) and 0 <= max_quality_loss < 1):
        raise InputError(f"max quality loss must be in [0, 1) (a fraction of the task metric, "
                         f"0.01 = keep 99 %), got {max_quality_loss!r}")
    by_label: dict[str, Candidate] = {}
    for c in cands:
        if c.label in by_label:
            raise InputError(f"two operating points are labelled {c.label!r}")
        if c.precision not in PRECISIONS:
            raise InputError(f"{c.label!r}: precision must be one of {PRECISIONS}, got {c.precision!r}")
        if not (math.isfinite(c.median_ms) and c.median_ms > 0):
            raise InputError(f"{c.label!r}: median latency must be a positive number of ms, "
                             f"got {c.median_ms!r}")
        if c.retention is None and c.is_reference:
            raise InputError(f"{c.label!r}: the reference needs its retention (1.0)")
        if c.retention is not None and not math.isfinite(c.retention):
            raise InputError(f"{c.label!r}: retention is not a finite number ({c.retention!r})")
        by_label[c.label] = c
    refs = [c.label for c in cands if c.is_reference]
    if len(refs) != 1:
        raise InputError(f"exactly one candidate must be the dense original in fp32 (base "
                         f"{ORIGINAL!r}, precision 'fp32'), found {len(refs)}: {refs}")
    for c in cands:
        if c.precision == "fp32":
            if c.source is not None or c.scheme is not None:
                raise InputError(f"{c.label!r}: an fp32 candidate has no int8 scheme or source")
            continue
        src = by_label.get(c.source) if c.source is not None else None
        if src is None:
            raise InputError(f"{c.label!r}: its fp32 source {c.source!r} is not among the candidates "
                             "(an int8 model is judged against the fp32 model it came from)")
        if src.precision != "fp32" or src.base != c.base:
            raise InputError(f"{c.label!r}: its source {src.label!r} must be the fp32 model of the "
                             f"same base ({c.base!r})")
    return by_label


def _verdict(c: Candidate, by_label: dict[str, Candidate], floor: float) -> str | None:
    """None when `c` qualifies, else why not (with the figures)."""
    if c.is_reference:
        return None
    if c.retention is not None and c.retention < floor - EPS:
        return (f"retention {c.retention:.4f} on calibration data is below the budget's "
                f"{floor:.4f}")
    if c.precision == "int8":
        src = by_label[c.source]  # type: ignore[index]
        if not c.median_ms < src.median_ms:
            return (f"int8 ({c.scheme}) is not faster than its fp32 source {src.label!r} on this "
                    f"machine: {c.median_ms:.3f} ms vs {src.median_ms:.3f} ms")
    return NOT_SCORED if c.retention is None else None


def choose(cands: Sequence[Candidate], max_quality_loss: float) -> Choice:
    """The fastest candidate whose retention is within `max_quality_loss` (and, for int8,
    that beats its own fp32 source here); InputError on malformed candidates or budget."""
    by_label = _check(cands, max_quality_loss)
    floor = 1.0 - max_quality_loss
    why_not = {c.label: _verdict(c, by_label, floor) for c in cands}
    qualifies = {label: why is None for label, why in why_not.items()}
    best = min((c for c in cands if qualifies[c.label]), key=_rank)  # the reference always is
    reasons: dict[str, str] = {}
    for c in cands:
        if c.label == best.label:
            reasons[c.label] = ("nothing faster stays within the budget; " + REFERENCE_REASON
                                if c.is_reference else
                                f"fastest within the budget (retention >= {floor:.4f})")
        elif not qualifies[c.label]:
            reasons[c.label] = why_not[c.label]  # type: ignore[assignment]
        else:
            lead = REFERENCE_REASON + "; " if c.is_reference else "within the budget; "
            reasons[c.label] = (f"{lead}slower than {best.label!r} here "
                                f"({c.median_ms:.3f} ms vs {best.median_ms:.3f} ms)")
    return Choice(best.label, qualifies, reasons, float(max_quality_loss), tuple(cands))

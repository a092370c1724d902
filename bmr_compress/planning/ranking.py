"""Which units a structured reduction keeps, and what happens to the survivors: one object.

A reduction (planning/sequential.reduce_sequential_, algorithms/laplace_reduce) takes one
`Ranking`, the way Torch-Pruning's pruners take an importance. The default, `EVIDENCE`, is
BMR's own choice: the evidence (ΔlnZ ≥ 0 goes) decides how many units of a group stay and
which, and the survivors are moved to their reduced posterior means. The other rankings
keep the evidence's counts but choose the units by another importance:

    magnitude    the L2 norm over every tensor slice the unit owns (Torch-Pruning's group
                 magnitude importance)
    distortion   the compensated output error the unit's removal causes (the OBS saliency)

`compensate=False` zeroes the removed units and leaves the survivors as they are.
`Ranking.following(rounds)` replays an earlier reduction's rounds (its ν and the kept count
per group in each round), so a baseline ends at exactly the same widths.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from bmr_compress.bmr.structured import UnitEvidence
from bmr_compress.coupling.groups import UnitGroup

RankBy = Literal["evidence", "magnitude", "distortion"]
RANKINGS: tuple[RankBy, ...] = ("evidence", "magnitude", "distortion")

# one entry of LaplaceOutcome.rounds (round number, ν, kept counts, distortions, ...)
RoundRecord = Mapping[str, object]


@dataclass(frozen=True)
class FollowedRound:
    """One round of an earlier reduction: its likelihood precision ν and the units it kept
    per group."""

    nu: float
    kept_counts: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, record: RoundRecord) -> FollowedRound:
        """From a round record (LaplaceOutcome.rounds, or its JSON)."""
        nu, counts = record.get("nu"), record.get("kept_counts")
        if not isinstance(nu, (int, float)) or not isinstance(counts, Mapping):
            raise ValueError(f"a followed round needs 'nu' and 'kept_counts', got {dict(record)}")
        return cls(float(nu), {str(g): int(n) for g, n in counts.items()})


@dataclass(frozen=True)
class Ranking:
    """How a reduction chooses units: `by` (RANKINGS), `compensate` the survivors or not,
    and optionally `follow` an earlier reduction's rounds (ν and kept counts per round)."""

    by: RankBy = "evidence"
    compensate: bool = True
    follow: tuple[FollowedRound, ...] = ()

    def __post_init__(self) -> None:
        if self.by not in RANKINGS:
            raise ValueError(f"ranking must be one of {RANKINGS}, got {self.by!r}")

    def following(self, rounds: Iterable[RoundRecord]) -> Ranking:
        """This ranking replaying `rounds` (an earlier outcome's; undone rounds skipped)."""
        kept = tuple(FollowedRound.of(r) for r in rounds if not r.get("undone"))
        return dataclasses.replace(self, follow=kept)

    def kept_counts(self, round_index: int) -> Mapping[str, int] | None:
        """Group -> units to keep in round `round_index` when following; None: the evidence
        decides."""
        return self.follow[round_index].kept_counts if self.follow else None

    def importance(self, model: nn.Module | None, group: UnitGroup,
                   evidence: UnitEvidence) -> torch.Tensor:
        """Per-unit importance of `group` (higher = keep). `evidence`: the units' scores at
        the site; `model`: the model as it is now (read by the magnitude ranking only)."""
        if self.by == "evidence":
            return -evidence.delta_lnz
        if self.by == "distortion":
            return evidence.distortion
        if model is None:
            raise ValueError("the magnitude ranking reads the model's weights: pass the model")
        return unit_magnitude(model, group)


EVIDENCE = Ranking()
MAGNITUDE = Ranking("magnitude")
DISTORTION = Ranking("distortion")


def unit_magnitude(model: nn.Module, group: UnitGroup) -> torch.Tensor:
    """Per-unit L2 norm over every tensor slice the unit owns (producer rows, bias, consumer
    columns, norm entries): Torch-Pruning's group magnitude importance. Higher = keep."""
    state = model.state_dict()
    sq = torch.zeros(group.num_units, dtype=torch.float64)
    for s in group.slices:
        t = state.get(s.param)
        if t is None or not t.is_floating_point():
            continue
        t = t.detach().double().movedim(s.dim, 0)
        per_index = (t.reshape(t.shape[0], -1) ** 2).sum(1)
        sq += per_index[s.index].sum(1)
    return sq.sqrt()

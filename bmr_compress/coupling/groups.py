"""Unit groups: which tensor slices one removable unit owns (docs/INTERNALS.md §3).

A unit (an FFN neuron, a conv filter, an attention head, a KV group, a hidden dimension)
owns, in every coupled tensor, `tensor.index_select(slice.dim, slice.index[j])`. Removing
unit j removes all of those slices together; scoring unit j sums ΔlnZ over all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

KINDS = ("neuron", "filter", "head", "kv_group", "hidden")
ROLES = ("out", "in", "norm", "embed")


def zero_width_ok(group: UnitGroup) -> bool:
    """True when `group` is a whole residual branch (`extra["branch"]`: "ffn" or "attention")
    that its family's surgery can take to width 0 (`extra["zero_width"]`, set by the family
    adapter): the branch then adds only its output bias."""
    return bool(group.extra.get("zero_width"))


@dataclass(frozen=True)
class Slice:
    """Unit j owns `state_dict()[param].index_select(dim, index[j])`.

    param: state-dict key (a parameter or a buffer such as BatchNorm running stats).
    index: LongTensor[num_units, k]. role: "out" (producing rows/bias), "in" (consuming
    columns), "norm" (normalisation parameters/statistics), "embed" (embedding columns).
    """

    param: str
    dim: int
    index: torch.Tensor
    role: str = "out"


@dataclass(frozen=True)
class UnitGroup:
    """A set of coupled units removed together.

    unit_width: output channels per unit (1 for neurons/filters/hidden, head_dim for a head,
    heads_per_group*head_dim for a KV group); rounding works on num_kept * unit_width.
    numel_per_unit: tensor elements owned by one unit (for size budgets).
    """

    name: str
    kind: str
    num_units: int
    slices: tuple[Slice, ...]
    family_hint: str = "generic"
    unit_width: int = 1
    numel_per_unit: int = 0
    min_units: int = 1
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown unit kind {self.kind!r} in group {self.name}")
        for s in self.slices:
            if s.index.dim() != 2 or s.index.shape[0] != self.num_units:
                raise ValueError(
                    f"group {self.name}: slice {s.param} index shape {tuple(s.index.shape)}"
                    f" is not [num_units={self.num_units}, k]"
                )
            if s.role not in ROLES:
                raise ValueError(f"group {self.name}: unknown slice role {s.role!r}")


def blocks(num_units: int, width: int, offset: int = 0) -> torch.Tensor:
    """LongTensor[num_units, width]: unit j owns channels offset + j*width ... + width-1."""
    return torch.arange(num_units * width).reshape(num_units, width) + offset


def column(num_units: int) -> torch.Tensor:
    """LongTensor[num_units, 1]: unit j owns channel j."""
    return torch.arange(num_units).reshape(num_units, 1)


def count_numel(group_slices: tuple[Slice, ...], shapes: dict[str, torch.Size]) -> int:
    """Elements one unit owns across its slices (a row+column overlap counted once)."""
    total = 0
    by_param: dict[str, list[Slice]] = {}
    for s in group_slices:
        by_param.setdefault(s.param, []).append(s)
    for param, ss in by_param.items():
        shape = shapes[param]

        def across(*dims: int) -> int:  # elements per index along `dims` (a zero-width
            n = 1  # axis elsewhere makes it 0, a zero-width `dims` axis does not)
            for j, size in enumerate(shape):
                n *= 1 if j in dims else size
            return n

        owned = 0
        for s in ss:
            owned += across(s.dim) * s.index.shape[1]
        if len(ss) == 2 and ss[0].dim != ss[1].dim:  # inclusion-exclusion for row+column
            a, b = ss
            owned -= across(a.dim, b.dim) * a.index.shape[1] * b.index.shape[1]
        total += owned
    return total

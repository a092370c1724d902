"""Planning: which units and weights to remove, from ΔlnZ scores alone (no pruning ratio).

Pure functions over scores; the plan is JSON-serialisable data, so it can be re-made from
`posterior.safetensors` without refitting. Sign convention: ΔlnZ ≥ threshold ⇒ prune
(threshold 0, or the Marković per-group Beta–Bernoulli ζ with "prune iff ΔlnZ > ζ").
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from bmr_compress.errors import InputError
from bmr_compress.scoring.costs import CostLedger
from bmr_compress.coupling.groups import UnitGroup

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlanSettings:
    """threshold: "zero" (prune iff ΔlnZ ≥ 0) or "beta_bernoulli" (Marković ζ per group or
    tensor).
    round_to: kept channel widths are rounded to this multiple (0 or 1: off).
    max_params: optional size budget on the elements the unit groups own (parameters in no
        group are not counted; an element two units own counts once when make_plan is
        given the tensor shapes); units then go in order of ΔlnZ per parameter saved, and
        rounding rounds down.
    max_macs: optional latency budget as multiply-accumulates per example of the owned
        weights at the shape costs.mac_weights / costs.unit_macs measured; same ordering
        and rounding.
    """

    structured: bool = True
    unstructured: bool = True
    threshold: str = "zero"
    round_to: int = 8
    min_units: int = 1
    max_params: int | None = None
    max_macs: float | None = None  # latency budget: MACs per example (see costs.unit_macs)
    kinds: tuple[str, ...] = ("neuron", "filter", "head", "kv_group", "hidden")

    def __post_init__(self) -> None:
        if self.threshold not in ("zero", "beta_bernoulli"):
            raise InputError("PlanSettings.threshold must be 'zero' or 'beta_bernoulli',"
                             f" got {self.threshold!r}")
        if self.round_to < 0 or self.min_units < 1:
            raise InputError("PlanSettings: round_to must be >= 0 and min_units >= 1")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PlanSettings:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InputError(f"unknown plan settings: {sorted(unknown)}")
        data = dict(data)
        if "kinds" in data:
            data["kinds"] = tuple(data["kinds"])
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["kinds"] = list(self.kinds)
        return d


@dataclass(frozen=True)
class UnstructuredRule:
    rule: str  # "spike"
    threshold: float  # prune iff ΔlnZ >= threshold (zero rule) / > ζ (beta_bernoulli)
    num_pruned: int
    numel: int


@dataclass(frozen=True)
class Plan:
    keep: dict[str, list[int]]
    unstructured: dict[str, UnstructuredRule]
    settings: PlanSettings
    summary: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "keep": self.keep,
            "unstructured": {k: dataclasses.asdict(v) for k, v in self.unstructured.items()},
            "settings": self.settings.to_dict(),
            "summary": self.summary,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Plan:
        return cls(
            keep={k: [int(i) for i in v] for k, v in data["keep"].items()},
            unstructured={k: UnstructuredRule(**v) for k, v in data["unstructured"].items()},
            settings=PlanSettings.from_dict(data["settings"]),
            summary=dict(data.get("summary", {})),
        )


def _threshold(scores: torch.Tensor, settings: PlanSettings) -> float:
    if settings.threshold == "zero":
        return 0.0
    from bmr_compress.bmr import beta_bernoulli_threshold

    return float(beta_bernoulli_threshold(scores.flatten().double()))


def _prune_mask(scores: torch.Tensor, zeta: float, settings: PlanSettings) -> torch.Tensor:
    return scores >= zeta if settings.threshold == "zero" else scores > zeta


def _step(g: UnitGroup, round_to: int) -> int:
    """Units per rounding step so that units * unit_width is a multiple of round_to."""
    if round_to <= 1:
        return 1
    return round_to // math.gcd(round_to, g.unit_width)


def rounded_count(g: UnitGroup, n_keep: int, round_to: int, min_units: int,
                  down: bool = False, scores: torch.Tensor | None = None) -> int:
    """Kept count whose width is a multiple of round_to, within [step, num_units].

    With `scores` (ΔlnZ per unit) the direction is chosen by evidence: rounding down loses
    Σ max(−ΔlnZ, 0) over the extra units removed, rounding up loses Σ max(ΔlnZ, 0) over the
    units added back (0 for units pinned at +inf: their weights are already zero, so adding
    them back changes neither function nor evidence); the smaller loss wins, ties go to the
    nearest count, then up. Without scores: nearest (ties up). `down`: always the multiple
    below (a size budget still holds). If no positive multiple fits, keep n_keep unrounded.
    """
    n_keep = max(n_keep, min(min_units, g.num_units))
    step = _step(g, round_to)
    if step == 1:
        return n_keep
    lo, hi = (n_keep // step) * step, -(-n_keep // step) * step
    candidates = [c for c in (lo, hi) if step <= c <= g.num_units]
    if not candidates:
        return n_keep  # the whole structure would vanish: keep unrounded
    if down:
        return candidates[0]
    if scores is None or len(candidates) == 1 or lo == hi:
        return min(candidates, key=lambda c: (abs(c - n_keep), -c))
    ranked = scores.double()[torch.argsort(scores.double(), stable=True)]  # keep-first order
    dropped, added = ranked[lo:n_keep], ranked[n_keep:hi]
    loss_down = float((-dropped).clamp(min=0).sum())
    loss_up = float(torch.where(torch.isinf(added), torch.zeros_like(added), added)
                    .clamp(min=0).sum())
    return min(candidates, key=lambda c: ((loss_down if c == lo else loss_up),
                                          abs(c - n_keep), -c))


def keep_top(scores: torch.Tensor, n: int) -> list[int]:
    """The n units with the lowest ΔlnZ (most evidence lost if removed), sorted."""
    order = torch.argsort(scores.double(), stable=True)
    return sorted(int(i) for i in order[:n])


def make_plan(
    groups: list[UnitGroup],
    scores: Mapping[str, torch.Tensor],
    weight_scores: Mapping[str, torch.Tensor] | None,
    settings: PlanSettings,
    *,
    unit_macs: Mapping[str, float] | None = None,
    shapes: Mapping[str, torch.Size] | None = None,
    mac_weights: Mapping[str, float] | None = None,
) -> Plan:
    """Decide kept units per group and unstructured thresholds per tensor.

    Budgets are counted exactly (each tensor element once, `costs.CostLedger`) when the
    tensor `shapes` are given — and, for max_macs, `mac_weights` (costs.mac_weights).
    Without them a unit costs its own `numel_per_unit` / `unit_macs` (group -> MACs, from
    costs.unit_macs), which counts an element shared by two groups' units twice.
    """
    keep: dict[str, list[int]] = {}
    summary: dict[str, dict[str, Any]] = {}
    for g in groups:
        sc = scores.get(g.name)
        if not settings.structured or g.kind not in settings.kinds or sc is None:
            keep[g.name] = list(range(g.num_units))
            continue
        zeta = _threshold(sc, settings)
        n_keep = int((~_prune_mask(sc, zeta, settings)).sum())
        keep[g.name] = keep_top(sc, n_keep)
        finite = sc[torch.isfinite(sc)]  # units pinned at +inf by earlier rounds excluded
        summary[g.name] = {"kind": g.kind, "num_units": g.num_units, "threshold": zeta,
                           "evidence_keep": n_keep,
                           "max_delta_lnz": float(finite.max()) if finite.numel() else None,
                           "min_delta_lnz": float(finite.min()) if finite.numel() else None}
    budgeted = settings.max_params is not None or settings.max_macs is not None
    if settings.max_params is not None:
        ledger = (CostLedger(groups, shapes) if shapes is not None
                  else _PerUnit({g.name: float(g.numel_per_unit) for g in groups}))
        _apply_budget(groups, scores, keep, settings, settings.max_params, ledger)
    if settings.max_macs is not None:
        if shapes is not None and mac_weights is not None:
            ledger = CostLedger(groups, shapes, mac_weights)
        elif unit_macs is not None:
            ledger = _PerUnit(unit_macs)
        else:
            raise InputError("PlanSettings.max_macs needs unit_macs (scoring.costs.unit_macs)"
                             " or shapes + mac_weights (scoring.costs.mac_weights)")
        _apply_budget(groups, scores, keep, settings, settings.max_macs, ledger)
    for g in groups:
        if g.name not in summary:
            continue
        n = rounded_count(g, len(keep[g.name]), settings.round_to, settings.min_units,
                          down=budgeted, scores=scores[g.name])
        keep[g.name] = keep_top(scores[g.name], n)
        summary[g.name]["kept"] = n
    unstructured: dict[str, UnstructuredRule] = {}
    if settings.unstructured and weight_scores:
        for name, ws in weight_scores.items():
            zeta = _threshold(ws, settings)
            n = int(_prune_mask(ws, zeta, settings).sum())
            unstructured[name] = UnstructuredRule("spike", zeta, n, ws.numel())
    return Plan(keep, unstructured, settings, summary)


class _PerUnit:
    """A cost per unit of each group, counted independently (the ledger without shapes)."""

    def __init__(self, per_unit: Mapping[str, float]) -> None:
        self.per_unit = per_unit

    def unit_cost(self, name: str, j: int) -> float:
        return float(self.per_unit.get(name, 0.0))

    remove = unit_cost


def _apply_budget(groups: list[UnitGroup], scores: Mapping[str, torch.Tensor],
                  keep: dict[str, list[int]], settings: PlanSettings, budget: float,
                  ledger: CostLedger | _PerUnit) -> None:
    """Remove further units, best value per cost first across all groups, until the budget
    holds: the order is ΔlnZ / cost, highest first (the least evidence lost per parameter or
    MAC saved), so an attention head owning ~60× a neuron's parameters must lose no more than
    ~60× the evidence to go first.

    Costs are counted over the groups' own units (parameters or MACs that surgery can
    remove; what no group owns is outside the budget). Units the evidence already removed
    are taken out of the ledger first; each further removal subtracts what it saves then.
    With a budget, rounding goes down.
    """
    by_name = {g.name: g for g in groups}
    for g in groups:
        kept = set(keep[g.name])
        for j in range(g.num_units):
            if j not in kept:
                ledger.remove(g.name, j)
    total = (ledger.total() if isinstance(ledger, CostLedger)
             else sum(ledger.unit_cost(g.name, 0) * len(keep[g.name]) for g in groups))
    candidates = []
    for g in groups:
        if g.name in scores and g.kind in settings.kinds:
            for j in keep[g.name]:
                cost = ledger.unit_cost(g.name, j)
                if cost > 0:
                    candidates.append((float(scores[g.name][j]) / cost, g.name, j))
    candidates.sort(reverse=True)
    kept_sets = {k: set(v) for k, v in keep.items()}
    for _, name, j in candidates:
        if total <= budget:
            break
        g = by_name[name]
        if len(kept_sets[name]) <= max(settings.min_units, _step(g, settings.round_to)):
            continue
        kept_sets[name].discard(j)
        total -= ledger.remove(name, j)
    if total > budget:
        log.warning("budget %.4g not reachable: %.4g left at the minimum widths", budget, total)
    for k, v in kept_sets.items():
        keep[k] = sorted(v)


def unstructured_masks(plan: Plan,
                       weight_scores: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Bool keep-masks (True = keep) per tensor, re-derived from the plan's thresholds."""
    out = {}
    for name, rule in plan.unstructured.items():
        ws = weight_scores[name]
        pruned = ws >= rule.threshold if plan.settings.threshold == "zero" else ws > rule.threshold
        out[name] = ~pruned
    return out


def structured_masks(groups: list[UnitGroup], plan: Plan,
                     shapes: Mapping[str, torch.Size]) -> dict[str, torch.Tensor]:
    """Bool keep-masks over full tensors that zero every removed unit's slices."""
    out: dict[str, torch.Tensor] = {}
    for g in groups:
        kept = set(plan.keep.get(g.name, range(g.num_units)))
        gone = [j for j in range(g.num_units) if j not in kept]
        if not gone:
            continue
        rows = torch.tensor(gone, dtype=torch.long)
        for s in g.slices:
            if s.param not in shapes:
                continue
            m = out.setdefault(s.param, torch.ones(shapes[s.param], dtype=torch.bool))
            m.index_fill_(s.dim, s.index.index_select(0, rows).flatten(), False)
    return out


def plan_masks(groups: list[UnitGroup], plan: Plan, shapes: Mapping[str, torch.Size],
               weight_masks: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Keep-masks of every tensor in `shapes` that the plan prunes: removed units' slices
    (structured_masks) and, where given, single weights (unstructured_masks) together."""
    out = structured_masks(groups, plan, shapes)
    for k, m in (weight_masks or {}).items():
        if k in shapes:
            out[k] = out[k] & m if k in out else m.clone()
    return out

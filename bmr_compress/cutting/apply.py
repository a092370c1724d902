"""apply_plan_: the model-facing half of the cut.

apply_plan_ updates tensors, module attributes and the config in one call (so the result
reloads from its own files) and
returns a SurgeryRecord: what was kept per group, final shapes, config edits, and a
coverage report listing every parameter as pruned structurally / unstructured / kept /
skipped with a reason.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from bmr_compress.errors import UnsupportedModelError
from bmr_compress.io.checks import count_params
from bmr_compress.layers import layer_type
from bmr_compress.coupling.adapters import adapter_for
from bmr_compress.cutting.cut import cut_, removed_indices
from bmr_compress.coupling.groups import UnitGroup, zero_width_ok
from bmr_compress.planning.plan import Plan

log = logging.getLogger(__name__)


@dataclass
class SurgeryRecord:
    family: str
    groups: dict[str, dict[str, Any]]  # name -> kind, num_units, kept, unit_width
    shapes: dict[str, list[int]]  # state-dict key -> shape after surgery
    params_before: int
    params_after: int
    config_updates: dict[str, Any] = field(default_factory=dict)
    build_config: dict[str, Any] = field(default_factory=dict)  # original values of updated keys
    plain_transformers: bool = False  # config.json alone rebuilds the cut architecture
    coverage: dict[str, str] = field(default_factory=dict)
    unstructured_zeros: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def apply_plan_(
    model: nn.Module,
    groups: list[UnitGroup],
    plan: Plan,
    *,
    weight_masks: Mapping[str, torch.Tensor] | None = None,
) -> SurgeryRecord:
    """Physically remove every unit the plan does not keep; zero unstructured-pruned weights.

    weight_masks: bool keep-masks in the *original* shapes (plan.unstructured_masks); they
    are applied before the cut so the surviving weights keep their zeros.
    """
    names = dict(model.named_parameters(remove_duplicate=False))
    for g in groups:
        if not plan.keep.get(g.name, [0]) and g.num_units and not zero_width_ok(g):
            raise UnsupportedModelError(f"plan keeps no unit of {g.name}")
    cuts = removed_indices(model, groups, plan.keep)  # validates indices before mutating
    cut_ids = set(cuts)
    before = count_params(model)
    zeros = 0
    with torch.no_grad():
        for pname, m in (weight_masks or {}).items():
            if pname in names:
                p = names[pname]
                p.mul_(m.to(device=p.device, dtype=p.dtype))
                zeros += int((~m).sum())
    cfg = getattr(model, "config", None)
    original = copy.deepcopy(cfg.to_dict()) if cfg is not None and hasattr(cfg, "to_dict") else {}
    cut_(model, groups, plan.keep)
    adapter = adapter_for(model)
    updates = adapter.sync_(model) if adapter is not None else {}
    build = {k: original[k] for k in updates if k in original and original[k] != updates[k]}
    grouped = {s.param for g in groups for s in g.slices}
    coverage = {}
    for pname, p in names.items():
        if id(p) in cut_ids:
            coverage[pname] = "pruned structurally"
        elif weight_masks is not None and pname in weight_masks \
                and not bool(weight_masks[pname].all()):
            coverage[pname] = "pruned unstructured"
        elif pname in grouped or (weight_masks is not None and pname in weight_masks):
            coverage[pname] = "kept"
        else:
            coverage[pname] = "skipped: " + _skip_reason(model, pname)
    for pname in coverage:  # a structurally cut tensor may also carry unstructured zeros
        if coverage[pname] == "pruned structurally" and weight_masks is not None \
                and pname in weight_masks and not bool(weight_masks[pname].all()):
            coverage[pname] = "pruned structurally + unstructured"
    record = SurgeryRecord(
        family=adapter.family if adapter is not None else "generic",
        groups={g.name: {"kind": g.kind, "num_units": g.num_units, "unit_width": g.unit_width,
                         "kept": list(plan.keep.get(g.name, range(g.num_units)))}
                for g in groups},
        shapes={k: list(v.shape) for k, v in model.state_dict().items()},
        params_before=before, params_after=count_params(model), config_updates=updates,
        build_config=build, plain_transformers=plain_loadable(model), coverage=coverage,
        unstructured_zeros=zeros,
    )
    log.info("surgery: %d -> %d parameters (%s)", before, record.params_after, record.family)
    return record


def _skip_reason(model: nn.Module, pname: str) -> str:
    mpath = pname.rpartition(".")[0]
    module = model.get_submodule(mpath) if mpath else model
    if layer_type(module).out_role == "embed":
        return "embedding rows are vocabulary/positions, not removable units; not scored"
    return (f"{type(module).__name__} tensor is in no removable unit group (model output or"
            " uncoupled) and has no posterior")


def plain_loadable(model: nn.Module) -> bool:
    """True if building the model's class from its (updated) config gives the same shapes."""
    cfg = getattr(model, "config", None)
    if cfg is None or not hasattr(cfg, "to_dict"):
        return False
    try:
        with torch.device("meta"), warnings.catch_warnings():
            # a block removed whole (width 0 in every layer) builds zero-element tensors
            warnings.filterwarnings("ignore", "Initializing zero-element tensors")
            fresh = type(model)(copy.deepcopy(cfg))
    except Exception as exc:  # noqa: BLE001 - any failure means "not expressible"
        log.info("config cannot express the cut model: %s", exc)
        return False
    a = {k: tuple(v.shape) for k, v in fresh.state_dict().items()}
    b = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    # constructor flags (e.g. add_pooling_layer=False) are not in the config: extra modules
    # in the fresh build are fine, every tensor of the cut model must match
    return all(a.get(k) == shape for k, shape in b.items())


def coverage_report(record: SurgeryRecord) -> dict[str, str]:
    """Every parameter tensor -> pruned structurally / pruned unstructured / kept / skipped: why."""
    return dict(record.coverage)

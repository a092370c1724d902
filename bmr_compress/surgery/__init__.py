"""Coupling, scoring, planning and surgery (docs/INTERNALS.md §3).

Score and plan are pure functions over posterior data; apply_plan_ mutates the model.
Submodules import torch; `import bmr_compress` does not import this package.
"""

from bmr_compress.surgery.apply import SurgeryRecord, apply_plan_
from bmr_compress.surgery.manifest import (
    load_compressed, read_manifest, register_architecture, save_compressed, write_manifest,
)


def coverage_report(record: SurgeryRecord) -> dict[str, str]:
    """Every parameter tensor -> pruned structurally / pruned unstructured / kept / skipped: why."""
    return dict(record.coverage)


__all__ = [
    "SurgeryRecord",
    "apply_plan_", "coverage_report",
    "load_compressed",
    "read_manifest", "register_architecture", "save_compressed",
    "write_manifest",
]

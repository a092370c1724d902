"""Cutting: remove units for real, and save / reload what was cut.

compensate: survivors moved to their reduced posterior means before the cut; cut and apply:
tensors, module attributes and config changed in one call, returning a SurgeryRecord;
hf_layout: the cut model in a form plain transformers loads; saved: bmr_manifest.json,
save_compressed / load_compressed.
"""

from bmr_compress.cutting.apply import SurgeryRecord, apply_plan_, coverage_report
from bmr_compress.cutting.compensate import compensate_
from bmr_compress.cutting.saved import (
    load_compressed, read_manifest, register_architecture, save_compressed, write_manifest,
)

__all__ = ["SurgeryRecord", "apply_plan_", "compensate_", "coverage_report", "load_compressed", "read_manifest", "register_architecture", "save_compressed", "write_manifest"]

"""The whole job: load → wrap → fine-tune → score → plan → cut → export → validate → report.

This module and the CLI are the only places that decide file locations. Each
stage is a call into its subpackage; this module wires them, times them and decides where
their outputs go. Results are assembled in a staging directory beside `--out` and renamed
into place only after validation passed (io.atomic). A failed validation leaves `--out`
untouched, copies the assembled files to `<out>.rejected/` for inspection and raises
ValidationFailed (exit code 1).

Settings: `CompressConfig` (pipeline/config.py), one typed table per stage. In memory:
`compress_(model, batches, config, task=...)` (pipeline/api.py). Entry points (one per CLI
command): `compress`, `finetune_only`, `reduce`, `export_directory`, `validate_directory`.
"""

from bmr_compress.pipeline.api import CompressRecord, compress_
from bmr_compress.pipeline.commands import (
    compress, export_directory, finetune_only, reduce, validate_directory,
)
from bmr_compress.pipeline.config import (
    DEFAULT_TOLERANCE, OPTIONS, CompressConfig, DataConfig, ExportConfig, LaplaceSettings,
    PlanConfig, SourceConfig, build_config, flat_record, from_recipe, with_options,
)
from bmr_compress.pipeline.finish import LATENCY_SEQ, finish_stage, validation_settings
from bmr_compress.pipeline.shared import FIT_RECORD, CompressResult, StageTimer
from bmr_compress.pipeline.sources import resolve_source
from bmr_compress.pipeline.stages import (
    CALIBRATION_BATCHES, Cut, Fitted, checkpoint_dir, cut_stage, fit_, fit_stage, load_stage,
)
from bmr_compress.pipeline.summary import format_summary, summary_of

__all__ = [
    "CALIBRATION_BATCHES", "DEFAULT_TOLERANCE", "FIT_RECORD", "LATENCY_SEQ", "OPTIONS",
    "CompressConfig",
    "CompressRecord", "CompressResult", "Cut", "DataConfig", "ExportConfig", "Fitted",
    "LaplaceSettings", "PlanConfig", "SourceConfig", "StageTimer", "build_config",
    "checkpoint_dir", "compress", "compress_", "cut_stage", "export_directory",
    "finetune_only", "finish_stage", "fit_", "fit_stage", "flat_record", "format_summary",
    "from_recipe", "load_stage", "reduce", "resolve_source", "summary_of", "validate_directory",
    "validation_settings", "with_options",
]

"""The whole job: load → wrap → fine-tune → score → plan → cut → export → validate → report.

This module and the CLI are the only places that decide file locations (DESIGN.md). Each
stage is a call into its subpackage; this module wires them, times them and decides where
their outputs go. Results are assembled in a staging directory beside `--out` and renamed
into place only after validation passed (io.atomic). A failed validation leaves `--out`
untouched, copies the assembled files to `<out>.rejected/` for inspection and raises
ValidationFailed (exit code 1).

Entry points (one per CLI command): `compress`, `finetune_only`, `reduce`,
`export_directory`, `validate_directory`.
"""

from bmr_compress.pipeline.commands import (
    compress, export_directory, finetune_only, reduce, validate_directory,
)
from bmr_compress.pipeline.settings import (
    DEFAULTS, FIT_RECORD, CompressResult, CompressSettings, StageTimer, resolve_settings,
)
from bmr_compress.pipeline.stages import (
    LATENCY_SEQ, Cut, Fitted, checkpoint_dir, cut_stage, finish_stage, fit_stage, load_stage,
    validation_settings,
)
from bmr_compress.pipeline.summary import format_summary, summary_of

__all__ = [
    "DEFAULTS", "FIT_RECORD", "LATENCY_SEQ", "CompressResult", "CompressSettings", "Cut", "Fitted",
    "StageTimer", "checkpoint_dir", "compress", "cut_stage", "export_directory", "finetune_only",
    "finish_stage", "fit_stage", "format_summary", "load_stage", "reduce", "resolve_settings",
    "summary_of", "validate_directory", "validation_settings",
]

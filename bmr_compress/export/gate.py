"""The validation gate: every check of export.validation_checks on one export
(docs/INTERNALS.md).

See export.validation for the settings, the result and the parity tolerance.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from bmr_compress.export import validation_checks as checks
from bmr_compress.export.validation import ValidationResult, ValidationSettings
from bmr_compress.tasks import Task

if TYPE_CHECKING:
    import torch
    from torch import nn


def validate(
    original: nn.Module,
    compressed: nn.Module,
    *,
    onnx_path: str | Path,
    original_onnx_path: str | Path,
    sample_inputs: dict[str, torch.Tensor],
    heldout_batches: Iterable[dict[str, torch.Tensor]],
    task: Task | str,
    settings: ValidationSettings | None = None,
    int8_path: str | Path | None = None,
    mixed_path: str | Path | None = None,
    raise_on_failure: bool = True,
) -> ValidationResult:
    """Run every check; a check that errors counts as failed (with the error as its detail).

    `sample_inputs` is the batch the ONNX files were exported with (parity uses other shapes);
    `original_onnx_path` is the uncompressed export (size and latency baseline);
    `int8_path` / `mixed_path`: the int8 and mixed-precision files, timed beside it and checked.
    """
    st = settings or ValidationSettings()
    res = ValidationResult()
    onnx_path, original_onnx_path = Path(onnx_path), Path(original_onnx_path)
    ok_files = checks.check_onnx_files(res, {"compressed": onnx_path, "original": original_onnx_path})
    checks.check_finite(res, compressed)
    if ok_files:
        checks.check_parity(res, compressed, onnx_path, sample_inputs, st)
        checks.check_sizes(res, onnx_path, original_onnx_path)
        timed = {"original": original_onnx_path, "compressed": onnx_path}
        if int8_path is not None and Path(int8_path).is_file():
            timed["int8"] = Path(int8_path)  # int8 latency beside fp32, same run
        if mixed_path is not None and Path(mixed_path).is_file():
            timed["mixed"] = Path(mixed_path)
        checks.check_latency(res, compressed, timed, sample_inputs, st)
    checks.check_metric(res, original, compressed, heldout_batches, task, st)
    if int8_path is not None:
        checks.check_int8(res, Path(int8_path), onnx_path if ok_files else None, sample_inputs, compressed, st,
                          original=original, batches=heldout_batches, task=task)
    if mixed_path is not None:
        checks.check_mixed(res, Path(mixed_path), onnx_path if ok_files else None, sample_inputs,
                           compressed, st, original=original, batches=heldout_batches, task=task)
    if raise_on_failure:
        res.raise_if_failed()
    return res

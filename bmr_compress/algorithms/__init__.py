"""Algorithms the pipeline calls: the default Laplace reduction, recovery, the variational refit
rounds and the operating-points measurement of one run.

They take models, batches and settings objects and return records; the pipeline decides
files, stages and logging around them. Importing this package does not import torch; the
names below resolve on first use.
"""


from __future__ import annotations

import importlib
from typing import Any

from bmr_compress import shadow_guard

_EXPORTS = {
    "laplace_reduce": "laplace_reduce", "LaplaceOutcome": "laplace_reduce",
    "final_record": "laplace_reduce", "split_calibration": "laplace_reduce",
    "CalibrationBatches": "laplace_reduce",
    "recover_": "recovery", "distortion": "recovery", "RecoveryRecord": "recovery",
    "TeacherTargets": "targets", "iterate_with_finetune": "refit",
    "OperatingPoints": "curve", "measure_points": "curve",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
shadow_guard(__name__, _EXPORTS)

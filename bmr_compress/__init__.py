"""bmr-compress: physically smaller, faster models chosen by Bayesian model reduction.

Importing this package is cheap: it does not import torch. Heavy modules are imported by
the stages that need them; the in-memory API below resolves on first use:

    import bmr_compress as bc
    record = bc.compress_(model, batches, bc.CompressConfig(), task="classification")
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("bmr-compress")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

# name -> module; imported on first attribute access (PEP 562), so `import bmr_compress.bmr`
# does not import the pipeline
_LAZY = {
    "compress_": "bmr_compress.pipeline.api", "CompressRecord": "bmr_compress.pipeline.api",
    "CompressConfig": "bmr_compress.pipeline.config",
    "LaplaceSettings": "bmr_compress.pipeline.config",
    "PlanConfig": "bmr_compress.pipeline.config",
    "ExportConfig": "bmr_compress.pipeline.config",
    "compress": "bmr_compress.pipeline.commands",
    "Ranking": "bmr_compress.planning.ranking",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = ["__version__", *sorted(_LAZY)]

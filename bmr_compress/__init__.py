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


def shadow_guard(package: str, exports: Any) -> None:
    """Keep each lazily exported name of `package` (name -> submodule) from being shadowed by
    a submodule of the same name: importing `package.x` sets the attribute `x` of the
    package to the submodule, after which `from package import x` would return the module
    instead of the function the export table names (`algorithms.laplace_reduce`)."""
    import sys
    import types

    class _Package(types.ModuleType):
        def __setattr__(self, name: str, value: Any) -> None:
            if (name in exports and isinstance(value, types.ModuleType)
                    and value.__name__ == f"{package}.{name}"):
                return  # still importable as a module; the attribute stays the export
            super().__setattr__(name, value)

    sys.modules[package].__class__ = _Package


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = ["__version__", *sorted(_LAZY)]

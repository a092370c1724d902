"""I/O stage (docs/INTERNALS.md §5): sources, recipes, data, atomic writes, hub push.

The leaf of the middle layers: io imports nothing from zoo, cutting, planning, scoring, coupling, export, variational or
pipeline; they register what io cannot load itself (io.sources.register_source_kind).

Importing this package does not import torch; names resolve lazily on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "resolve_source": "sources", "LoadedSource": "sources", "parse_hub_spec": "sources",
    "load_weight_file": "sources", "package_snapshot_dir": "sources",
    "register_source_kind": "sources", "SourceKind": "sources", "SourceRequest": "sources",
    "read_manifest": "manifest", "write_manifest": "manifest",
    "check_json_file": "checks", "count_params": "checks", "to_jsonable": "jsonsafe",
    "load_recipe": "recipes", "Recipe": "recipes", "recipe_names": "recipes",
    "DataSpec": "recipes", "SourceSpec": "recipes", "TrainSpec": "recipes",
    "make_dataset": "data", "DataBundle": "data", "parse_data_spec": "data",
    "digits_split": "digits", "docstring_corpus": "corpus", "split_texts": "corpus",
    "docs_corpus": "package_corpus", "docs_split_texts": "package_corpus",
    "atomic_output_dir": "atomic", "check_output_dir": "atomic",
    "push_to_hub": "hub", "PushResult": "hub",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)

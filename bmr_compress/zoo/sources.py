"""The model zoo's source kinds, registered in io.sources at import.

* ``zoo-checkpoint``: a directory whose config.json names a ``bmr_zoo_architecture`` (and
  that is not a `compress` output, which cutting.saved's kind loads);
* ``zoo-recipe``: a recipe whose [source] names a zoo architecture: the cached checkpoint
  (trained on first use), or the recipe's architecture filled from a user's weight file.

Importing this module also imports zoo.adapters (the coupling adapters for ViT and Mixer), so
every zoo model that comes through resolve_source can be cut.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import bmr_compress.zoo.adapters  # noqa: F401  registers the zoo's coupling adapters
from bmr_compress.errors import InputError
from bmr_compress.io.checks import check_dtypes, check_json_file, read_safetensors_header
from bmr_compress.io.manifest import MANIFEST
from bmr_compress.io.recipes import Recipe
from bmr_compress.io.sources import LoadedSource, SourceRequest, register_source_kind
from bmr_compress.io.transformers_source import first_line, load_weight_file, st_dtype
from bmr_compress.zoo.architectures import ARCH_KEY, META_KEYS, build_model
from bmr_compress.zoo.train import (
    is_zoo_checkpoint, load_state_dict_strict, load_zoo_checkpoint, train_recipe, zoo_cache_dir,
)

log = logging.getLogger(__name__)


def zoo_checkpoint_dir(recipe_name: str) -> Path:
    return zoo_cache_dir() / recipe_name


def check_zoo_dims(config: dict[str, Any], path: Path) -> None:
    """Zoo architecture sizes (ints and int lists outside the metadata keys) must be >= 1."""
    for k, v in config.items():
        if k in META_KEYS:
            continue
        for x in v if isinstance(v, list) else [v]:
            if isinstance(x, int) and not isinstance(x, bool) and x < 1:
                raise InputError(f"{path}: {k} = {v!r}: sizes must be positive integers")


def _is_zoo_dir(directory: Path) -> bool:
    return is_zoo_checkpoint(directory) and not (directory / MANIFEST).is_file()


@register_source_kind("zoo-checkpoint", target="directory", claims=_is_zoo_dir,
                      loose_weights_need_recipe=is_zoo_checkpoint)
def load_zoo_dir(directory: Path, req: SourceRequest) -> LoadedSource:
    """A zoo checkpoint directory (config.json + model.safetensors), checked first."""
    if (directory / "model.safetensors").is_file():
        read_safetensors_header(directory / "model.safetensors")
    config = check_json_file(directory / "config.json")
    check_zoo_dims(config, directory / "config.json")
    try:
        model = load_zoo_checkpoint(directory)
    except (RuntimeError, ValueError, TypeError, OverflowError, ZeroDivisionError) as e:
        raise InputError(f"{directory / 'config.json'}: cannot build the zoo model: "
                         f"{type(e).__name__}: {first_line(e)}") from None
    return LoadedSource(model, f"zoo:{config[ARCH_KEY]}", config.get("task", "classification"),
                        config, None, req.spec, None,
                        {"config": directory / "config.json", "weights": directory / "model.safetensors"},
                        directory)


@register_source_kind("zoo-recipe", target="recipe", claims=lambda r: bool(r.source.zoo))
def load_zoo_recipe(recipe: Recipe, req: SourceRequest) -> LoadedSource:
    """The recipe's cached checkpoint (trained now if missing), or its architecture filled
    from `req.weights_file`."""
    src = recipe.source
    assert src.zoo is not None
    if req.weights_file is None:
        d = zoo_checkpoint_dir(recipe.name)
        if not (d / "model.safetensors").is_file():
            log.warning("zoo checkpoint %s not found at %s: training it now on digits "
                        "(seconds; `bmr-compress zoo train %s` does this ahead)",
                        recipe.name, d, recipe.name)
            train_recipe(recipe.name, d, overwrite=True)
        return load_zoo_dir(d, req)
    model = build_model(src.zoo, src.arch, origin=recipe.path)
    state = load_weight_file(req.weights_file, allow_pickle=req.allow_pickle)
    header = {k: (st_dtype(v), tuple(v.shape)) for k, v in state.items()}
    check_dtypes(model, header, str(req.weights_file))
    load_state_dict_strict(model, state, origin=str(req.weights_file))
    cfg = {**model.zoo_config_dict(), "task": req.task}
    return LoadedSource(model.eval(), f"zoo:{src.zoo}", req.task, cfg, None, req.spec, None,
                        {"weights": req.weights_file}, None)

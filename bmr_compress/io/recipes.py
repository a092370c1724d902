"""Model-zoo recipes: strict TOML -> frozen dataclasses (unknown keys are an InputError).

A recipe pins a source (hub id + revision, an installed package carrying a hub snapshot, or
a zoo architecture), the task, the calibration data and compression settings. Recipes ship
as package data in ``bmr_compress.model_zoo`` (the top-level ``model_zoo/`` folder).

    name = "mlp-digits"                  # must equal the file stem
    description = "..."
    task = "classification"
    [source]   zoo = "mlp"  |  hub = "org/name" + revision = "<sha>"  |  package = "dist-name"
               |  split_zip = ["dist-part-001", ...] + sha256 = "<zip hash>" + extra = "name"
    [source.arch]  widths = [128, 64]    # zoo architecture kwargs
    [train]    epochs = 40 ...           # zoo recipes only: how `zoo train` fits the seed model
    [data]     kind = "digits" | "docstrings" | "docs" | "file" | "hf" ...
    [settings] seed = 0                  # defaults for `compress` (CLI options override):
    [settings.plan] round_to = 8 ...     # one table per stage, see pipeline/config.py
"""

from __future__ import annotations

import dataclasses
import re
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Union

from bmr_compress.errors import InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

RECIPE_PACKAGE = "bmr_compress.model_zoo"
TASKS = ("classification", "regression", "embedding", "causal_lm")
DATA_KINDS = ("digits", "docstrings", "docs", "file", "hf")


@dataclass(frozen=True)
class SourceSpec:
    hub: str | None = None  # hub repo id
    revision: str | None = None  # commit hash / tag / branch
    package: str | None = None  # installed distribution that bundles a hub snapshot
    zoo: str | None = None  # zoo architecture name (bmr_compress.zoo)
    arch: dict[str, Any] = field(default_factory=dict)  # zoo architecture kwargs
    # installed distributions carrying, in order, the parts of a zipped snapshot (io.split_zip)
    split_zip: tuple[str, ...] = ()
    sha256: str | None = None  # of the reassembled zip
    extra: str | None = None  # the bmr-compress extra that installs the parts

    def kind(self) -> str:
        return ("zoo" if self.zoo else "package" if self.package
                else "split-zip" if self.split_zip else "hub")


@dataclass(frozen=True)
class TrainSpec:
    epochs: int = 40
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0


@dataclass(frozen=True)
class DataSpec:
    kind: str = "digits"
    path: str | None = None  # kind="file": .npz/.pt/.txt/.jsonl or an image folder
    name: str | None = None  # kind="hf": dataset name
    config: str | None = None  # kind="hf": dataset config
    split: str = "train"  # kind="hf"
    column: str | None = None  # text/image column (hf, jsonl)
    max_samples: int = 1024  # calibration examples (train + held-out)
    seq_len: int = 128  # token budget per text example
    batch_size: int = 32
    seed: int = 0


@dataclass(frozen=True)
class Recipe:
    name: str
    task: str
    source: SourceSpec
    data: DataSpec
    # [settings]: defaults for `compress` (CLI options override them), read strictly into a
    # pipeline.config.CompressConfig by pipeline.config.from_recipe: `posterior`, `seed` and
    # one table per stage ([settings.laplace], [settings.finetune], [settings.plan], ...)
    settings: dict[str, Any] = field(default_factory=dict)
    train: TrainSpec | None = None
    description: str = ""
    path: str = ""  # where it was loaded from (not a TOML key)


# ---------------------------------------------------------------------------- strict parsing


def check_type(value: Any, tp: Any, where: str) -> Any:
    """`value` read from TOML/JSON as type `tp` (int widens to float, arrays to tuples);
    anything else is an InputError naming `where`."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return check_type(value, a, where)
            except InputError as e:
                errors.append(e)
        raise errors[0]
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise InputError(f"{where}: expected an array, got {value!r}")
        args = typing.get_args(tp)
        items = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(items) != len(value):
            raise InputError(f"{where}: expected {len(items)} items, got {value!r}")
        return tuple(check_type(v, a, where) for v, a in zip(value, items, strict=True))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise InputError(f"{where}: expected a table, got {type(value).__name__}")
        return dict(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise InputError(f"{where}: expected {tp.__name__}, got {value!r}")
        return value
    raise TypeError(f"unsupported recipe field type {tp!r}")  # programming error


def strict_dataclass(cls: type, table: Any, where: str, *, skip: frozenset[str] = frozenset(),
                     base: Any = None) -> Any:
    """Build frozen dataclass ``cls`` from a TOML table; unknown keys or wrong types -> InputError.

    `skip`: fields the table may not set; `base`: an instance whose values fill the fields
    the table leaves out (default: the class defaults)."""
    if not isinstance(table, dict):
        raise InputError(f"{where}: expected a table, got {type(table).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)
              if not (cls is Recipe and f.name == "path") and f.name not in skip}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise InputError(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(fields))})")
    kwargs = {}
    for key, value in table.items():
        tp = hints[key]
        if dataclasses.is_dataclass(typing.get_args(tp)[0] if typing.get_args(tp) else tp):
            sub = next(a for a in (typing.get_args(tp) or (tp,)) if dataclasses.is_dataclass(a))
            kwargs[key] = strict_dataclass(sub, value, f"{where} [{key}]")
        else:
            kwargs[key] = check_type(value, tp, f"{where}: key {key!r}")
    if base is not None:
        return dataclasses.replace(base, **kwargs)
    missing = [n for n, f in fields.items() if n not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise InputError(f"{where}: missing required key {missing[0]!r}")
    return cls(**kwargs)


RECIPE_CHECKS: list[Callable[[Recipe, str], None]] = []


def register_recipe_check(check: Callable[[Recipe, str], None]) -> Callable[[Recipe, str], None]:
    """Add a check every parsed recipe goes through (raise InputError naming `where`); the
    zoo registers the one for its architectures when it is imported. Idempotent."""
    if check not in RECIPE_CHECKS:
        RECIPE_CHECKS.append(check)
    return check


def _validate(recipe: Recipe, where: str) -> None:
    if recipe.task not in TASKS:
        raise InputError(f"{where}: task {recipe.task!r} is not one of {', '.join(TASKS)}")
    src = recipe.source
    if sum(x is not None for x in (src.hub, src.package, src.zoo)) == 0 and not src.split_zip:
        raise InputError(f"{where}: [source] needs one of 'hub', 'package', 'split_zip' or 'zoo'")
    if src.zoo and src.hub:
        raise InputError(f"{where}: [source] cannot name both 'zoo' and 'hub'")
    if src.split_zip and (src.zoo or src.package):
        raise InputError(f"{where}: [source] split_zip cannot go with 'zoo' or 'package'")
    if src.split_zip and not (src.sha256 and re.fullmatch(r"[0-9a-f]{64}", src.sha256)):
        raise InputError(f"{where}: [source] split_zip needs the zip's sha256 (64 hex digits)")
    if src.hub and not src.revision and not src.split_zip:  # (with split_zip: provenance)
        raise InputError(f"{where}: [source] hub {src.hub!r} must pin a 'revision'")
    if src.arch and not src.zoo:
        raise InputError(f"{where}: [source.arch] is only valid with a zoo architecture")
    for check in RECIPE_CHECKS:  # what only a higher layer knows (the zoo: its architectures)
        check(recipe, where)
    if recipe.train is not None and not src.zoo:
        raise InputError(f"{where}: [train] is only valid for zoo recipes")
    if recipe.data.kind not in DATA_KINDS:
        raise InputError(f"{where}: [data] kind {recipe.data.kind!r} is not one of {', '.join(DATA_KINDS)}")


def parse_recipe(text: str, where: str, *, expected_name: str | None = None) -> Recipe:
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{where}: invalid TOML: {e}") from None
    recipe = strict_dataclass(Recipe, table, where)
    recipe = dataclasses.replace(recipe, path=where)
    if expected_name is not None and recipe.name != expected_name:
        raise InputError(f"{where}: name {recipe.name!r} does not match the file name {expected_name!r}")
    _validate(recipe, where)
    return recipe


def recipe_names() -> list[str]:
    """Names of the recipes shipped in bmr_compress.model_zoo."""
    root = resources.files(RECIPE_PACKAGE)
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".toml"))


def load_recipe(path_or_name: str | Path) -> Recipe:
    """A shipped recipe by name (``mlp-digits``, ``zoo:mlp-digits``) or a TOML file path."""
    spec = str(path_or_name)
    if spec.startswith("zoo:"):
        spec = spec[4:]
    p = Path(spec).expanduser()
    if p.suffix == ".toml" or p.is_file():
        if not p.is_file():
            raise InputError(f"recipe file not found: {p}")
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise InputError(f"{p}: not a UTF-8 TOML file (byte {e.start})") from None
        except OSError as e:
            raise InputError(f"cannot read recipe {p}: {e.strerror or e}") from None
        return parse_recipe(text, str(p), expected_name=p.stem)
    res = resources.files(RECIPE_PACKAGE) / f"{spec}.toml"
    if not res.is_file():
        raise InputError(f"unknown recipe {spec!r} (known: {', '.join(recipe_names())})")
    return parse_recipe(res.read_text(encoding="utf-8"), f"{RECIPE_PACKAGE}/{spec}.toml",
                        expected_name=spec)

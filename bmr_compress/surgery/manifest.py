"""bmr_manifest.json and reloading a compressed model from its own directory.

load_compressed builds the architecture from config.json (with the manifest's original
widths where the config cannot express the cut model), shrinks every tensor to the
manifest's shapes, re-syncs module attributes, then loads model.safetensors strictly.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bmr_compress.errors import InputError, UnsupportedModelError
from bmr_compress.surgery.adapters import adapter_for
from bmr_compress.surgery.apply import SurgeryRecord
from bmr_compress.surgery.cut import owners, sync_module_

log = logging.getLogger(__name__)

MANIFEST = "bmr_manifest.json"
FORMAT_VERSION = 1

# Non-transformers architectures (model-zoo nets) rebuilt from config.json by name.
ARCHITECTURES: dict[str, Callable[[dict[str, Any]], nn.Module]] = {}


def register_architecture(name: str):
    def deco(fn: Callable[[dict[str, Any]], nn.Module]):
        if name in ARCHITECTURES:
            raise ValueError(f"architecture {name!r} registered twice")
        ARCHITECTURES[name] = fn
        return fn

    return deco


def write_manifest(directory: str | Path, manifest: Mapping[str, Any]) -> Path:
    path = Path(directory) / MANIFEST
    text = json.dumps(manifest, indent=1, sort_keys=True, allow_nan=False)
    path.write_text(text)
    if json.loads(path.read_text()) != json.loads(text):  # read back
        raise InputError(f"{path}: manifest read-back mismatch")
    return path


def read_manifest(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise InputError(f"{path}: no bmr_manifest.json")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: unreadable manifest ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: manifest is not a JSON object")
    if data.get("format_version") != FORMAT_VERSION:
        raise InputError(f"{path}: unsupported manifest format {data.get('format_version')!r}")
    return data


def make_manifest(model: nn.Module, record: SurgeryRecord, *, architecture: str | None = None,
                  extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Manifest dict: family, architecture, kept indices + final widths per group, shapes."""
    from bmr_compress import __version__

    if architecture is None:
        arch = {"kind": "transformers", "class": type(model).__name__}
    else:
        arch = {"kind": "registered", "name": architecture}
    groups = {}
    for name, g in record.groups.items():
        n = len(g["kept"])
        groups[name] = dict(g, final_units=n, final_width=n * g["unit_width"])
    data = {"format_version": FORMAT_VERSION, "tool_version": __version__, "family": record.family,
            "architecture": arch, "groups": groups, "shapes": record.shapes,
            "widths": {name: g["final_width"] for name, g in groups.items()},  # per layer
            "config_updates": record.config_updates, "build_config": record.build_config,
            "plain_transformers": record.plain_transformers,
            "params_before": record.params_before, "params_after": record.params_after}
    data.update(extra or {})
    return data


def save_compressed(model: nn.Module, record: SurgeryRecord, directory: str | Path, *,
                    architecture: str | None = None, init_config: Mapping[str, Any] | None = None,
                    extra: Mapping[str, Any] | None = None, compact_zeros: bool = False,
                    weights_metadata: Mapping[str, Any] | None = None) -> Path:
    """Minimal save: model.safetensors + config.json + bmr_manifest.json, each read back.

    The weights go through export.write_weights (the one writer of model.safetensors, plain
    or with `compact_zeros`), which load_compressed reads back. Transformers models write
    their config; a registered architecture writes `init_config` (the builder's arguments
    for the *original* widths) as config.json.
    """
    from bmr_compress.export.safetensors_export import write_weights

    directory = Path(directory)
    write_weights(model, directory, dict(weights_metadata or {}), compact_zeros=compact_zeros)
    if architecture is None:
        model.config.to_json_file(str(directory / "config.json"))
    else:
        if architecture not in ARCHITECTURES:
            raise UnsupportedModelError(f"architecture {architecture!r} is not registered")
        (directory / "config.json").write_text(json.dumps(dict(init_config or {}), indent=1))
    write_manifest(directory, make_manifest(model, record, architecture=architecture, extra=extra))
    return directory


def shrink_to_shapes_(model: nn.Module, shapes: Mapping[str, list[int]]) -> None:
    """Replace every tensor whose shape differs from `shapes` by an empty one of that shape,
    then re-sync module attributes (handlers + family adapter)."""
    own = owners(model)
    state = model.state_dict(keep_vars=True)
    missing = set(state) - set(shapes)
    if missing:
        raise InputError(f"manifest lacks shapes for {sorted(missing)[:3]}")
    old_sizes: set[int] = set()
    touched: dict[int, nn.Module] = {}
    done: set[int] = set()
    for key, t in state.items():
        new_shape = tuple(shapes[key])
        if tuple(t.shape) == new_shape or id(t) in done:
            continue
        done.add(id(t))
        old_sizes.update(o for o, n in zip(t.shape, new_shape) if o != n)
        new = torch.empty(new_shape, dtype=t.dtype, device=t.device)
        for module, attr, _ in own[id(t)]:
            if isinstance(t, nn.Parameter):
                setattr(module, attr, nn.Parameter(new, requires_grad=t.requires_grad))
            else:
                module._buffers[attr] = new
            touched[id(module)] = module
    for module in touched.values():
        sync_module_(module, old_sizes)
    adapter = adapter_for(model)
    if adapter is not None:
        adapter.sync_(model)


def _drop_absent_submodules_(model: nn.Module, shapes: Mapping[str, list[int]]) -> None:
    """Set to None optional submodules the saved model did not have (e.g. BertModel built
    with add_pooling_layer=False: the constructor flag is not part of config.json)."""
    for name, module in list(model.named_modules()):
        if not name or not any(True for _ in module.parameters()):
            continue
        keys = [f"{name}.{k}" for k in module.state_dict()]
        if keys and not any(k in shapes for k in keys):
            parent, _, attr = name.rpartition(".")
            try:
                owner = model.get_submodule(parent) if parent else model
            except AttributeError:  # an ancestor was dropped already
                continue
            if getattr(owner, attr, None) is module:
                log.info("dropping %s: not in the saved model", name)
                setattr(owner, attr, None)


def load_compressed(directory: str | Path) -> nn.Module:
    """Rebuild a compressed model from config.json + bmr_manifest.json + model.safetensors."""
    from bmr_compress.io.checks import check_artifacts

    directory = Path(directory)
    manifest = read_manifest(directory)
    check_artifacts(directory, onnx=False)  # readable config and weights, finite values
    try:
        return _load_compressed(directory, manifest)
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise InputError(f"{directory}: manifest or config does not describe this model "
                         f"({type(e).__name__}: {e})") from None


def _load_weights_(model: nn.Module, path: Path) -> tuple[list[str], list[str]]:
    """Fill `model` from a file written by export.write_weights (compact zeros and aliases
    restored). Returns (missing, unexpected); a tensor tied to a loaded one is not missing,
    nor is a tensor of a wrong shape loaded (InputError)."""
    from bmr_compress.export.safetensors_export import load_state_dict

    state = load_state_dict(path)
    own = model.state_dict()
    for k, v in state.items():
        if k in own and tuple(own[k].shape) != tuple(v.shape):
            raise InputError(f"{path}: tensor {k} has shape {list(v.shape)}, the manifest says "
                             f"{list(own[k].shape)}")
    result = model.load_state_dict(state, strict=False)
    loaded = {own[k].data_ptr() for k in state if k in own and own[k].numel()}
    missing = [k for k in result.missing_keys if own[k].data_ptr() not in loaded]
    return missing, list(result.unexpected_keys)


def _load_compressed(directory: Path, manifest: dict[str, Any]) -> nn.Module:
    config = json.loads((directory / "config.json").read_text())
    arch = manifest["architecture"]
    if arch["kind"] == "transformers":
        import transformers

        cls = getattr(transformers, arch["class"], None)
        if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
            raise UnsupportedModelError(
                f"{directory}: unknown transformers class {arch['class']!r}")
        # original widths build the skeleton (the cut config may fail the config's validators)
        cfg = cls.config_class.from_dict({**config, **manifest["build_config"]})
        model = cls(cfg)
        for k in manifest["build_config"]:
            setattr(model.config, k, config[k])
    else:
        builder = ARCHITECTURES.get(arch["name"])
        if builder is None:
            raise UnsupportedModelError(
                f"{directory}: architecture {arch['name']!r} is not registered")
        model = builder(config)
    _drop_absent_submodules_(model, manifest["shapes"])
    shrink_to_shapes_(model, manifest["shapes"])
    if (manifest.get("transformers_layout") or {}).get("layout") == "padded":
        # config.json + model.safetensors hold the zero-padded model (surgery.hf_layout);
        # the cut model is the leading slice of every padded tensor
        from bmr_compress.export.safetensors_export import load_state_dict
        from bmr_compress.surgery.hf_layout import unpad_state_dict

        state = unpad_state_dict(load_state_dict(directory / "model.safetensors"), manifest["shapes"])
        result = model.load_state_dict(state, strict=False)
        missing, unexpected = result.missing_keys, result.unexpected_keys
    else:
        missing, unexpected = _load_weights_(model, directory / "model.safetensors")
    if missing or unexpected:
        raise InputError(
            f"{directory}/model.safetensors: missing {missing} unexpected {unexpected}")
    model.eval()
    return model

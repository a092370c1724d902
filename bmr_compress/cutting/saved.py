"""bmr_manifest.json and reloading a compressed model from its own directory.

load_compressed builds the architecture from config.json (with the manifest's original
widths where the config cannot express the cut model), shrinks every tensor to the
manifest's shapes, re-syncs module attributes, then loads model.safetensors strictly.

A model that is not a transformers class is rebuilt by a *builder* the manifest names as a
``"module:function"`` reference (e.g. ``"bmr_compress.zoo.adapters:rebuild"``). The files
being loaded are data someone else may have written, so that string never selects code by
itself: it must be one of the tool's own builders (`PROJECT_BUILDERS`, a closed table:
importing the module registers the model's family adapter, so a fresh interpreter reloads a
zoo output with nothing registered beforehand) or a builder this process registered
(`register_architecture`, the caller's own code). Anything else is refused, unimported.

Importing this module registers the ``compressed`` source kind in io.sources: a `compress`
output directory given as SOURCE is rebuilt here.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bmr_compress.errors import InputError, UnsupportedModelError
from bmr_compress.io.checks import check_artifacts, check_json_file
from bmr_compress.io.manifest import FORMAT_VERSION, MANIFEST, read_manifest, write_manifest
from bmr_compress.io.sources import LoadedSource, SourceRequest, register_source_kind
from bmr_compress.io.transformers_source import preprocessor, task_from_config
from bmr_compress.coupling.adapters import adapter_for
from bmr_compress.cutting.apply import SurgeryRecord
from bmr_compress.cutting.cut import owners, sync_module_

log = logging.getLogger(__name__)

__all__ = ["ARCHITECTURES", "FORMAT_VERSION", "MANIFEST", "PROJECT_BUILDERS", "builder_from_ref",
           "load_compressed", "make_manifest", "read_manifest", "register_architecture",
           "save_compressed", "shrink_to_shapes_", "trusted_builder", "write_manifest"]

Builder = Callable[[dict[str, Any]], nn.Module]
# Builders registered in this process (tests, user code), by name or by the
# "module:function" reference a manifest stores.
ARCHITECTURES: dict[str, Builder] = {}
# The tool's own builders: the only references a manifest may name without registration.
# Closed on purpose: a manifest is data, and an open "module:function" would let a
# downloaded directory import and call anything (``subprocess:run``).
PROJECT_BUILDERS = frozenset({"bmr_compress.zoo.adapters:rebuild"})
# names that manifests written before builder references used for a registered builder
LEGACY_BUILDERS = {"bmr_zoo": "bmr_compress.zoo.adapters:rebuild"}


def register_architecture(name: str):
    def deco(fn: Callable[[dict[str, Any]], nn.Module]):
        if name in ARCHITECTURES:
            raise ValueError(f"architecture {name!r} registered twice")
        ARCHITECTURES[name] = fn
        return fn

    return deco


def trusted_builder(ref: str, where: str | Path) -> Builder:
    """The builder a manifest names: registered in this process, else one of
    `PROJECT_BUILDERS`; InputError (nothing imported) for any other string."""
    if ref in ARCHITECTURES:
        return ARCHITECTURES[ref]
    if ref not in PROJECT_BUILDERS:
        raise InputError(f"{where}: its manifest names builder {ref[:80]!r}, which is not one of "
                         f"bmr-compress's own ({', '.join(sorted(PROJECT_BUILDERS))}); refusing to "
                         "import code named by the files (register your builder with "
                         "cutting.register_architecture in your own Python code to load it)")
    return builder_from_ref(ref)


def builder_from_ref(ref: str) -> Builder:
    """The function a ``"module:function"`` reference names (importing its module);
    UnsupportedModelError when it cannot be imported or is not callable. Only for
    references from the caller's own code or `PROJECT_BUILDERS`, never from files
    (`trusted_builder`)."""
    module, sep, name = ref.partition(":")
    if not sep or not module or not name:
        raise UnsupportedModelError(f"builder {ref!r} is not a 'module:function' reference")
    try:
        obj: Any = importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise UnsupportedModelError(f"builder {ref!r} cannot be imported: {e}") from None
    if not callable(obj):
        raise UnsupportedModelError(f"builder {ref!r} is not callable")
    return obj


def _architecture_entry(model: nn.Module, architecture: str | None) -> dict[str, Any]:
    if architecture is None:
        return {"kind": "transformers", "class": type(model).__name__}
    if ":" in architecture:
        builder_from_ref(architecture)  # fails now, not when the output is reloaded
        return {"kind": "builder", "builder": architecture}
    if architecture not in ARCHITECTURES:
        raise UnsupportedModelError(f"architecture {architecture!r} is not registered")
    return {"kind": "registered", "name": architecture}


def _builder(directory: Path, arch: Mapping[str, Any]) -> Builder:
    if arch["kind"] == "builder":
        return trusted_builder(str(arch["builder"]), directory / MANIFEST)
    name = str(arch["name"])
    if name in ARCHITECTURES:
        return ARCHITECTURES[name]
    if name in LEGACY_BUILDERS:
        return trusted_builder(LEGACY_BUILDERS[name], directory / MANIFEST)
    raise UnsupportedModelError(f"{directory}: architecture {name[:80]!r} is not registered")


def make_manifest(model: nn.Module, record: SurgeryRecord, *, architecture: str | None = None,
                  extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Manifest dict: family, architecture, kept indices + final widths per group, shapes.

    `architecture`: None for a transformers model, else a ``"module:function"`` builder
    reference (or the name of a builder registered in this process)."""
    from bmr_compress import __version__

    arch = _architecture_entry(model, architecture)
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
    their config; a model with a builder (`architecture`: ``"module:function"`` or a
    registered name) writes `init_config` (the builder's argument, for the *original*
    widths) as config.json.
    """
    from bmr_compress.export.safetensors_export import write_weights

    directory = Path(directory)
    manifest = make_manifest(model, record, architecture=architecture, extra=extra)
    write_weights(model, directory, dict(weights_metadata or {}), compact_zeros=compact_zeros)
    if architecture is None:
        model.config.to_json_file(str(directory / "config.json"))
    else:
        (directory / "config.json").write_text(json.dumps(dict(init_config or {}), indent=1))
    write_manifest(directory, manifest)
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
    config = check_json_file(directory / "config.json")
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
        model = _builder(directory, arch)(config)
    _drop_absent_submodules_(model, manifest["shapes"])
    shrink_to_shapes_(model, manifest["shapes"])
    if (manifest.get("transformers_layout") or {}).get("layout") == "padded":
        # config.json + model.safetensors hold the zero-padded model (cutting.hf_layout);
        # the cut model is the leading slice of every padded tensor
        from bmr_compress.export.safetensors_export import load_state_dict
        from bmr_compress.cutting.hf_layout import unpad_state_dict

        state = unpad_state_dict(load_state_dict(directory / "model.safetensors"),
                                 manifest["shapes"], manifest["transformers_layout"])
        result = model.load_state_dict(state, strict=False)
        missing, unexpected = result.missing_keys, result.unexpected_keys
    else:
        missing, unexpected = _load_weights_(model, directory / "model.safetensors")
    if missing or unexpected:
        raise InputError(
            f"{directory}/model.safetensors: missing {missing} unexpected {unexpected}")
    model.eval()
    return model


@register_source_kind("compressed", target="directory", claims=lambda d: (d / MANIFEST).is_file())
def load_compressed_source(directory: Path, req: SourceRequest) -> LoadedSource:
    """A `compress` output given as SOURCE: rebuilt by load_compressed from config + manifest."""
    check_artifacts(directory, onnx=False)
    manifest = read_manifest(directory)
    model = load_compressed(directory)
    config = getattr(model, "config", None)
    if config is None:
        config = check_json_file(directory / "config.json")
    family = str(manifest.get("family") or getattr(config, "model_type", "unknown"))
    if isinstance(config, dict) and "bmr_zoo_architecture" in config:
        family = f"zoo:{config['bmr_zoo_architecture']}"
    task = (req.task or (config.get("task") if isinstance(config, dict) else None)
            or task_from_config(config))
    proc = None if isinstance(config, dict) else preprocessor(directory, False)
    files = {"config": directory / "config.json", "weights": directory / "model.safetensors",
             "manifest": directory / MANIFEST}
    return LoadedSource(model.eval(), family, task, config, proc, req.spec,
                        manifest.get("revision"), files, directory)

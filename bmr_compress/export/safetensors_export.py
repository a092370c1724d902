"""safetensors export with provenance metadata, optional compact zeros, and a read-back check.

Layout of ``model.safetensors``: one entry per state-dict tensor (aliases of a shared storage,
e.g. tied embeddings, are stored once and listed in the ``bmr_aliases`` metadata). With
``compact_zeros=True`` a tensor whose zeros make it smaller stores ``<name>::values`` (non-zeros)
and ``<name>::mask`` (packed bit mask, uint8) instead; ``load_state_dict`` restores it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bmr_compress.errors import InputError, ValidationFailed
from bmr_compress.io.weight_layout import (
    MASK_SUFFIX, VALUES_SUFFIX, WEIGHTS_NAME, read_metadata, weight_shapes,
)

if TYPE_CHECKING:
    import torch
    from torch import nn

log = logging.getLogger(__name__)

__all__ = ["WEIGHTS_NAME", "export_safetensors", "write_weights", "load_state_dict", "read_metadata",
           "weight_shapes"]

_VALUES, _MASK = VALUES_SUFFIX, MASK_SUFFIX


def export_safetensors(
    model: nn.Module,
    out_dir: str | Path,
    metadata: dict[str, Any],
    *,
    compact_zeros: bool = False,
    tokenizer: Any = None,
) -> Path:
    """Write ``out_dir/model.safetensors`` (+ ``config.json``, tokenizer files) and read it back.

    `metadata` should hold ``source``, ``revision``, ``tool_version`` and ``manifest_sha256``;
    values are stored as strings (non-strings as JSON). Returns the weights path.
    """
    out = Path(out_dir)
    path = write_weights(model, out, metadata, compact_zeros=compact_zeros)
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "save_pretrained"):
        config.save_pretrained(str(out))
    if tokenizer is not None and hasattr(tokenizer, "save_pretrained"):
        tokenizer.save_pretrained(str(out))
    return path


def write_weights(model: nn.Module, out_dir: str | Path, metadata: dict[str, Any], *,
                  compact_zeros: bool = False) -> Path:
    """The one writer of ``model.safetensors`` (plain or compact); `load_state_dict` is its
    reader, and every file is read back through it before this returns."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach() for k, v in model.state_dict().items()}
    tensors, aliases = _dedupe(state)
    compact: dict[str, dict[str, Any]] = {}
    if compact_zeros:
        tensors, compact = _compact(tensors)
    meta = {k: v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in metadata.items()}
    meta["format"] = "pt"
    meta["bmr_aliases"] = json.dumps(aliases, sort_keys=True)
    meta["bmr_compact_zeros"] = json.dumps(compact, sort_keys=True)
    path = out / WEIGHTS_NAME
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=meta)
    _check_read_back(path, state, meta)
    log.info("wrote %s (%d tensors, %d compact)", path, len(tensors), len(compact))
    return path


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a file written by `export_safetensors`: restores compact zeros and tied aliases."""
    from safetensors import safe_open

    from bmr_compress.io.checks import read_safetensors_header

    path = Path(path)
    if not path.is_file():
        raise InputError(f"no safetensors file at {path}")
    read_safetensors_header(path)  # truncated/corrupted -> InputError naming the file
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            raw = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no iterator
    except Exception as e:  # noqa: BLE001 - SafetensorError: a corrupted file
        raise InputError(f"cannot read {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    try:
        compact = json.loads(meta.get("bmr_compact_zeros", "{}"))
        aliases = json.loads(meta.get("bmr_aliases", "{}"))
        state: dict[str, torch.Tensor] = {}
        for name, info in compact.items():
            state[name] = _expand(raw.pop(name + _VALUES), raw.pop(name + _MASK), info["shape"])
        state.update(raw)
        for alias, target in aliases.items():
            state[alias] = state[target]
    except (ValueError, KeyError, TypeError, AttributeError, IndexError, RuntimeError) as e:
        raise InputError(f"{path}: inconsistent bmr metadata (compact zeros / aliases): "
                         f"{type(e).__name__}: {e}") from None
    return state


def _dedupe(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Drop tensors that alias an earlier one (same storage, offset, shape); map alias -> kept."""
    seen: dict[tuple[int, int, tuple[int, ...]], str] = {}
    kept: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    for name, t in state.items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if t.numel() and key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        kept[name] = t
    return kept, aliases


def _compact(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, Any]]]:
    import numpy as np
    import torch

    out: dict[str, torch.Tensor] = {}
    info: dict[str, dict[str, Any]] = {}
    for name, t in tensors.items():
        if not t.is_floating_point() or t.numel() < 64:
            out[name] = t
            continue
        flat = t.reshape(-1)
        nz = flat != 0
        nnz = int(nz.sum())
        compact_bytes = nnz * t.element_size() + (t.numel() + 7) // 8
        if compact_bytes >= t.numel() * t.element_size():
            out[name] = t
            continue
        out[name + _VALUES] = flat[nz].clone()
        out[name + _MASK] = torch.from_numpy(np.packbits(nz.numpy()))
        info[name] = {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
    return out, info


def _expand(values: torch.Tensor, mask: torch.Tensor, shape: list[int]) -> torch.Tensor:
    import math

    import numpy as np
    import torch

    n = math.prod(shape)
    bits = torch.from_numpy(np.unpackbits(mask.numpy(), count=n).astype(bool))
    flat = torch.zeros(n, dtype=values.dtype)
    flat[bits] = values
    return flat.reshape(shape)


def _check_read_back(path: Path, state: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    import torch

    back = load_state_dict(path)
    if set(back) != set(state):
        diff = sorted(set(back) ^ set(state))[:5]
        raise ValidationFailed(f"read-back of {path} has different tensor names: {diff}")
    for name, t in state.items():
        if back[name].dtype != t.dtype or not _same(back[name], t):
            raise ValidationFailed(f"read-back of {path}: tensor {name} differs from the model")
    if read_metadata(path) != meta:
        raise ValidationFailed(f"read-back of {path}: metadata differs from what was written")


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Exact equality, NaN == NaN (a NaN model must fail validation, not the read-back)."""
    import torch

    if a.shape != b.shape:
        return False
    if torch.equal(a, b):
        return True
    return a.is_floating_point() and bool(((a == b) | (a.isnan() & b.isnan())).all())

"""How export.write_weights lays out model.safetensors, read from the file's header alone.

One entry per state-dict tensor; tensors that alias an earlier one (tied embeddings) are
listed in the ``bmr_aliases`` metadata; with compact zeros a tensor is stored as
``<name>::values`` + ``<name>::mask`` and listed in ``bmr_compact_zeros``.
"""

from __future__ import annotations

import json
from pathlib import Path

from bmr_compress.errors import InputError
from bmr_compress.io.checks import read_safetensors_header

WEIGHTS_NAME = "model.safetensors"
VALUES_SUFFIX, MASK_SUFFIX = "::values", "::mask"


def read_metadata(path: str | Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def weight_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """{state-dict name: shape} of a file `write_weights` wrote, from its header alone
    (compact tensors by their dense shape, aliases by their target's)."""
    path = Path(path)
    header = read_safetensors_header(path)
    meta = read_metadata(path)
    try:
        compact = json.loads(meta.get("bmr_compact_zeros", "{}"))
        aliases = json.loads(meta.get("bmr_aliases", "{}"))
        shapes = {k: shape for k, (_, shape) in header.items()
                  if not k.endswith((VALUES_SUFFIX, MASK_SUFFIX))}
        shapes.update({k: tuple(v["shape"]) for k, v in compact.items()})
        shapes.update({a: shapes[t] for a, t in aliases.items()})
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise InputError(f"{path}: inconsistent bmr metadata (compact zeros / aliases): "
                         f"{type(e).__name__}: {e}") from None
    return shapes

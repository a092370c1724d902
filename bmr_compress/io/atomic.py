"""Atomic output directories: assemble beside the target, move into place only on success."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bmr_compress.errors import InputError

log = logging.getLogger(__name__)


def check_output_dir(out: str | Path, overwrite: bool) -> Path:
    """Fail early (InputError) when ``out`` exists, is non-empty and ``overwrite`` is off."""
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise InputError(f"output path exists and is not a directory: {path}")
    try:
        non_empty = path.is_dir() and any(path.iterdir())
    except OSError as e:
        raise InputError(f"cannot read output directory {path}: {e.strerror or e}") from None
    if non_empty and not overwrite:
        raise InputError(f"output directory is not empty: {path} (pass --overwrite to replace it)")
    _check_writable_parent(path)
    return path


def check_inputs_outside(out: str | Path, inputs: dict[str, str | Path | None]) -> None:
    """InputError when ``out`` is, or contains, one of the local ``inputs`` ({what: path}):
    replacing ``out`` would delete the input (zoo:/hub names and missing paths are skipped)."""
    o = Path(out).expanduser().resolve()
    for what, spec in inputs.items():
        if spec is None or not str(spec) or str(spec).startswith(("zoo:", "hf:")):
            continue
        p = Path(spec).expanduser()
        if not p.exists():
            continue
        r = p.resolve()
        if r == o or o in r.parents:
            raise InputError(f"--out {out} is or contains the {what} {spec}: replacing it would delete "
                             "the input; choose another --out")


def _check_writable_parent(path: Path) -> None:
    """The output is renamed into place inside its parent: that (or its nearest existing
    ancestor, when the parent is still to be created) must be a writable directory."""
    anc = path.absolute().parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise InputError(f"cannot create output directory {path}: {anc} is not a directory")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise InputError(f"cannot create output directory {path}: {anc} is not writable")


@contextlib.contextmanager
def atomic_output_dir(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh staging directory; on clean exit it replaces ``out`` in one rename.

    On an exception the staging directory is deleted and ``out`` is left untouched.
    """
    target = check_output_dir(out, overwrite).resolve()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(target)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))
    except OSError as e:
        raise InputError(f"cannot create output directory {target}: {e.strerror or e}") from None
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old: Path | None = None
    try:
        if target.exists():
            check_output_dir(target, overwrite)  # re-check: something may have appeared meanwhile
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-{os.getpid()}-", dir=target.parent))
            old.rmdir()
        with _signals_deferred():  # Ctrl-C waits until both renames are done
            if old is not None:
                target.rename(old)
            staging.rename(target)
    except BaseException:
        if old is not None and old.exists() and not target.exists():
            old.rename(target)  # the previous state
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    log.info("wrote %s", target)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM for a few syscalls and deliver them afterwards.

    Python-level handlers, not the thread's signal mask: a signal sent to the process may be
    taken by any OS thread (torch and onnxruntime keep pools), but Python always runs its
    handlers in the main thread, so replacing the handlers defers it wherever it lands.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be changed from the main thread
        return
    pending: list[int] = []
    sigs = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, lambda signum, _frame: pending.append(signum)) for s in sigs}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for signum in pending[:1]:  # deliver once, to the handler that was in place
            signal.raise_signal(signum)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_staging(target: Path) -> list[Path]:
    """Delete ``.<name>.tmp-<pid>-*`` / ``.<name>.old-<pid>-*`` beside ``target`` left by a run
    that was killed (its pid no longer exists). An ``old`` copy is put back first when the kill
    fell between moving the previous output aside and moving the new one in."""
    pat = re.compile(rf"^\.{re.escape(target.name)}\.(tmp|old)-(\d+)-")
    removed = []
    for p in sorted(target.parent.iterdir()):
        m = pat.match(p.name)
        if m is None or _alive(int(m.group(2))) or not p.is_dir():
            continue
        if m.group(1) == "old" and not target.exists():
            p.rename(target)  # the previous state, restored
            log.warning("restored %s from an interrupted replacement", target)
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
        log.info("removed stale staging directory %s", p)
    return removed


@contextlib.contextmanager
def replace_files(directory: str | Path) -> Iterator[Path]:
    """Yield a staging directory inside ``directory``; on clean exit each file written there
    replaces its namesake in ``directory`` by rename (atomic per file). On an exception
    nothing in ``directory`` changes."""
    target = Path(directory)
    staging = Path(tempfile.mkdtemp(prefix=".bmr-replace-", dir=target))
    try:
        yield staging
        for item in sorted(staging.iterdir()):
            item.replace(target / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

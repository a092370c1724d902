"""Atomic output directories: assemble beside the target, move into place only on success."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bmr_compress.errors import InputError
from bmr_compress.io.ownership import check_not_a_place, check_replaceable, write_marker

log = logging.getLogger(__name__)


def check_output_dir(out: str | Path, overwrite: bool, *, ours: bool = False) -> Path:
    """Fail early (InputError) when ``out`` exists, is non-empty and ``overwrite`` is off, or
    when ``overwrite`` would replace what bmr-compress did not write (`check_replaceable`;
    ``ours``: the caller owns the location, e.g. the zoo cache). ``out`` is never the
    current directory, one of its parents, the home directory or a filesystem root."""
    path = Path(out).expanduser()
    check_not_a_place(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"output path exists and is not a directory: {path}")
    try:
        non_empty = path.is_dir() and any(path.iterdir())
    except OSError as e:
        raise InputError(f"cannot read output directory {path}: {e.strerror or e}") from None
    if non_empty and not overwrite:
        raise InputError(f"output directory is not empty: {path} (pass --overwrite to replace it)")
    if non_empty and not ours:
        check_replaceable(path)
    _check_writable_parent(path)
    _check_name_length(path)
    return path


# the longest name written beside <out>: ".<out>.bmr-ckpt-<12 hex>" (22 more characters),
# ".<out>.work-<pid>-<8>", ".<out>.rejected-partial"; 32 leaves room for 7-digit pids
DERIVED_EXTRA = 32


def _check_name_length(path: Path) -> None:
    anc = path.absolute().parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    try:
        limit = os.pathconf(anc, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    if len(path.name.encode()) + DERIVED_EXTRA > limit:
        raise InputError(f"output name too long: {path.name[:40]}... has {len(path.name.encode())} bytes; "
                         f"bmr-compress writes names up to {DERIVED_EXTRA} bytes longer beside it and this "
                         f"filesystem allows {limit}: use a name of at most {limit - DERIVED_EXTRA} bytes")


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
def atomic_output_dir(out: str | Path, overwrite: bool = False, *, ours: bool = False
                      ) -> Iterator[Path]:
    """Yield a fresh staging directory; on clean exit it replaces ``out`` in one rename
    (with `MARKER` listing what it holds, so a later ``--overwrite`` knows it is ours).

    On an exception the staging directory is deleted and ``out`` is left untouched. The run
    holds ``out``'s lock (`run_lock`) throughout, so no other run takes its staging for stale.
    """
    target = check_output_dir(out, overwrite, ours=ours).resolve()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create output directory {target}: {e.strerror or e}") from None
    with run_lock(target):
        try:
            staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-",
                                            dir=target.parent))
        except OSError as e:
            raise InputError(f"cannot create output directory {target}: {e.strerror or e}") from None
        try:
            yield staging
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        write_marker(staging)
        _swap_into_place(staging, target, overwrite, ours)
    log.info("wrote %s", target)


def _swap_into_place(staging: Path, target: Path, overwrite: bool, ours: bool = False) -> None:
    old: Path | None = None
    # mkdtemp makes 0700 and some writers 0600: the output follows the umask like any
    # directory the user makes (a replaced directory keeps its own mode)
    keep = stat.S_IMODE(target.stat().st_mode) if target.is_dir() and not target.is_symlink() else None
    apply_umask_modes(staging, dir_mode=keep)
    try:
        if target.exists():
            check_output_dir(target, overwrite, ours=ours)  # re-check: something may have appeared
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


def current_umask() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # not thread-safe; only where /proc is missing
    os.umask(mask)
    return mask


def apply_umask_modes(root: Path, *, dir_mode: int | None = None) -> None:
    """chmod a freshly assembled tree as if made under the current umask: directories
    0777 & ~umask (``root`` itself ``dir_mode`` when given), files 0666 & ~umask."""
    mask = current_umask()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                os.chmod(p, 0o666 & ~mask)
        for name in dirnames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                os.chmod(p, 0o777 & ~mask)
    os.chmod(root, dir_mode if dir_mode is not None else 0o777 & ~mask)


def rejected_dir(out: Path) -> Path:
    return out.with_name(out.name + ".rejected")


def check_rejected_dir(out: str | Path) -> None:
    """InputError unless ``<out>.rejected`` is absent or a rejected result bmr-compress wrote
    and nobody changed since (so a later failed run may replace it). A symlink, a file, or a
    directory holding anything else (a user's notes, edited files) is never deleted."""
    from bmr_compress.io.integrity import tool_written

    rej = rejected_dir(Path(out).expanduser().absolute())
    if not os.path.lexists(rej):
        return
    if rej.is_symlink() or not rej.is_dir():
        what = "a symlink" if rej.is_symlink() else "not a directory"
        raise InputError(f"{rej} is {what}: a failed validation puts its result there; "
                         "remove or rename it first")
    why = tool_written(rej)
    if why is not None:
        raise InputError(f"{rej} holds files bmr-compress did not write ({why}); a failed validation "
                         "would replace it: move them away first")


def keep_rejected(stage: Path, out: Path) -> Path:
    """Copy the assembled result to ``<out>.rejected`` (a complete copy, then one rename),
    replacing a previous rejected result only if `check_rejected_dir` allows; otherwise it
    goes to a new ``<out>.rejected-*`` directory. Returns where it went."""
    rej = rejected_dir(out)
    partial = out.with_name(f".{out.name}.rejected-partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        shutil.copytree(stage, partial, symlinks=True)
        apply_umask_modes(partial)
        try:
            check_rejected_dir(out)
        except InputError:  # appeared or changed during the run: keep it, pick a new name
            rej = Path(tempfile.mkdtemp(prefix=f"{out.name}.rejected-", dir=out.parent))
            rej.rmdir()
        else:
            if rej.is_dir() and not rej.is_symlink():
                shutil.rmtree(rej)
        partial.rename(rej)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return rej


@contextlib.contextmanager
def work_dir(out: str | Path) -> Iterator[Path]:
    """A scratch directory beside ``out`` (same filesystem; ``.<name>.work-*``) under
    ``out``'s run lock, removed on every exit path Python sees (return, error, Ctrl-C,
    SIGTERM); after a SIGKILL the next run for ``out`` removes it as stale."""
    target = Path(out).expanduser().absolute()
    created = []
    anc = target.parent
    while not anc.exists() and anc != anc.parent:
        created.append(anc)
        anc = anc.parent
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create output directory {target}: {e.strerror or e}") from None
    try:
        with run_lock(target.resolve()):
            work = Path(tempfile.mkdtemp(prefix=f".{target.name}.work-{os.getpid()}-", dir=target.parent))
            try:
                yield work
            finally:
                shutil.rmtree(work, ignore_errors=True)
    finally:
        for d in created:  # parents this run made and left empty (a failed run)
            with contextlib.suppress(OSError):
                d.rmdir()


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


# target -> [fd, depth]: nested users in this process share one lock
_HELD: dict[Path, list[int]] = {}


@contextlib.contextmanager
def run_lock(target: Path) -> Iterator[list[Path]]:
    """Hold ``.<name>.lock`` beside ``target`` (shared flock) while a run writes beside it.

    Staleness is judged by this lock, not by a pid (pids mean nothing across containers or
    hosts sharing a volume): whoever can take the lock exclusively knows that no live run
    uses ``target``'s staging, work or backup directories, and removes them
    (`remove_stale_staging`) before it starts. The lock file is removed by the last run out.
    """
    import fcntl

    if target in _HELD:
        _HELD[target][1] += 1
        try:
            yield []
        finally:
            _HELD[target][1] -= 1
        return
    path = target.parent / f".{target.name}.lock"
    fd = _open_lock(path)
    removed: list[Path] = []
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            removed = _remove_stale(target)
        except BlockingIOError:
            pass  # another live run for this output: its files are not stale
        fcntl.flock(fd, fcntl.LOCK_SH)
        _HELD[target] = [fd, 1]
        yield removed
    finally:
        _HELD.pop(target, None)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            path.unlink()  # the last run out; a run that opened it meanwhile re-opens (_open_lock)
        except OSError:
            pass
        os.close(fd)


def _open_lock(path: Path) -> int:
    """An fd on ``path`` that is still the file at ``path`` once locked by the caller (a lock
    file unlinked by the previous holder between open and flock is re-created)."""
    import fcntl

    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise InputError(f"cannot create lock file {path}: {e.strerror or e}") from None
        fcntl.flock(fd, fcntl.LOCK_SH)
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd  # held shared
        except FileNotFoundError:
            pass
        os.close(fd)


def remove_stale_staging(target: Path) -> list[Path]:
    """Delete ``.<name>.tmp-*`` / ``.<name>.work-*`` / ``.<name>.rejected-partial`` beside
    ``target`` and restore a ``.<name>.old-*`` copy, when no live run holds ``target``'s lock
    (a run killed with SIGKILL, or on another host sharing the volume). Returns what it
    removed; nothing while another run holds the lock."""
    with run_lock(Path(target).resolve()) as removed:
        return removed


def _remove_stale(target: Path) -> list[Path]:
    pat = re.compile(rf"^\.{re.escape(target.name)}\.(tmp-|old-|work-|rejected-partial$)")
    removed = []
    for p in sorted(target.parent.iterdir()):
        m = pat.match(p.name)
        if m is None or p.is_symlink() or not p.is_dir():
            continue
        if m.group(1) == "old-" and not target.exists():
            p.rename(target)  # the previous state, restored
            log.warning("restored %s from an interrupted replacement", target)
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
        log.info("removed stale directory %s", p)
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

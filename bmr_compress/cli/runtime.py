"""How a command runs: logging to stderr, results to stdout, SIGTERM, and the mapping of
failures to exit codes (BmrError.exit_code; 2 with the fix for a machine fault such as a
full disk; INTERNAL_ERROR_EXIT for a bug)."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from bmr_compress.io.jsonsafe import to_jsonable

F = TypeVar("F", bound=Callable[..., Any])

INTERNAL_ERROR_EXIT = 3  # a bug in the tool (not bad input, not a failed validation)


def setup_logging(verbose: bool, debug: bool) -> None:
    """Logs go to stderr; --debug / -v raise the tool's own loggers, third parties stay at
    WARNING. Under torchrun only rank 0 logs progress; the other ranks log warnings only."""
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    helper = int(os.environ.get("RANK", "0")) > 0 and int(os.environ.get("WORLD_SIZE", "1")) > 1
    level = max(level, logging.WARNING) if helper else level
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s", force=True)
    logging.getLogger("bmr_compress").setLevel(level)
    # stage start/end lines (pipeline.shared.progress_log) at every verbosity, one line each
    progress = logging.getLogger("bmr_compress.progress")
    progress.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[bmr-compress] %(message)s"))
    progress.addHandler(handler)
    progress.setLevel(logging.WARNING if helper else logging.INFO)
    progress.propagate = False
    # transformers prints multi-line load reports on stderr through its own handler; the tool
    # logs what matters itself (one line each), so keep them for -v / --debug only
    if not (verbose or debug):
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        if "transformers" in sys.modules:
            sys.modules["transformers"].logging.set_verbosity_error()
            sys.modules["transformers"].logging.disable_progress_bar()
        if "huggingface_hub" in sys.modules:
            sys.modules["huggingface_hub"].utils.disable_progress_bars()


def emit(result: Any, as_json: bool, human: Callable[[Any], str] | None = None) -> None:
    """Results go to stdout: JSON with --json, else a short human summary."""
    data = to_jsonable(result)
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    elif human is not None:
        click.echo(human(result))
    elif isinstance(data, dict):
        for k, v in data.items():
            click.echo(f"{k}: {json.dumps(v) if isinstance(v, (dict, list)) else v}")
    else:
        click.echo(str(data))


def handle_sigterm() -> None:
    """SIGTERM raises errors.Terminated (a KeyboardInterrupt) in the main thread, so it
    unwinds like Ctrl-C: staging and work directories are removed, the exit code is 143."""
    import signal
    import threading

    from bmr_compress.errors import Terminated

    def raise_terminated(signum: int, frame: Any) -> None:
        raise Terminated()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, raise_terminated)


# errno -> (what happened, what to do); also matched in the "(os error N)" text of Rust
# libraries (safetensors, tokenizers) that do not raise OSError
_ENV_ERRNO = {
    28: ("disk full (ENOSPC)", "free space on that filesystem or choose another --out / TMPDIR"),
    122: ("disk quota exceeded (EDQUOT)", "free space in your quota or choose another --out"),
    27: ("file too large for this filesystem (EFBIG)", "choose an --out on a filesystem without "
                                                        "a small file-size limit, or raise `ulimit -f`"),
    36: ("file name too long (ENAMETOOLONG)", "use a shorter --out name or path"),
    30: ("read-only filesystem (EROFS)", "choose a writable --out"),
    24: ("too many open files (EMFILE)", "raise `ulimit -n`"),
    12: ("out of memory (ENOMEM)", "free memory or use a smaller model / --batch-size"),
}


def environment_fault(e: BaseException) -> str | None:
    """One line naming an environment fault (disk full, file too large, name too long, ...)
    and its fix, or None when `e` is not one."""
    import errno as _errno
    import re

    code = e.errno if isinstance(e, OSError) and e.errno in _ENV_ERRNO else None
    if code is None:
        m = re.search(r"os error (\d+)", str(e))
        code = int(m.group(1)) if m and int(m.group(1)) in _ENV_ERRNO else None
    if code is None and isinstance(e, MemoryError):
        code = _errno.ENOMEM
    if code is None:
        return None
    what, fix = _ENV_ERRNO[code]
    where = getattr(e, "filename", None)
    return f"{what} {f'at {where}' if where else 'while writing'}: {fix}"


def run_command(f: F) -> F:
    """Configure logging and map errors to exit codes (BmrError.exit_code; 3 for bugs).

    Without --debug a failure prints one line on stderr and no traceback.
    """

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug, verbose = bool(kwargs.get("debug")), bool(kwargs.get("verbose"))
        setup_logging(verbose, debug)
        handle_sigterm()
        from bmr_compress.errors import BmrError

        try:
            return f(*args, **kwargs)
        except BmrError as e:
            if debug:
                raise
            click.echo(f"error: {e}", err=True)
            sys.exit(e.exit_code)
        except (click.ClickException, click.Abort, SystemExit, KeyboardInterrupt):
            raise
        except Exception as e:  # a bug: say so in one line, full traceback with --debug
            if debug:
                raise
            env = environment_fault(e)
            if env is not None:  # the machine's fault, not the tool's: exit 2 with the fix
                click.echo(f"error: {env}", err=True)
                sys.exit(2)
            first = str(e).splitlines()[0] if str(e) else ""
            click.echo(f"internal error: {type(e).__name__}: {first} (rerun with --debug for the traceback)",
                       err=True)
            sys.exit(INTERNAL_ERROR_EXIT)

    return wrapper  # type: ignore[return-value]

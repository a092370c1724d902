"""Typed errors. Every user-facing failure is one of these; the CLI maps them to exit codes.

Exit codes: 0 success, 1 validation failed (nothing published), 2 bad input/usage.
"""

from __future__ import annotations


class BmrError(Exception):
    """Base of every error the tool raises on purpose. The message is one line."""

    exit_code = 2


class InputError(BmrError):
    """A path, file, recipe, data set or option the user gave cannot be used."""


class UnsupportedModelError(BmrError):
    """A module or architecture the tool cannot handle (message names the module path)."""


class DivergenceError(BmrError):
    """The fine-tune produced NaN/Inf or an exploding KL; the last good state was kept."""


class ValidationFailed(BmrError):
    """Export validation (checker, parity, metric, NaN check) failed: nothing is published."""

    exit_code = 1


class Terminated(KeyboardInterrupt):
    """SIGTERM (timeout, container stop, orchestrator) turned into an exception, so that every
    `finally` and context manager cleans up as for Ctrl-C; the CLI exits 143."""

    exit_code = 143

"""Small pieces the pipeline's stages share: the result type, the stage timer and progress
log, the recipe lookup, the fit record's file name. (The settings are pipeline/config.py.)"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bmr_compress.io.recipes import Recipe

log = logging.getLogger(__name__)


FIT_RECORD = "bmr_fit.json"  # written by finetune_only: how to reload source and data


DISTILL = {"embedding": "pooled_gaussian"}


@dataclass
class CompressResult:
    out: Path
    report: dict[str, Any]
    passed: bool
    summary: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "passed": self.passed, "summary": self.summary,
                "report": self.report}


# one line per stage start and end, shown by the CLI at every verbosity (cli.runtime
# setup_logging: "[bmr-compress] calibrate: done in 122.3 s"), so a run whose stderr is a
# file, a pipe or a notebook shows where it is
progress_log = logging.getLogger("bmr_compress.progress")


class StageTimer:
    """Wall time per stage, in the order the stages ran; logs each stage's start and end."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.t0 = time.perf_counter()

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        progress_log.info("%s: start", name)
        t0 = time.perf_counter()
        ok = False
        try:
            yield
            ok = True
        finally:
            dt = time.perf_counter() - t0
            self.seconds[name] = self.seconds.get(name, 0.0) + dt
            progress_log.info("%s: %s in %.1f s", name, "done" if ok else "stopped", dt)

    def total(self) -> dict[str, float]:
        return {**self.seconds, "total": time.perf_counter() - self.t0}


def recipe_for(recipe: str | None, source: str) -> Recipe | None:
    """The recipe named by --recipe, else the one a zoo:NAME source names, else None."""
    from bmr_compress.io.recipes import load_recipe

    if recipe:
        return load_recipe(recipe)
    if source.startswith("zoo:"):
        return load_recipe(source[4:])
    return None



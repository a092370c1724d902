"""Unlabeled English text from the installed Python's standard-library docstrings.

Modules are read as source and parsed with ``ast`` (nothing is imported). Docstrings are
split into paragraphs, cleaned and de-duplicated; the held-out split is by a stable hash of
the text, so it is the same on every machine and for every ``max_texts``.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import itertools
import logging
import re
import sysconfig
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "lib2to3", "__pycache__",
              "turtledemo", "ensurepip", "venv"}
_MIN_CHARS, _MAX_CHARS = 40, 1200


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def paragraphs(doc: str) -> list[str]:
    out = []
    for para in re.split(r"\n\s*\n", doc):
        text = " ".join(para.split())
        letters = sum(c.isalpha() for c in text)
        if _MIN_CHARS <= len(text) <= _MAX_CHARS and letters >= 0.6 * len(text) and not text.startswith(">>>"):
            out.append(text)
    return out


def file_docstrings(path: Path) -> list[str]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
        return []
    docs = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)
            if doc:
                docs.extend(paragraphs(doc))
    return docs


SELECTION_PERCENT = 10  # the bucket after the held-out one: choosing settings, never training


def _bucket(text: str) -> int:
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16) % 100


def is_heldout(text: str, heldout_percent: int = 10) -> bool:
    return _bucket(text) < heldout_percent


def text_split(text: str, heldout_percent: int = 10) -> str:
    """"heldout" (reported, decides nothing), "selection" (chooses among operating points,
    never trains) or "train", by a stable hash of the text."""
    b = _bucket(text)
    if b < heldout_percent:
        return "heldout"
    return "selection" if b < heldout_percent + SELECTION_PERCENT else "train"


def _paragraph_stream() -> Iterator[str]:
    """Every de-duplicated docstring paragraph of the standard library, files in sorted order."""
    seen: set[str] = set()
    for path in sorted(stdlib_dir().rglob("*.py")):
        if SKIP_DIRS.intersection(path.relative_to(stdlib_dir()).parts[:-1]):
            continue
        for text in file_docstrings(path):
            if text not in seen:
                seen.add(text)
                yield text


@functools.lru_cache(maxsize=8)
def docstring_corpus(max_texts: int = 2000, heldout_percent: int = 10) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(train, held-out) paragraphs: the first ``max_texts`` of the stream. The selection
    bucket (`text_split`) is in neither."""
    texts = list(itertools.islice(_paragraph_stream(), max_texts))
    train = tuple(t for t in texts if text_split(t, heldout_percent) == "train")
    held = tuple(t for t in texts if text_split(t, heldout_percent) == "heldout")
    log.info("docstring corpus: %d train, %d held-out paragraphs from %s", len(train), len(held), stdlib_dir())
    return train, held


@functools.lru_cache(maxsize=4)
def split_texts(split: str, heldout_percent: int = 10) -> tuple[str, ...]:
    """Every paragraph of the corpus in one `text_split` bucket, in corpus order (the
    retrieval pairs' source: "selection" chooses, "heldout" is reported)."""
    if split not in ("heldout", "selection", "train"):
        raise ValueError(f"unknown split {split!r}")
    return tuple(t for t in _all_paragraphs() if text_split(t, heldout_percent) == split)


@functools.lru_cache(maxsize=1)
def _all_paragraphs() -> tuple[str, ...]:
    return tuple(_paragraph_stream())

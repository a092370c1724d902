"""Unlabeled English text from the installed Python's standard-library docstrings.

Modules are read as source and parsed with ``ast`` (nothing is imported). Docstrings are
split into paragraphs, cleaned and de-duplicated; the held-out split is by a stable hash of
the text, so it is the same on every machine and for every ``max_texts``.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import logging
import re
import sysconfig
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


def is_heldout(text: str, heldout_percent: int = 10) -> bool:
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16) % 100 < heldout_percent


@functools.lru_cache(maxsize=8)
def docstring_corpus(max_texts: int = 2000, heldout_percent: int = 10) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(train, held-out) paragraphs; files visited in sorted order until ``max_texts`` are found."""
    seen: set[str] = set()
    texts: list[str] = []
    for path in sorted(stdlib_dir().rglob("*.py")):
        if SKIP_DIRS.intersection(path.relative_to(stdlib_dir()).parts[:-1]):
            continue
        for text in file_docstrings(path):
            if text not in seen:
                seen.add(text)
                texts.append(text)
        if len(texts) >= max_texts:
            break
    texts = texts[:max_texts]
    train = tuple(t for t in texts if not is_heldout(t, heldout_percent))
    held = tuple(t for t in texts if is_heldout(t, heldout_percent))
    log.info("docstring corpus: %d train, %d held-out paragraphs from %s", len(train), len(held), stdlib_dir())
    return train, held

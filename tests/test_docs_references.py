"""Every document a tracked file refers to is in the repository.

A reader who has only the repository must be able to follow every reference: a docstring,
comment, test or page that names a document (`*.md`, `*.rst`, `*.ipynb`) names one that is
tracked here. A reference resolves against the repository root or against the referring
file's folder and may not leave the repository. Names of files the tool *writes* into its
output directories (the report, the model card) are not references to documents and are
listed in GENERATED. Data fetched at run time is not tracked, so it is not scanned.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath

import pytest

ROOT = Path(__file__).resolve().parent.parent

# files the tool writes into an output directory (and a hub repo's card), not repository docs
GENERATED = frozenset({"report.md", "README.md"})

_URL = re.compile(r"[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)
# a path-like token ending in a document extension, not glued to a longer word
_DOC = re.compile(r"(?<![\w/.-])((?:\.{1,2}/)*[\w-][\w.-]*(?:/[\w.-]+)*\.(?:md|rst|ipynb))(?![\w/])")
_SCANNED_SUFFIXES = frozenset({".py", ".md", ".rst", ".toml", ".txt", ".sh", ".cfg", ".ini",
                               ".yaml", ".yml", ".json", ""})


def doc_references(text: str) -> list[str]:
    """Document paths mentioned in `text` (URLs excluded), in order of appearance."""
    return [m.group(1) for m in _DOC.finditer(_URL.sub(" ", text))]


def missing_references(text: str, where: PurePosixPath, tracked: frozenset[str]) -> list[str]:
    """The references in `text` (of the tracked file `where`) that name no tracked document."""
    out = []
    for ref in doc_references(text):
        name = PurePosixPath(ref).name
        if ref in GENERATED or (ref == name and name in GENERATED):
            continue
        if not any(c is not None and c in tracked for c in _candidates(ref, where)):
            out.append(ref)
    return out


def _candidates(ref: str, where: PurePosixPath) -> list[str | None]:
    return [_normalise(PurePosixPath(ref)), _normalise(where.parent / ref)]


def _normalise(path: PurePosixPath) -> str | None:
    """`path` with `.` and `..` resolved, or None when it leaves the repository."""
    parts: list[str] = []
    for part in path.parts:
        if part == "..":
            if not parts:
                return None
            parts.pop()
        elif part != ".":
            parts.append(part)
    return "/".join(parts)


def _tracked() -> list[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the tracked files are unknown")
    res = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    return [p for p in res.stdout.decode().split("\0") if p]


def test_every_referenced_document_is_in_the_repository() -> None:
    files = _tracked()
    tracked = frozenset(files)
    bad = []
    for rel in files:
        path = ROOT / rel
        if PurePosixPath(rel).suffix not in _SCANNED_SUFFIXES or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for ref in missing_references(text, PurePosixPath(rel), tracked):
            bad.append(f"{rel}: {ref}")
    assert not bad, "references to documents that are not in the repository:\n" + "\n".join(bad)


def test_the_scanner_finds_what_it_must_and_nothing_else() -> None:
    md = "." + "md"  # spelt apart, so that this file itself names no missing document
    beside = ".." + "/" + "shared"  # a folder beside the repository, spelt apart likewise
    tracked = frozenset({"README.md", "docs/INTERNALS.md", "docs/theory.md", "bench/README.md"})
    where = PurePosixPath("bmr_compress/bmr/gaussian.py")
    text = (
        "formulas: docs/theory.md §2; contracts: docs/INTERNALS.md; see README.md.\n"
        f"private notes: NOTES{md}, {beside}/notes{md}, research/paper{md} and docs/gone{md}\n"
        f"the tool writes report.md; https://example.org/guide{md} is a link, not a file;\n"
        "a method call tn.pdf(x) and a word like mdash are not documents"
    )
    assert missing_references(text, where, tracked) == [
        f"NOTES{md}", f"{beside}/notes{md}", f"research/paper{md}", f"docs/gone{md}"]
    # relative to the referring file's folder, and never out of the repository
    assert missing_references("see README.md", PurePosixPath("bench/x.py"), tracked) == []
    assert missing_references("../README.md", PurePosixPath("bench/x.py"), tracked) == []
    outside = f"../../README{md}"
    assert missing_references(outside, PurePosixPath("bench/x.py"), tracked) == [outside]

"""A broader offline text corpus: documentation already on the machine.

Sources, each read without importing or executing anything:

* the standard library's docstrings (io/corpus.py);
* the docstrings of the installed packages the tool itself depends on (torch, transformers,
  numpy, scipy, scikit-learn, onnx, ...; whichever are installed), parsed with ``ast``, and
  each distribution's long description (its README, in the ``METADATA`` file);
* section 1 man pages when the machine has them (``/usr/share/man/man1``), troff stripped.

Paragraphs are cleaned and de-duplicated across sources, then interleaved source by source
so that any prefix of the corpus is a mix of all of them. The train / held-out split is the
standard library corpus's: a stable hash of the text, so a text is on one side only, on every
machine and for every ``max_texts``. The paragraph list is cached in the tool's cache
directory, keyed by the Python version and the installed versions of the sources.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bmr_compress.io.corpus import (
    SKIP_DIRS, file_docstrings, paragraphs, stdlib_dir, text_split,
)

log = logging.getLogger(__name__)

# import name -> distribution name; the tool's own dependencies (and its test extras), so a
# fresh install has most of them; a missing one is skipped
PACKAGES = {"torch": "torch", "transformers": "transformers", "numpy": "numpy", "scipy": "scipy",
            "sklearn": "scikit-learn", "onnx": "onnx", "onnxruntime": "onnxruntime",
            "huggingface_hub": "huggingface-hub", "safetensors": "safetensors",
            "tokenizers": "tokenizers", "click": "click", "tqdm": "tqdm",
            "matplotlib": "matplotlib", "torch_pruning": "torch-pruning", "yaml": "pyyaml",
            "sentence_transformers": "sentence-transformers", "hypothesis": "hypothesis"}
MAN_DIR = Path("/usr/share/man/man1")
MAX_FILES_PER_SOURCE = 1500  # bounds the first (uncached) build: torch alone has ~4,000 files
MAX_MAN_PAGES = 1500
CACHE_FORMAT = 1


@dataclass(frozen=True)
class Corpus:
    """Held-out-split paragraphs and where they came from (source -> paragraphs used)."""

    train: tuple[str, ...]
    heldout: tuple[str, ...]
    sources: tuple[tuple[str, int], ...]

    def describe(self) -> str:
        return ", ".join(f"{name} {n}" for name, n in self.sources)


def cache_root() -> Path:
    root = os.environ.get("BMR_COMPRESS_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "bmr-compress") / "corpus"


def _package_dir(name: str) -> Path | None:
    """The folder of an installed top-level package, found without importing it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    locs = list(spec.submodule_search_locations or []) if spec is not None else []
    return Path(locs[0]) if locs else None


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def installed_sources(packages: dict[str, str] | None = None) -> dict[str, str]:
    """source name -> version string of every source present on this machine."""
    out = {"stdlib": f"python {sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"}
    for name, dist in (PACKAGES if packages is None else packages).items():
        version = _version(dist)
        if version is not None and _package_dir(name) is not None:
            out[name] = version
    if MAN_DIR.is_dir():
        out["man"] = str(sum(1 for _ in MAN_DIR.iterdir()))
    return out


def _py_files(root: Path) -> Iterator[Path]:
    count = 0
    for path in sorted(root.rglob("*.py")):
        if SKIP_DIRS.intersection(path.relative_to(root).parts[:-1]):
            continue
        yield path
        count += 1
        if count >= MAX_FILES_PER_SOURCE:
            return


def _package_texts(name: str, dist: str) -> list[str]:
    root = _package_dir(name)
    texts: list[str] = []
    if root is None:
        return texts
    try:
        meta = importlib.metadata.metadata(dist)
        body = meta.get_payload() if hasattr(meta, "get_payload") else None  # type: ignore[attr-defined]
        texts.extend(paragraphs(body or meta.get("Description") or ""))
    except (importlib.metadata.PackageNotFoundError, OSError):
        pass
    for path in _py_files(root):
        texts.extend(file_docstrings(path))
    return texts


_TROFF_ESCAPE = re.compile(r"\\f\(..|\\f\[[^]]*\]|\\f.|\\\(..|\\\*.|\\s[+-]?\d|\\[ &e|^-]")


def man_paragraphs(raw: str) -> list[str]:
    """Paragraphs of a troff man page: requests (lines starting with '.' or "'") end a
    paragraph, except font requests whose argument is running text."""
    paras, cur = [], []
    for line in raw.splitlines():
        if line.startswith((".", "'")):
            req, _, rest = line[1:].partition(" ")
            if req in ("B", "I", "BI", "BR", "IR", "RB", "RI", "IB") and rest:
                cur.append(rest.replace('"', ""))
                continue
            if cur:
                paras.append(" ".join(cur))
                cur = []
            continue
        cur.append(line)
    if cur:
        paras.append(" ".join(cur))
    return [p for para in paras for p in paragraphs(_TROFF_ESCAPE.sub("", para))]


def _man_texts() -> list[str]:
    if not MAN_DIR.is_dir():
        return []
    texts: list[str] = []
    pages = sorted(MAN_DIR.iterdir())
    for path in pages[:: max(1, len(pages) // MAX_MAN_PAGES)][:MAX_MAN_PAGES]:  # spread over a-z
        try:
            raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        except (OSError, EOFError, gzip.BadGzipFile):
            continue
        texts.extend(man_paragraphs(raw.decode("utf-8", errors="replace")))
    return texts


def _stdlib_texts() -> list[str]:
    root = stdlib_dir()
    texts: list[str] = []
    for path in sorted(root.rglob("*.py")):
        if not SKIP_DIRS.intersection(path.relative_to(root).parts[:-1]):
            texts.extend(file_docstrings(path))
    return texts


def interleave(per_source: dict[str, list[str]]) -> tuple[list[str], list[str]]:
    """Paragraphs de-duplicated (first occurrence wins, sources in the given order) and
    interleaved round-robin, so every prefix mixes all sources; with the source of each."""
    seen: set[str] = set()
    queues: dict[str, list[str]] = {}
    for name, texts in per_source.items():
        queues[name] = []
        for t in texts:
            if t not in seen:
                seen.add(t)
                queues[name].append(t)
    out: list[str] = []
    origin: list[str] = []
    for i in range(max((len(q) for q in queues.values()), default=0)):
        for name, q in queues.items():
            if i < len(q):
                out.append(q[i])
                origin.append(name)
    return out, origin


def _build(sources: dict[str, str]) -> dict[str, list[str]]:
    per: dict[str, list[str]] = {}
    for name in sources:
        if name == "stdlib":
            per[name] = _stdlib_texts()
        elif name == "man":
            per[name] = _man_texts()
        else:
            per[name] = _package_texts(name, PACKAGES[name])
    return per


def all_paragraphs(sources: dict[str, str] | None = None,
                   cache: Path | None = None) -> tuple[list[str], list[str]]:
    """(paragraphs interleaved across sources, the source of each), from the cache when the
    same sources at the same versions were read before."""
    sources = installed_sources() if sources is None else sources
    key = hashlib.sha256(json.dumps([CACHE_FORMAT, MAX_FILES_PER_SOURCE, MAX_MAN_PAGES, sources],
                                    sort_keys=True).encode()).hexdigest()[:16]
    path = (cache_root() if cache is None else cache) / f"docs-{key}.json"
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return list(data["texts"]), list(data["origin"])
        except (OSError, ValueError, KeyError):
            log.warning("corpus cache %s unreadable: rebuilding it", path)
    per = _build(sources)
    texts, origin = interleave(per)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"sources": sources, "texts": texts, "origin": origin}), encoding="utf-8")
        tmp.replace(path)
    except OSError as e:  # a read-only home still gets the corpus, only not cached
        log.warning("corpus cache not written (%s)", e)
    return texts, origin


def split(texts: Iterable[str], heldout_percent: int = 10) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(train, held-out) by the stable hash of each text (io/corpus.text_split; the selection
    bucket, which chooses operating points, is in neither)."""
    items = list(texts)
    return (tuple(t for t in items if text_split(t, heldout_percent) == "train"),
            tuple(t for t in items if text_split(t, heldout_percent) == "heldout"))


@functools.lru_cache(maxsize=4)
def split_texts(split: str, heldout_percent: int = 10) -> tuple[str, ...]:
    """Every paragraph of the whole interleaved corpus in one `text_split` bucket, in corpus
    order: the source of the retrieval pairs ("selection" chooses among operating points,
    "heldout" is reported; neither ever trains). Thousands per bucket, where the standard
    library alone gives a few hundred."""
    if split not in ("heldout", "selection", "train"):
        raise ValueError(f"unknown split {split!r}")
    texts, _ = all_paragraphs()
    return tuple(t for t in texts if text_split(t, heldout_percent) == split)




@functools.lru_cache(maxsize=4)
def docs_corpus(max_texts: int = 4096, heldout_percent: int = 10) -> Corpus:
    """The first ``max_texts`` paragraphs of the interleaved corpus, split by hash."""
    texts, origin = all_paragraphs()
    texts, origin = texts[:max_texts], origin[:max_texts]
    counts: dict[str, int] = {}
    for o in origin:
        counts[o] = counts.get(o, 0) + 1
    train, held = split(texts, heldout_percent)
    corpus = Corpus(train, held, tuple(sorted(counts.items(), key=lambda kv: -kv[1])))
    log.info("docs corpus: %d train, %d held-out paragraphs (%s)", len(train), len(held), corpus.describe())
    return corpus

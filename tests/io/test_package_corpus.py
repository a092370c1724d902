"""The broader offline corpus: sources read without import, de-duplicated, split by hash, cached."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from bmr_compress.io import package_corpus as pc
from bmr_compress.io.corpus import is_heldout, text_split

PARAS = [f"Return the {w} of the tensor along the given dimension, as a new tensor of floats." for w in
         ("sum", "mean", "median", "maximum", "minimum", "norm", "product", "variance", "mode",
          "standard deviation", "cumulative sum", "logarithm", "exponent", "absolute value")]


@pytest.fixture()
def fake_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Two installed packages (one repeats a paragraph of the other) and a man page."""
    for name, paras in (("fakepkg_a", PARAS[:9]), ("fakepkg_b", PARAS[6:])):
        pkg = tmp_path / "site" / name
        pkg.mkdir(parents=True)
        body = "\n".join(f'def f{i}():\n    """{p}"""\n' for i, p in enumerate(paras))
        (pkg / "__init__.py").write_text(body)
        (pkg / "tests").mkdir()
        (pkg / "tests" / "test_x.py").write_text('"""A test module docstring that must never be read at all."""\n')
        monkeypatch.setitem(pc.PACKAGES, name, name)
        dist = tmp_path / "site" / f"{name}-1.0.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n\n"
                                       f"The {name} package computes statistics of tensors, quickly and exactly.\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    man = tmp_path / "man1"
    man.mkdir()
    page = (".TH FAKE 1\n.SH DESCRIPTION\n\\fBfake\\fR copies each named file to the standard "
            "output, one after another, and stops at the end.\n.PP\n.B fake\nreads nothing else.\n")
    (man / "fake.1.gz").write_bytes(gzip.compress(page.encode()))
    monkeypatch.setattr(pc, "MAN_DIR", man)
    found = pc.installed_sources({"fakepkg_a": "fakepkg_a", "fakepkg_b": "fakepkg_b",
                                  "not_installed_pkg": "not-installed-pkg"})
    assert "not_installed_pkg" not in found and {"fakepkg_a", "fakepkg_b", "man"} <= set(found)
    assert found["fakepkg_a"] == "1.0"
    return {k: found[k] for k in ("fakepkg_a", "fakepkg_b", "man")}


def test_sources_deduplicated_interleaved_and_cached(fake_sources: dict[str, str], tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    texts, origin = pc.all_paragraphs(fake_sources, cache=tmp_path / "cache")
    # a repeated paragraph once; both READMEs (METADATA); the man page's one long paragraph
    assert len(texts) == len(set(texts)) == len(PARAS) + 3
    assert "The fakepkg_b package computes statistics of tensors, quickly and exactly." in texts
    assert set(PARAS) <= set(texts) and not any("test module" in t for t in texts)
    assert origin[:3] == ["fakepkg_a", "fakepkg_b", "man"]  # every prefix mixes the sources
    man = [t for t, o in zip(texts, origin) if o == "man"]
    assert man == ["fake copies each named file to the standard output, one after another, and "
                   "stops at the end."]
    monkeypatch.setattr(pc, "_build", lambda _s: pytest.fail("the cache was not used"))
    assert pc.all_paragraphs(fake_sources, cache=tmp_path / "cache") == (texts, origin)
    other = dict(fake_sources, fakepkg_a="2.0")  # another installed version: rebuilt
    with pytest.raises(pytest.fail.Exception):
        pc.all_paragraphs(other, cache=tmp_path / "cache")


def test_split_by_hash_is_disjoint_and_deterministic() -> None:
    texts = [f"Paragraph number {i} says something about tensors and their shapes." for i in range(400)]
    train, held = pc.split(texts)
    selection = [t for t in texts if text_split(t) == "selection"]  # chooses, never trains
    assert not set(train) & set(held) and len(train) + len(held) + len(selection) == len(texts)
    assert not set(selection) & (set(train) | set(held))
    assert 10 < len(held) < 80  # the 10 % bucket
    assert all(is_heldout(t) for t in held) and not any(is_heldout(t) for t in train)
    assert pc.split(list(reversed(texts))) == (tuple(reversed(train)), tuple(reversed(held)))
    small_train, small_held = pc.split(texts[:100])  # a prefix keeps every text on its side
    assert set(small_held) <= set(held) and set(small_train) <= set(train)


@pytest.mark.slow
def test_docs_corpus_on_this_machine() -> None:
    """The real corpus: the standard library at least, more when packages are installed."""
    corpus = pc.docs_corpus(600)
    assert len(corpus.train) + len(corpus.heldout) <= 600  # the selection bucket is in neither
    assert not set(corpus.train) & set(corpus.heldout)
    names = dict(corpus.sources)
    assert "stdlib" in names and "torch" in names  # torch is a dependency of the tool
    assert sum(names.values()) == 600


def test_docs_data_kind_tokenises_and_describes(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--data docs`: the corpus's train / held-out sides become the batches, and the
    description names the sources and the counts (what report.json's "data" states)."""
    from bmr_compress.io.data import make_dataset
    from bmr_compress.pipeline.sources import resolve_source

    texts = [f"Paragraph {i} explains how the {w} of a tensor is computed along an axis."
             for i, w in enumerate(["sum", "mean", "norm", "max", "min"] * 12)]
    origin = ["torch" if i % 3 else "stdlib" for i in range(len(texts))]
    monkeypatch.setattr(pc, "all_paragraphs", lambda: (texts, origin))
    pc.docs_corpus.cache_clear()
    try:
        data = make_dataset("docs", resolve_source("zoo:all-minilm-l6-v2"), max_samples=60, batch_size=8)
    finally:
        pc.docs_corpus.cache_clear()
    train, held = pc.split(texts)
    assert data.name == "installed documentation (torch, stdlib)"
    assert data.description == f"{data.name}: {len(train)} train / {len(held)} held-out"
    assert sum(len(b["input_ids"]) for b in data.heldout_batches) == len(held)
    assert "held out by a stable SHA-256 hash" in data.heldout


def test_split_texts_are_the_whole_corpus_buckets(monkeypatch: pytest.MonkeyPatch) -> None:
    """The retrieval pairs' source: every paragraph of the corpus in one hash bucket, in
    corpus order; selection and held-out never meet each other or the training side."""
    texts = [f"Function {i} returns the {w} of its argument. It raises ValueError when the "
             f"argument is empty, and accepts any iterable of numbers." for i, w in
             enumerate(["sum", "mean", "norm", "max", "min"] * 400)]
    monkeypatch.setattr(pc, "all_paragraphs", lambda: (texts, ["torch"] * len(texts)))
    pc.split_texts.cache_clear()
    try:
        sel, held, train = pc.split_texts("selection"), pc.split_texts("heldout"), pc.split_texts("train")
        with pytest.raises(ValueError):
            pc.split_texts("test")
    finally:
        pc.split_texts.cache_clear()
    assert len(sel) + len(held) + len(train) == len(texts)
    assert not set(sel) & set(held) and not (set(sel) | set(held)) & set(train)
    assert list(sel) == [t for t in texts if text_split(t) == "selection"]  # corpus order
    assert 150 < len(sel) < 250 and 150 < len(held) < 250  # two 10 % buckets of 2,000
    assert set(pc.split(texts)[0]) == set(train)  # the docs data kind trains on exactly these

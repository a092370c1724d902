"""The model card of a sentence-transformers output: honest metadata, snippets that run as
written (the repo id pointed at the local folder, hub downloads patched), posterior opt-in."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from huggingface_hub import ModelCard

from bmr_compress.io import hub
from bmr_compress.io.card import build_model_card
from tests.export.conftest import ST_REPO
from tests.snapshots import SENTENCES

REPO = "someone/tiny-st-bmr"


def _card(out: Path, **kw) -> str:
    return hub.push_to_hub(out, REPO, dry_run=True, **kw).card


def _meta(card: str) -> dict:
    return yaml.safe_load(card.split("---\n")[1])


def _snippets(card: str) -> list[str]:
    return [b.split("```")[0] for b in card.split("```python\n")[1:]]


def test_card_metadata_is_honest(st_out: Path, pruned_out: Path) -> None:
    for out in (st_out, pruned_out):
        card = _card(out)
        parsed = ModelCard(card)  # parses and validates
        meta = _meta(card)
        assert parsed.data.base_model == ST_REPO == meta["base_model"]
        assert meta["base_model_relation"] == "finetune"  # the weights were cut / fitted
        assert meta["license"] == "apache-2.0"  # from the source's own card
        assert meta["library_name"] == "sentence-transformers"
        assert meta["pipeline_tag"] == "sentence-similarity"
        results = meta["model-index"][0]["results"][0]
        assert results["dataset"]["name"] == "stdlib docstrings"
        assert str(out.parent) not in card and "/tmp" not in card  # no local paths
        assert "standard-library docstrings" in card  # what the held-out text is
    assert "ΔlnZ ≥ 0: a unit goes only where" in _card(st_out)
    assert "size budget (0.9 of the parameters)" in _card(pruned_out)
    assert "physically removed" in _card(pruned_out)


def test_no_pruning_claim_when_nothing_was_removed(st_out: Path) -> None:
    rep = json.loads((st_out / "report.json").read_text())
    rep["sparsity"]["structured"]["removed_fraction"] = 0.0
    rep["sparsity"]["unstructured"]["zero_fraction"] = 0.0
    rep["source"]["weights_identical"] = True
    card = build_model_card(rep, REPO, st_out)
    assert "Nothing was removed" in card and "physically removed" not in card
    rep["sparsity"]["unstructured"]["zero_fraction"] = 2e-5  # zeros the source had, unstructured off
    assert "Nothing was removed" in build_model_card(rep, REPO, st_out)
    assert _meta(card)["base_model_relation"] == "quantized"  # only the int8 artefact differs


def test_posterior_upload_is_opt_in(st_out: Path) -> None:
    assert "posterior.safetensors" not in hub.push_to_hub(st_out, REPO, dry_run=True).files
    assert "posterior.safetensors" in hub.push_to_hub(st_out, REPO, dry_run=True,
                                                      with_posterior=True).files


def _run(code: str, out: Path, monkeypatch) -> dict:
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo, **kw: str(out))
    ns: dict = {}
    exec(compile(code.replace(f'"{REPO}"', f'"{out}"'), "card-snippet", "exec"), ns)  # noqa: S102
    return ns


@pytest.mark.parametrize("which", ["st_out", "pruned_out"])
def test_card_snippets_run_and_agree(which: str, request, monkeypatch) -> None:
    out = request.getfixturevalue(which)
    blocks = _snippets(_card(out))
    assert len(blocks) == 3  # sentence-transformers torch, its ONNX backend, plain onnxruntime
    torch_ns = _run(blocks[0], out, monkeypatch)
    ort_ns = _run(blocks[2], out, monkeypatch)
    a, b = torch_ns["embeddings"], ort_ns["embeddings"]
    assert a.shape == b.shape == (2, 36)
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    assert ((a * b).sum(1) / np.linalg.norm(a, axis=1)).min() >= 1 - 1e-4
    assert "backend=\"onnx\"" in blocks[1] and "model.int8.onnx" in _card(request.getfixturevalue("st_out"))
    pytest.importorskip("optimum.onnxruntime", reason="optimum-onnx needs transformers<4.58")
    onnx_ns = _run(blocks[1], out, monkeypatch)
    assert onnx_ns["embeddings"].shape == (2, 36)


def test_sentences_fixture_is_text() -> None:
    assert all(isinstance(s, str) and s for s in SENTENCES)

"""push_to_hub: model card metadata validity, dry run, and the upload calls (HfApi patched)."""

from __future__ import annotations

import pytest
import yaml
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results

from bmr_compress.io import hub
from tests.export._flow import run_flow
from tests.export._surgery import surgery_compress


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    return run_flow("bert", tmp_path_factory.mktemp("hub"), surgery_compress).out


def _front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_card_is_valid_hub_metadata(out_dir):
    res = hub.push_to_hub(out_dir, "someone/tiny-bert-bmr", dry_run=True)
    meta = _front_matter(res.card)
    assert meta["library_name"] == "transformers"
    assert "bmr-compress" in meta["tags"] and "onnx" in meta["tags"]
    assert meta["pipeline_tag"] == "feature-extraction"
    name, evals = model_index_to_eval_results(meta["model-index"])
    assert name == "tiny-bert-bmr" and evals
    assert {e.metric_type for e in evals} >= {"cosine"}
    assert all(isinstance(e.metric_value, float) for e in evals)
    card = ModelCard(res.card)  # parses and validates the front matter
    assert card.data.to_dict()["model-index"] == meta["model-index"]
    body = res.card.split("---\n", 2)[2]
    assert "onnxruntime" in body and '"input_ids"' in body and "last_hidden_state" in body
    assert "thread" in body and "median" in body


def test_card_base_model_and_license(out_dir):
    import json

    rep = json.loads((out_dir / "report.json").read_text())
    rep["source"].update({"id": "sentence-transformers/all-MiniLM-L6-v2", "license": "apache-2.0"})
    meta = _front_matter(hub.build_model_card(rep, "me/mini-bmr"))
    assert meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert meta["license"] == "apache-2.0"


def test_onnx_snippet_in_card_runs(out_dir, monkeypatch):
    """The card's CPU snippet runs against the exported model (hf_hub_download patched)."""
    card = hub.push_to_hub(out_dir, "someone/tiny-bert-bmr", dry_run=True).card
    code = card.split("```python\n")[1].split("```")[0]
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda repo, f: str(out_dir / f))
    ns: dict = {}
    exec(compile(code, "card-snippet", "exec"), ns)  # noqa: S102 - our own generated snippet
    assert ns["last_hidden_state"].shape == (1, 8, 36)


def test_push_creates_repo_and_uploads(out_dir, monkeypatch):
    calls = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, repo_id, **kw):
            calls.append(("create_repo", repo_id, kw))
            return f"https://huggingface.co/{repo_id}"

        def create_branch(self, repo_id, **kw):
            calls.append(("create_branch", repo_id, kw))

        def upload_folder(self, **kw):
            calls.append(("upload_folder", kw))
            assert (out_dir / "README.md").is_file()

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    res = hub.push_to_hub(out_dir, "me/x", revision="v1", private=True, token="t")
    assert not res.dry_run and res.url == "https://huggingface.co/me/x"
    kinds = [c[0] for c in calls]
    assert kinds == ["init", "create_repo", "create_branch", "upload_folder"]
    assert calls[1][2]["private"] is True and calls[3][1]["revision"] == "v1"
    assert calls[3][1]["folder_path"] == str(out_dir)

"""resolve_source over every kind of SOURCE, offline: snapshots, package, hub cache, files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bmr_compress.errors import InputError
from bmr_compress.io.sources import load_weight_file, parse_hub_spec
from bmr_compress.pipeline.sources import resolve_source
from tests.tiny_models import text_inputs, tiny_bert


@pytest.fixture
def bert_dir(tmp_path: Path) -> Path:
    d = tmp_path / "tiny-bert"
    tiny_bert().save_pretrained(d)
    return d


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module) -> None:
    x = text_inputs()
    with torch.no_grad():
        torch.testing.assert_close(a(**x).last_hidden_state, b(**x).last_hidden_state)


def test_local_snapshot_dir(bert_dir: Path) -> None:
    src = resolve_source(str(bert_dir))
    assert src.family == "bert" and src.task == "embedding"
    assert src.tokenizer_or_processor is None  # the snapshot has no tokenizer files
    assert src.files["weights"].name == "model.safetensors"
    _same_outputs(src.model, tiny_bert())


def test_task_override_picks_auto_class(bert_dir: Path) -> None:
    src = resolve_source(str(bert_dir), task="classification")
    assert type(src.model).__name__ == "BertForSequenceClassification"
    with pytest.raises(InputError, match="unknown task"):
        resolve_source(str(bert_dir), task="ranking")


def test_minilm_package_snapshot_loads_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    src = resolve_source("zoo:all-minilm-l6-v2")
    assert src.family == "bert" and src.task == "embedding"
    # the recipe's hub commit (the card names it), not the pip distribution
    assert src.revision == "c9745ed1d9f207416be6d2e6f8de32d1f16199bf"
    n = sum(p.numel() for p in src.model.parameters())
    assert 22_000_000 < n < 23_000_000
    enc = src.tokenizer_or_processor(["Bayesian model reduction."], return_tensors="pt")
    assert src.model(**enc).last_hidden_state.shape[-1] == 384


@pytest.mark.parametrize("spec, rev, expected", [
    ("org/name", None, ("org/name", None)),
    ("org/name@v1.0", None, ("org/name", "v1.0")),
    ("gpt2@607a30d783dfa663caf39e06633721c8d4cfcd7e", None, ("gpt2", "607a30d783dfa663caf39e06633721c8d4cfcd7e")),
    ("org/name", "refs/pr/1", ("org/name", "refs/pr/1")),
    ("org/name@main", "main", ("org/name", "main")),
])
def test_parse_hub_spec(spec: str, rev: str | None, expected: tuple) -> None:
    assert parse_hub_spec(spec, rev) == expected


@pytest.mark.parametrize("spec, rev, match", [
    ("org/name@", None, "empty revision"),
    ("org/na me", None, "not a valid hub repo id"),
    ("a/b/c", None, "not a valid hub repo id"),
    ("org/..x", None, "not a valid hub repo id"),
    ("org/name@a", "b", "conflicting revisions"),
    ("org/name", "bad rev", "not a valid revision"),
])
def test_parse_hub_spec_rejects(spec: str, rev: str | None, match: str) -> None:
    with pytest.raises(InputError, match=match):
        parse_hub_spec(spec, rev)


def test_offline_cache_miss_is_input_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(InputError, match="not available from the offline cache"):
        resolve_source("bmr-test/not-cached@main")


def test_offline_cache_hit(tmp_path: Path, bert_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hub id resolves from a standard-layout cache without the network."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "cache" / "models--bmr-test--tiny-bert"
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    for f in bert_dir.iterdir():
        (snap / f.name).write_bytes(f.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    src = resolve_source("bmr-test/tiny-bert@main")
    assert src.revision == commit and src.family == "bert"
    _same_outputs(src.model, tiny_bert())


def test_state_dict_with_sibling_config(bert_dir: Path) -> None:
    torch.save(tiny_bert().state_dict(), bert_dir / "weights.pt")
    with pytest.raises(InputError, match="pickle checkpoint, refused by default"):
        resolve_source(str(bert_dir / "weights.pt"))
    src = resolve_source(str(bert_dir / "weights.pt"), allow_pickle=True)
    assert src.files["weights"].name == "weights.pt"
    _same_outputs(src.model, tiny_bert())


class _Evil:
    def __reduce__(self):  # would run code under a full unpickler
        return (print, ("pwned",))


def test_state_dict_requires_weights_only(tmp_path: Path) -> None:
    p = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(2), "x": _Evil()}, p)
    with pytest.raises(InputError, match="weights_only"):
        load_weight_file(p, allow_pickle=True)
    q = tmp_path / "nested.pt"
    torch.save({"state_dict": {"w": torch.ones(3)}}, q)
    assert torch.equal(load_weight_file(q, allow_pickle=True)["w"], torch.ones(3))


def _mlp_recipe(tmp_path: Path) -> Path:
    p = tmp_path / "my-mlp.toml"
    p.write_text('name = "my-mlp"\ntask = "classification"\n[source]\nzoo = "mlp"\n'
                 '[source.arch]\nwidths = [21, 13]\n[data]\nkind = "digits"\n')
    return p


def test_safetensors_plus_recipe(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from bmr_compress.zoo.architectures import build_model

    torch.manual_seed(1)
    model = build_model("mlp", {"widths": [21, 13]}).eval()
    save_file(model.state_dict(), str(tmp_path / "w.safetensors"))
    torch.save(model.state_dict(), tmp_path / "w.pt")
    x = torch.rand(4, 1, 8, 8)
    for f in ("w.safetensors", "w.pt"):
        src = resolve_source(str(tmp_path / f), recipe=str(_mlp_recipe(tmp_path)),
                             allow_pickle=f.endswith(".pt"))
        assert src.family == "zoo:mlp" and src.task == "classification"
        torch.testing.assert_close(src.model(x), model(x))
    with pytest.raises(InputError, match="needs --recipe"):
        resolve_source(str(tmp_path / "w.safetensors"))


def test_safetensors_shape_mismatch_names_tensor(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from bmr_compress.zoo.architectures import build_model

    save_file(build_model("mlp", {"widths": [20, 13]}).state_dict(), str(tmp_path / "w.safetensors"))
    with pytest.raises(InputError, match="shape mismatch for net.0.weight"):
        resolve_source(str(tmp_path / "w.safetensors"), recipe=str(_mlp_recipe(tmp_path)))


def test_zoo_checkpoint_dir_and_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bmr_compress.zoo.train import TrainSettings, train_zoo_model

    monkeypatch.setenv("BMR_COMPRESS_CACHE", str(tmp_path))
    # (a missing zoo checkpoint is trained on first use: see zoo.sources.load_zoo_recipe)
    train_zoo_model("mlp", {"widths": [128, 64]}, tmp_path / "zoo" / "mlp-digits",
                    TrainSettings(max_steps=2), name="mlp-digits")
    src = resolve_source("zoo:mlp-digits")
    assert src.family == "zoo:mlp" and src.config["widths"] == [128, 64]
    again = resolve_source(str(tmp_path / "zoo" / "mlp-digits"))
    x = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(again.model(x), src.model(x))


def test_missing_paths(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="source file not found"):
        resolve_source(str(tmp_path / "nope.safetensors"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no config.json"):
        resolve_source(str(tmp_path / "empty"))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "not-a-family"}))
    with pytest.raises(InputError, match="cannot read config.json"):
        resolve_source(str(bad))

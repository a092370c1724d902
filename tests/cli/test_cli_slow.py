"""Slow tier: train a zoo seed model, compress it through the CLI, reload the result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from bmr_compress.cli.main import cli


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["mlp-digits", "lenet5-digits", "mixer-digits", "vit-digits"])
def test_zoo_train_compress_validate(recipe: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     request: pytest.FixtureRequest) -> None:
    if "slow" not in (request.config.getoption("-m") or "") or "not slow" in request.config.getoption("-m"):
        pytest.skip("slow tier: run with -m slow")
    monkeypatch.setenv("BMR_COMPRESS_CACHE", str(tmp_path / "cache"))
    r = CliRunner().invoke(cli, ["zoo", "train", recipe, "--json"])
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["heldout_accuracy"] > 0.9
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["compress", f"zoo:{recipe}", "--out", str(out), "--steps", "300", "--json"])
    assert r.exit_code == 0, r.stderr
    for f in ("model.safetensors", "config.json", "model.onnx", "bmr_manifest.json",
              "posterior.safetensors", "report.json", "report.md"):
        assert (out / f).is_file(), f
    report = json.loads((out / "report.json").read_text())
    assert report["validation"]["passed"]
    from bmr_compress.pipeline.sources import resolve_source

    src = resolve_source(str(out))
    assert src.family == f"zoo:{recipe.split('-')[0]}"

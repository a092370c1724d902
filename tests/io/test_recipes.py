"""Every shipped recipe parses strictly; malformed recipes fail with the key and file named."""

from __future__ import annotations

from pathlib import Path

import pytest

from bmr_compress.errors import InputError
from bmr_compress.io.recipes import load_recipe, recipe_names

MODEL_ZOO = Path(__file__).resolve().parents[2] / "model_zoo"
RECIPE_FILES = sorted(MODEL_ZOO.glob("*.toml"))


def test_shipped_recipes_are_package_data() -> None:
    assert sorted(p.stem for p in RECIPE_FILES) == recipe_names()
    assert {"mlp-digits", "lenet5-digits", "mixer-digits", "vit-digits", "all-minilm-l6-v2",
            "bert-base-uncased", "gpt2", "vit-base-patch16-224", "tinyllama-1.1b-chat"} <= set(recipe_names())


@pytest.mark.parametrize("path", RECIPE_FILES, ids=lambda p: p.stem)
def test_recipe_parses(path: Path) -> None:
    r = load_recipe(path)
    assert r.name == path.stem
    assert r == load_recipe(f"zoo:{path.stem}").__class__(**{**r.__dict__, "path": r.path})
    if r.source.hub and not r.source.split_zip:  # a split zip pins its sha256 instead
        assert r.source.revision, "hub sources must pin a revision"
    if r.source.zoo:
        assert r.train is not None and r.data.kind == "digits"


GOOD = """name = "x"
task = "classification"
[source]
zoo = "mlp"
[data]
kind = "digits"
"""


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "x.toml"
    p.write_text(text)
    return p


def test_minimal_recipe(tmp_path: Path) -> None:
    assert load_recipe(_write(tmp_path, GOOD)).source.zoo == "mlp"


@pytest.mark.parametrize("bad, match", [
    (GOOD + "typo = 1\n", "unknown key 'typo'"),
    (GOOD.replace('kind = "digits"', 'kind = "digits"\nbatchsize = 3'), r"\[data\]: unknown key 'batchsize'"),
    (GOOD + "[source.arch]\nwidthz = [3]\n", "widthz"),
    (GOOD.replace('task = "classification"', 'task = "ranking"'), "task 'ranking'"),
    (GOOD.replace('zoo = "mlp"', 'hub = "org/m"'), "must pin a 'revision'"),
    (GOOD.replace('kind = "digits"', 'kind = "digits"\nbatch_size = "big"'), "expected int"),
    (GOOD.replace('name = "x"', 'name = "y"'), "does not match the file name"),
    ("name = \n", "invalid TOML"),
])
def test_bad_recipe_is_input_error_naming_key_and_file(tmp_path: Path, bad: str, match: str) -> None:
    with pytest.raises(InputError, match=match) as e:
        load_recipe(_write(tmp_path, bad))
    assert "x.toml" in str(e.value)


def test_unknown_recipe_name() -> None:
    with pytest.raises(InputError, match="unknown recipe 'nope'"):
        load_recipe("zoo:nope")

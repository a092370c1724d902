"""io.sources is a leaf: the zoo and surgery add their source kinds to its registry."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bmr_compress.io.sources import SOURCE_KINDS, register_source_kind
from bmr_compress.pipeline.sources import SOURCE_KINDS as ALL_KINDS

REPO = Path(__file__).resolve().parents[2]


def test_the_zoo_and_surgery_register_their_kinds() -> None:
    assert ALL_KINDS is SOURCE_KINDS
    assert {"compressed", "zoo-checkpoint", "zoo-recipe"} <= set(SOURCE_KINDS)
    owners = {k: v.load.__module__ for k, v in SOURCE_KINDS.items()}
    assert owners["compressed"] == "bmr_compress.cutting.saved"
    assert owners["zoo-checkpoint"] == owners["zoo-recipe"] == "bmr_compress.zoo.sources"


def test_registering_a_kind_twice_is_an_error() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        register_source_kind("zoo-recipe", target="recipe", claims=lambda r: False)(lambda r, q: None)


def test_io_alone_imports_nothing_above_it(tmp_path: Path) -> None:
    """Importing io.sources in a fresh process loads no zoo, surgery, export, variational or
    pipeline module; a zoo recipe then says which import registers the zoo."""
    code = """
import sys
from bmr_compress.errors import InputError
from bmr_compress.io.sources import SOURCE_KINDS, resolve_source
up = sorted(m for m in sys.modules if m.startswith("bmr_compress.") and m.split(".")[1] in
            ("zoo", "surgery", "export", "variational", "pipeline", "cli"))
assert not up, up
assert not SOURCE_KINDS, SOURCE_KINDS
try:
    resolve_source("zoo:mlp-digits")
except InputError as e:
    print(e)
"""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1",
           "BMR_COMPRESS_CACHE": str(tmp_path)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       cwd=str(REPO), timeout=300)
    assert r.returncode == 0, r.stderr
    assert "bmr_compress.pipeline.sources" in r.stdout
    assert not (tmp_path / "zoo").exists()  # nothing was trained

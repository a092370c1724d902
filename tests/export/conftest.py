"""Sentence-transformers outputs made once per session by the real CLI (`compress`, no --data).

The source folders sit at hub-cache-like paths (models--ORG--NAME/snapshots/REV), so the
card can name a `base_model` as it would for a downloaded snapshot.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.snapshots import st_snapshot

ST_REPO = "tiny-org/tiny-st"


def _compress(src: Path, out: Path, *extra: str) -> Path:
    from bmr_compress.cli.main import cli

    r = CliRunner().invoke(cli, ["compress", str(src), "--out", str(out), "--steps", "3",
                                 "--max-samples", "96", *extra])
    assert r.exit_code == 0, r.output
    return out


def _snapshot_dir(root: Path) -> Path:
    return root / f"models--{ST_REPO.replace('/', '--')}" / "snapshots" / "0123abc"


@pytest.fixture(scope="session")
def st_out(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("st")
    # the scheme is forced: whether auto ships an int8 file depends on this CPU's timings, and
    # these tests check the layout and the loaders of an output that has one
    return _compress(st_snapshot(_snapshot_dir(root)), root / "out", "--int8", "--int8-scheme", "dynamic")


@pytest.fixture(scope="session")
def pruned_out(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("st-pruned")
    # dead units + a size budget: FFN neurons and heads really go
    return _compress(st_snapshot(_snapshot_dir(root), dead_units=True), root / "out",
                     "--size-budget", "0.9", "--round-to", "1")

"""Issue 16 #1: reading an output directory never executes code and never widens trust.

`validate` and `reduce` take `trust_remote_code` / `allow_pickle` from the command line only,
and reload the original only from where the user says (a recorded zoo recipe or hub id is
fine; a recorded local path needs --original or --use-recorded-source; the directory itself
is never its own original). Real CLI processes on a real `compress` output whose manifest
was edited the way a hostile author would.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.reliability._cli import one_error_line, run_cli_process
from tests.reliability._sources import Sources


def _crafted(compressed: Path, tmp: Path, **reload: object) -> Path:
    d = tmp / "downloaded"
    shutil.copytree(compressed, d)
    for name in ("bmr_manifest.json",):
        m = json.loads((d / name).read_text())
        m["reload"].update(reload)
        m.setdefault("settings", {}).update(allow_pickle=True, trust_remote_code=True)
        (d / name).write_text(json.dumps(m))
    return d


@pytest.fixture
def evil_snapshot(sources: Sources, tmp_path: Path) -> tuple[Path, Path]:
    """The remote-code snapshot, whose modeling file writes a marker when it is imported."""
    snap = tmp_path / "evil"
    shutil.copytree(sources.remote, snap)
    marker = tmp_path / "pwned"
    code = (snap / "modeling_gnnet.py").read_text()
    (snap / "modeling_gnnet.py").write_text(f"open({str(marker)!r}, 'w').close()\n" + code)
    (snap / "configuration_gnnet.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n" + (snap / "configuration_gnnet.py").read_text())
    return snap, marker


@pytest.mark.parametrize("command", ["validate", "reduce"])
def test_recorded_remote_code_never_runs(command: str, compressed: Path, evil_snapshot: tuple[Path, Path],
                                         sources: Sources, tmp_path: Path) -> None:
    snap, marker = evil_snapshot
    d = _crafted(compressed, tmp_path, source=str(snap), trust_remote_code=True, allow_pickle=True)
    argv = [command, str(d)] + (["--out", str(tmp_path / "r")] if command == "reduce" else [])
    r = run_cli_process(argv, sources.cache)
    assert r.returncode == 2, r.stderr
    assert "--original" in one_error_line(r)
    assert not marker.exists(), "code from the output directory's source ran"
    # confirming the recorded path does not confirm its code: trust comes from the command line
    r = run_cli_process([*argv, "--use-recorded-source"], sources.cache)
    assert r.returncode == 2, r.stderr
    assert "--trust-remote-code" in one_error_line(r)
    assert not marker.exists(), "code from the output directory's source ran"


@pytest.mark.parametrize("where", [pytest.param("itself", marks=pytest.mark.slow), "inside"])
def test_directory_is_never_its_own_original(where: str, compressed: Path, sources: Sources,
                                             tmp_path: Path) -> None:
    d = tmp_path / "downloaded"
    src = str(d) if where == "itself" else str(d / "model.safetensors")
    d = _crafted(compressed, tmp_path, source=src)
    for extra in (["--use-recorded-source"], ["--original", src]):
        r = run_cli_process(["validate", str(d), *extra], sources.cache)
        assert r.returncode == 2, r.stderr
        assert "itself" in one_error_line(r)


def test_recorded_zoo_source_still_validates(compressed: Path, sources: Sources, tmp_path: Path) -> None:
    """The default case needs no flags: a zoo recipe (or hub id) needs no remote code or pickle."""
    d = tmp_path / "copy"
    shutil.copytree(compressed, d)
    r = run_cli_process(["validate", str(d), "--json"], sources.cache)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["passed"] is True

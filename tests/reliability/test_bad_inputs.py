"""Every bad input is one line on stderr, exit code 2, no traceback, output untouched.

Table-driven over tests/reliability/_cases.py; cases marked ``subprocess`` run through a real
``python -m bmr_compress.cli.main`` process, the rest through click's CliRunner (same code
path, in-process, for speed). The terminal summary prints the number of cases.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.reliability._cases import CASES as TABLE
from tests.reliability._cases import Case, Spec
from tests.reliability._cases_trust import TRUST_CASES
from tests.reliability._cli import log_lines
from tests.reliability._sources import Sources

REPO = Path(__file__).resolve().parents[2]
CASES: list[Case] = TABLE + TRUST_CASES  # issue #22's cases in their own file
SUBPROCESS_RUNS: list[str] = []  # case ids run through a real process (printed in the summary)


def snapshot(path: Path | None) -> object:
    """Comparable state of a path: None (absent), a file digest, or {relpath: digest} for a dir."""
    if path is None or not os.path.lexists(path):
        return None
    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    return {str(p.relative_to(path)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
            for p in sorted(path.rglob("*"))}


def siblings(out: Path | None) -> set[str]:
    """Hidden staging / checkpoint entries `.<out>.*` beside the output directory."""
    if out is None or not out.parent.is_dir():
        return set()
    return {p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")}


def run_cli(spec: Spec, monkeypatch: pytest.MonkeyPatch, sources: Sources) -> tuple[int, str]:
    env = {"BMR_COMPRESS_CACHE": str(sources.cache), **spec.env}
    if spec.subprocess:
        SUBPROCESS_RUNS.append(" ".join(spec.argv[:1]))
        full = {**os.environ, **env, "PYTHONPATH": str(REPO)}
        r = subprocess.run([sys.executable, "-m", "bmr_compress.cli.main", *spec.argv], capture_output=True,
                           text=True, env=full, cwd=str(REPO), timeout=300)
        return r.returncode, r.stderr + r.stdout
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    from bmr_compress.cli.main import cli

    r = CliRunner().invoke(cli, spec.argv)
    if r.exception is not None and not isinstance(r.exception, SystemExit):  # not a clean exit
        raise AssertionError(f"CLI raised {type(r.exception).__name__}: {r.exception}")
    return r.exit_code, r.stderr + r.stdout


def _params() -> list:
    return [pytest.param(c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=c.known_bug)] if c.known_bug
                         else []) for c in CASES]


@pytest.mark.parametrize("case", _params())
def test_bad_input(case: Case, sources: Sources, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "w"
    work.mkdir()
    spec = case.make(sources, work)
    watched = [spec.out, *spec.touch]
    before = [snapshot(p) for p in watched]
    before_siblings = siblings(spec.out)
    code, output = run_cli(spec, monkeypatch, sources)
    lines = log_lines(output)
    assert code == 2, f"{case.id}: exit {code}, output:\n{output}"
    assert "Traceback" not in output, output
    assert len(lines) == 1 and lines[0].startswith("error: "), f"{case.id}: not one error line:\n{output}"
    for want in spec.expect:
        assert want.lower() in lines[0].lower(), f"{case.id}: {want!r} not in {lines[0]!r}"
    for unwanted in spec.absent:
        assert unwanted.lower() not in output.lower(), f"{case.id}: {unwanted!r} in {output!r}"
    assert [snapshot(p) for p in watched] == before, f"{case.id}: output/input changed"
    assert siblings(spec.out) == before_siblings, f"{case.id}: left {siblings(spec.out) - before_siblings}"
    assert not Path("/tmp/bmr-pwned").exists(), "a pickle payload ran"


def test_case_table_covers_every_category() -> None:
    categories = {c.what for c in CASES}
    assert categories == {
        "missing path", "truncated/corrupted safetensors", "truncated/corrupted ONNX", "truncated/corrupted config",
        "shape/dtype vs config", "NaN/Inf in weights", "pickle checkpoint", "trust_remote_code",
        "malformed repo id/revision", "hub unreachable/offline miss", "output directory", "unsupported layer type",
        "recipe", "data file", "code named by the files", "overwrite", "numeric option",
    }
    assert len({c.id for c in CASES}) == len(CASES)


def test_debug_shows_the_traceback(sources: Sources, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bmr_compress.cli.main import cli
    from bmr_compress.errors import InputError

    monkeypatch.setenv("BMR_COMPRESS_CACHE", str(sources.cache))
    r = CliRunner().invoke(cli, ["compress", str(tmp_path / "nope.safetensors"), "--out", str(tmp_path / "o"),
                                 "--debug"])
    assert isinstance(r.exception, InputError)  # re-raised for Python to print the traceback

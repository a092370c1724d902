"""Session sources for the reliability suite and the bad-input case count in the summary."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability._sources import Sources, build_sources


@pytest.fixture(autouse=True, scope="session")
def _sigint_is_ctrl_c() -> Iterator[None]:
    """A shell that starts pytest in the background sets SIGINT to 'ignore', which children
    inherit: the Ctrl-C tests need the terminal's disposition, in this process and theirs."""
    old = signal.getsignal(signal.SIGINT)
    if old == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


@pytest.fixture(scope="session")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Sources:
    return build_sources(tmp_path_factory.mktemp("reliability-sources"))


@pytest.fixture(scope="session")
def compressed(sources: Sources, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real, validated `compress zoo:mlp-digits` output (tests copy it before changing it)."""
    from tests.reliability._cli import run_cli_process

    out = tmp_path_factory.mktemp("compressed") / "good"
    r = run_cli_process(["compress", "zoo:mlp-digits", "--out", str(out), "--steps", "5",
                         "--max-samples", "240"], sources.cache)
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture
def cache_env(sources: Sources, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sources]:
    monkeypatch.setenv("BMR_COMPRESS_CACHE", str(sources.cache))
    yield sources


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The slow kill matrix runs only when asked for (-m slow), like tests/cli/test_cli_slow.py."""
    marker = config.getoption("-m") or ""
    if "slow" in marker and "not slow" not in marker:
        return
    here = Path(__file__).parent
    skip = pytest.mark.skip(reason="slow tier: run with -m slow")
    for item in items:
        if item.get_closest_marker("slow") and here in Path(str(item.fspath)).parents:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from tests.reliability.test_bad_inputs import CASES, SUBPROCESS_RUNS

    ran = [r for r in terminalreporter.stats.get("passed", []) + terminalreporter.stats.get("failed", [])
           if "test_bad_input[" in r.nodeid]
    if ran:
        passed = sum(1 for r in terminalreporter.stats.get("passed", []) if "test_bad_input[" in r.nodeid)
        terminalreporter.write_line(f"bad-input cases: {len(CASES)} defined, {len(ran)} run, {passed} passed "
                                    f"({len(SUBPROCESS_RUNS)} through a real bmr-compress process)")

"""The core install works without the optional extras, and each extra's feature names it.

torch-pruning (`[graph]`), scikit-learn (`[digits]`) and matplotlib (`[plots]`) are extras:
the CLI, the compress path on a model with a family adapter and the report import none of
them, and a feature that needs one fails with one line naming the extra (plots are skipped
with a log line). The checks block the packages with a None entry in `sys.modules`, which
makes them look uninstalled to imports and to `importlib.util.find_spec` alike, so they hold
even though the test environment has them installed.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OPTIONAL = ("torch_pruning", "sklearn", "matplotlib")

BLOCKER = textwrap.dedent(f"""
    import sys
    BLOCKED = {OPTIONAL!r}
    # as if not installed: `import x` raises ModuleNotFoundError, importlib.util.find_spec
    # (how transformers and torch probe for packages) returns None
    for name in BLOCKED:
        sys.modules[name] = None

    def assert_none_imported():
        loaded = sorted(m for m, mod in sys.modules.items()
                        if m.split(".")[0] in BLOCKED and mod is not None)
        assert not loaded, loaded
""")


def _run(code: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([sys.executable, "-c", BLOCKER + textwrap.dedent(code)], cwd=ROOT,
                         capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, res.stdout + res.stderr
    return res


def test_blocker_really_blocks() -> None:
    res = subprocess.run([sys.executable, "-c", BLOCKER + "import sklearn"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "ModuleNotFoundError" in res.stderr


def test_cli_and_compress_path_import_no_optional_package(tmp_path: Path) -> None:
    """With the three packages missing, every module on the CLI's compress path imports,
    compress_ reduces a tiny BERT (family adapter) in memory, and a zoo digits recipe stops
    with one line naming the `[digits]` extra (exit 2). One interpreter for all three."""
    out = str(tmp_path / "out")
    res = _run("""
        import importlib
        import bmr_compress
        from bmr_compress.cli.main import main
        for name in ("compress", "reduce", "export", "validate", "inspect", "push", "zoo", "bench"):
            importlib.import_module(f"bmr_compress.cli.{name}")
        for name in ("bmr_compress.pipeline", "bmr_compress.pipeline.api",
                     "bmr_compress.algorithms.laplace_reduce", "bmr_compress.pipeline.finish",
                     "bmr_compress.pipeline.stages", "bmr_compress.pipeline.sources",
                     "bmr_compress.coupling", "bmr_compress.scoring", "bmr_compress.planning",
                     "bmr_compress.cutting", "bmr_compress.export", "bmr_compress.io",
                     "bmr_compress.zoo", "bmr_compress.export.report"):
            importlib.import_module(name)
        assert_none_imported()

        from bmr_compress.pipeline.config import CompressConfig, LaplaceSettings, PlanConfig
        from tests.tiny_models import text_inputs, tiny_bert

        model = tiny_bert()
        n0 = sum(p.numel() for p in model.parameters())
        batches = [text_inputs(8, 9, seed=s) for s in range(12)]
        config = CompressConfig(progress=False, plan=PlanConfig(round_to=1),
                                laplace=LaplaceSettings(tolerance=0.3, rounds=1,
                                                        recovery_steps=2))
        rec = bmr_compress.compress_(model, batches, config, task="embedding")
        assert rec.surgery.params_before == n0 and rec.rounds
        assert_none_imported()

        import contextlib, io
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            try:
                main(["compress", "zoo:mlp-digits", "--out", OUT])
            except SystemExit as e:
                code = e.code
        message = err.getvalue()
        assert code == 2, message
        assert "pip install 'bmr-compress[digits]'" in message and "Traceback" not in message
        assert_none_imported()
        print("OK")
    """.replace("OUT", repr(out)))
    assert "OK" in res.stdout


def _uninstall(monkeypatch: pytest.MonkeyPatch, package: str) -> None:
    """Make `package` and every submodule already imported look uninstalled (a submodule left
    in sys.modules would still import without its parent), restored after the test."""
    for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, package, None)


def test_missing_scikit_learn_names_the_digits_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from bmr_compress.errors import InputError
    from bmr_compress.io.digits import digits_split

    _uninstall(monkeypatch, "sklearn")
    with pytest.raises(InputError, match=r"pip install 'bmr-compress\[digits\]'"):
        digits_split(seed=1234567)  # a seed no other test caches


def test_missing_torch_pruning_names_the_graph_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from bmr_compress.errors import InputError
    from bmr_compress.coupling import discover_groups
    from tests.tiny_models import TinyMLP

    _uninstall(monkeypatch, "torch_pruning")
    with pytest.raises(InputError, match=r"TinyMLP.*pip install 'bmr-compress\[graph\]'"):
        discover_groups(TinyMLP(), torch.randn(2, 64))


def test_missing_matplotlib_skips_the_plots_with_a_log_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import json

    from torch import nn

    from bmr_compress.export.report import build_report, write_report

    report = build_report(source={"id": "tiny"}, settings={}, original=nn.Linear(6, 5),
                          compressed=nn.Linear(6, 3), validation={"passed": True, "checks": []},
                          files_before={}, stage_seconds={"load": 0.1})
    _uninstall(monkeypatch, "matplotlib")
    with caplog.at_level(logging.WARNING, logger="bmr_compress.export.report"):
        jpath, mpath = write_report(tmp_path, report, delta_lnz={"g": [0.1, -2.0]})
    assert json.loads(jpath.read_text())["plots"] == []
    assert not (tmp_path / "plots").exists() and mpath.is_file()
    assert "pip install 'bmr-compress[plots]'" in caplog.text

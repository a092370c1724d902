"""`compress` moves the survivors to their reduced means by default; --no-compensate does not."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from tests.reliability._sources import Sources


def _compress(out: Path, *extra: str) -> dict:
    from bmr_compress.cli.main import cli

    # a size budget forces units out even after a 5-step fit; --unstructured adds single zeros
    r = CliRunner().invoke(cli, ["compress", "zoo:mlp-digits", "--out", str(out), "--steps", "5",
                                 "--max-samples", "240", "--size-budget", "0.6", "--unstructured",
                                 *extra])
    assert r.exit_code in (0, 1), r.output  # 1: validation may reject a forced 40 % cut
    done = out if out.is_dir() else out.with_name(out.name + ".rejected")
    return {"report": json.loads((done / "report.json").read_text()),
            "md": (done / "report.md").read_text()}


def test_reduced_means_lower_the_calibration_error_and_can_be_switched_off(
        cache_env: Sources, tmp_path: Path) -> None:
    on = _compress(tmp_path / "on")
    rm = on["report"]["reduced_means"]
    assert rm["layers"] >= 2
    assert 0 <= rm["output_error_reduced"] < rm["output_error_zeroed"]
    assert "Reduced means:" in on["md"]
    off = _compress(tmp_path / "off", "--no-compensate")
    assert off["report"]["reduced_means"] is None and "Reduced means:" not in off["md"]
    assert off["report"]["parameters"]["compressed"] == on["report"]["parameters"]["compressed"]
    gate_on, gate_off = on["report"]["metric"]["gate"], off["report"]["metric"]["gate"]
    assert gate_on >= gate_off - 0.01, (gate_on, gate_off)


def test_flag_is_documented() -> None:
    from bmr_compress.cli.main import cli

    r = CliRunner().invoke(cli, ["compress", "--help"])
    text = " ".join(r.output.split())
    assert "--compensate / --no-compensate" in text and "reduced posterior mean" in text

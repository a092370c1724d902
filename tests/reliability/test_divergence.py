"""A diverging fine-tune (non-finite loss) stops with one clear line, exit code 2, nothing at
--out, and the last good state kept in the resumable checkpoint beside it.

The divergence is real: the CLI's own `finetune` call runs with its learning rate raised to
1e30 (Adam then moves every mean by ~1e30 in one step and the next forward overflows).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.reliability._killer import checkpoints
from tests.reliability._sources import Sources
from tests.reliability._cli import log_lines


def _finite_checkpoint(d: Path) -> bool:
    import torch
    from safetensors.torch import load_file

    files = list(d.glob("*.safetensors"))
    assert files, f"no checkpoint tensors in {d}"
    return all(bool(torch.isfinite(t).all()) for f in files for t in load_file(str(f)).values()
               if t.is_floating_point())


@pytest.fixture
def diverging(monkeypatch: pytest.MonkeyPatch) -> None:
    import bmr_compress.variational as var

    real = var.finetune

    def finetune(model, teacher, batches, settings):  # the real trainer, with a huge step size
        return real(model, teacher, batches, dataclasses.replace(settings, lr=1e30, log_var_lr=1e30,
                                                                 checkpoint_every=1))

    monkeypatch.setattr(var, "finetune", finetune)


def test_divergence_is_one_line_exit_2_and_keeps_last_good_state(
        diverging: None, cache_env: Sources, tmp_path: Path) -> None:
    from bmr_compress.cli.main import cli

    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["compress", "zoo:mlp-digits", "--out", str(out), "--steps", "12",
                                 "--max-samples", "200"])
    lines = log_lines(r.stderr)
    assert r.exit_code == 2, r.output
    assert len(lines) == 1 and lines[0].startswith("error: fine-tune diverged"), r.stderr
    assert "Traceback" not in r.output
    assert not out.exists(), "nothing is written to --out"
    assert not list(tmp_path.glob(".out.tmp-*")), "no staging directory is left"
    [ckpt] = checkpoints(out)
    assert str(ckpt) in lines[0], "the message says where the last good state is"
    assert _finite_checkpoint(ckpt), "the kept state holds only finite numbers"


def test_rerun_after_divergence_succeeds(cache_env: Sources, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from bmr_compress.cli.main import cli

    out = tmp_path / "out"
    argv = ["compress", "zoo:mlp-digits", "--out", str(out), "--steps", "12", "--max-samples", "200"]
    with monkeypatch.context() as m:
        import bmr_compress.variational as var

        real = var.finetune
        m.setattr(var, "finetune", lambda mo, t, b, s: real(mo, t, b, dataclasses.replace(
            s, lr=1e30, log_var_lr=1e30, checkpoint_every=1)))
        assert CliRunner().invoke(cli, argv).exit_code == 2
    r = CliRunner().invoke(cli, argv)
    assert r.exit_code == 0, r.stderr + r.stdout

"""A real 2-process torchrun (gloo) fine-tune equals the single-process run (same batches)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bmr_compress.variational import FinetuneSettings, finetune, load_posterior, wrap_
from tests.variational import ddp_case

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.distributed
@pytest.mark.slow  # torchrun start-up: 18-28 s on this shared 2-core machine
def test_torchrun_two_processes_match_single_process(tmp_path):
    cfg = tmp_path / "settings.json"
    cfg.write_text(json.dumps(ddp_case.SETTINGS))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "bmr_compress.variational.ddp", "--builder", "tests.variational.ddp_case:build",
           "--settings", str(cfg), "--out", str(tmp_path / "ddp")]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    fit = json.loads((tmp_path / "ddp" / "fit.json").read_text())
    assert fit["world_size"] == 2 and len(fit["history"]) == 4
    written = sorted(p.name for p in (tmp_path / "ddp").iterdir())
    assert written == ["fit.json", "posterior.safetensors"]  # rank 0 only, no stray files

    model, teacher, batches, spec = ddp_case.build()
    wrap_(model, spec)
    single = finetune(model, teacher, batches,
                      FinetuneSettings.from_dict(dict(ddp_case.SETTINGS, progress=False,
                                                      output_dir=str(tmp_path / "single"))))
    a = load_posterior(tmp_path / "ddp" / "posterior.safetensors")
    b = load_posterior(single.posterior_path)
    moved = 0.0
    model0, *_ = ddp_case.build()
    for k, t in b.tensors.items():
        torch.testing.assert_close(a.tensors[k].mu, t.mu, rtol=1e-4, atol=1e-5, msg=k)
        torch.testing.assert_close(a.tensors[k].log_var, t.log_var, rtol=1e-4, atol=1e-4, msg=k)
        moved = max(moved, float((t.mu - dict(model0.named_parameters())[k].detach()).abs().max()))
    for k, g in b.gates.items():
        torch.testing.assert_close(a.gates[k].mu, g.mu, rtol=1e-4, atol=1e-5)
    assert moved > 1e-4  # the fit really moved the weights, so agreement is not trivial
    for h1, h2 in zip(fit["history"], single.history):
        assert h1["data"] == pytest.approx(h2["data"], rel=1e-4)
        assert h1["loss"] == pytest.approx(h2["loss"], rel=1e-4)

"""A real 2-process torchrun (gloo, CPU) of `bmr-compress compress` on the default path equals
the one-process run: the same kept units and rounds, the same weights within float summation
order; only rank 0 writes, reports and logs progress."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["--max-samples", "96", "--rounds", "1", "--recovery-steps", "3", "--json"]


@pytest.mark.distributed
@pytest.mark.slow  # two torchrun processes start, then rank 0 exports and validates: ~1 min
def test_torchrun_compress_matches_one_process(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from tests.snapshots import bert_snapshot

    src = bert_snapshot(tmp_path / "snap", dead_units=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    logs = tmp_path / "logs"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "--log-dir", str(logs), "--redirects", "3",
           "-m", "bmr_compress.cli.main", "compress", str(src), "--out", str(tmp_path / "ddp"),
           *ARGS]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    rank_log = {(p.parent.name, p.name): p.read_text() for p in logs.rglob("*.log")}
    assert proc.returncode == 0, proc.stderr[-3000:] + rank_log.get(("0", "stderr.log"), "")[-3000:]
    result = json.loads(rank_log[("0", "stdout.log")])  # one JSON result, from rank 0
    assert result["passed"] and Path(result["out"]) == tmp_path / "ddp"
    assert rank_log[("1", "stdout.log")] == ""  # rank 1 prints no result
    assert "[bmr-compress]" in rank_log[("0", "stderr.log")]  # rank 0's progress lines
    assert "[bmr-compress]" not in rank_log[("1", "stderr.log")]  # rank 1: warnings only

    single = subprocess.run([sys.executable, "-m", "bmr_compress.cli.main", "compress", str(src),
                             "--out", str(tmp_path / "single"), *ARGS],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    # nothing else beside the outputs: no rank's scratch folder, lock or partial output left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp", "logs", "single", "snap"]

    two, one = (json.loads((tmp_path / d / "bmr_manifest.json").read_text())
                for d in ("ddp", "single"))
    assert {k: g["kept"] for k, g in two["groups"].items()} == {
        k: g["kept"] for k, g in one["groups"].items()}
    assert any(len(g["kept"]) < g["num_units"] for g in one["groups"].values())
    it2, it1 = (json.loads((tmp_path / d / "report.json").read_text())["iterative"]
                for d in ("ddp", "single"))
    assert it2["processes"] == 2 and "processes" not in it1  # the work really was shared
    r2, r1 = it2["rounds"], it1["rounds"]
    assert [r["removed_units"] for r in r2] == [r["removed_units"] for r in r1]
    assert r2[0]["nu"] == pytest.approx(r1[0]["nu"], rel=1e-6)
    assert r2[0]["distortion_after_recovery"] == pytest.approx(
        r1[0]["distortion_after_recovery"], rel=1e-4)
    w2, w1 = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("ddp", "single"))
    assert w2.keys() == w1.keys()
    for k, v in w1.items():
        torch.testing.assert_close(w2[k], v, rtol=1e-4, atol=1e-5, msg=k)

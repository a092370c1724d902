"""bmr_compress.compress_: the default path on a model object, in place, without files; the
CLI's directory path gives the same model with the same settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bmr_compress.errors import InputError
from bmr_compress.pipeline.config import CompressConfig, LaplaceSettings, PlanConfig
from tests.tiny_models import TinyMLP


def _batches(n: int = 1280, seed: int = 5) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 64, generator=g)
    return [{"pixel_values": x[i:i + 64]} for i in range(0, n, 64)]


CONFIG = CompressConfig(progress=False, plan=PlanConfig(round_to=1),
                        laplace=LaplaceSettings(tolerance=0.1, rounds=2, recovery_steps=5,
                                                recovery_lr=1e-3))


def test_compress_reduces_in_place_and_keeps_the_original(tmp_path: Path) -> None:
    import bmr_compress as bc

    torch.manual_seed(4)
    model = TinyMLP().eval()
    batches = _batches()
    x = batches[0]["pixel_values"]
    with torch.no_grad():
        y0 = model(pixel_values=x).clone()
    n0 = sum(p.numel() for p in model.parameters())
    before = list(tmp_path.iterdir())
    rec = bc.compress_(model, batches, CONFIG, task="classification")
    assert rec.model is model and rec.original is not model
    n1 = sum(p.numel() for p in model.parameters())
    assert n1 < n0 == sum(p.numel() for p in rec.original.parameters())
    assert rec.surgery.params_after == n1 and rec.surgery.params_before == n0
    kept = {name: g["kept"] for name, g in rec.surgery.groups.items()}
    assert kept == rec.plan.keep and any(len(k) < 37 for k in kept.values())
    with torch.no_grad():
        assert torch.equal(rec.original(pixel_values=x), y0)  # the original, untouched
        assert model(pixel_values=x).shape == y0.shape
    assert rec.final_distortion <= rec.tolerance == 0.1
    assert rec.config.laplace.tolerance == 0.1 and rec.rounds
    assert list(tmp_path.iterdir()) == before  # nothing written


def test_compress_refuses_what_it_cannot_do() -> None:
    import bmr_compress as bc

    with pytest.raises(InputError, match="variational"):
        bc.compress_(TinyMLP(), _batches(128), CompressConfig(posterior="variational"),
                     task="classification")
    with pytest.raises(InputError, match="at least one calibration batch"):
        bc.compress_(TinyMLP(), [], task="classification")


def test_in_memory_and_cli_paths_give_the_same_model(tmp_path: Path) -> None:
    """The same settings through `bmr-compress compress DIR` and through load_stage +
    compress_ on the loaded model: the same kept units and bit-identical weights."""
    from click.testing import CliRunner

    from bmr_compress.cli.main import cli
    from bmr_compress.pipeline import StageTimer, build_config, compress_, load_stage
    from bmr_compress.cutting import load_compressed
    from tests.snapshots import bert_snapshot

    src = bert_snapshot(tmp_path / "snap", dead_units=True)
    args = ["--max-samples", "96", "--rounds", "1", "--recovery-steps", "3"]
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["compress", str(src), "--out", str(out), *args])
    assert r.exit_code == 0, r.output
    manifest = json.loads((out / "bmr_manifest.json").read_text())
    report = json.loads((out / "report.json").read_text())

    config = build_config({"source": str(src), "max_samples": 96, "rounds": 1,
                           "recovery_steps": 3, "progress": True})
    source, data = load_stage(config, StageTimer())
    rec = compress_(source.model, data.train_batches, config, task=str(source.task),
                    example=data.heldout_batches[0])
    assert report["settings"]["tolerance"] == rec.tolerance
    assert report["parameters"]["compressed"] == sum(p.numel() for p in rec.model.parameters())
    assert report["parameters"]["compressed"] < report["parameters"]["original"]
    groups = manifest["groups"]
    assert {k: g["kept"] for k, g in groups.items()} == {
        k: g["kept"] for k, g in rec.surgery.groups.items()}
    on_disk = load_compressed(out).state_dict()
    mine = rec.model.state_dict()
    assert on_disk.keys() == mine.keys()
    assert all(torch.equal(on_disk[k], mine[k]) for k in mine)



def test_the_unit_prior_setting_reaches_the_decision() -> None:
    """config.plan.unit_prior picks the score the rounds decide with: the last round's ΔlnZ
    are the per-unit (ARD) scores by default and the per-layer ones with "layer"."""
    import copy
    import dataclasses

    import bmr_compress as bc

    torch.manual_seed(0)
    model = TinyMLP().eval()
    batches = _batches()
    out = {}
    for prior in ("ard", "layer"):
        cfg = dataclasses.replace(CONFIG, plan=PlanConfig(round_to=1, unit_prior=prior),
                                  laplace=dataclasses.replace(CONFIG.laplace, rounds=1))
        torch.manual_seed(0)
        rec = bc.compress_(copy.deepcopy(model), batches, cfg, task="regression")
        out[prior] = torch.cat([v for v in rec.delta_lnz.values()])
    assert not torch.equal(out["ard"], out["layer"])  # the two runs did not share a score
    assert rec.config.plan.unit_prior == "layer"

"""A compressed zoo model reloads in a fresh interpreter with nothing registered beforehand:
the manifest names its builder as ``"module:function"`` and importing that module registers
the zoo's surgery adapters (issue #14)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from bmr_compress.cutting import apply_plan_, save_compressed
from bmr_compress.planning import PlanSettings, make_plan
from bmr_compress.coupling import discover_groups
from bmr_compress.zoo.adapters import BUILDER
from bmr_compress.zoo.architectures import build_model

REPO = Path(__file__).resolve().parents[2]

# Runs in a new process: only load_compressed is imported, then the model is rebuilt from
# the directory alone and its outputs on the saved inputs are written next to them.
CHILD = """
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from bmr_compress.coupling.adapters import ADAPTERS
from bmr_compress.cutting.saved import ARCHITECTURES, load_compressed

d = Path(sys.argv[1])
assert not ARCHITECTURES, ARCHITECTURES
assert "bmr_compress.zoo.adapters" not in sys.modules
zoo_adapters = [c for c in ADAPTERS if c.startswith("bmr_compress.zoo")]
assert not zoo_adapters, zoo_adapters
model = load_compressed(d)
with torch.no_grad():
    out = model(load_file(str(d.parent / "x.safetensors"))["x"])
save_file({"y": out.contiguous()}, str(d.parent / "y_child.safetensors"))
print(type(model).__name__, sorted(c.rpartition(".")[2] for c in ADAPTERS
                                  if c.startswith("bmr_compress.zoo")))
"""


def _compressed(arch: str, out: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut every other unit of a zoo model, save it with its builder; (inputs, outputs)."""
    torch.manual_seed(0)
    model = build_model(arch).eval()
    init = model.zoo_config_dict()
    x = torch.rand(3, 1, 8, 8)
    groups = discover_groups(model, {"pixel_values": x})
    scores = {g.name: torch.tensor([1.0 if j % 2 else -1.0 for j in range(g.num_units)]) for g in groups}
    plan = make_plan(groups, scores, None, PlanSettings(unstructured=False, round_to=1))
    record = apply_plan_(model, groups, plan)
    assert record.params_after < record.params_before
    save_compressed(model, record, out, architecture=BUILDER, init_config=init)
    with torch.no_grad():
        return x, model(x)


def _run_child(d: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", CHILD, str(d)], capture_output=True, text=True,
                          env=env, cwd=str(REPO), timeout=300)


@pytest.mark.parametrize("arch", ["mlp", "vit"])
def test_reload_in_a_fresh_interpreter(arch: str, tmp_path: Path) -> None:
    d = tmp_path / "out"
    x, want = _compressed(arch, d)
    manifest = json.loads((d / "bmr_manifest.json").read_text())
    assert manifest["architecture"] == {"kind": "builder", "builder": "bmr_compress.zoo.adapters:rebuild"}
    save_file({"x": x}, str(tmp_path / "x.safetensors"))
    r = _run_child(d)
    assert r.returncode == 0, r.stderr
    # importing the builder's module registered the zoo adapters (ViT's re-synced the heads)
    assert "['MLPMixer', 'ViT']" in r.stdout
    got = load_file(str(tmp_path / "y_child.safetensors"))["y"]
    torch.testing.assert_close(got, want)  # float32 defaults: another process may thread differently


def test_old_manifest_with_an_architecture_name_still_reloads(tmp_path: Path) -> None:
    """Outputs written before builder references name the zoo builder "bmr_zoo"."""
    d = tmp_path / "out"
    x, want = _compressed("mixer", d)
    path = d / "bmr_manifest.json"
    manifest = json.loads(path.read_text())
    manifest["architecture"] = {"kind": "registered", "name": "bmr_zoo"}
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    save_file({"x": x}, str(tmp_path / "x.safetensors"))
    r = _run_child(d)
    assert r.returncode == 0, r.stderr
    torch.testing.assert_close(load_file(str(tmp_path / "y_child.safetensors"))["y"], want)


def test_builder_must_be_importable(tmp_path: Path) -> None:
    from bmr_compress.errors import UnsupportedModelError
    from bmr_compress.cutting.saved import builder_from_ref

    with pytest.raises(UnsupportedModelError, match="cannot be imported"):
        builder_from_ref("bmr_compress.zoo.adapters:no_such_builder")
    with pytest.raises(UnsupportedModelError, match="module:function"):
        builder_from_ref("rebuild")

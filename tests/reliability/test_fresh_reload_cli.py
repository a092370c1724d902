"""A real `compress zoo:mlp-digits` output reloads with `load_compressed` in a fresh Python
process with nothing imported or registered beforehand (issue #14: the manifest names its
builder as "module:function")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

REPO = Path(__file__).resolve().parents[2]

CHILD = """
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from bmr_compress.cutting import load_compressed

d, io = Path(sys.argv[1]), Path(sys.argv[2])
m = load_compressed(d)
with torch.no_grad():
    y = m(load_file(str(io / "x.safetensors"))["x"])
save_file({"y": y.contiguous()}, str(io / "y.safetensors"))
"""


def test_compress_output_reloads_in_a_fresh_process(compressed: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    from bmr_compress.cutting import load_compressed

    manifest = json.loads((compressed / "bmr_manifest.json").read_text())
    assert manifest["architecture"] == {"kind": "builder", "builder": "bmr_compress.zoo.adapters:rebuild"}
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    save_file({"x": x}, str(tmp_path / "x.safetensors"))
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-c", CHILD, str(compressed), str(tmp_path)],
                       capture_output=True, text=True, env=env, cwd=str(REPO), timeout=300)
    assert r.returncode == 0, r.stderr
    got = load_file(str(tmp_path / "y.safetensors"))["y"]
    with torch.no_grad():
        here = load_compressed(compressed)(x)
    torch.testing.assert_close(got, here)  # the same model in this process
    sess = ort.InferenceSession(str(compressed / "model.onnx"), providers=["CPUExecutionProvider"])
    onnx_out = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got.numpy(), onnx_out, rtol=1e-3, atol=1e-4)  # the validated export

"""compress -> export -> validate -> report on tiny models, shared by the export tests."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bmr_compress.export import (
    ValidationSettings,
    build_report,
    export_onnx,
    export_safetensors,
    quantize_int8,
    validate,
    write_report,
)
from bmr_compress.export.onnx_export import OnnxArtifact
from bmr_compress.export.validation import ValidationResult
from tests.tiny_models import TRANSFORMER_BUILDERS, inputs_for

TASKS = {"bert": "embedding", "gpt2": "causal_lm", "vit": "classification", "cnn": "classification"}
# Default gates (cosine, perplexity ratio) and short timing. Exception: untrained tiny
# classifiers have near-tied logits, so top-1 agreement is noise there; that gate is
# exercised in test_gate.py instead.
FLOW = ValidationSettings(latency_runs=5, latency_warmup=1, min_top1_agreement=0.0)


def digits_cnn() -> nn.Module:
    from bmr_compress.zoo import LeNet5
    from bmr_compress.zoo.architectures import LeNet5Config

    torch.manual_seed(0)
    return LeNet5(LeNet5Config(conv_channels=(7, 13), fc_widths=(37, 29))).eval()


def build(name: str) -> nn.Module:
    """The tiny model with every second neuron/filter/head near-silent (see with_dead_units_)."""
    from tests.export._surgery import with_dead_units_

    model = digits_cnn() if name == "cnn" else TRANSFORMER_BUILDERS[name]()
    return with_dead_units_(model, sample_for(name))


def sample_for(name: str, batch: int = 2, seed: int = 1) -> dict[str, torch.Tensor]:
    if name == "cnn":
        return {"pixel_values": digits_batch(batch, seed)[0]}
    return inputs_for(name, batch=batch, seed=seed)


def digits_batch(n: int, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    sl = slice(offset * n, offset * n + n)
    return torch.tensor(x[sl] / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8), torch.tensor(y[sl])


def heldout(name: str) -> list[dict[str, torch.Tensor]]:
    if name == "cnn":
        return [{"pixel_values": x, "labels": y} for x, y in (digits_batch(16, k) for k in range(10, 13))]
    batches = [inputs_for(name, batch=4, seed=100 + k) for k in range(3)]
    if name == "vit":
        for k, b in enumerate(batches):
            b["labels"] = torch.arange(4) % 5 + k % 2
    return batches


@dataclass
class Flow:
    name: str
    original: nn.Module
    compressed: nn.Module
    out: Path
    onnx: OnnxArtifact
    original_onnx: OnnxArtifact
    result: ValidationResult
    report: dict[str, Any]


def run_flow(name: str, root: Path, compress, settings: ValidationSettings = FLOW, *, int8: bool = False) -> Flow:
    """`compress(model, name, sample) -> model` does the physical compression."""
    times: dict[str, float] = {}
    t = time.perf_counter()
    original = build(name)
    sample = sample_for(name)
    compressed = compress(copy.deepcopy(original), name, sample)
    times["compress"] = time.perf_counter() - t
    out, base = root / "out", root / "baseline"
    t = time.perf_counter()
    meta = {"source": f"tiny-{name}", "revision": "local", "tool_version": "test", "manifest_sha256": "0" * 64}
    st_path = export_safetensors(compressed, out, meta)
    st_orig = export_safetensors(original, base, meta)
    art = export_onnx(compressed, out / "model.onnx", sample)
    art0 = export_onnx(original, base / "model.onnx", sample)
    q = quantize_int8(art.path, out / "model_int8.onnx") if int8 else None
    times["export"] = time.perf_counter() - t
    t = time.perf_counter()
    res = validate(original, compressed, onnx_path=art.path, original_onnx_path=art0.path,
                   sample_inputs=sample, heldout_batches=heldout(name), task=TASKS[name],
                   settings=settings, int8_path=q.path if q else None, raise_on_failure=False)
    times["validate"] = time.perf_counter() - t
    report = build_report(
        source={"id": f"tiny-{name}", "revision": "local", "task": TASKS[name]},
        settings={"validation": settings}, original=original, compressed=compressed,
        validation=res, files_before={"model.safetensors": st_orig.stat().st_size,
                                      "model.onnx": art0.file_bytes},
        stage_seconds=times, onnx=art,
    )
    from bmr_compress.io.integrity import INTEGRITY_KEY, file_hashes

    report[INTEGRITY_KEY] = file_hashes(out)  # as finish_stage seals what it validated
    write_report(out, report, delta_lnz=getattr(compressed, "bmr_scores", None))
    if res.passed:  # as finish_stage: a real validation signs its record (push checks it)
        from bmr_compress.io.integrity import seal_report_file

        seal_report_file(out)
    assert st_path.exists()
    return Flow(name, original, compressed, out, art, art0, res, report)

"""Export stage (docs/INTERNALS.md §4): safetensors, ONNX, int8, validation on onnxruntime, report.

Importing this package does not import torch; names resolve lazily on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from bmr_compress import shadow_guard

_EXPORTS = {
    "export_safetensors": "safetensors_export", "load_state_dict": "safetensors_export",
    "read_metadata": "safetensors_export",
    "export_onnx": "onnx_export", "IoSpec": "onnx_export", "OnnxArtifact": "onnx_export",
    "infer_io_spec": "onnx_export", "ort_max_ir_version": "onnx_export", "ort_max_opset": "onnx_export",
    "quantize_int8": "quantize",
    "validate": "gate", "ValidationResult": "validation", "ValidationSettings": "validation",
    "Check": "validation", "make_inputs_like": "validation",
    "check_st_embeddings": "validation_checks",
    "task_metric": "metrics", "measure_latency": "latency", "cpu_session": "latency",
    "make_pairs": "retrieval", "onnx_encoder": "retrieval", "retrieval_metrics": "retrieval",
    "retention": "retrieval", "ranks": "retrieval", "reciprocal_ranks": "retrieval",
    "retrieval_ranks": "retrieval", "paired_retention_se": "retrieval",
    "retrieval_pairs": "retention", "RetrievalRetention": "retention", "cpu_info": "cpu",
    "match_initializers": "mixed_precision", "quantize_mixed": "mixed_precision",
    "build_report": "report", "write_report": "report", "sparsity_stats": "report",
    "param_count": "report",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
shadow_guard(__name__, _EXPORTS)

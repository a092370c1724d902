"""What a sentence-transformers folder does after the transformer, read from its files
(modules.json, the pooling config, sentence_bert_config.json). Used by export (which
copies and replays the layout) and by the hub model card.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# where sentence-transformers' ONNX backend finds the models: the root files themselves
# (`backend="onnx"` takes ./model.onnx first; the int8 one by model_kwargs file_name). No
# copies under onnx/: a second model.onnx made push upload every file twice and made the
# ONNX loaders warn about several files with the standard name.
ST_ONNX, ST_INT8 = "model.onnx", "model.int8.onnx"
_POOLING_MODES = ("cls_token", "max_tokens", "mean_tokens", "mean_sqrt_len_tokens",
                  "weightedmean_tokens", "lasttoken")


@dataclass(frozen=True)
class StPipeline:
    """What a sentence-transformers folder does after the transformer."""

    modules: tuple[dict[str, Any], ...]
    pooling: str = "mean"  # cls | max | mean | mean_sqrt_len | weightedmean | lasttoken
    normalize: bool = False
    max_seq_length: int | None = None
    others: tuple[str, ...] = field(default_factory=tuple)  # module types we do not replay

    @property
    def replayable(self) -> bool:
        return not self.others and self.pooling in ("cls", "max", "mean", "mean_sqrt_len", "lasttoken")

    def describe(self) -> str:
        steps = [f"{self.pooling} pooling"] + (["L2 normalisation"] if self.normalize else [])
        steps += list(self.others)
        return " → ".join(steps) + (f" (max {self.max_seq_length} tokens)" if self.max_seq_length else "")


def read_st_pipeline(directory: str | Path | None) -> StPipeline | None:
    """The pooling/normalisation of a sentence-transformers folder; None when not one."""
    if directory is None or not (Path(directory) / "modules.json").is_file():
        return None
    d = Path(directory)
    modules = json.loads((d / "modules.json").read_text())
    pooling, normalize, others = "mean", False, []
    for m in modules:
        kind = str(m.get("type", "")).rsplit(".", 1)[-1]
        if kind == "Pooling":
            cfg_path = d / m.get("path", "") / "config.json"
            cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
            pooling = _pooling_mode(cfg)
        elif kind == "Normalize":
            normalize = True
        elif kind != "Transformer":
            others.append(kind)
    max_len = None
    sb = d / "sentence_bert_config.json"
    if sb.is_file():
        max_len = json.loads(sb.read_text()).get("max_seq_length")
    return StPipeline(tuple(modules), pooling, normalize, max_len, tuple(others))


def _pooling_mode(cfg: dict[str, Any]) -> str:
    """Pooling name from a 1_Pooling/config.json (boolean flags, or ST 5+'s ``pooling_mode``)."""
    names = {"cls_token": "cls", "cls": "cls", "max_tokens": "max", "max": "max",
             "mean_tokens": "mean", "mean": "mean", "mean_sqrt_len_tokens": "mean_sqrt_len",
             "mean_sqrt_len": "mean_sqrt_len", "weightedmean_tokens": "weightedmean",
             "weightedmean": "weightedmean", "lasttoken": "lasttoken"}
    if isinstance(cfg.get("pooling_mode"), str):
        return names.get(str(cfg["pooling_mode"]), str(cfg["pooling_mode"]))
    for mode in _POOLING_MODES:
        if cfg.get(f"pooling_mode_{mode}"):
            return names[mode]
    return "mean"

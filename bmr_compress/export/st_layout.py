"""Companion files of an export: the source's tokenizer files and sentence-transformers layout.

A source folder with ``modules.json`` is a sentence-transformers model (Transformer → Pooling
[→ Normalize ...]); its output is one too: modules.json, sentence_bert_config.json,
config_sentence_transformers.json and every module folder (``1_Pooling/``, ``2_Normalize``,
...) are copied, the pooling config's width follows the exported model, and the ONNX files
are also placed where sentence-transformers' ONNX backend looks (``onnx/model.onnx``; the
int8 model at ``onnx/model_qint8.onnx``, chosen with ``model_kwargs={"file_name": ...}``).

Tokenizer files are copied verbatim from the source (a tokenizer re-saved after our run
would carry run-specific keys such as ``local_files_only``, ``is_local`` or the calibration
``max_length``); a written ``tokenizer_config.json`` is cleaned of such keys either way.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

ST_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.txt", "vocab.json", "merges.txt", "tokenizer.model", "spiece.model",
    "sentencepiece.bpe.model", "preprocessor_config.json",
)
# keys a tokenizer picks up from how it was loaded or called, never from its files
RUN_KEYS = ("local_files_only", "is_local", "_commit_hash", "cache_dir", "token", "use_auth_token",
            "revision", "force_download", "subfolder", "trust_remote_code", "max_length",
            "truncation", "padding", "stride", "return_tensors")
ST_ONNX, ST_INT8 = "onnx/model.onnx", "onnx/model_qint8.onnx"
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


def pool(hidden: np.ndarray, mask: np.ndarray, st: StPipeline) -> np.ndarray:
    """Sentence embeddings (B, H) from token states (B, T, H) as the folder's modules do."""
    m = mask.astype(hidden.dtype)[..., None]  # (B, T, 1)
    if st.pooling == "cls":
        out = hidden[:, 0]
    elif st.pooling == "max":
        out = np.where(m > 0, hidden, -1e9).max(axis=1)
    elif st.pooling == "lasttoken":
        last = mask.sum(axis=1).astype(int) - 1
        out = hidden[np.arange(len(hidden)), np.maximum(last, 0)]
    else:
        s = (hidden * m).sum(axis=1)
        n = np.clip(m.sum(axis=1), 1e-9, None)
        out = s / (np.sqrt(n) if st.pooling == "mean_sqrt_len" else n)
    if st.normalize:
        out = out / np.clip(np.linalg.norm(out, axis=1, keepdims=True), 1e-12, None)
    return out


def clean_tokenizer_config_(path: Path, source: Path | None = None) -> list[str]:
    """Drop run-specific keys (RUN_KEYS) that the source's own file does not hold."""
    if not path.is_file():
        return []
    cfg = json.loads(path.read_text())
    orig = json.loads(source.read_text()) if source is not None and source.is_file() else {}
    dropped = [k for k in RUN_KEYS if k in cfg and orig.get(k, object()) != cfg[k]]
    for k in dropped:
        del cfg[k]
    if dropped:
        path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
    return dropped


def write_companions_(src_dir: str | Path | None, out_dir: str | Path, *,
                      sentence_transformers: bool = True, hidden_size: int | None = None,
                      tokenizer: Any = None) -> list[str]:
    """Copy the source's tokenizer files verbatim and, for a sentence-transformers source
    (unless `sentence_transformers=False`), its module files; returns the relative paths
    written. Safe to call when `src_dir` is None."""
    out = Path(out_dir)
    written: list[str] = []
    if src_dir is not None:
        src = Path(src_dir)
        for name in TOKENIZER_FILES:
            if (src / name).is_file():
                shutil.copy2(src / name, out / name)
                written.append(name)
        if sentence_transformers and (src / "modules.json").is_file():
            written += _copy_st_files(src, out, hidden_size)
    special = getattr(tokenizer, "special_tokens_map", None)
    if special and hasattr(tokenizer, "tokenize") and not (out / "special_tokens_map.json").is_file():
        # transformers 5 no longer writes it; older loaders and sentence-transformers 2.x read it
        (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
        written.append("special_tokens_map.json")
    src_tok = Path(src_dir) / "tokenizer_config.json" if src_dir is not None else None
    dropped = clean_tokenizer_config_(out / "tokenizer_config.json", src_tok)
    if dropped:
        log.info("tokenizer_config.json: dropped run-specific keys %s", dropped)
    return written


def _copy_st_files(src: Path, out: Path, hidden_size: int | None) -> list[str]:
    written = []
    for name in ST_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, out / name)
            written.append(name)
    for m in json.loads((src / "modules.json").read_text()):
        rel = str(m.get("path", ""))
        if not rel or ".." in Path(rel).parts or Path(rel).is_absolute():
            continue  # the Transformer module lives at the top level
        dst = out / rel
        dst.mkdir(parents=True, exist_ok=True)
        if (src / rel).is_dir():
            for f in sorted((src / rel).rglob("*")):
                if f.is_file():
                    (dst / f.relative_to(src / rel)).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(f, dst / f.relative_to(src / rel))
                    written.append(str(Path(rel) / f.relative_to(src / rel)))
    pcfg = next((out / m["path"] / "config.json" for m in json.loads((src / "modules.json").read_text())
                 if str(m.get("type", "")).endswith("Pooling") and m.get("path")), None)
    if pcfg is not None and pcfg.is_file() and hidden_size is not None:
        cfg = json.loads(pcfg.read_text())
        for key in ("word_embedding_dimension", "embedding_dimension"):
            if key in cfg and cfg[key] != hidden_size:
                cfg[key] = hidden_size
        pcfg.write_text(json.dumps(cfg, indent=2) + "\n")
    return written


def place_st_onnx_(out_dir: str | Path, onnx_path: Path, int8_path: Path | None = None) -> list[str]:
    """Hard-link (else copy) the ONNX files to where sentence-transformers' ONNX backend looks."""
    out = Path(out_dir)
    placed = []
    for src, rel in ((onnx_path, ST_ONNX), (int8_path, ST_INT8)):
        if src is None:
            continue
        dst = out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.unlink(missing_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
        data = src.with_name(src.name + ".data")
        if data.is_file():  # external data keeps its name, beside the model
            shutil.copy2(data, dst.with_name(data.name))
        placed.append(rel)
    return placed


def texts_from_batch(tokenizer: Any, batch: dict[str, Any], n: int = 8) -> list[str]:
    """Up to `n` texts back from a token batch (the held-out examples, as text)."""
    ids = batch["input_ids"][:n]
    texts = tokenizer.batch_decode(ids.tolist() if hasattr(ids, "tolist") else ids,
                                   skip_special_tokens=True)
    return [t for t in texts if t.strip()] or ["a short text"]

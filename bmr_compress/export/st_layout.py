"""Companion files of an export: the source's tokenizer files and sentence-transformers layout.

A source folder with ``modules.json`` is a sentence-transformers model (Transformer → Pooling
[→ Normalize ...]); its output is one too: modules.json, sentence_bert_config.json,
config_sentence_transformers.json and every module folder (``1_Pooling/``, ``2_Normalize``,
...) are copied, the pooling config's width follows the exported model, and the ONNX files
are where sentence-transformers' ONNX backend looks: ``model.onnx`` at the root (found
first), the int8 model ``model.int8.onnx`` chosen with ``model_kwargs={"file_name": ...}``.

Tokenizer files are copied verbatim from the source (a tokenizer re-saved after our run
would carry run-specific keys such as ``local_files_only``, ``is_local`` or the calibration
``max_length``); a written ``tokenizer_config.json`` is cleaned of such keys either way.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from bmr_compress.io.st_pipeline import ST_INT8, ST_ONNX, StPipeline, read_st_pipeline

log = logging.getLogger(__name__)

__all__ = ["ST_INT8", "ST_ONNX", "StPipeline", "read_st_pipeline", "pool", "write_companions_",
           "place_st_onnx_", "texts_from_batch", "clean_tokenizer_config_"]

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
    """Hard-link (else copy) the ONNX files to where sentence-transformers' ONNX backend looks
    (nothing to do when they are there already: the root files, `ST_ONNX` / `ST_INT8`)."""
    out = Path(out_dir)
    placed = []
    for src, rel in ((onnx_path, ST_ONNX), (int8_path, ST_INT8)):
        if src is None:
            continue
        dst = out / rel
        if dst.resolve() == src.resolve():
            placed.append(rel)
            continue
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

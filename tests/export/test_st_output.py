"""A sentence-transformers source gives a sentence-transformers output that reproduces the
tool's embeddings: SentenceTransformer(out) (torch; ONNX backend when optimum is installed)
and plain onnxruntime + tokenizer + the folder's pooling/normalisation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.snapshots import HIDDEN, SENTENCES, ST_MAX_SEQ


def _ort_embeddings(out: Path, texts: list[str], onnx_file: str = "model.onnx") -> np.ndarray:
    """The card's plain-onnxruntime recipe: tokenizer + mean pooling + L2 normalisation."""
    import onnxruntime as ort
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(out))
    max_len = json.loads((out / "sentence_bert_config.json").read_text())["max_seq_length"]
    enc = tok(texts, padding=True, truncation=True, max_length=max_len, return_tensors="np")
    sess = ort.InferenceSession(str(out / onnx_file), providers=["CPUExecutionProvider"])
    hidden = sess.run(None, {i.name: enc[i.name] for i in sess.get_inputs()})[0]
    m = enc["attention_mask"][..., None].astype(np.float32)
    emb = (hidden * m).sum(1) / np.clip(m.sum(1), 1e-9, None)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


def _st(out: Path, **kw):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(out), device="cpu", local_files_only=True, **kw)


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_layout_is_sentence_transformers(st_out: Path) -> None:
    for name in ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json",
                 "1_Pooling/config.json", "vocab.txt", "special_tokens_map.json", "tokenizer.json",
                 "tokenizer_config.json", "model.int8.onnx", "model.onnx"):
        assert (st_out / name).is_file(), name
    assert not (st_out / "onnx").exists()  # no second copy: push uploads each file once
    assert json.loads((st_out / "sentence_bert_config.json").read_text())["max_seq_length"] == ST_MAX_SEQ
    assert json.loads((st_out / "1_Pooling/config.json").read_text())["word_embedding_dimension"] == HIDDEN
    tok_cfg = json.loads((st_out / "tokenizer_config.json").read_text())
    for key in ("local_files_only", "is_local", "max_length"):
        assert key not in tok_cfg, key
    rep = json.loads((st_out / "report.json").read_text())
    check = next(c for c in rep["validation"]["checks"] if c["name"] == "sentence_transformers")
    assert check["passed"] and check["value"] >= 1 - 1e-4
    assert "mean pooling → L2 normalisation" in rep["sentence_transformers"]["pipeline"]


def _assert_st_matches(out: Path) -> None:
    st = _st(out)
    assert st.max_seq_length == ST_MAX_SEQ
    emb = st.encode(SENTENCES, convert_to_numpy=True)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    ref = _ort_embeddings(out, SENTENCES)
    assert _cos(emb, ref).min() >= 1 - 1e-4
    long = [" ".join(SENTENCES * 4)]  # longer than max_seq_length: truncated the same way
    assert _cos(st.encode(long, convert_to_numpy=True), _ort_embeddings(out, long)).min() >= 1 - 1e-4


def test_sentence_transformer_reproduces_tool_embeddings(st_out: Path) -> None:
    _assert_st_matches(st_out)


def test_sentence_transformer_on_pruned_output(pruned_out: Path) -> None:
    rep = json.loads((pruned_out / "report.json").read_text())
    assert rep["parameters"]["compressed"] < rep["parameters"]["original"]
    _assert_st_matches(pruned_out)


def test_int8_through_plain_onnxruntime(st_out: Path) -> None:
    q = _ort_embeddings(st_out, SENTENCES, "model.int8.onnx")
    assert _cos(q, _ort_embeddings(st_out, SENTENCES)).min() > 0.9


def test_sentence_transformer_onnx_backend(st_out: Path, pruned_out: Path) -> None:
    pytest.importorskip("optimum.onnxruntime", reason="optimum-onnx needs transformers<4.58")
    for out in (st_out, pruned_out):
        emb = _st(out, backend="onnx").encode(SENTENCES, convert_to_numpy=True)
        assert _cos(emb, _ort_embeddings(out, SENTENCES)).min() >= 1 - 1e-4


def test_automodel_on_pruned_output_gives_the_tool_outputs(pruned_out: Path) -> None:
    """Plain transformers loads the pruned folder strictly and matches model.onnx."""
    import onnxruntime as ort
    import torch
    from transformers import AutoModel, AutoTokenizer

    model, info = AutoModel.from_pretrained(str(pruned_out), output_loading_info=True)
    assert not info["mismatched_keys"]
    assert all(k.startswith("pooler.") for k in info["missing_keys"])
    enc = AutoTokenizer.from_pretrained(str(pruned_out))(SENTENCES, padding=True, truncation=True,
                                                         max_length=ST_MAX_SEQ, return_tensors="pt")
    with torch.no_grad():
        got = model.eval()(**enc).last_hidden_state.numpy()
    sess = ort.InferenceSession(str(pruned_out / "model.onnx"), providers=["CPUExecutionProvider"])
    want = sess.run(None, {i.name: enc[i.name].numpy() for i in sess.get_inputs()})[0]
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-3)

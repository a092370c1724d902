"""The default (Laplace) path end to end on a bare sentence-transformers snapshot (issue 12)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from click.testing import CliRunner

from tests.snapshots import st_snapshot


def test_default_path_removes_dead_units_and_reloads(tmp_path: Path) -> None:
    """No --data, no --posterior: tolerance-calibrated BMR removes the near-silent heads and
    FFN neurons the snapshot carries, the output validates, reloads with our loader, and
    sentence-transformers reads the same embeddings."""
    import torch
    from sentence_transformers import SentenceTransformer

    from bmr_compress.cli.main import cli
    from bmr_compress.cutting import load_compressed

    src = st_snapshot(tmp_path / "snap", dead_units=True)
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["compress", str(src), "--out", str(out), "--max-samples", "160",
                                 "--rounds", "2", "--recovery-steps", "3"])
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "report.json").read_text())
    assert rep["settings"]["posterior"] == "laplace"
    assert rep["iterative"]["method"].startswith("laplace")
    rounds = rep["iterative"]["rounds"]
    assert rounds and rounds[0]["removed_units"] > 0
    assert rep["parameters"]["compressed"] < rep["parameters"]["original"]
    assert rep["iterative"]["final_check_distortion"] <= rep["settings"]["tolerance"]
    assert rep["metric"]["compressed"]["cosine"] > 0.9
    # the kept rounds as operating points beside the original, timed here and scored by
    # retrieval retention on selection and held-out pairs; the recommended one is shipped
    curve = rep["operating_points"]
    labels = [p["label"] for p in curve["points"]]
    assert labels[0] == "original" and curve["metric"] == "retrieval MRR@10"
    kept = [r for r in rounds if not r.get("undone") and r["removed_units"]]
    assert [p["label"] for p in curve["points"] if p["precision"] == "fp32"
            and p["base"] != "original"] == [f"round {r['round']}" for r in kept]
    rec = [p for p in curve["points"] if p["recommended"]]
    assert len(rec) == 1 and rec[0]["label"] == curve["recommended"] and rec[0]["qualifies"]
    assert rec[0]["retention"]["selection"] >= 1 - curve["max_quality_loss"] - 1e-9
    assert rec[0]["file"] == "model.onnx"  # no int8 for a model this small unless asked
    assert rep["recommended"]["label"] == rec[0]["label"]
    assert all(p["median_ms"] > 0 for p in curve["points"])
    # scored fastest first: whatever is faster than the recommended one has its held-out
    # retention (it could dominate it); what is left unscored says why
    for p in curve["points"]:
        if p["speedup"] > rec[0]["speedup"] or p["base"] == rec[0]["base"]:
            assert 0 < p["retention"]["heldout"], p
        if not p["retention"]:
            assert p["reason"].startswith("not scored") and not p["qualifies"], p
    assert curve["evaluation"]["pairs"]["heldout"] >= 100
    assert (out / "candidates" / "original.onnx").is_file()
    assert any(c["name"] == "task_retention" and c["passed"] for c in rep["validation"]["checks"])
    assert (out / "plots" / "operating_points.png").is_file()
    assert "Operating points" in (out / "report.md").read_text()
    assert "recommended on" in r.output
    model = load_compressed(out)
    texts = ["Return the number of items.", "Open a file and return a stream object."]
    st = SentenceTransformer(str(out), device="cpu")
    a = st.encode(texts, convert_to_tensor=True)
    tok = st.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        h = model(**tok).last_hidden_state
    m = tok["attention_mask"].unsqueeze(-1).float()
    b = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)
    assert torch.allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_default_path_on_a_causal_lm(kind: str, tmp_path: Path) -> None:
    """The same default (no --data, no tolerance given) on a bare causal-LM snapshot: units go,
    the perplexity ratio stays within the gate, the output reloads with the tool's loader and
    gives the logits that were validated."""
    import torch

    from bmr_compress.cli.main import cli
    from bmr_compress.cutting import load_compressed
    from tests.snapshots import causal_lm_snapshot

    src = causal_lm_snapshot(tmp_path / "snap", kind)
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["compress", str(src), "--out", str(out), "--max-samples", "96",
                                 "--rounds", "1", "--recovery-steps", "3"])
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "report.json").read_text())
    assert rep["settings"]["posterior"] == "laplace" and rep["source"]["task"] == "causal_lm"
    assert rep["parameters"]["compressed"] < rep["parameters"]["original"]
    assert rep["metric"]["name"] == "perplexity_ratio" and rep["validation"]["passed"]
    model = load_compressed(out).eval()
    ids = torch.randint(5, 80, (1, 11), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    assert logits.shape == (1, 11, model.config.vocab_size) and torch.isfinite(logits).all()


@pytest.mark.parametrize("scheme", ["blockwise", "dynamic", None])
def test_int8_scheme_option_forces_or_measures(scheme: str | None, tmp_path: Path) -> None:
    """--int8-scheme blockwise writes MatMulNBits 8-bit weights and dynamic onnxruntime's
    MatMulInteger, whatever their speed; with auto (no scheme given) every scheme of the
    original and of each round is timed here, and model.int8.onnx exists only when one
    qualified (within the budget and faster than its own fp32 on this CPU)."""
    import onnx

    from bmr_compress.cli.main import cli

    src = st_snapshot(tmp_path / "snap", dead_units=True)
    out = tmp_path / "out"
    args = ["compress", str(src), "--out", str(out), "--max-samples", "96", "--rounds", "1",
            "--recovery-steps", "2", "--int8"] + (["--int8-scheme", scheme] if scheme else [])
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "report.json").read_text())
    pts = rep["operating_points"]["points"]
    if scheme is None:
        schemes = {p["scheme"] for p in pts if p["precision"] == "int8"}
        assert schemes == {"dynamic", "dynamic-per-tensor", "blockwise"}
        for p in pts:
            if p["precision"] == "int8" and not p["qualifies"]:
                assert p["reason"]
        shipped = [p for p in pts if p["file"] == "model.int8.onnx"]
        assert (out / "model.int8.onnx").is_file() == bool(shipped)
        if shipped:
            src_ms = next(q["median_ms"] for q in pts if q["label"] == shipped[0]["source"])
            assert shipped[0]["qualifies"] and shipped[0]["median_ms"] < src_ms
        return
    ops = {n.op_type for n in onnx.load(str(out / "model.int8.onnx")).graph.node}
    assert rep["settings"]["int8_scheme"] == scheme
    if scheme == "dynamic":
        assert "MatMulInteger" in ops and "MatMulNBits" not in ops
    else:
        assert "MatMulNBits" in ops and "MatMulInteger" not in ops
    assert {p["scheme"] for p in pts if p["precision"] == "int8"} == {scheme}
    assert rep["int8"]["metric"]["n"] > 0  # validated on held-out data either way


def test_unknown_int8_scheme_is_refused() -> None:
    from bmr_compress.errors import InputError
    from bmr_compress.pipeline.config import ExportConfig

    with pytest.raises(InputError, match="blockwise, dynamic"):
        ExportConfig(int8_scheme="fp4")

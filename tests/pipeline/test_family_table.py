"""Every family the tool claims, as a table that tests itself: one row per registered
transformers adapter (coupling.family_table, read from the registry, so a new adapter adds a
row), each a tiny in-process model through inspect -> compress -> export -> validate ->
reload (the tool's loader and, where the layout allows, plain transformers). The README's
table is the registry's, regenerated here.

Default tier: the stages as library calls (a few seconds a row). Slow tier: the same rows
through the CLI (`inspect`, `compress`, `validate`), about a minute each on 2 cores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from bmr_compress.coupling.adapters import adapter_for
from bmr_compress.coupling.family_table import BEGIN, END, markdown, supported
from tests.snapshots import family_snapshot
from tests.tiny_models import FAMILY_MODELS

ROWS = supported()
README = Path(__file__).resolve().parents[2] / "README.md"


def _cli(*args: str) -> str:
    from bmr_compress.cli.main import cli

    r = CliRunner().invoke(cli, list(args))
    assert r.exit_code == 0, r.output
    return r.output


def test_readme_table_is_the_registry():
    text = README.read_text()
    block = text[text.index(BEGIN): text.index(END) + len(END)]
    assert block == markdown(), "README family table is stale: paste coupling.family_table.markdown()"
    claimed = {r.model_type for r in ROWS}
    assert {"bert", "roberta", "xlm-roberta", "distilbert", "mpnet", "modernbert", "vit", "gpt2",
            "llama", "mistral", "qwen2"} <= claimed


def _task(model_type: str) -> str:
    return {"vit": "classification", "gpt2": "causal_lm", "llama": "causal_lm",
            "mistral": "causal_lm", "qwen2": "causal_lm"}.get(model_type, "embedding")


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.model_type)
def test_family_stages_in_process(row, tmp_path: Path) -> None:
    import onnxruntime as ort

    import bmr_compress as bc
    from bmr_compress.export import export_onnx, export_safetensors
    from bmr_compress.io.sources import LoadedSource
    from bmr_compress.pipeline.config import CompressConfig, LaplaceSettings, PlanConfig
    from bmr_compress.pipeline.inspect import inspect_source
    from bmr_compress.cutting import load_compressed, save_compressed
    from bmr_compress.cutting.hf_layout import transformers_layout
    from tests.export._surgery import with_dead_units_

    build = FAMILY_MODELS.get(row.model_type)
    if build is None:
        pytest.fail(f"family {row.model_type} is claimed but has no tiny model in "
                    "tests.tiny_models.FAMILY_MODELS")
    model = build()
    task = _task(row.model_type)
    batches = [_inputs(row.model_type, seed=s, seq=12) for s in range(6)]
    with_dead_units_(model, batches[0])
    info = inspect_source(LoadedSource(model, row.model_type, task, model.config, None, "tiny",
                                       None, {}, None))
    assert adapter_for(model).family == row.family and info["family_note"] is None
    names = {g["name"] for g in info["unit_groups"]}
    for i in range(model.config.num_hidden_layers):  # heads (or KV groups), neurons: every layer
        assert {f"layers.{i}.attention", f"layers.{i}.ffn"} <= names

    torch.manual_seed(0)
    config = CompressConfig(progress=False, plan=PlanConfig(round_to=1),
                            laplace=LaplaceSettings(tolerance=0.05, rounds=1, recovery_steps=1))
    rec = bc.compress_(model, batches, config, task=task)
    assert rec.surgery.params_after < rec.surgery.params_before
    heads = [g for g in rec.surgery.groups.values() if g["kind"] == "head"]
    if heads:  # with_dead_units_ silences every second head (not KV groups)
        assert any(len(g["kept"]) < g["num_units"] for g in heads), "no head was removed"

    x = _inputs(row.model_type, seed=9, seq=13)  # another shape than the export sample
    art = export_onnx(model, tmp_path / "model.onnx", batches[0])
    sess = ort.InferenceSession(str(art.path), providers=["CPUExecutionProvider"])
    feed = {i.name: x[i.name].numpy() for i in sess.get_inputs()}
    with torch.no_grad():
        mine = _out(model(**x))
    assert _rel(torch.from_numpy(np.asarray(sess.run(None, feed)[0])), mine) < 1e-4

    hf_model, layout = transformers_layout(model, batches[0])
    out = save_compressed(model, rec.surgery, tmp_path / "out",
                          extra={"transformers_layout": layout})
    if hf_model is not model:
        export_safetensors(hf_model, out, {"source": "tiny"})
    with torch.no_grad():
        assert _rel(_out(load_compressed(out)(**x)), mine) < 1e-5
        if layout["layout"] in ("exact", "padded"):
            plain = type(model).from_pretrained(str(out)).eval()
            assert _rel(_out(plain(**x)), mine) < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.model_type)
def test_family_end_to_end_cli(row, tmp_path: Path) -> None:
    from bmr_compress.cutting import load_compressed

    build = FAMILY_MODELS.get(row.model_type)
    if build is None:
        pytest.fail(f"family {row.model_type} is claimed but has no tiny model in "
                    "tests.tiny_models.FAMILY_MODELS")
    model = build()
    assert adapter_for(model).family == row.family
    snap = family_snapshot(tmp_path / "snap", model)

    info = json.loads(_cli("inspect", str(snap), "--json"))
    assert info.get("family_note") is None
    names = {g["name"] for g in info["unit_groups"]}
    for i in range(model.config.num_hidden_layers):  # heads (or KV groups), neurons
        assert {f"layers.{i}.attention", f"layers.{i}.ffn"} <= names

    out = tmp_path / "out"
    # a loose budget: this checks the family's CLI flow, so the cut model must be the one shipped
    _cli("compress", str(snap), "--out", str(out), "--max-samples", "48", "--rounds", "1",
         "--recovery-steps", "1", "--max-quality-loss", "0.5")
    rep = json.loads((out / "report.json").read_text())
    assert rep["validation"]["passed"]
    assert rep["parameters"]["compressed"] < rep["parameters"]["original"]
    _cli("validate", str(out), "--original", str(snap))

    again = load_compressed(out).eval()
    x = _inputs(row.model_type)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    wanted = [i.name for i in sess.get_inputs()]
    if "token_type_ids" in wanted:  # the snapshot's tokenizer gives them
        x["token_type_ids"] = torch.zeros_like(x["input_ids"])
    feed = {name: x[name].numpy() for name in wanted}
    onnx_out = torch.from_numpy(np.asarray(sess.run(None, feed)[0]))
    with torch.no_grad():
        mine = _out(again(**x))
        assert _rel(mine, onnx_out) < 1e-4
        layout = json.loads((out / "bmr_manifest.json").read_text())["transformers_layout"]
        assert layout["layout"] in ("exact", "padded")
        plain = type(model).from_pretrained(str(out)).eval()
        assert _rel(_out(plain(**x)), mine) < 1e-4


def _inputs(model_type: str, seed: int = 3, seq: int = 13) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    if model_type == "vit":
        return {"pixel_values": torch.randn(3, 3, 16, 16, generator=g)}
    ids = torch.randint(5, 80, (3, seq), generator=g)
    mask = torch.ones_like(ids)
    mask[-1, -4:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _out(o) -> torch.Tensor:
    return o.logits if getattr(o, "logits", None) is not None else o.last_hidden_state


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def test_a_family_without_adapter_gets_a_plain_inspect_line() -> None:
    """A transformers family no adapter reads (ELECTRA here): inspect says heads are not
    prunable and where its groups come from, instead of listing odd groups silently."""
    from transformers import ElectraConfig, ElectraModel

    from bmr_compress.io.sources import LoadedSource
    from bmr_compress.pipeline.inspect import inspect_source

    torch.manual_seed(0)
    cfg = ElectraConfig(vocab_size=97, embedding_size=36, hidden_size=36, num_hidden_layers=2,
                        num_attention_heads=3, intermediate_size=37, max_position_embeddings=64)
    model = ElectraModel(cfg).eval()
    info = inspect_source(LoadedSource(model, "electra", "embedding", model.config, None, "tiny",
                                       None, {}, None))
    note = info["family_note"]
    assert note.startswith("family electra is not supported (no adapter yet")
    assert "attention heads are NOT prunable" in note and "dependency graph" in note
    assert not any(g["kind"] == "head" for g in info["unit_groups"])

"""bench/mpnet.py: layer dropping keeps the kept layers' function and reloads and exports;
the verdict helpers say which row keeps more of mpnet's quality at a latency."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bench import mpnet as M
from bench import mpnet_verdict as V
from tests.tiny_models import HEADS, HIDDEN, INTER, VOCAB


def _tiny_mpnet(layers: int):
    from transformers import MPNetConfig, MPNetModel

    cfg = MPNetConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=layers,
                      num_attention_heads=HEADS, intermediate_size=INTER,
                      max_position_embeddings=66, relative_attention_num_buckets=32)
    torch.manual_seed(0)
    model = MPNetModel(cfg, add_pooling_layer=False).eval()
    with torch.no_grad():  # a bias table that matters (it starts near zero)
        model.encoder.relative_attention_bias.weight.normal_(0.0, 1.0)
    return model


def _inputs(batch: int, seq: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(batch * 100 + seq)
    ids = torch.randint(3, VOCAB, (batch, seq), generator=g)
    mask = torch.ones_like(ids)
    mask[0, seq - 2:] = 0  # padding in one row
    return {"input_ids": ids, "attention_mask": mask}


def test_evenly_spaced_keeps_bin_centres():
    assert V.evenly_spaced(12, 6) == [0, 2, 4, 6, 8, 10]
    assert V.evenly_spaced(12, 4) == [1, 4, 7, 10]
    assert V.evenly_spaced(12, 12) == list(range(12))
    assert V.evenly_spaced(5, 1) == [2]
    with pytest.raises(ValueError):
        V.evenly_spaced(4, 5)


def test_drop_layers_is_the_kept_layers_and_leaves_the_original():
    from transformers import MPNetModel

    original = _tiny_mpnet(4)
    x = _inputs(2, 9)
    with torch.no_grad():
        before = original(**x).last_hidden_state
    dropped = M.drop_layers(original, [1, 3])
    # the same computation built from scratch: a 2-layer MPNet holding layers 1 and 3
    ref = MPNetModel(dropped.config, add_pooling_layer=False).eval()
    state = {k: v for k, v in original.state_dict().items() if ".layer." not in k}
    for new, old in enumerate([1, 3]):
        state.update({k.replace(f"encoder.layer.{old}.", f"encoder.layer.{new}."): v
                      for k, v in original.state_dict().items()
                      if k.startswith(f"encoder.layer.{old}.")})
    ref.load_state_dict(state)
    with torch.no_grad():
        got, want = dropped(**x).last_hidden_state, ref(**x).last_hidden_state
        assert torch.allclose(got, want, atol=1e-6)
        assert not torch.allclose(got, before, atol=1e-3)  # it did drop something
        assert torch.equal(original(**x).last_hidden_state, before)  # original untouched
    assert len(original.encoder.layer) == 4 and dropped.config.num_hidden_layers == 2
    assert original.config.num_hidden_layers == 4
    for bad in ([], [3, 1], [0, 4], [1, 1]):
        with pytest.raises(ValueError):
            M.drop_layers(original, bad)


def test_dropped_model_reloads_and_exports(tmp_path: Path):
    from transformers import MPNetModel

    from bmr_compress.export import cpu_session, export_onnx

    dropped = M.drop_layers(_tiny_mpnet(3), [0, 2])
    dropped.save_pretrained(tmp_path / "hf")
    again = MPNetModel.from_pretrained(tmp_path / "hf", add_pooling_layer=False).eval()
    x = _inputs(2, 11)  # another shape than the export sample below
    with torch.no_grad():
        want = dropped(**x).last_hidden_state
        assert torch.allclose(again(**x).last_hidden_state, want, atol=1e-6)
    path = export_onnx(dropped, tmp_path / "d.onnx", _inputs(1, 5), sparse=False).path
    sess = cpu_session(path)
    got = sess.run(None, {i.name: x[i.name].numpy() for i in sess.get_inputs()})[0]
    assert np.allclose(got, want.numpy(), atol=1e-4)


def _row(label: str, family: str, ms: float, ret: float, rr: list[float]) -> V.Row:
    return V.Row(label, family, Path(label), "mpnet", median_ms=ms, retention=ret, se=0.01,
                 rr=np.array(rr), mrr=float(np.mean(rr)), recall1=0.5, speedup=100 / ms)


def test_latency_verdicts_and_switching_statement():
    ref = _row("mpnet fp32", "mpnet", 100, 1.0, [1, 1, 0.5, 1])
    q8 = _row("mpnet + int8", "mpnet", 60, 0.95, [1, 0.5, 0.5, 1])
    drop = _row("mpnet 4 layers", "drop", 30, 0.6, [0.5, 0.5, 0.1, 0.5])
    sib = _row("MiniLM", "minilm", 20, 0.9, [1, 0.5, 0.5, 0.9])
    rows = [ref, q8, drop, sib]
    assert V.at_latency(rows, V.MPNET_FAMILIES, 61) is q8
    assert V.at_latency(rows, V.MPNET_FAMILIES, 30.5) is drop  # 3 % timing tolerance
    assert V.at_latency(rows, V.MPNET_FAMILIES, 10) is None
    assert V.dominated_by(rows, drop, ("minilm",)) == [sib]
    assert V.dominated_by(rows, q8, ("minilm",)) == []
    assert V.gap_se(ref.rr, ref.rr, ref.rr) == 0.0
    text = " ".join(V.sibling_statements(rows, ref))
    assert "no mpnet-derived row is that fast" in text
    assert "**Switching models is the better answer** wherever one of these would be the choice: " \
           "mpnet 4 layers" in text
    assert "Staying with mpnet" in text and "mpnet + int8" in text
    pending = "\n".join(V.acceptance_rows(rows, bmr_pending=True))
    assert "pending" in pending
    bmr = _row("BMR round 2", "bmr", 35, 0.99, [1, 1, 0.5, 0.9])
    done = "\n".join(V.acceptance_rows(rows + [bmr], bmr_pending=False))
    assert "BMR round 2: 2.86x at 99.0 ± 1.0 % | yes |" in done


def test_section_renders_from_a_results_json_round_trip():
    import json

    rows = [_row("mpnet fp32", "mpnet", 100, 1.0, [1, 1, 0.5, 1]),
            _row("mpnet 4 layers", "drop", 30, 0.6, [0.5, 0.5, 0.1, 0.5]),
            _row("MiniLM", "minilm", 20, 0.9, [1, 0.5, 0.5, 0.9])]
    facts = {"stages": {"load": 1.0, "total": 9.0},
             "timing": {"runs": 3, "threads": 1, "batch": 1, "seq": 128, "load_before": 1.0,
                        "load_after": 1.5},
             "cpu": {"model": "CPU", "arch": "x86_64", "logical_cores": 2, "features": ["avx2"],
                     "onnxruntime": "1"},
             "pairs": 4, "steps": 2, "lr": 1e-4, "schedule": "constant", "derived_int8": "int8",
             "recovery_batches": 2, "recipe_steps": 100, "recipe_rounds": 3, "batch_size": 32,
             "data": "docs", "recoveries": [{"keep": [1, 4, 7, 10], "steps": 2, "seconds": 3.0,
                                             "first_loss": 1.0, "last_loss": 0.5}], "from": None}
    saved = json.loads(json.dumps({"rows": [r.to_json() for r in rows], **facts}))
    again = [V.Row.from_json(r) for r in saved.pop("rows")]
    assert np.array_equal(again[1].rr, rows[1].rr) and again[1].path == rows[1].path
    text = V.section(again, saved)
    assert "| mpnet 4 layers | - | 0.0 | 30.0 | 3.33x | 0.4000 | 0.500 | 60.0 ± 1.0 % |" in text
    assert "BMR rows pending" in text and "Switching models is the better answer" in text

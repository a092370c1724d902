"""Cut models with different widths per layer: config.json states zero-padded widths that
plain transformers loads into a model with the cut model's outputs (or a clear refusal), and
the project's own loader gets the cut model back."""

from __future__ import annotations

import pytest
import torch

from bmr_compress.errors import UnsupportedModelError
from bmr_compress.export import export_safetensors
from bmr_compress.cutting import apply_plan_, load_compressed, save_compressed
from bmr_compress.coupling import discover_groups
from bmr_compress.cutting.hf_layout import transformers_layout
from tests.surgery.conftest import assert_close_rel, out_tensor, plan_for
from tests.tiny_models import TRANSFORMER_BUILDERS, inputs_for


def _uneven_keep(groups) -> dict[str, list[int]]:
    """Layer i keeps a different number of FFN neurons and heads; the hidden size stays."""
    import re

    keep = {}
    for g in groups:
        m = re.search(r"layers\.(\d+)", g.name)
        i = int(m.group(1)) if m else 0
        n = g.num_units
        if g.kind == "hidden" or n < 2:
            keep[g.name] = list(range(n))
        else:
            k = max(1, n - 1 - (i % 2) * (n // 3))  # alternate between two widths
            keep[g.name] = sorted(range(n - 1, n - 1 - k, -1))  # not a prefix: real reindexing
    return keep


def _cut(name: str):
    model = TRANSFORMER_BUILDERS[name]()
    sample = inputs_for(name)
    groups = discover_groups(model, sample)
    record = apply_plan_(model, groups, plan_for(_uneven_keep(groups)))
    return model, record, sample


@pytest.mark.parametrize("name", ["bert", "roberta", "distilbert", "vit", "llama"])
def test_padded_config_loads_in_plain_transformers(name, tmp_path):
    model, record, sample = _cut(name)
    assert not record.plain_transformers  # uneven widths: the config alone cannot state them
    hf_model, info = transformers_layout(model, sample)
    assert info["layout"] == "padded" and info["max_abs_diff"] <= 1e-6
    save_compressed(model, record, tmp_path, extra={"transformers_layout": info})
    export_safetensors(hf_model, tmp_path, {"source": name})
    with torch.no_grad():
        want = out_tensor(model(**sample))
        loaded = type(model).from_pretrained(str(tmp_path)).eval()  # strict: no mismatch allowed
        assert_close_rel(out_tensor(loaded(**sample)), want)
        own = load_compressed(tmp_path)  # the cut (unpadded) model again
        assert {k: list(v.shape) for k, v in own.state_dict().items()} == record.shapes
        assert_close_rel(out_tensor(own(**sample)), want)


def test_automodel_never_loads_random_weights(tmp_path):
    """The BERT case of the issue: AutoModel gets the cut model's outputs, not a fresh FFN."""
    from transformers import AutoModel

    model, record, sample = _cut("bert")
    hf_model, info = transformers_layout(model, sample)
    export_safetensors(hf_model, tmp_path, {"source": "bert"})
    loaded, loading = AutoModel.from_pretrained(str(tmp_path), output_loading_info=True)
    assert not loading["mismatched_keys"]
    assert all(k.startswith("pooler.") for k in loading["missing_keys"])  # built without one
    with torch.no_grad():
        assert_close_rel(out_tensor(loaded.eval()(**sample)), out_tensor(model(**sample)))


def test_fused_qkv_with_uneven_heads_is_refused():
    model, _, sample = _cut("gpt2")
    with pytest.raises(UnsupportedModelError, match="fused q/k/v"):
        transformers_layout(model, sample)

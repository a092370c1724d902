"""Removing units == zeroing them (or the equivalent masked-norm reference), at shapes
other than the trace shape; parameter counts drop; the result reloads from its directory."""

from __future__ import annotations


import pytest
import torch

from bmr_compress.cutting import apply_plan_, load_compressed, save_compressed
from bmr_compress.coupling import discover_groups
from bmr_compress.coupling.adapters import ADAPTERS
from tests.surgery.conftest import (
    assert_close_rel, out_tensor, plan_for, random_keep, zeroed_reference,
)
from tests.tiny_models import TRANSFORMER_BUILDERS, ResConcatNet, TinyMLP, inputs_for

# every adapter this package registers (zoo adapters, registered by bmr_compress.zoo, have
# their own tests in tests/zoo)
FAMILIES = sorted({a.family for a in ADAPTERS.values()
                   if type(a).__module__ == "bmr_compress.coupling.families"})


def _hidden_keep(groups, keep):
    g = next((g for g in groups if g.kind == "hidden"), None)
    return None if g is None else torch.tensor(keep[g.name])


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("with_hidden", [False, True])
def test_adapter_function_preservation(family, with_hidden, tmp_path):
    model = TRANSFORMER_BUILDERS[family]().double()
    groups = discover_groups(model)
    kinds = {g.kind for g in groups}
    assert kinds >= {"neuron", "hidden"} and kinds & {"head", "kv_group"}
    if not with_hidden:
        groups = [g for g in groups if g.kind != "hidden"]
    keep = random_keep(groups, seed=3)
    plan = plan_for(keep)
    ref = zeroed_reference(model, groups, plan)
    before = sum(p.numel() for p in model.parameters())
    record = apply_plan_(model, groups, plan)
    assert record.params_after < before == record.params_before
    assert sum(p.numel() for p in model.parameters()) == record.params_after
    hk = _hidden_keep(groups, keep)
    for seq in (5, 11):  # other sequence lengths than any example
        x = inputs_for(family, batch=3, seq=seq, seed=seq)
        x = {k: v.double() if v.is_floating_point() else v for k, v in x.items()}
        with torch.no_grad():
            got = out_tensor(model(**x))
            want = out_tensor(ref(**x))
        if hk is not None and want.shape[-1] != got.shape[-1]:
            want = want[..., hk]  # the hidden stream itself lost the removed dims
        assert_close_rel(got, want)
    save_compressed(model, record, tmp_path)
    again = load_compressed(tmp_path).double()
    with torch.no_grad():
        assert_close_rel(out_tensor(again(**x)), got, rel=1e-8)
    assert type(again) is type(model)


def test_every_transformer_family_has_an_adapter():
    for name, build in TRANSFORMER_BUILDERS.items():
        from bmr_compress.coupling.adapters import adapter_for

        assert adapter_for(build()) is not None, name


@pytest.mark.parametrize(
    "net, arch, trace, test",
    [
        (TinyMLP, "tiny_mlp", torch.randn(2, 64), torch.randn(5, 1, 8, 8)),
        (ResConcatNet, "res_concat", torch.randn(2, 3, 8, 8), torch.randn(3, 3, 12, 10)),
    ],
)
def test_graph_function_preservation(net, arch, trace, test, tmp_path):
    torch.manual_seed(0)
    model = net().double().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    groups = discover_groups(model, trace.double())
    assert groups
    keep = random_keep(groups, seed=1)
    plan = plan_for(keep)
    ref = zeroed_reference(model, groups, plan)
    before = sum(p.numel() for p in model.parameters())
    record = apply_plan_(model, groups, plan)
    assert record.params_after < before
    with torch.no_grad():
        got, want = model(test.double()), ref(test.double())
    assert_close_rel(got, want)
    save_compressed(model, record, tmp_path, architecture=arch, init_config={})
    again = load_compressed(tmp_path).double()
    with torch.no_grad():
        assert_close_rel(again(test.double()), got, rel=1e-8)


def _tiny_llama_style(kind: str):
    import transformers

    cfg_cls = {"qwen2": transformers.Qwen2Config, "mistral": transformers.MistralConfig}[kind]
    model_cls = {"qwen2": transformers.Qwen2ForCausalLM,
                 "mistral": transformers.MistralForCausalLM}[kind]
    torch.manual_seed(0)
    cfg = cfg_cls(vocab_size=97, hidden_size=48, num_hidden_layers=2, num_attention_heads=6,
                  num_key_value_heads=3, intermediate_size=37, max_position_embeddings=64)
    return model_cls(cfg).eval()


@pytest.mark.parametrize("kind", ["qwen2", "mistral"])
def test_llama_style_adapter_covers_qwen2_and_mistral(kind, tmp_path):
    model = _tiny_llama_style(kind).double()
    groups = discover_groups(model)
    if kind == "qwen2":  # q/k/v biases are cut with their rows
        assert any(s.param.endswith("q_proj.bias") for g in groups for s in g.slices)
    plan = plan_for(random_keep(groups, seed=5))
    ref = zeroed_reference(model, groups, plan)
    record = apply_plan_(model, groups, plan)
    x = inputs_for("llama", batch=2, seq=10)
    with torch.no_grad():
        got, want = model(**x).logits, ref(**x).logits
    assert_close_rel(got, want)
    save_compressed(model, record, tmp_path)
    with torch.no_grad():
        assert_close_rel(load_compressed(tmp_path).double()(**x).logits, got, rel=1e-8)


def test_bert_with_pooler_and_classifier_keeps_a_hidden_group(tmp_path):
    """BertForSequenceClassification: the pooler reads the hidden stream (its input columns
    are cut with it) while its output width and the classifier stay."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=97, hidden_size=36, num_hidden_layers=2, num_attention_heads=3,
                     intermediate_size=37, max_position_embeddings=64, num_labels=4)
    model = BertForSequenceClassification(cfg).eval().double()
    groups = discover_groups(model)
    assert any(g.kind == "hidden" for g in groups)
    plan = plan_for(random_keep(groups, seed=7))
    ref = zeroed_reference(model, groups, plan)
    record = apply_plan_(model, groups, plan)
    assert model.bert.pooler.dense.out_features == 36 and model.classifier.in_features == 36
    x = inputs_for("bert", batch=2, seq=8)
    with torch.no_grad():
        got = model(**x).logits
        assert_close_rel(got, ref(**x).logits)
    save_compressed(model, record, tmp_path)
    with torch.no_grad():
        assert_close_rel(load_compressed(tmp_path).double()(**x).logits, got, rel=1e-8)

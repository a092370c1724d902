"""Registered family adapters: BERT, RoBERTa, XLM-R, DistilBERT, ViT, GPT-2, LLaMA-style
(MPNet: family_mpnet).

Each adapter is a module-level class, registered by `register_adapter` when this module is
imported (cutting.apply imports it), so it can be imported and subclassed. Each reads the
module layout and attribute names of the transformers 5 modeling code, and of transformers 4
(4.45+) where that differs (ViT's BERT-like blocks; DistilBERT's `dim`).
"""

from __future__ import annotations

from torch import nn

from bmr_compress.coupling.adapters import (
    FamilyAdapter, Layer, Parts, embedding_params, out_size, register_adapter, set_derived_heads,
    set_uniform,
)
from bmr_compress.coupling.removed import swap_attention_


def _n(model: nn.Module) -> dict[int, str]:
    return {id(m): n for n, m in model.named_modules()}


def _widths(parts: Parts) -> tuple[list[int], list[int], list[int]]:
    """Per-layer (query heads, KV heads, FFN width), read from the current tensors."""
    heads = [layer.num_heads for layer in parts.layers]
    kv = [layer.num_kv for layer in parts.layers]
    ffn = [out_size(layer.ffn_in[0]) for layer in parts.layers]
    return heads, kv, ffn


class _BertLike(FamilyAdapter):
    zero_width_branches = ("ffn", "attention")  # no heads: coupling/removed.py

    def _base(self, model: nn.Module) -> nn.Module:
        return model.base_model

    def parts(self, model: nn.Module) -> Parts:
        base = self._base(model)
        emb = base.embeddings
        layers = []
        for blk in base.encoder.layer:
            sa = blk.attention.self
            hd = sa.attention_head_size
            n = sa.query.weight.shape[0] // hd
            norms = [blk.attention.output.LayerNorm, blk.output.LayerNorm]
            layers.append(Layer((sa.query, 0), (sa.key, 0), (sa.value, 0),
                                blk.attention.output.dense, [blk.intermediate.dense],
                                blk.output.dense, norms, sa, n, n, hd,
                                attn_owner=(blk.attention, "self")))
        producers = embedding_params(model, emb.word_embeddings, emb.position_embeddings,
                                      getattr(emb, "token_type_embeddings", None))
        consumers, fixed = [], []
        pooler = getattr(base, "pooler", None)
        if pooler is not None:  # reads the stream; its output (pooler_output) keeps its width
            names = _n(model)
            p = names[id(pooler.dense)]
            consumers.append(pooler.dense)
            fixed += [(f"{p}.weight", 0), (f"{p}.bias", 0)]
            head = getattr(model, "classifier", None)
            if isinstance(head, nn.Linear):  # sequence classification reads pooler_output
                fixed.append((f"{names[id(head)]}.weight", 1))
        return Parts(emb.word_embeddings.weight.shape[1], layers, producers, [emb.LayerNorm],
                     consumers, fixed)

    def sync_layer_(self, layer: Layer) -> None:
        sa = layer.attn
        if layer.attn_owner is not None:  # no heads left (or back, padded): coupling/removed
            sa = layer.attn = swap_attention_(*layer.attn_owner)
        sa.all_head_size = sa.query.weight.shape[0]
        sa.num_attention_heads = sa.all_head_size // sa.attention_head_size

    def config_updates(self, model: nn.Module, parts: Parts) -> dict[str, object]:
        heads, _, ffn = _widths(parts)
        updates: dict[str, object] = {"hidden_size": parts.hidden}
        set_derived_heads(updates, "num_attention_heads", parts)
        set_uniform(updates, "intermediate_size", ffn)
        return updates


def _vit_blocks(base: nn.Module) -> nn.ModuleList:
    """A ViT's blocks: `layers` in transformers 5, `encoder.layer` in transformers 4."""
    layers = getattr(base, "layers", None)
    return layers if layers is not None else base.encoder.layer


@register_adapter("transformers.models.bert.modeling_bert.BertPreTrainedModel")
class BertAdapter(_BertLike):
    family = "bert"


@register_adapter("transformers.models.roberta.modeling_roberta.RobertaPreTrainedModel")
class RobertaAdapter(_BertLike):
    family = "roberta"


# RoBERTa's layout in its own classes
@register_adapter("transformers.models.xlm_roberta.modeling_xlm_roberta.XLMRobertaPreTrainedModel")
class XLMRobertaAdapter(_BertLike):
    family = "xlm-roberta"


@register_adapter("transformers.models.distilbert.modeling_distilbert.DistilBertPreTrainedModel")
class DistilBertAdapter(FamilyAdapter):
    family = "distilbert"

    def parts(self, model: nn.Module) -> Parts:
        base = model.base_model
        emb = base.embeddings
        layers = []
        for blk in base.transformer.layer:
            a = blk.attention
            hd = a.attention_head_size
            n = a.q_lin.weight.shape[0] // hd
            layers.append(Layer((a.q_lin, 0), (a.k_lin, 0), (a.v_lin, 0), a.out_lin,
                                [blk.ffn.lin1], blk.ffn.lin2,
                                [blk.sa_layer_norm, blk.output_layer_norm], a, n, n, hd))
        producers = embedding_params(model, emb.word_embeddings, emb.position_embeddings)
        return Parts(emb.word_embeddings.weight.shape[1], layers, producers, [emb.LayerNorm])

    def sync_layer_(self, layer: Layer) -> None:
        a = layer.attn
        a.n_heads = a.q_lin.weight.shape[0] // a.attention_head_size
        # all heads' width, as transformers' own head pruning sets it (4.x derives the head
        # size from it in forward; 5.x reads attention_head_size)
        a.dim = a.q_lin.weight.shape[0]

    def config_updates(self, model: nn.Module, parts: Parts) -> dict[str, object]:
        heads, _, ffn = _widths(parts)
        updates: dict[str, object] = {"dim": parts.hidden}
        set_derived_heads(updates, "n_heads", parts)
        set_uniform(updates, "hidden_dim", ffn)
        return updates


@register_adapter("transformers.models.vit.modeling_vit.ViTPreTrainedModel")
class ViTAdapter(FamilyAdapter):
    family = "vit"

    def parts(self, model: nn.Module) -> Parts:
        base = model.base_model
        names = _n(model)
        emb = base.embeddings
        layers = []
        for blk in _vit_blocks(base):
            if hasattr(blk, "mlp"):  # transformers 5: q/k/v/o projections and an MLP
                a = blk.attention
                hd = a.head_dim
                q, k, v, o, ffn_in, ffn_out = (a.q_proj, a.k_proj, a.v_proj, a.o_proj,
                                               blk.mlp.fc1, blk.mlp.fc2)
            else:  # transformers 4: BERT-like self-attention / intermediate / output
                a = blk.attention.attention
                hd = a.attention_head_size
                q, k, v, o, ffn_in, ffn_out = (a.query, a.key, a.value,
                                               blk.attention.output.dense,
                                               blk.intermediate.dense, blk.output.dense)
            n = q.weight.shape[0] // hd
            layers.append(Layer((q, 0), (k, 0), (v, 0), o, [ffn_in], ffn_out,
                                [blk.layernorm_before, blk.layernorm_after], a, n, n, hd))
        e = names[id(emb)]
        proj = emb.patch_embeddings.projection
        producers = [(f"{e}.cls_token", 2, "embed"), (f"{e}.position_embeddings", 2, "embed"),
                     (f"{names[id(proj)]}.weight", 0, "out")]
        if proj.bias is not None:
            producers.append((f"{names[id(proj)]}.bias", 0, "out"))
        if getattr(emb, "mask_token", None) is not None:
            producers.append((f"{e}.mask_token", 2, "embed"))
        head = getattr(model, "classifier", None)
        consumers = [head] if isinstance(head, nn.Linear) else []
        return Parts(proj.weight.shape[0], layers, producers, [base.layernorm], consumers)

    def sync_layer_(self, layer: Layer) -> None:
        a = layer.attn
        if hasattr(a, "all_head_size"):  # transformers 4
            a.all_head_size = a.query.weight.shape[0]
            a.num_attention_heads = a.all_head_size // a.attention_head_size
        else:
            a.num_attention_heads = a.q_proj.weight.shape[0] // a.head_dim

    def config_updates(self, model: nn.Module, parts: Parts) -> dict[str, object]:
        heads, _, ffn = _widths(parts)
        updates: dict[str, object] = {"hidden_size": parts.hidden}
        if hasattr(parts.layers[0].attn, "all_head_size"):  # 4.x: head size = hidden / heads
            set_derived_heads(updates, "num_attention_heads", parts)
        else:
            updates["head_dim"] = parts.layers[0].head_dim
            set_uniform(updates, "num_attention_heads", heads)
        set_uniform(updates, "intermediate_size", ffn)
        return updates


@register_adapter("transformers.models.gpt2.modeling_gpt2.GPT2PreTrainedModel")
class GPT2Adapter(FamilyAdapter):
    family = "gpt2"

    def parts(self, model: nn.Module) -> Parts:
        base = model.base_model
        layers = []
        for blk in base.h:
            a = blk.attn
            hd = a.head_dim
            split = a.c_proj.weight.shape[0]  # heads * head_dim (split_size may be stale)
            n = split // hd
            layers.append(Layer((a.c_attn, 0), (a.c_attn, split), (a.c_attn, 2 * split),
                                a.c_proj, [blk.mlp.c_fc], blk.mlp.c_proj,
                                [blk.ln_1, blk.ln_2], a, n, n, hd))
        producers = embedding_params(model, base.wte, base.wpe)
        consumers = [m for m in [getattr(model, "lm_head", None)] if isinstance(m, nn.Linear)]
        return Parts(base.wte.weight.shape[1], layers, producers, [base.ln_f], consumers)

    def sync_layer_(self, layer: Layer) -> None:
        a = layer.attn
        a.split_size = a.c_proj.weight.shape[0]
        a.num_heads = a.split_size // a.head_dim
        a.embed_dim = a.c_proj.weight.shape[1]

    def config_updates(self, model: nn.Module, parts: Parts) -> dict[str, object]:
        heads, _, ffn = _widths(parts)
        updates: dict[str, object] = {"n_embd": parts.hidden}
        set_derived_heads(updates, "n_head", parts)
        set_uniform(updates, "n_inner", ffn)
        return updates


@register_adapter("transformers.models.llama.modeling_llama.LlamaPreTrainedModel",
                  "transformers.models.qwen2.modeling_qwen2.Qwen2PreTrainedModel",
                  "transformers.models.mistral.modeling_mistral.MistralPreTrainedModel")
class LlamaAdapter(FamilyAdapter):
    family = "llama"
    units = "KV groups (query heads sharing a key/value head), gated FFN neurons, hidden width"

    def parts(self, model: nn.Module) -> Parts:
        base = model.base_model
        layers = []
        for blk in base.layers:
            a = blk.self_attn
            hd = a.head_dim
            kv = a.k_proj.weight.shape[0] // hd
            n = a.q_proj.weight.shape[0] // hd
            layers.append(Layer((a.q_proj, 0), (a.k_proj, 0), (a.v_proj, 0), a.o_proj,
                                [blk.mlp.gate_proj, blk.mlp.up_proj], blk.mlp.down_proj,
                                [blk.input_layernorm, blk.post_attention_layernorm],
                                a, n, kv, hd))
        producers = embedding_params(model, base.embed_tokens)
        consumers = [m for m in [getattr(model, "lm_head", None)] if isinstance(m, nn.Linear)]
        hidden = base.embed_tokens.weight.shape[1]
        return Parts(hidden, layers, producers, [base.norm], consumers)

    def sync_layer_(self, layer: Layer) -> None:
        return None  # heads are removed in whole KV groups: num_key_value_groups is unchanged

    def config_updates(self, model: nn.Module, parts: Parts) -> dict[str, object]:
        heads, kv, ffn = _widths(parts)
        updates: dict[str, object] = {"hidden_size": parts.hidden,
                                      "head_dim": parts.layers[0].head_dim}
        set_uniform(updates, "num_attention_heads", heads)
        set_uniform(updates, "num_key_value_heads", kv)
        set_uniform(updates, "intermediate_size", ffn)
        return updates

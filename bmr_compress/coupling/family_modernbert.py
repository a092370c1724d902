"""ModernBERT: heads in the fused `Wqkv`, GLU FFN neurons in the fused `Wi`, hidden stream.

`attn.Wqkv` stacks [q | k | v] rows (heads x head_dim each; the forward views them as
(3, -1, head_dim), so a cut needs no head-count attribute); `mlp.Wi` stacks [input | gate]
rows of the GLU (act(input) * gate), so FFN neuron j owns row j of each half
(`Layer.ffn_chunks` = 2) and column j of `mlp.Wo`. The first layer's `attn_norm` is an
Identity; the norms may have no bias (`norm_bias`). The config derives head_dim as
hidden / heads, so a cut head count is stated only when it keeps head_dim; otherwise the
padded twin (cutting.hf_layout) pads each third of Wqkv and each half of Wi.
"""

from __future__ import annotations

from torch import nn

from bmr_compress.coupling.adapters import (
    FamilyAdapter, Layer, Parts, embedding_params, ffn_width, register_adapter, set_derived_heads,
    set_uniform,
)


@register_adapter("transformers.models.modernbert.modeling_modernbert.ModernBertPreTrainedModel")
class ModernBertAdapter(FamilyAdapter):
    family = "modernbert"
    units = "attention heads (fused Wqkv), GLU FFN neurons (both halves of Wi), hidden width"

    def parts(self, model: nn.Module) -> Parts:
        base = model.base_model
        layers = []
        for blk in base.layers:
            a = blk.attn
            hd = a.head_dim
            n = a.Wo.weight.shape[1] // hd
            norms = [m for m in (blk.attn_norm, blk.mlp_norm) if isinstance(m, nn.LayerNorm)]
            layers.append(Layer((a.Wqkv, 0), (a.Wqkv, n * hd), (a.Wqkv, 2 * n * hd), a.Wo,
                                [blk.mlp.Wi], blk.mlp.Wo, norms, a, n, n, hd, ffn_chunks=2))
        emb = base.embeddings
        producers = embedding_params(model, emb.tok_embeddings)
        return Parts(emb.tok_embeddings.weight.shape[1], layers, producers,
                     [emb.norm, base.final_norm])

    def sync_layer_(self, layer: Layer) -> None:
        return None  # the forward views Wqkv as (3, -1, head_dim): no head count to update

    def config_updates(self, model: nn.Module, parts: Parts) -> dict[str, object]:
        updates: dict[str, object] = {"hidden_size": parts.hidden}
        set_derived_heads(updates, "num_attention_heads", parts)
        set_uniform(updates, "intermediate_size", [ffn_width(layer) for layer in parts.layers])
        return updates

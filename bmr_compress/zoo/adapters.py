"""Surgery family adapters for the zoo's attention / token-mixing models.

Torch-Pruning's traced graph cannot tell a Mixer's token axis from its channel axis through
the transposes, and has no notion of attention heads; these adapters state the unit groups
explicitly (ViT: heads, FFN neurons, hidden stream; Mixer: token- and channel-MLP neurons)
and keep ``model.zoo_config`` in step with the cut widths. MLP and LeNet5 are plain
Linear/Conv chains that the traced graph handles.

Importing this module registers both adapters (coupling.adapters' registry) and makes
``rebuild`` importable: a compressed zoo model's manifest names ``BUILDER``
(``"bmr_compress.zoo.adapters:rebuild"``), so ``cutting.load_compressed`` rebuilds it in a
fresh interpreter with nothing registered beforehand.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from bmr_compress.coupling.adapters import FamilyAdapter, Layer, Parts, register_adapter
from bmr_compress.coupling.groups import Slice, UnitGroup, column, count_numel
from bmr_compress.zoo.architectures import MLPMixer, ViT, build_from_config_dict

BUILDER = f"{__name__}:rebuild"  # what save_compressed stores for a zoo model


def rebuild(config: Mapping[str, Any]) -> nn.Module:
    """A zoo model at its original widths from a compressed output's config.json (the builder
    a manifest names; load_compressed then shrinks it to the manifest's shapes)."""
    return build_from_config_dict(config)


def register_with_surgery() -> str:
    """The builder reference to save zoo models with (``save_compressed(...,
    architecture=register_with_surgery())``). Importing this module did the registering;
    the name stays for callers of the earlier API."""
    return BUILDER


@register_adapter(ViT)
class ZooViTAdapter(FamilyAdapter):
    family = "zoo:vit"
    zero_width_branches = ("ffn", "attention")  # zero heads: SelfAttention gives o's bias

    def parts(self, model: nn.Module) -> Parts:
        assert isinstance(model, ViT)
        hd = model.zoo_config.head_dim
        layers = []
        for blk in model.layers:
            a = blk.attn
            h = a.q_proj.out_features // hd
            layers.append(Layer(q=(a.q_proj, 0), k=(a.k_proj, 0), v=(a.v_proj, 0), o=a.o_proj,
                                ffn_in=[blk.mlp.fc1], ffn_out=blk.mlp.fc2, norms=[blk.norm1, blk.norm2],
                                attn=a, num_heads=h, num_kv=h, head_dim=hd))
        hidden = model.patch_embed.proj.out_channels
        idx_producers = [("patch_embed.proj.weight", 0, "out"), ("patch_embed.proj.bias", 0, "out"),
                         ("cls_token", 2, "embed"), ("pos_embed", 2, "embed")]
        return Parts(hidden=hidden, layers=layers, hidden_producers=idx_producers,
                     hidden_norms=[model.norm], hidden_consumers=[model.head])

    def sync_layer_(self, layer: Layer) -> None:
        layer.attn.num_heads = layer.q[0].out_features // layer.head_dim

    def config_updates(self, model: nn.Module, parts: Parts) -> dict[str, object]:
        return {"hidden_size": parts.hidden,
                "num_heads": [layer.q[0].out_features // layer.head_dim for layer in parts.layers],
                "mlp_dims": [layer.ffn_in[0].out_features for layer in parts.layers]}

    def sync_(self, model: nn.Module) -> dict[str, object]:
        parts = self.parts(model)
        for layer in parts.layers:
            self.sync_layer_(layer)
        updates = self.config_updates(model, parts)
        model.zoo_config = dataclasses.replace(model.zoo_config, **updates)
        return updates


def _neuron_group(name: str, prefix: str, fc1: nn.Linear, shapes: dict[str, torch.Size]) -> UnitGroup:
    idx = column(fc1.out_features)
    slices = (Slice(f"{prefix}.fc1.weight", 0, idx, "out"), Slice(f"{prefix}.fc1.bias", 0, idx, "out"),
              Slice(f"{prefix}.fc2.weight", 1, idx, "in"))
    return UnitGroup(name, "neuron", fc1.out_features, slices, "zoo:mixer",
                     numel_per_unit=count_numel(slices, shapes))


@register_adapter(MLPMixer)
class ZooMixerAdapter(FamilyAdapter):
    family = "zoo:mixer"

    def groups(self, model: nn.Module) -> list[UnitGroup]:
        assert isinstance(model, MLPMixer)
        shapes = {k: v.shape for k, v in model.state_dict().items()}
        out = []
        for i, blk in enumerate(model.blocks):
            out.append(_neuron_group(f"blocks.{i}.token_mlp", f"blocks.{i}.token_mlp", blk.token_mlp.fc1, shapes))
            out.append(_neuron_group(f"blocks.{i}.channel_mlp", f"blocks.{i}.channel_mlp",
                                     blk.channel_mlp.fc1, shapes))
        return out

    def sync_(self, model: nn.Module) -> dict[str, object]:
        assert isinstance(model, MLPMixer)
        updates = {"token_mlp_dims": [b.token_mlp.fc1.out_features for b in model.blocks],
                   "channel_mlp_dims": [b.channel_mlp.fc1.out_features for b in model.blocks]}
        model.zoo_config = dataclasses.replace(model.zoo_config, **updates)
        return updates

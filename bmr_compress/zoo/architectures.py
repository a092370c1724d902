"""Seed architectures for 8x8 digits, registered by name and rebuilt from config.json.

Every architecture takes ``pixel_values`` of shape (B, C, H, W) (digits: (B, 1, 8, 8),
float in [0, 1]) and returns logits (B, num_classes). Widths that surgery may shrink are
stored per layer in the config (tuples), so a pruned model with non-uniform widths is
rebuilt from its own config.json alone.

Registry: ``ZOO_ARCHITECTURES`` maps a name to ``ZooEntry(model_cls, config_cls)``; it is
filled by the ``register_zoo`` decorator, and registering a name twice is an error.
A checkpoint's config.json holds ``{"bmr_zoo_architecture": name, **asdict(config)}``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn

from bmr_compress.errors import InputError
from bmr_compress.io.recipes import Recipe, register_recipe_check

ARCH_KEY = "bmr_zoo_architecture"
# keys written beside the architecture kwargs that are metadata, not constructor arguments
META_KEYS = frozenset({ARCH_KEY, "task", "num_labels", "bmr_zoo_recipe", "bmr_zoo_training",
                       "bmr_manifest", "torch_dtype", "dtype"})


@dataclass(frozen=True)
class ZooEntry:
    model_cls: type[nn.Module]
    config_cls: type


ZOO_ARCHITECTURES: dict[str, ZooEntry] = {}

M = TypeVar("M", bound=type[nn.Module])


def register_zoo(name: str, config_cls: type) -> Callable[[M], M]:
    """Class decorator: register ``cls`` (built as ``cls(config_cls(**kwargs))``) under ``name``."""

    def deco(cls: M) -> M:
        if name in ZOO_ARCHITECTURES:
            raise ValueError(f"zoo architecture {name!r} is already registered")
        ZOO_ARCHITECTURES[name] = ZooEntry(cls, config_cls)
        cls.zoo_name = name  # type: ignore[attr-defined]
        return cls

    return deco


def _tuple(v: Any) -> tuple[int, ...]:
    return tuple(int(x) for x in v)


# ----------------------------------------------------------------------------- configs


@dataclass(frozen=True)
class MLPConfig:
    in_channels: int = 1
    image_size: int = 8  # input features = in_channels * image_size**2
    widths: tuple[int, ...] = (128, 64)
    num_classes: int = 10

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", _tuple(self.widths))


@dataclass(frozen=True)
class LeNet5Config:
    in_channels: int = 1
    image_size: int = 8
    conv_channels: tuple[int, ...] = (6, 16)  # conv1, conv2 filters
    fc_widths: tuple[int, ...] = (120, 84)
    num_classes: int = 10
    activation: str = "relu"  # relu | tanh

    def __post_init__(self) -> None:
        object.__setattr__(self, "conv_channels", _tuple(self.conv_channels))
        object.__setattr__(self, "fc_widths", _tuple(self.fc_widths))
        if len(self.conv_channels) != 2 or self.activation not in ("relu", "tanh"):
            raise InputError(f"bad LeNet5 config: {self}")


@dataclass(frozen=True)
class MixerConfig:
    in_channels: int = 1
    image_size: int = 8
    patch_size: int = 2
    hidden_size: int = 32
    num_blocks: int = 2
    token_mlp_dims: tuple[int, ...] = (32, 32)  # one per block
    channel_mlp_dims: tuple[int, ...] = (64, 64)  # one per block
    num_classes: int = 10

    def __post_init__(self) -> None:
        object.__setattr__(self, "token_mlp_dims", _tuple(self.token_mlp_dims))
        object.__setattr__(self, "channel_mlp_dims", _tuple(self.channel_mlp_dims))
        if not len(self.token_mlp_dims) == len(self.channel_mlp_dims) == self.num_blocks:
            raise InputError(f"MLPMixer config needs one token/channel MLP width per block: {self}")


@dataclass(frozen=True)
class ViTConfig:
    in_channels: int = 1
    image_size: int = 8
    patch_size: int = 2
    hidden_size: int = 32
    num_layers: int = 2
    num_heads: tuple[int, ...] = (4, 4)  # one per layer (head pruning makes them differ)
    head_dim: int = 8
    mlp_dims: tuple[int, ...] = (64, 64)  # one per layer
    num_classes: int = 10

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_heads", _tuple(self.num_heads))
        object.__setattr__(self, "mlp_dims", _tuple(self.mlp_dims))
        if not len(self.num_heads) == len(self.mlp_dims) == self.num_layers:
            raise InputError(f"ViT config needs one head count and MLP width per layer: {self}")


# ----------------------------------------------------------------------------- models


class ZooModel(nn.Module):
    """Base: keeps the config so the model can be saved and rebuilt."""

    zoo_name: str

    def __init__(self, config: Any):
        super().__init__()
        # not ``self.config``: code that sees ``model.config`` assumes a transformers config
        self.zoo_config = config

    def zoo_config_dict(self) -> dict[str, Any]:
        """config.json content: architecture name, its kwargs, and the task metadata."""
        d = dataclasses.asdict(self.zoo_config)
        return {ARCH_KEY: self.zoo_name, **{k: list(v) if isinstance(v, tuple) else v
                                            for k, v in d.items()},
                "task": "classification", "num_labels": int(self.zoo_config.num_classes)}


@register_zoo("mlp", MLPConfig)
class MLP(ZooModel):
    """pixels -> Linear/ReLU stack -> logits."""

    def __init__(self, config: MLPConfig = MLPConfig()):
        super().__init__(config)
        layers: list[nn.Module] = []
        d = config.in_channels * config.image_size**2
        for w in config.widths:
            layers += [nn.Linear(d, w), nn.ReLU()]
            d = w
        layers.append(nn.Linear(d, config.num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.net(pixel_values.flatten(1))  # (B, C*H*W) -> (B, classes)


@register_zoo("lenet5", LeNet5Config)
class LeNet5(ZooModel):
    """conv3x3(p1) -> pool2 -> conv3x3(p1) -> pool2 -> fc -> fc -> logits (8x8 -> 4x4 -> 2x2)."""

    def __init__(self, config: LeNet5Config = LeNet5Config()):
        super().__init__(config)
        c1, c2 = config.conv_channels
        f1, f2 = config.fc_widths
        side = config.image_size // 4
        self.conv1 = nn.Conv2d(config.in_channels, c1, 3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.act = nn.ReLU() if config.activation == "relu" else nn.Tanh()
        self.fc1 = nn.Linear(c2 * side * side, f1)
        self.fc2 = nn.Linear(f1, f2)
        self.head = nn.Linear(f2, config.num_classes)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        h = self.pool(self.act(self.conv1(pixel_values)))  # (B, c1, H/2, W/2)
        h = self.pool(self.act(self.conv2(h)))  # (B, c2, H/4, W/4)
        h = self.act(self.fc1(h.flatten(1)))  # (B, f1)
        h = self.act(self.fc2(h))  # (B, f2)
        return self.head(h)  # (B, classes)


class PatchEmbed(nn.Module):
    """(B, C, H, W) -> (B, N, D) with N = (H/p)*(W/p) via a stride-p convolution."""

    def __init__(self, in_channels: int, patch_size: int, hidden: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, hidden, patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, D, h, w) -> (B, N, D)


class FeedForward(nn.Module):
    """Linear -> GELU -> Linear; ``fc1`` output units are the prunable neurons."""

    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, inner)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class MixerBlock(nn.Module):
    def __init__(self, num_tokens: int, hidden: int, token_dim: int, channel_dim: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden)
        self.token_mlp = FeedForward(num_tokens, token_dim)
        self.norm2 = nn.LayerNorm(hidden)
        self.channel_mlp = FeedForward(hidden, channel_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, D)
        y = self.token_mlp(self.norm1(x).transpose(1, 2)).transpose(1, 2)  # mix over N
        x = x + y
        return x + self.channel_mlp(self.norm2(x))  # mix over D


@register_zoo("mixer", MixerConfig)
class MLPMixer(ZooModel):
    """Patch embed -> Mixer blocks -> LayerNorm -> mean over tokens -> linear head."""

    def __init__(self, config: MixerConfig = MixerConfig()):
        super().__init__(config)
        n = (config.image_size // config.patch_size) ** 2
        self.patch_embed = PatchEmbed(config.in_channels, config.patch_size, config.hidden_size)
        self.blocks = nn.ModuleList(
            MixerBlock(n, config.hidden_size, t, c)
            for t, c in zip(config.token_mlp_dims, config.channel_mlp_dims)
        )
        self.norm = nn.LayerNorm(config.hidden_size)
        self.head = nn.Linear(config.hidden_size, config.num_classes)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(pixel_values)  # (B, N, D)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x).mean(dim=1))  # (B, classes)


class SelfAttention(nn.Module):
    """Multi-head self-attention with separate q/k/v/o projections (heads prunable)."""

    def __init__(self, hidden: int, num_heads: int, head_dim: int):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, head_dim
        inner = num_heads * head_dim
        self.q_proj = nn.Linear(hidden, inner)
        self.k_proj = nn.Linear(hidden, inner)
        self.v_proj = nn.Linear(hidden, inner)
        self.o_proj = nn.Linear(inner, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D)
        b, t, _ = x.shape
        # heads from the projection width, so removing whole heads needs no attribute edits
        self.num_heads = self.q_proj.out_features // self.head_dim

        if self.num_heads == 0:  # a removed block (docs/theory.md §7c): the zero-width context gives the
            return self.o_proj(x[..., :0])  # bias (a 0-head reshape breaks the ONNX exporter)

        def split(y: torch.Tensor) -> torch.Tensor:  # (B, T, h*d) -> (B, h, T, d)
            return y.reshape(b, t, -1, self.head_dim).transpose(1, 2)

        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)  # (B, h, T, T)
        y = att.softmax(dim=-1) @ v  # (B, h, T, d)
        y = y.transpose(1, 2).reshape(b, t, -1)  # (B, T, h*d)
        return self.o_proj(y)  # (B, T, D)


class ViTLayer(nn.Module):
    def __init__(self, hidden: int, num_heads: int, head_dim: int, mlp_dim: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden)
        self.attn = SelfAttention(hidden, num_heads, head_dim)
        self.norm2 = nn.LayerNorm(hidden)
        self.mlp = FeedForward(hidden, mlp_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


@register_zoo("vit", ViTConfig)
class ViT(ZooModel):
    """Patch embed + cls token + learned positions -> pre-norm layers -> cls -> head."""

    def __init__(self, config: ViTConfig = ViTConfig()):
        super().__init__(config)
        n = (config.image_size // config.patch_size) ** 2
        d = config.hidden_size
        self.patch_embed = PatchEmbed(config.in_channels, config.patch_size, d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.randn(1, n + 1, d) * 0.02)
        self.layers = nn.ModuleList(
            ViTLayer(d, h, config.head_dim, m) for h, m in zip(config.num_heads, config.mlp_dims)
        )
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, config.num_classes)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(pixel_values)  # (B, N, D)
        cls = self.cls_token.expand(x.shape[0], -1, -1)  # (B, 1, D)
        x = torch.cat([cls, x], dim=1) + self.pos_embed  # (B, N+1, D)
        for layer in self.layers:
            x = layer(x)
        return self.head(self.norm(x[:, 0]))  # (B, classes)


# ----------------------------------------------------------------------------- rebuild


def zoo_entry(name: str) -> ZooEntry:
    try:
        return ZOO_ARCHITECTURES[name]
    except KeyError:
        known = ", ".join(sorted(ZOO_ARCHITECTURES))
        raise InputError(f"unknown zoo architecture {name!r} (known: {known})") from None


def make_config(name: str, kwargs: Mapping[str, Any], *, origin: str = "config") -> Any:
    """Strictly build architecture ``name``'s config from ``kwargs`` (unknown keys: InputError)."""
    cfg_cls = zoo_entry(name).config_cls
    fields = {f.name for f in dataclasses.fields(cfg_cls)}
    unknown = sorted(set(kwargs) - fields)
    if unknown:
        raise InputError(f"{origin}: unknown key(s) {unknown} for zoo architecture {name!r}")
    try:
        return cfg_cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise InputError(f"{origin}: bad settings for zoo architecture {name!r}: {e}") from None


def build_model(name: str, kwargs: Mapping[str, Any] | None = None, *, origin: str = "config") -> nn.Module:
    """A freshly initialised zoo model (seed torch before calling for reproducible weights)."""
    cfg = make_config(name, kwargs or {}, origin=origin)
    return zoo_entry(name).model_cls(cfg)


def build_from_config_dict(config: Mapping[str, Any], *, origin: str = "config.json") -> nn.Module:
    """Rebuild from a config.json dict holding ``bmr_zoo_architecture`` + architecture kwargs."""
    if ARCH_KEY not in config:
        raise InputError(f"{origin}: no {ARCH_KEY!r} key, not a bmr-compress zoo checkpoint")
    kwargs = {k: v for k, v in config.items() if k not in META_KEYS}
    return build_model(str(config[ARCH_KEY]), kwargs, origin=origin)


@register_recipe_check
def check_zoo_recipe(recipe: Recipe, where: str) -> None:
    """A recipe naming a zoo architecture names a known one with valid [source.arch] sizes."""
    src = recipe.source
    if not src.zoo:
        return
    if src.zoo not in ZOO_ARCHITECTURES:
        raise InputError(f"{where}: unknown zoo architecture {src.zoo!r}")
    make_config(src.zoo, src.arch, origin=f"{where} [source.arch]")


__all__ = [
    "ARCH_KEY", "META_KEYS", "ZOO_ARCHITECTURES", "ZooEntry", "ZooModel", "register_zoo", "MLP", "LeNet5",
    "MLPMixer", "ViT", "MLPConfig", "LeNet5Config", "MixerConfig", "ViTConfig", "zoo_entry",
    "make_config", "build_model", "build_from_config_dict",
]

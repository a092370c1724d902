"""Per-module-type handlers: which tensors carry output/input channels, and how to bring a
module's attributes back in line with its (already cut) tensors.

Registry keyed by type, looked up through the MRO (STYLE.md rule 4); registering twice is
an error. Handlers validate before they mutate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from bmr_compress.errors import UnsupportedModelError


@dataclass(frozen=True)
class Handler:
    """out_tensors/in_tensors: (tensor name, dim) pairs carrying output/input channels.
    sync: sets the module's shape attributes from its tensors (after a cut)."""

    out_tensors: tuple[tuple[str, int], ...]
    in_tensors: tuple[tuple[str, int], ...]
    sync: Callable[[nn.Module], None]


HANDLERS: dict[type, Handler] = {}


def register_handler(cls: type, handler: Handler) -> None:
    if cls in HANDLERS:
        raise ValueError(f"handler for {cls.__qualname__} registered twice")
    HANDLERS[cls] = handler


def handler_for(module: nn.Module) -> Handler | None:
    for cls in type(module).__mro__:
        if cls in HANDLERS:
            return HANDLERS[cls]
    return None


def _sync_linear(m: nn.Linear) -> None:
    m.out_features, m.in_features = m.weight.shape


def _sync_conv(m: nn.modules.conv._ConvNd) -> None:
    if m.groups != 1:
        raise UnsupportedModelError(f"grouped convolution {type(m).__name__} cannot be cut yet")
    m.out_channels, m.in_channels = m.weight.shape[0], m.weight.shape[1]


def _sync_bn(m: nn.modules.batchnorm._NormBase) -> None:
    ref = m.weight if m.weight is not None else m.running_mean
    m.num_features = ref.shape[0]


def _sync_ln(m: nn.LayerNorm) -> None:
    if m.weight is not None:
        m.normalized_shape = tuple(m.weight.shape)
    elif m.bias is not None:
        m.normalized_shape = tuple(m.bias.shape)


def _sync_embedding(m: nn.Embedding) -> None:
    m.num_embeddings, m.embedding_dim = m.weight.shape


register_handler(nn.Linear, Handler((("weight", 0), ("bias", 0)), (("weight", 1),), _sync_linear))
register_handler(
    nn.modules.conv._ConvNd, Handler((("weight", 0), ("bias", 0)), (("weight", 1),), _sync_conv)
)
register_handler(
    nn.modules.batchnorm._NormBase,
    Handler(
        (("weight", 0), ("bias", 0), ("running_mean", 0), ("running_var", 0)), (), _sync_bn
    ),
)
register_handler(nn.LayerNorm, Handler((("weight", 0), ("bias", 0)), (), _sync_ln))
register_handler(nn.Embedding, Handler((("weight", 1),), (), _sync_embedding))


def _register_conv1d() -> None:
    """transformers' Conv1D stores weight as (in, out): output channels are dim 1."""
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # transformers is a dependency, but keep the handlers importable
        return

    def _sync(m: nn.Module) -> None:
        m.nf = m.weight.shape[1]
        if hasattr(m, "nx"):
            m.nx = m.weight.shape[0]

    register_handler(Conv1D, Handler((("weight", 1), ("bias", 0)), (("weight", 0),), _sync))


_register_conv1d()


def sync_module_(module: nn.Module, old_sizes: set[int]) -> None:
    """Bring `module`'s attributes in line with its tensors after a cut.

    Unknown module types (e.g. a family's RMSNorm) are accepted only if none of their int
    attributes equals a size that was cut (which would mean a stale shape attribute).
    """
    handler = handler_for(module)
    if handler is not None:
        handler.sync(module)
        return
    for key, value in vars(module).items():
        if isinstance(value, int) and not isinstance(value, bool) and value in old_sizes:
            raise UnsupportedModelError(
                f"{type(module).__name__} has attribute {key}={value} matching a cut size and no"
                " handler; register one in bmr_compress.surgery.handlers"
            )


def tensors_of(module: nn.Module) -> dict[str, torch.Tensor]:
    """Direct parameters and buffers of one module (not recursing)."""
    out: dict[str, torch.Tensor] = {}
    for name, p in module.named_parameters(recurse=False):
        out[name] = p
    for name, b in module.named_buffers(recurse=False):
        out[name] = b
    return out

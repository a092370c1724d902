"""Layer handlers: how each parameter holder is sampled, and how a gate folds into it.

A typed registry filled by decorators and looked up through the type's MRO (STYLE.md
rule 4). Registering a type twice is an error. `nn.Module` itself maps to the generic
weight-space handler, which takes every direct parameter of a module no other handler
knows (e.g. transformers' LlamaRMSNorm); the wrap report names such modules.

Modes: "local" = local reparameterisation (output mean from mu via the module's own
forward, output variance from x^2 against sigma^2 -- for embeddings sigma^2 of the looked-up
rows -- one noise draw per output element);
"weight" = weight-space sampling (one draw of the tensor per forward).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from bmr_compress.errors import UnsupportedModelError


class Handler:
    """Base handler (weight-space sampling of every direct parameter, no gates)."""

    mode = "weight"
    generic = False

    def tensors(self, module: nn.Module) -> list[str]:
        """Local names of the parameters this handler wraps."""
        return [n for n, p in module._parameters.items() if p is not None]

    def out_var(self, module: nn.Module, x: torch.Tensor,
                var: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Output variance given the module's input and the parameter variances ("local" only)."""
        raise NotImplementedError

    def gate_axis(self, module: nn.Module) -> int:
        """Output-channel axis of the module's output (for gates)."""
        raise UnsupportedModelError(f"cannot gate a {type(module).__name__}")

    def fold_gate_(self, module: nn.Module, scale: torch.Tensor) -> None:
        """Multiply the rows producing output channel j (and bias j) by scale[j]. (C,)"""
        raise UnsupportedModelError(f"cannot fold a gate into a {type(module).__name__}")


HANDLERS: dict[type, Handler] = {}


def register_handler(*types: type) -> Callable[[type[Handler]], type[Handler]]:
    def deco(cls: type[Handler]) -> type[Handler]:
        for t in types:
            if t in HANDLERS:
                raise ValueError(f"handler for {t.__name__} registered twice")
            HANDLERS[t] = cls()
        return cls

    return deco


def handler_for(module: nn.Module) -> Handler:
    for t in type(module).__mro__:
        if t in HANDLERS:
            return HANDLERS[t]
    raise UnsupportedModelError(f"no handler for {type(module).__name__}")  # unreachable: nn.Module


def _var(var: dict[str, torch.Tensor], name: str) -> torch.Tensor | None:
    return var.get(name)


def _scale_(t: torch.Tensor | None, scale: torch.Tensor, dim: int) -> None:
    if t is None:
        return
    shape = [1] * t.dim()
    shape[dim] = -1
    with torch.no_grad():
        t.mul_(scale.to(t.dtype).view(shape))


@register_handler(nn.Linear)
class LinearHandler(Handler):
    mode = "local"

    def tensors(self, module: nn.Module) -> list[str]:
        return [n for n in ("weight", "bias") if getattr(module, n, None) is not None]

    def out_var(self, module, x, var):  # (..., in) -> (..., out)
        return F.linear(x * x, var["weight"], _var(var, "bias"))

    def gate_axis(self, module):
        return -1

    def fold_gate_(self, module, scale):
        _scale_(module.weight, scale, 0)  # weight (out, in)
        _scale_(module.bias, scale, 0)


@register_handler(nn.Conv1d, nn.Conv2d, nn.Conv3d)
class ConvHandler(Handler):
    mode = "local"

    def tensors(self, module: nn.Module) -> list[str]:
        return [n for n in ("weight", "bias") if getattr(module, n, None) is not None]

    def out_var(self, module, x, var):  # (B, Cin, *S) -> (B, Cout, *S')
        # padding x^2 equals squaring the padded x, so the module's own conv applies
        return module._conv_forward(x * x, var["weight"], _var(var, "bias"))

    def gate_axis(self, module):
        return 1

    def fold_gate_(self, module, scale):
        _scale_(module.weight, scale, 0)  # weight (out, in/groups, *k)
        _scale_(module.bias, scale, 0)


def _conv1d_type() -> type | None:
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover - transformers is a dependency
        return None
    return Conv1D


class HFConv1DHandler(Handler):
    """transformers' Conv1D: y = x @ W + b with W of shape (in, out)."""

    mode = "local"

    def tensors(self, module: nn.Module) -> list[str]:
        return [n for n in ("weight", "bias") if getattr(module, n, None) is not None]

    def out_var(self, module, x, var):  # (..., in) @ (in, out) -> (..., out)
        out = (x * x) @ var["weight"].to(x.dtype)
        b = _var(var, "bias")
        return out if b is None else out + b.to(out.dtype)

    def gate_axis(self, module):
        return -1

    def fold_gate_(self, module, scale):
        _scale_(module.weight, scale, 1)  # weight (in, out)
        _scale_(module.bias, scale, 0)


_C1D = _conv1d_type()
if _C1D is not None:
    register_handler(_C1D)(HFConv1DHandler)


@register_handler(nn.Embedding)
class EmbeddingHandler(Handler):
    """Each output element is one weight, so "local" sampling is exact per element: out =
    mu[ids] + sigma[ids] * eps. (Repeated ids in a batch get independent draws, the usual
    local-reparameterisation trade; it avoids drawing the whole vocabulary table.)"""

    mode = "local"

    def tensors(self, module: nn.Module) -> list[str]:
        return ["weight"]

    def out_var(self, module, x, var):  # ids (...) -> (..., dim)
        rows = getattr(var, "rows", None)  # gather log-variances first: no exp over the table
        return rows("weight", x) if rows is not None else F.embedding(x, var["weight"])

    def gate_axis(self, module):
        return -1

    def fold_gate_(self, module, scale):
        _scale_(module.weight, scale, 1)  # weight (vocab, dim)


@register_handler(
    nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
)
class NormHandler(Handler):
    """Normalisation affine parameters (weight-space sampling)."""

    def tensors(self, module: nn.Module) -> list[str]:
        return [n for n in ("weight", "bias") if getattr(module, n, None) is not None]


@register_handler(nn.Module)
class GenericHandler(Handler):
    """Any other direct parameter holder (unknown norms, cls tokens, position tables)."""

    generic = True

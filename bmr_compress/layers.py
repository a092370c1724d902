"""Layer types: everything the stages know about one kind of parameter holder, in one place.

One small class per layer type, registered by decorator for one or more module classes and
looked up through the module's MRO (never by class-name substrings, which would misroute
e.g. transformers' Conv1D); registering a class twice is an error. `nn.Module` itself maps
to the generic holder (every direct parameter sampled in weight space, no channel axes), so
every module has a type; a stage that needs channel axes (gates, rows, cuts) on a type that
has none raises UnsupportedModelError naming the class.

A type states, as class attributes:
  mode         "local": local reparameterisation (output mean from the module's own forward
               at mu, output variance from `out_var`, one draw per output element);
               "weight": one draw of each wrapped tensor per forward.
  wrapped      names of the tensors the posterior covers (all direct parameters if generic).
  out_tensors  (tensor, axis) pairs carrying the layer's output channels;
  in_tensors   (tensor, axis) pairs carrying its input channels (empty for norms, tables).
  out_axis     axis of the output channels in the layer's *output* (gates, per-example
               gradients); None: the layer cannot be gated.
and overrides the few methods whose defaults do not fit: `out_var` (local mode), `sync_`
(shape attributes after a cut), `input_rows` / `rows_ok` (inputs as rows of the weight).

Rows: the weight seen as (out, in·k) -- output channels first, then the input channel and
whatever follows it (kernel positions) -- is what the reduced-means step and the row
posteriors work on; `input_rows` gives the layer's inputs in the same column order.

Imports only torch and bmr_compress.errors (a bottom-level module); transformers' classes are
registered by their dotted path.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from bmr_compress.errors import UnsupportedModelError

Axes = tuple[tuple[str, int], ...]


class LayerType:
    """Base type, and the generic holder registered for `nn.Module`."""

    mode = "weight"
    generic = False
    wrapped: tuple[str, ...] = ("weight", "bias")
    out_tensors: Axes = ()
    in_tensors: Axes = ()
    out_axis: int | None = None
    unit = "neuron"  # what one output channel is called ("filter" for convolutions)
    out_role = "out"  # role of the out-channel slices: "out", "norm" or "embed"

    # ------------------------------------------------------------------ posterior (variational)

    def tensors(self, module: nn.Module) -> list[str]:
        """Local names of the parameters the posterior wraps."""
        return [n for n in self.wrapped if getattr(module, n, None) is not None]

    def out_var(self, module: nn.Module, x: torch.Tensor,
                var: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Output variance given the module's input and the wrapped tensors' variances (same
        shape as the output; "local" mode only)."""
        raise NotImplementedError(f"{type(self).__name__} has no local reparameterisation")

    def gate_axis(self, module: nn.Module) -> int:
        """Output-channel axis of the module's output, for a gate per channel group."""
        if self.out_axis is None:
            raise UnsupportedModelError(f"cannot gate a {type(module).__name__}")
        return self.out_axis

    def fold_gate_(self, module: nn.Module, scale: torch.Tensor) -> None:
        """Multiply everything producing output channel j by scale[j]. scale: (C,)"""
        if self.out_axis is None:
            raise UnsupportedModelError(f"cannot fold a gate into a {type(module).__name__}")
        for name, dim in self.out_tensors:
            _scale_(getattr(module, name, None), scale, dim)

    def width(self, module: nn.Module) -> int:
        """Number of output channels (read from the first out tensor)."""
        if not self.out_tensors:
            raise UnsupportedModelError(f"{type(module).__name__} has no output channels")
        name, dim = self.out_tensors[0]
        return int(getattr(module, name).shape[dim])

    # ------------------------------------------------------------------ rows (reduced means)

    def rows_ok(self, module: nn.Module) -> bool:
        """Can the weight be read as rows against `input_rows` (y = rows · x + b)?"""
        return bool(self.in_tensors)

    def rows(self, module: nn.Module, w: torch.Tensor) -> torch.Tensor:
        """A weight-shaped tensor as (out, in·k) rows."""
        out_dim, _ = self._weight_axes(module, w)
        return w.movedim(out_dim, 0).reshape(w.shape[out_dim], -1)

    def from_rows(self, module: nn.Module, rows: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """Inverse of `rows`: (out, in·k) back to the weight's `shape`."""
        out_dim = dict(self.out_tensors)["weight"]
        moved = [shape[out_dim]] + [s for i, s in enumerate(shape) if i != out_dim]
        return rows.reshape(moved).movedim(0, out_dim)

    def columns(self, module: nn.Module, dim: int, index: torch.Tensor) -> torch.Tensor | None:
        """Columns of rows(W) that a slice of W along `dim` at index (units, k) covers, as
        (units, k·kernel); None unless `dim` is the weight's input-channel axis."""
        w = module.weight
        out_dim, in_dim = self._weight_axes(module, w)
        if dim != in_dim:
            return None
        kk = math.prod(s for i, s in enumerate(w.shape) if i not in (out_dim, in_dim))
        cols = index[:, :, None] * kk + torch.arange(kk)  # (units, k, kernel)
        return cols.reshape(index.shape[0], -1)

    def input_rows(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The layer's input as (batch, positions, in·k), columns in `rows` order. Default:
        input features on the last axis."""
        return x.reshape(x.shape[0] if x.dim() > 1 else 1, -1, x.shape[-1])

    def output_rows(self, module: nn.Module, y: torch.Tensor) -> torch.Tensor:
        """An output-shaped tensor (e.g. its gradient) as (batch, positions, out)."""
        if self.out_axis is None:
            raise UnsupportedModelError(f"{type(module).__name__} has no output-channel axis")
        y = y.movedim(self.out_axis, -1)
        return y.reshape(y.shape[0], -1, y.shape[-1])

    def _weight_axes(self, module: nn.Module, w: torch.Tensor) -> tuple[int, int]:
        out_dim = dict(self.out_tensors).get("weight")
        in_dim = dict(self.in_tensors).get("weight")
        rest = [i for i in range(w.dim()) if i != out_dim]
        if out_dim is None or in_dim is None or rest[0] != in_dim:
            raise UnsupportedModelError(f"{type(module).__name__}: weight cannot be read as rows")
        return out_dim, in_dim

    # ------------------------------------------------------------------ surgery

    def sync_(self, module: nn.Module, cut_sizes: Collection[int] = ()) -> None:
        """Bring the module's shape attributes in line with its (cut) tensors. Default, for
        types without shape attributes of their own: check that no int attribute equals a
        size that was cut (it would be a stale shape attribute)."""
        for key, value in vars(module).items():
            if isinstance(value, int) and not isinstance(value, bool) and value in cut_sizes:
                raise UnsupportedModelError(
                    f"{type(module).__name__} has attribute {key}={value} matching a cut size and"
                    " no handler; register a layer type for it in bmr_compress.layers"
                )


LAYER_TYPES: dict[str, LayerType] = {}  # the class's dotted path -> its layer type


def class_path(cls: type | str) -> str:
    """A class's dotted path ("module.QualName"): the registries' key, so a class of a heavy
    library (transformers) is registered by name and that library is imported only by the
    models that use it."""
    return cls if isinstance(cls, str) else f"{cls.__module__}.{cls.__qualname__}"


def register_layer(*classes: type | str) -> Callable[[type[LayerType]], type[LayerType]]:
    """Class decorator: one instance of the decorated LayerType serves every class given
    (a class, or its dotted path)."""

    def deco(cls: type[LayerType]) -> type[LayerType]:
        taken = [class_path(c) for c in classes if class_path(c) in LAYER_TYPES]
        if taken:
            raise ValueError(f"layer type for {', '.join(taken)} registered twice")
        inst = cls()
        for c in classes:
            LAYER_TYPES[class_path(c)] = inst
        return cls

    return deco


def layer_type(module: nn.Module) -> LayerType:
    """The type registered for the nearest class in `module`'s MRO."""
    for cls in type(module).__mro__:
        found = LAYER_TYPES.get(class_path(cls))
        if found is not None:
            return found
    raise UnsupportedModelError(f"{type(module).__name__} is not a torch module")


def channel_type(module: nn.Module) -> LayerType | None:
    """The module's type if it has channel axes (can be cut, padded, costed), else None."""
    lt = layer_type(module)
    return lt if lt.out_tensors else None


def _scale_(t: torch.Tensor | None, scale: torch.Tensor, dim: int) -> None:
    if t is None:
        return
    shape = [1] * t.dim()
    shape[dim] = -1
    with torch.no_grad():
        t.mul_(scale.to(t.dtype).view(shape))


# ---------------------------------------------------------------------------- the types


@register_layer(nn.Linear)
class LinearLayer(LayerType):
    """y = x Wᵀ + b, W (out, in)."""

    mode = "local"
    out_tensors = (("weight", 0), ("bias", 0))
    in_tensors = (("weight", 1),)
    out_axis = -1

    def out_var(self, module, x, var):  # (..., in) -> (..., out)
        return F.linear(x * x, var["weight"], var.get("bias"))

    def sync_(self, module, cut_sizes=()):
        module.out_features, module.in_features = module.weight.shape


@register_layer(nn.Conv1d, nn.Conv3d)
class ConvLayer(LayerType):
    """Convolution, W (out, in/groups, *k); its weight is not read as rows (only Conv2d is)."""

    mode = "local"
    out_tensors = (("weight", 0), ("bias", 0))
    in_tensors = (("weight", 1),)
    out_axis = 1
    unit = "filter"

    def out_var(self, module, x, var):  # (B, Cin, *S) -> (B, Cout, *S')
        # padding x^2 equals squaring the padded x, so the module's own conv applies
        return module._conv_forward(x * x, var["weight"], var.get("bias"))

    def rows_ok(self, module):
        return False

    def sync_(self, module, cut_sizes=()):
        if module.groups != 1:
            raise UnsupportedModelError(
                f"grouped convolution {type(module).__name__} cannot be cut yet")
        module.out_channels, module.in_channels = module.weight.shape[0], module.weight.shape[1]


@register_layer(nn.Conv2d)
class Conv2dLayer(ConvLayer):
    """Conv2d: rows (out, in·kh·kw) against the unfolded input patches."""

    def rows_ok(self, module):
        return (module.groups == 1 and module.padding_mode == "zeros"
                and not isinstance(module.padding, str))

    def input_rows(self, module, x):  # (B, Cin, H, W) -> (B, H'W', Cin·kh·kw)
        cols = F.unfold(x, module.kernel_size, dilation=module.dilation, padding=module.padding,
                        stride=module.stride)  # (B, Cin·kh·kw, H'W')
        return cols.transpose(1, 2)


@register_layer("transformers.pytorch_utils.Conv1D")
class HFConv1DLayer(LayerType):
    """transformers' Conv1D (GPT-2): y = x W + b with W stored as (in, out)."""

    mode = "local"
    out_tensors = (("weight", 1), ("bias", 0))
    in_tensors = (("weight", 0),)
    out_axis = -1

    def out_var(self, module, x, var):  # (..., in) @ (in, out) -> (..., out)
        out = (x * x) @ var["weight"].to(x.dtype)
        b = var.get("bias")
        return out if b is None else out + b.to(out.dtype)

    def sync_(self, module, cut_sizes=()):
        module.nf = module.weight.shape[1]
        if hasattr(module, "nx"):
            module.nx = module.weight.shape[0]


@register_layer(nn.Embedding)
class EmbeddingLayer(LayerType):
    """Table (vocab, dim); output channels are its columns. Each output element is one weight,
    so "local" sampling is exact per element: out = mu[ids] + sigma[ids] * eps (repeated ids
    in a batch get independent draws, the usual local-reparameterisation trade; it avoids
    drawing the whole table)."""

    mode = "local"
    wrapped = ("weight",)
    out_tensors = (("weight", 1),)
    out_axis = -1
    out_role = "embed"

    def out_var(self, module, x, var):  # ids (...) -> (..., dim)
        rows = getattr(var, "rows", None)  # gather log-variances first: no exp over the table
        return rows("weight", x) if rows is not None else F.embedding(x, var["weight"])

    def sync_(self, module, cut_sizes=()):
        module.num_embeddings, module.embedding_dim = module.weight.shape


@register_layer(nn.LayerNorm)
class LayerNormLayer(LayerType):
    out_tensors = (("weight", 0), ("bias", 0))
    out_role = "norm"

    def sync_(self, module, cut_sizes=()):
        ref = module.weight if module.weight is not None else module.bias
        if ref is not None:
            module.normalized_shape = tuple(ref.shape)


@register_layer(nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)
class BatchNormLayer(LayerType):
    """Batch / instance norm: affine parameters and running statistics per channel."""

    out_tensors = (("weight", 0), ("bias", 0), ("running_mean", 0), ("running_var", 0))
    out_role = "norm"

    def sync_(self, module, cut_sizes=()):
        ref = module.weight if module.weight is not None else module.running_mean
        module.num_features = ref.shape[0]


@register_layer(nn.GroupNorm, nn.RMSNorm)
class AffineNormLayer(LayerType):
    """Norms whose affine parameters are wrapped but whose channels are not cut (a GroupNorm's
    groups, an RMSNorm's shape) -- surgery refuses to couple them."""


@register_layer(nn.Module)
class GenericLayer(LayerType):
    """Any other direct parameter holder (unknown norms, cls tokens, position tables)."""

    generic = True

    def tensors(self, module):
        return [n for n, p in module._parameters.items() if p is not None]

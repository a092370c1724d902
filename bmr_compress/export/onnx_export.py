"""ONNX export with named inputs/outputs, dynamic axes and versions the installed onnxruntime accepts.

Export path: ``torch.onnx.export(..., dynamo=False)`` into a scratch directory, then load the
proto, pin ``ir_version``/opset, optionally move mostly-zero tensors into ``sparse_initializer``,
and save a single file (below 2 GB) or ``<name>.data`` external data (above). Input and output
names follow transformers/optimum (``input_ids`` ... -> ``last_hidden_state`` / ``logits``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bmr_compress.errors import InputError

if TYPE_CHECKING:
    import onnx
    import torch
    from torch import nn

log = logging.getLogger(__name__)

TWO_GB = 2**31
# Inputs whose axis 1 is a token sequence (dynamic); every other input has a dynamic batch only.
SEQUENCE_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")
KNOWN_INPUTS = (*SEQUENCE_INPUTS, "pixel_values", "inputs")


@dataclass(frozen=True)
class IoSpec:
    """Names and dynamic axes of the exported graph (optimum conventions)."""

    input_names: tuple[str, ...]
    output_name: str
    dynamic_axes: dict[str, dict[int, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class OnnxArtifact:
    """One written ONNX model: its files, versions and initializer bytes (dense + sparse)."""

    path: Path
    files: tuple[Path, ...]  # model file, plus external data file when used
    ir_version: int
    opset: int
    io_spec: IoSpec
    initializer_bytes: int  # bytes of tensor payloads as stored (sparse tensors: values + indices)
    dense_initializer_bytes: int  # bytes the same tensors take densely
    sparse_initializers: tuple[str, ...] = ()
    external_data: bool = False

    @property
    def file_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path.name, "files": [p.name for p in self.files],
            "file_bytes": self.file_bytes, "ir_version": self.ir_version, "opset": self.opset,
            "input_names": list(self.io_spec.input_names), "output_name": self.io_spec.output_name,
            "initializer_bytes": self.initializer_bytes,
            "dense_initializer_bytes": self.dense_initializer_bytes,
            "sparse_initializers": list(self.sparse_initializers),
            "external_data": self.external_data,
        }


# ---------------------------------------------------------------- versions from onnxruntime


def _ort_loads(ir_version: int, opset: int) -> bool:
    import onnxruntime as ort
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version
    try:
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - any refusal means "not supported"
        return False
    return True


@functools.lru_cache(maxsize=1)
def ort_max_ir_version() -> int:
    """Highest ONNX IR version the installed onnxruntime loads (probed, not a constant)."""
    import onnx

    for ir in range(onnx.IR_VERSION, 6, -1):
        if _ort_loads(ir, 13):
            return ir
    raise InputError("installed onnxruntime loads no ONNX IR version >= 7")


@functools.lru_cache(maxsize=1)
def ort_max_opset() -> int:
    """Highest default-domain opset the installed onnxruntime loads (probed)."""
    import onnx

    ir = ort_max_ir_version()
    for opset in range(onnx.defs.onnx_opset_version(), 12, -1):
        if _ort_loads(ir, opset):
            return opset
    raise InputError("installed onnxruntime loads no opset >= 13")


def default_opset() -> int:
    """min(torch's TorchScript exporter max opset, onnxruntime's max opset)."""
    from torch.onnx import _constants

    ts_max = getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", 17)
    return min(int(ts_max), ort_max_opset())


# ---------------------------------------------------------------- wrapper and io spec


def _wrapper(model: nn.Module, input_names: tuple[str, ...]) -> nn.Module:
    from torch import nn

    from bmr_compress.tasks import output_tensor

    hf = is_hf(model)

    class _Named(nn.Module):
        """Positional inputs in `input_names` order -> model(**named) -> one named tensor."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *args: torch.Tensor) -> torch.Tensor:
            kwargs: dict[str, Any] = dict(zip(input_names, args, strict=True))
            if hf:
                kwargs.update(hf_call_kwargs(model))
            return output_tensor(self.model(**kwargs))

    return _Named().eval()


def hf_call_kwargs(model: nn.Module) -> dict[str, Any]:
    """``return_dict=True`` / ``use_cache=False`` for a transformers model, each only when its
    forward accepts it (remote-code models may take neither)."""
    import inspect

    params = inspect.signature(model.forward).parameters
    any_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kw: dict[str, Any] = {}
    if any_kw or "return_dict" in params:
        kw["return_dict"] = True
    if getattr(model.config, "use_cache", None) is not None and (any_kw or "use_cache" in params):
        kw["use_cache"] = False
    return kw


def is_hf(model: nn.Module) -> bool:
    try:
        from transformers import PreTrainedModel
    except ImportError:  # pragma: no cover - transformers is a dependency
        return False
    return isinstance(model, PreTrainedModel)


def infer_io_spec(model: nn.Module, sample_inputs: dict[str, torch.Tensor]) -> IoSpec:
    """Names/axes from the sample inputs and the model's output (logits or last_hidden_state)."""
    import torch

    names = tuple(sample_inputs)
    out_name = "logits"
    if is_hf(model):
        with torch.no_grad():
            out = model(**sample_inputs, **hf_call_kwargs(model))
        if getattr(out, "logits", None) is None and getattr(out, "last_hidden_state", None) is not None:
            out_name = "last_hidden_state"
        if isinstance(out, torch.Tensor):  # a remote-code model returning a plain tensor
            out_t = out
        else:
            out_t = out.logits if out_name == "logits" else out.last_hidden_state
    else:
        with torch.no_grad():
            from bmr_compress.tasks import output_tensor

            out_t = output_tensor(model(**sample_inputs))
    axes: dict[str, dict[int, str]] = {}
    has_seq = False
    for name, t in sample_inputs.items():
        axes[name] = {0: "batch"}
        if name in SEQUENCE_INPUTS and t.dim() >= 2:
            axes[name][1] = "sequence"
            has_seq = True
    axes[out_name] = {0: "batch"}
    if has_seq and out_t.dim() >= 3:
        axes[out_name][1] = "sequence"
    return IoSpec(names, out_name, axes)


# ---------------------------------------------------------------- export


def export_onnx(
    model: nn.Module,
    path: str | Path,
    sample_inputs: dict[str, torch.Tensor],
    *,
    io_spec: IoSpec | None = None,
    opset: int | None = None,
    sparse: bool = True,
    external_data_threshold: int = TWO_GB,
) -> OnnxArtifact:
    """Export `model` to `path` (single file, or external data when the proto is >= threshold).

    `sample_inputs` are keyword inputs of the model (batch dict without labels). `sparse=True`
    stores a tensor in `sparse_initializer` only where that is smaller (int64 indices).
    """
    import onnx
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    spec = io_spec or infer_io_spec(model, sample_inputs)
    missing = [n for n in spec.input_names if n not in sample_inputs]
    if missing:
        raise InputError(f"sample inputs lack {missing} needed by the ONNX io spec ({path})")
    opset = opset or default_opset()
    wrapper = _wrapper(model, spec.input_names)
    args = tuple(sample_inputs[n] for n in spec.input_names)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".onnx-export-") as tmp:
        raw = Path(tmp) / "raw.onnx"
        # The tracer warns about Python control flow on shapes; parity at other shapes
        # (validate) is the real check, so the warnings are logged instead of raised.
        with torch.no_grad(), warnings.catch_warnings(record=True) as caught, \
                _traceable_attention_masks():
            warnings.simplefilter("always")
            torch.onnx.export(
                wrapper, args, str(raw), input_names=list(spec.input_names),
                output_names=[spec.output_name], dynamic_axes=spec.dynamic_axes,
                opset_version=opset, do_constant_folding=True, dynamo=False,
            )
        for w in caught:
            log.debug("onnx export: %s: %s", w.category.__name__, w.message)
        proto = onnx.load(str(raw))  # loads external data too, if torch wrote any
    _keep_declared_inputs_(proto, spec, sample_inputs)
    return save_onnx(proto, path, spec, sparse=sparse, external_data_threshold=external_data_threshold)


def _keep_declared_inputs_(proto: onnx.ModelProto, spec: IoSpec,
                           sample: dict[str, torch.Tensor]) -> None:
    """Put back, unread, each declared input no node reads (a model with every attention block
    removed ignores attention_mask), so the file takes the same feeds as other exports."""
    import onnx

    have, out = {i.name: i for i in proto.graph.input}, []
    for name in spec.input_names:
        if name in have:
            out.append(have.pop(name))
            continue
        t, axes = sample[name], spec.dynamic_axes.get(name, {})
        out.append(onnx.helper.make_tensor_value_info(
            name, onnx.helper.np_dtype_to_tensor_dtype(t.numpy().dtype),
            [axes.get(d, t.shape[d]) for d in range(t.dim())]))
        log.info("onnx export: input %s is read by no node; kept in the signature", name)
    out += list(have.values())
    del proto.graph.input[:]
    proto.graph.input.extend(out)


@contextlib.contextmanager
def _traceable_attention_masks():
    """transformers 4.5x builds attention masks by ``torch.vmap`` over a mask function, with
    tensor indexing routed through an autograd function; the TorchScript tracer follows neither
    (``RuntimeError: unordered_map::at``). While exporting, its mask functions are evaluated on
    broadcast index tensors with plain indexing instead (what transformers 5 does by default).
    A no-op where transformers has no such helper."""
    try:
        from transformers import masking_utils
    except ImportError:  # pragma: no cover - transformers < 4.53 builds masks without vmap
        yield
        return
    if not hasattr(masking_utils, "_vmap_for_bhqkv"):
        yield
        return

    def broadcast(mask_function, bh_indices=True):
        def expanded(b, h, q, kv):
            if not bh_indices:
                return mask_function(None, None, q[:, None], kv[None, :])
            return mask_function(b[:, None, None, None], h[None, :, None, None],
                                 q[None, None, :, None], kv[None, None, None, :])
        return expanded

    saved = {k: getattr(masking_utils, k) for k in ("_vmap_for_bhqkv", "TransformGetItemToIndex")
             if hasattr(masking_utils, k)}
    masking_utils._vmap_for_bhqkv = broadcast
    if "TransformGetItemToIndex" in saved:
        masking_utils.TransformGetItemToIndex = contextlib.nullcontext
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(masking_utils, k, v)


def save_onnx(
    proto: onnx.ModelProto, path: Path, spec: IoSpec, *, sparse: bool = True,
    external_data_threshold: int = TWO_GB,
) -> OnnxArtifact:
    """Pin IR version, sparsify where smaller, save (external data above the threshold), check."""
    import onnx

    proto.ir_version = min(ort_max_ir_version(), proto.ir_version or ort_max_ir_version())
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    dense_bytes = sum(tensor_bytes(t) for t in proto.graph.initializer)
    dense_bytes += sum(dense_bytes_of_sparse(s) for s in proto.graph.sparse_initializer)
    sparse_names = _sparsify_(proto) if sparse else ()
    stored = stored_bytes(proto)
    data_name = path.name + ".data"
    for stale in (path, path.with_name(data_name)):
        stale.unlink(missing_ok=True)
    external = proto.ByteSize() >= external_data_threshold
    if external:
        onnx.save_model(
            proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
            location=data_name, size_threshold=1024,
        )
    else:
        onnx.save_model(proto, str(path))
    onnx.checker.check_model(str(path))  # path form: follows external data
    files = (path, path.with_name(data_name)) if external else (path,)
    log.info("wrote %s (IR %d, opset %d, %d B initializers)", path, proto.ir_version, opset, stored)
    return OnnxArtifact(
        path=path, files=files, ir_version=proto.ir_version, opset=opset, io_spec=spec,
        initializer_bytes=stored, dense_initializer_bytes=dense_bytes,
        sparse_initializers=tuple(sparse_names), external_data=external,
    )


def tensor_bytes(t: onnx.TensorProto) -> int:
    """Payload bytes from dims and dtype (works for external data without reading it)."""
    from onnx import helper

    n = 1
    for d in t.dims:
        n *= int(d)
    return n * helper.tensor_dtype_to_np_dtype(t.data_type).itemsize


def dense_bytes_of_sparse(s: onnx.SparseTensorProto) -> int:
    from onnx import helper

    itemsize = helper.tensor_dtype_to_np_dtype(s.values.data_type).itemsize
    n = 1
    for d in s.dims:
        n *= int(d)
    return n * itemsize


def stored_bytes(proto: onnx.ModelProto) -> int:
    total = sum(tensor_bytes(t) for t in proto.graph.initializer)
    total += sum(tensor_bytes(s.values) + tensor_bytes(s.indices) for s in proto.graph.sparse_initializer)
    return total


def _sparsify_(proto: onnx.ModelProto) -> list[str]:
    """Move float initializers into sparse_initializer where values + int64 indices are smaller."""
    import numpy as np
    from onnx import numpy_helper

    moved: list[str] = []
    keep = []
    for init in proto.graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.dtype.kind != "f" or arr.size < 16:
            keep.append(init)
            continue
        flat = arr.reshape(-1)
        idx = np.flatnonzero(flat).astype(np.int64)  # sorted, linearised: checker-valid
        if idx.size * (arr.itemsize + 8) >= arr.nbytes:
            keep.append(init)
            continue
        values = numpy_helper.from_array(flat[idx], name=init.name)
        indices = numpy_helper.from_array(idx, name=init.name + "_indices")
        sp = proto.graph.sparse_initializer.add()
        sp.values.CopyFrom(values)
        sp.indices.CopyFrom(indices)
        sp.dims.extend(arr.shape)
        moved.append(init.name)
    if moved:
        del proto.graph.initializer[:]
        proto.graph.initializer.extend(keep)
    return moved

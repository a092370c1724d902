"""Optional int8 weight quantisation of an export (onnxruntime CPU).

Scheme ``"blockwise"``: every MatMul with a constant weight becomes onnxruntime's
MatMulNBits with 8-bit weights, one scale per block of 128 input channels, computed in int8
with activations quantised per block (accuracy level 4); embedding tables (Gather) are
stored as int8 with one scale per row and dequantised after the lookup; Conv layers are
quantised dynamically with one scale per output channel. Attention's activation-by-
activation MatMuls stay float. On the unpruned all-MiniLM-L6-v2 this keeps held-out embedding
cosine at 0.999 where dynamic per-channel int8 (scheme ``"dynamic"``) reaches 0.993, at
the same latency and ~3.9x smaller than fp32 (bench/int8.py).

The quantised model is a second artefact with its own validation (see `validate_int8`).
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from bmr_compress.errors import InputError
from bmr_compress.export.onnx_export import IoSpec, OnnxArtifact, save_onnx

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

SCHEMES = ("blockwise", "dynamic", "dynamic-per-tensor")  # "dynamic": one scale per channel
BLOCK = 128  # input channels per weight scale (MatMulNBits)


def quantize_int8(
    onnx_path: str | Path, out_path: str | Path, *, io_spec: IoSpec | None = None,
    scheme: str = "blockwise", per_channel: bool = True, block_size: int = BLOCK,
    nodes_to_exclude: tuple[str, ...] = (),
) -> OnnxArtifact:
    """int8 weights for `onnx_path`, written to `out_path` (IR pinned, checked).

    scheme="blockwise" (see the module docstring), "dynamic": onnxruntime's
    `quantize_dynamic` on every supported op, weights with one scale per output channel
    (`per_channel=True`) or per tensor, activations quantised per tensor at run time, or
    "dynamic-per-tensor" (the same with one scale per weight tensor). Which is fastest
    depends on the CPU (VNNI / dot-product instructions): algorithms/curve.py times them.
    `nodes_to_exclude` keeps named nodes in float. Sparse initializers are densified first so
    that the quantiser sees every weight.
    """
    import onnx

    if scheme not in SCHEMES:
        raise InputError(f"unknown int8 scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    src, out = Path(onnx_path), Path(out_path)
    if not src.is_file():
        raise InputError(f"no ONNX model at {src}")
    proto = onnx.load(str(src))
    _densify_(proto)  # the quantisers only look at dense initializers
    spec = io_spec or _io_spec_of(proto)
    exclude = tuple(nodes_to_exclude)
    if scheme.startswith("dynamic"):
        q = _dynamic(proto, out.parent, exclude=exclude,
                     per_channel=per_channel and scheme != "dynamic-per-tensor")
    else:
        if any(n.op_type == "Conv" for n in proto.graph.node):
            proto = _dynamic(proto, out.parent, per_channel=True, exclude=exclude, ops=("Conv",))
        try:
            q = _matmul_blocks(proto, block_size, exclude)
        except (ImportError, AssertionError, NotImplementedError) as e:  # an onnxruntime
            log.warning("8-bit MatMulNBits unavailable in this onnxruntime (%s: %s); "  # too old
                        "falling back to dynamic int8", type(e).__name__, e)
            return save_onnx(_dynamic(proto, out.parent, per_channel=per_channel, exclude=exclude),
                             out, spec, sparse=True)
        _gather_rows_int8_(q, set(exclude))
    return save_onnx(q, out, spec, sparse=True)


def _dynamic(proto: onnx.ModelProto, scratch: Path, *, per_channel: bool,
             exclude: tuple[str, ...], ops: tuple[str, ...] | None = None) -> onnx.ModelProto:
    """onnxruntime's quantize_dynamic (int8 weights, activations quantised at run time)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(dir=scratch, prefix=".quant-") as tmp:
        dense_path, q_path = Path(tmp) / "dense.onnx", Path(tmp) / "q.onnx"
        onnx.save_model(proto, str(dense_path))
        root = logging.getLogger()  # the quantiser's "consider pre-processing" goes to root
        level = root.level
        root.setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                quantize_dynamic(str(dense_path), str(q_path), weight_type=QuantType.QInt8,
                                 per_channel=per_channel, nodes_to_exclude=list(exclude),
                                 op_types_to_quantize=list(ops) if ops else None)
        finally:
            root.setLevel(level)
        for w in caught:
            log.debug("quantize_dynamic: %s", w.message)
        return onnx.load(str(q_path))


def _matmul_blocks(proto: onnx.ModelProto, block_size: int,
                   exclude: tuple[str, ...]) -> onnx.ModelProto:
    """MatMuls with a constant 2-D weight -> MatMulNBits (8 bits, symmetric, accuracy level 4).

    A weight with K < `block_size` input channels gets the largest power-of-two block ≤ K
    (at least 16): MatMulNBits pads K up to a whole block, so one 128-block on a 32-wide layer
    would store 4x the bytes it needs."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    inits = {i.name: i for i in proto.graph.initializer}
    by_block: dict[int, list[str]] = {}
    for n in proto.graph.node:
        w = inits.get(n.input[1]) if n.op_type == "MatMul" and len(n.input) == 2 else None
        if w is None or len(w.dims) != 2 or not n.name or n.name in exclude:
            continue
        k = int(w.dims[0])
        blk = max(16, min(block_size, 1 << (k.bit_length() - 1)))
        by_block.setdefault(blk, []).append(n.name)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # one INFO line per node otherwise
    try:
        for blk, names in sorted(by_block.items()):
            q = MatMulNBitsQuantizer(proto, bits=8, block_size=blk, is_symmetric=True,
                                     accuracy_level=4, nodes_to_include=names,
                                     op_types_to_quantize=("MatMul",))
            q.process()
            proto = q.model.model
    finally:
        root.setLevel(level)
    return proto


def reader_counts(graph: onnx.GraphProto) -> dict[str, int]:
    """How many node inputs read each value name (an initializer read once can be rewritten
    in place of its one consumer)."""
    readers: dict[str, int] = {}
    for n in graph.node:
        for x in n.input:
            readers[x] = readers.get(x, 0) + 1
    return readers


def _gather_rows_int8_(proto: onnx.ModelProto, exclude: set[str]) -> int:
    """Embedding tables (Gather on axis 0 of a 2-D float initializer that nothing else reads)
    stored as int8 with one float scale per row: Gather(int8) -> Cast -> Mul(Gather(scales)).
    Returns the number of tables converted."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    g = proto.graph
    inits = {i.name: i for i in g.initializer}
    readers = reader_counts(g)
    nodes, done = [], 0
    for n in g.node:
        init = inits.get(n.input[0]) if n.op_type == "Gather" else None
        axis = next((a.i for a in n.attribute if a.name == "axis"), 0)
        if (init is None or n.name in exclude or axis != 0 or len(init.dims) != 2
                or init.data_type != TensorProto.FLOAT or readers.get(init.name) != 1):
            nodes.append(n)
            continue
        w = numpy_helper.to_array(init)
        scale = np.abs(w).max(axis=1, keepdims=True) / 127.0
        scale[scale == 0] = 1.0
        q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
        base, out = init.name, n.output[0]
        g.initializer.remove(init)
        g.initializer.extend([numpy_helper.from_array(q, base + "_int8"),
                              numpy_helper.from_array(scale.astype(np.float32), base + "_scale")])
        nodes += [
            helper.make_node("Gather", [base + "_int8", n.input[1]], [out + "_q"], axis=0),
            helper.make_node("Cast", [out + "_q"], [out + "_f"], to=TensorProto.FLOAT),
            helper.make_node("Gather", [base + "_scale", n.input[1]], [out + "_s"], axis=0),
            helper.make_node("Mul", [out + "_f", out + "_s"], [out], name=(n.name or base) + "_rows_int8"),
        ]
        done += 1
    del g.node[:]
    g.node.extend(nodes)
    return done


def _densify_(proto: onnx.ModelProto) -> None:
    import numpy as np
    from onnx import numpy_helper

    for sp in proto.graph.sparse_initializer:
        values = numpy_helper.to_array(sp.values)
        idx = numpy_helper.to_array(sp.indices).astype(np.int64)
        shape = tuple(int(d) for d in sp.dims)
        dense = np.zeros(int(np.prod(shape)), dtype=values.dtype)
        if idx.ndim == 2:  # [nnz, rank] coordinates
            idx = np.ravel_multi_index(tuple(idx.T), shape)
        dense[idx] = values
        proto.graph.initializer.append(numpy_helper.from_array(dense.reshape(shape), sp.values.name))
    del proto.graph.sparse_initializer[:]


def _io_spec_of(proto: onnx.ModelProto) -> IoSpec:
    inits = {i.name for i in proto.graph.initializer}
    axes: dict[str, dict[int, str]] = {}
    for vi in [*proto.graph.input, *proto.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        named = {i: d.dim_param for i, d in enumerate(dims) if d.dim_param}
        if named:
            axes[vi.name] = named
    names = tuple(i.name for i in proto.graph.input if i.name not in inits)
    return IoSpec(names, proto.graph.output[0].name, axes)

"""Mixed precision: every weight matrix of an ONNX model stored on the grid chosen for it.

`quantize_mixed(src, out, choices)` takes, per weight initializer, one grid name of
bmr.precision (``"fp32"`` keeps it, ``"int8"``, ``"int4-b32"``, ``"int4-b128"``) and writes

* a MatMul with that constant (K, N) weight as onnxruntime's MatMulNBits (bits 4 or 8, one
  fp32 scale per block of input channels, no zero points: symmetric, accuracy level 4 by
  default: activations quantised to int8 per block for the int8 kernels);
* a Gather on axis 0 of that 2-D table (an embedding) as GatherBlockQuantized (bits 4 or 8,
  blocks along the embedding dimension of each row, dequantised after the lookup).

Codes and scales come from `bmr.precision.grid_codes`, the very grid the evidence scored, so
what is scored is what is stored. `matrices(proto)` lists the candidates as weight rows
(output channels × input channels; table rows for embeddings), `match_initializers` finds
which initializer holds which torch parameter (by value: the exporter renames and transposes).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bmr_compress.bmr.precision import GRIDS, KEEP, block_for, grid_codes
from bmr_compress.errors import InputError
from bmr_compress.export.onnx_export import IoSpec, OnnxArtifact, save_onnx

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

MS_DOMAIN = "com.microsoft"


@dataclass(frozen=True)
class Matrix:
    """One quantisable weight: its initializer, the node reading it, and its rows view."""

    name: str  # initializer
    op: str  # "MatMul" or "Gather"
    node: int  # the consumer's index in graph.node
    rows: np.ndarray  # (out, in) for MatMul (the initializer transposed); the table for Gather


def matrices(proto: onnx.ModelProto) -> dict[str, Matrix]:
    """Every 2-D float initializer read by exactly one node that is a MatMul (as its second
    input) or an axis-0 Gather (as its table): initializer name -> Matrix."""
    from onnx import TensorProto, numpy_helper

    from bmr_compress.export.quantize import reader_counts

    g = proto.graph
    inits = {i.name: i for i in g.initializer}
    readers = reader_counts(g)
    out: dict[str, Matrix] = {}
    for idx, n in enumerate(g.node):
        if n.op_type == "MatMul" and len(n.input) == 2:
            name = n.input[1]
        elif n.op_type == "Gather" and next((a.i for a in n.attribute if a.name == "axis"), 0) == 0:
            name = n.input[0]
        else:
            continue
        init = inits.get(name)
        if (init is None or len(init.dims) != 2 or init.data_type != TensorProto.FLOAT
                or readers.get(name) != 1):
            continue
        arr = numpy_helper.to_array(init)
        out[name] = Matrix(name, n.op_type, idx, arr.T if n.op_type == "MatMul" else arr)
    return out


def match_initializers(proto: onnx.ModelProto, weights: Mapping[str, np.ndarray]) -> dict[str, str]:
    """Parameter name -> initializer name for every weight (rows view, as in `matrices`) that
    an initializer holds exactly; parameters not found are left out."""
    found = matrices(proto)
    by_key: dict[tuple[tuple[int, ...], bytes], str] = {}
    for name, m in found.items():
        by_key[(m.rows.shape, np.ascontiguousarray(m.rows, dtype=np.float32).tobytes())] = name
    out = {}
    for param, w in weights.items():
        key = (tuple(w.shape), np.ascontiguousarray(w, dtype=np.float32).tobytes())
        if key in by_key:
            out[param] = by_key[key]
    return out


def quantize_mixed(onnx_path: str | Path, out_path: str | Path, choices: Mapping[str, str], *,
                   io_spec: IoSpec | None = None, accuracy_level: int = 4) -> OnnxArtifact:
    """Write `onnx_path` with each initializer of `choices` on its grid (module docstring)."""
    import onnx

    src, out = Path(onnx_path), Path(out_path)
    if not src.is_file():
        raise InputError(f"no ONNX model at {src}")
    bad = sorted({v for v in choices.values() if v != KEEP and v not in GRIDS})
    if bad:
        raise InputError(f"unknown precision {bad[0]!r}; choose from {KEEP}, {', '.join(GRIDS)}")
    proto = onnx.load(str(src))
    if proto.graph.sparse_initializer:
        raise InputError(f"{src} has sparse initializers: export it with sparse=False first")
    cands = matrices(proto)
    missing = sorted(set(choices) - set(cands))
    if missing:
        raise InputError(f"{missing[0]} is not a quantisable weight of {src}")
    spec = io_spec or _io_spec_of(proto)
    if not any(m.domain == MS_DOMAIN for m in proto.opset_import):
        proto.opset_import.append(onnx.helper.make_opsetid(MS_DOMAIN, 1))
    replaced = {}
    for name, grid in choices.items():
        if grid != KEEP:
            replaced[cands[name].node] = _quantized_node(proto, cands[name], grid, accuracy_level)
    nodes = [replaced.get(i, n) for i, n in enumerate(proto.graph.node)]
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    gone = {n for n, g in choices.items() if g != KEEP}
    keep = [i for i in proto.graph.initializer if i.name not in gone]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(keep)
    counts: dict[str, int] = {}
    for g in choices.values():
        counts[g] = counts.get(g, 0) + 1
    log.info("mixed precision: %s", ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return save_onnx(proto, out, spec, sparse=False)


def _codes(rows: np.ndarray, grid: str) -> tuple[np.ndarray, np.ndarray, int, int]:
    """(codes uint8 (rows, blocks, block), scales float32 (rows, blocks), bits, block)."""
    import torch

    g = GRIDS[grid]
    block = block_for(rows.shape[1], g.block)
    code, scale = grid_codes(torch.from_numpy(np.array(rows, dtype=np.float32, order="C")),
                             g.bits, block)
    return code.numpy().astype(np.uint8), scale.numpy().astype(np.float32), g.bits, block


def _pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """(..., n) codes -> bytes: 8 bits as is, 4 bits two per byte, low nibble first."""
    if bits == 8:
        return codes
    return (codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8)


def _quantized_node(proto: onnx.ModelProto, m: Matrix, grid: str,
                    accuracy_level: int) -> onnx.NodeProto:
    """The MatMulNBits / GatherBlockQuantized node replacing m's consumer; adds its tensors."""
    from onnx import helper, numpy_helper

    node = proto.graph.node[m.node]
    codes, scales, bits, block = _codes(m.rows, grid)
    base = m.name.replace(":", "_").replace("/", "_") + f"_{grid.replace('-', '_')}"
    if m.op == "MatMul":
        n_out, k = m.rows.shape
        data = _pack(codes, bits)  # (N, blocks, block·bits/8)
        proto.graph.initializer.extend([numpy_helper.from_array(data, base + "_B"),
                                        numpy_helper.from_array(scales.reshape(-1), base + "_scales")])
        return helper.make_node("MatMulNBits", [node.input[0], base + "_B", base + "_scales"],
                                list(node.output), name=node.name or base, domain=MS_DOMAIN, K=k, N=n_out,
                                bits=bits, block_size=block, accuracy_level=accuracy_level)
    vocab, dim = m.rows.shape
    data = _pack(codes.reshape(vocab, -1)[:, :dim + (-dim) % 2], bits)
    proto.graph.initializer.extend([numpy_helper.from_array(data, base + "_data"),
                                    numpy_helper.from_array(scales, base + "_scales")])
    return helper.make_node("GatherBlockQuantized", [base + "_data", node.input[1], base + "_scales"],
                            list(node.output), name=node.name or base, domain=MS_DOMAIN, gather_axis=0,
                            quantize_axis=1, block_size=block, bits=bits)


def _io_spec_of(proto: onnx.ModelProto) -> IoSpec:
    inits = {i.name for i in proto.graph.initializer}
    axes: dict[str, dict[int, str]] = {}
    for vi in [*proto.graph.input, *proto.graph.output]:
        named = {i: d.dim_param for i, d in enumerate(vi.type.tensor_type.shape.dim) if d.dim_param}
        if named:
            axes[vi.name] = named
    names = tuple(i.name for i in proto.graph.input if i.name not in inits)
    return IoSpec(names, proto.graph.output[0].name, axes)

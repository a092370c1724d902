"""Checks on files and loaded weights that turn bad input into one-line InputErrors.

* ``read_safetensors_header``: parse and verify a .safetensors header in pure Python (no torch):
  size field, JSON table, dtypes, shapes, offsets inside the file and covering it exactly.
  Run before handing a file to a third-party loader, whose errors name no path.
* ``check_dtypes``: a weight file tensor whose dtype kind (float vs integer/bool) differs from
  the model tensor it fills.
* ``check_finite``: NaN/Inf in any floating parameter or buffer of a loaded model.
* ``count_params``: the one parameter count (tied tensors once) every report and budget uses.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bmr_compress.errors import InputError

if TYPE_CHECKING:
    from torch import nn

# safetensors dtype -> bytes per element
DTYPE_BYTES: dict[str, int] = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8, "C64": 8,
}
FLOAT_DTYPES = frozenset({"F16", "BF16", "F32", "F64", "F8_E5M2", "F8_E4M3", "F8_E8M0"})
MAX_HEADER = 100 * 1024 * 1024  # the safetensors format's own limit


def read_safetensors_header(path: str | Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """{tensor name: (dtype, shape)} of a verified .safetensors file; InputError if it is not one."""
    p = Path(path)
    try:
        size = p.stat().st_size
        with p.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise InputError(f"{p}: not a safetensors file (truncated: {size} bytes)")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER or 8 + n > size:
                raise InputError(f"{p}: not a safetensors file or truncated (header of {n} bytes "
                                 f"in a {size}-byte file)")
            raw = f.read(n)
    except OSError as e:
        raise InputError(f"cannot read {p}: {e.strerror or e}") from None
    try:
        table = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InputError(f"{p}: corrupted safetensors header (not JSON)") from None
    if not isinstance(table, dict):
        raise InputError(f"{p}: corrupted safetensors header (not a JSON object)")
    data_size = size - 8 - n
    out: dict[str, tuple[str, tuple[int, ...]]] = {}
    spans = []
    for name, entry in table.items():
        if name == "__metadata__":
            if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                raise InputError(f"{p}: corrupted safetensors header (__metadata__ is not str -> str)")
            continue
        dtype, shape, offsets = _entry(p, name, entry)
        begin, end = offsets
        if not 0 <= begin <= end <= data_size:
            raise InputError(f"{p}: truncated or corrupted: tensor {name!r} lies at bytes "
                             f"{begin}-{end} of a {data_size}-byte data section")
        if end - begin != math.prod(shape) * DTYPE_BYTES[dtype]:
            raise InputError(f"{p}: tensor {name!r} {dtype}{list(shape)} does not match its "
                             f"{end - begin} stored bytes")
        spans.append((begin, end))
        out[name] = (dtype, shape)
    covered = 0
    for begin, end in sorted(spans):
        if begin != covered:
            raise InputError(f"{p}: corrupted safetensors file (tensor data overlaps or has gaps)")
        covered = end
    if covered != data_size:
        raise InputError(f"{p}: truncated or corrupted safetensors file (data section is "
                         f"{data_size} bytes, tensors cover {covered})")
    return out


def _entry(p: Path, name: str, entry: Any) -> tuple[str, tuple[int, ...], tuple[int, int]]:
    bad = InputError(f"{p}: corrupted safetensors header entry for tensor {name!r}")
    if not isinstance(entry, dict):
        raise bad
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in DTYPE_BYTES:
        raise InputError(f"{p}: tensor {name!r} has unknown dtype {dtype!r}")
    ints = (isinstance(shape, list) and isinstance(offsets, list) and len(offsets) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0
                    for x in (*shape, *offsets)))
    if not ints:
        raise bad
    return str(dtype), tuple(shape), (offsets[0], offsets[1])


def check_weight_files(directory: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Verify every .safetensors file in a snapshot directory; their merged header table."""
    table: dict[str, tuple[str, tuple[int, ...]]] = {}
    for f in sorted(directory.glob("*.safetensors")):
        table.update(read_safetensors_header(f))
    return table


def check_dtypes(model: nn.Module, header: dict[str, tuple[str, tuple[int, ...]]], origin: str) -> None:
    """InputError when a file tensor is integer/bool but fills a floating model tensor (or back).

    File names may carry a prefix the model lacks (or the reverse), as transformers maps
    ``bert.encoder...`` onto ``encoder...``: names are matched on whole dotted suffixes.
    """
    own = {k: v for k, v in model.state_dict().items()}
    by_suffix: dict[str, str] = {}
    for k in own:
        parts = k.split(".")
        for i in range(len(parts)):
            by_suffix.setdefault(".".join(parts[i:]), k)
    for name, (dtype, _) in header.items():
        key = name if name in own else None
        if key is None:
            parts = name.split(".")
            key = next((by_suffix[".".join(parts[i:])] for i in range(len(parts))
                        if ".".join(parts[i:]) in by_suffix), None)
        if key is None:
            continue
        if (dtype in FLOAT_DTYPES) != own[key].dtype.is_floating_point:
            raise InputError(f"{origin}: tensor {name!r} is {dtype} but the model expects "
                             f"{str(own[key].dtype).replace('torch.', '')} for {key}")


def check_finite(model: nn.Module, origin: str) -> None:
    """InputError naming the first parameter/buffer holding NaN or Inf."""
    import torch

    for kind, items in (("parameter", model.named_parameters()), ("buffer", model.named_buffers())):
        for name, t in items:
            if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
                n_nan = int(torch.isnan(t).sum())
                n_inf = int(torch.isinf(t).sum())
                raise InputError(f"{origin}: {kind} {name} holds non-finite values "
                                 f"({n_nan} NaN, {n_inf} Inf); refusing to compress it")


def count_params(model: nn.Module) -> int:
    """Distinct parameter elements (tied tensors counted once, as `parameters()` yields them)."""
    return sum(p.numel() for p in model.parameters())


def check_json_file(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; InputError naming the file when missing, truncated or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"missing {path.name} in {path.parent}") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InputError(f"{path}: not valid JSON (truncated or corrupted?)") from None
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror or e}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _check_json_list(path: Path) -> list[Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InputError(f"{path}: not valid JSON (truncated or corrupted?)") from None
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a JSON list, got {type(data).__name__}")
    return data


def check_onnx_file(path: Path) -> Any:
    """The parsed ONNX ModelProto (with external data); InputError naming the file if unreadable."""
    import onnx

    try:
        return onnx.load(str(path), load_external_data=True)
    except FileNotFoundError:
        raise InputError(f"missing {path.name} (or its external data) in {path.parent}") from None
    except Exception as e:  # noqa: BLE001 - protobuf DecodeError, ValueError, OSError: all "corrupted"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"{path}: not a readable ONNX model (truncated or corrupted?): {first}") from None


def check_artifacts(directory: str | Path, *, onnx: bool = True) -> None:
    """Verify a `compress` output directory before it is validated, exported or pushed.

    JSON files parse as objects, every .safetensors header is sound, every .onnx file parses;
    InputError names the first bad file. NaN/Inf in model.safetensors or an ONNX initializer
    raises ValidationFailed: such a model is never exported or published.
    """
    from bmr_compress.errors import ValidationFailed

    d = Path(directory)
    if not d.is_dir():
        raise InputError(f"no output directory at {d}")
    for f in sorted(d.glob("*.json")):
        if f.name == "modules.json":  # sentence-transformers: a JSON list of modules
            _check_json_list(f)
        else:
            check_json_file(f)
    if not (d / "model.safetensors").is_file():
        raise InputError(f"missing model.safetensors in {d}")
    for f in sorted(d.glob("*.safetensors")):
        read_safetensors_header(f)
    bad = _nonfinite_safetensors(d / "model.safetensors")
    if bad:
        raise ValidationFailed(f"{d / 'model.safetensors'}: tensor {bad} holds NaN/Inf; refusing it")
    for f in sorted(d.glob("*.onnx")) if onnx else []:
        proto = check_onnx_file(f)
        bad = _nonfinite_onnx(proto)
        if bad:
            raise ValidationFailed(f"{f}: initializer {bad} holds NaN/Inf; refusing it")


def _nonfinite_safetensors(path: Path) -> str | None:
    import torch
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            for k in f.keys():  # noqa: SIM118 - safe_open has no iterator
                t = f.get_tensor(k)
                if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                    return k
    except Exception as e:  # noqa: BLE001 - SafetensorError after a sound header: corrupted data
        raise InputError(f"cannot read {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return None


def _nonfinite_onnx(proto: Any) -> str | None:
    import numpy as np
    from onnx import numpy_helper

    for init in proto.graph.initializer:
        try:
            a = numpy_helper.to_array(init)
        except Exception:  # noqa: BLE001 - a malformed initializer is a corrupted file
            raise InputError(f"ONNX initializer {init.name!r} is malformed (corrupted file?)") from None
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            return str(init.name)
    return None


# config keys that size a transformers model; values beyond these are no real checkpoint
_LAYERS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers", "encoder_layers")
_HIDDEN = ("hidden_size", "n_embd", "d_model", "dim")
_INNER = ("intermediate_size", "n_inner", "ffn_dim", "hidden_dim")
_VOCAB = ("vocab_size",)
_POSITIONS = ("max_position_embeddings", "n_positions")
MEMORY_FACTOR = 4  # original + working copy + posterior mean and variance, float32


def available_memory() -> int | None:
    """Bytes this process can still allocate: MemAvailable, capped by RLIMIT_AS and the
    cgroup limit where set (None when none can be read)."""
    import resource

    limits = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                limits.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        limits.append(soft)
    try:
        raw = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if raw.isdigit():
            limits.append(int(raw))
    except OSError:
        pass
    return min(limits) if limits else None


def estimated_parameters(config: Any) -> int | None:
    """A rough parameter count of a transformer from its config (layers x (attention + FFN)
    + embeddings), before anything is built; None when the config names no sizes."""
    get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)

    def first(keys: tuple[str, ...]) -> int | None:
        for k in keys:
            v = get(k, None)
            if isinstance(v, int) and not isinstance(v, bool):
                return v
        return None

    layers, hidden = first(_LAYERS), first(_HIDDEN)
    if layers is None or hidden is None:
        return None
    inner = first(_INNER) or 4 * hidden
    emb = (first(_VOCAB) or 0) + (first(_POSITIONS) or 0)
    return layers * (4 * hidden * hidden + 2 * hidden * inner) + emb * hidden


def check_model_size(config: Any, origin: str) -> None:
    """InputError before a model is built when its config describes sizes that are negative
    or a model that cannot fit in the memory available (`MEMORY_FACTOR` x float32)."""
    get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
    for k in (*_LAYERS, *_HIDDEN, *_INNER, *_VOCAB, *_POSITIONS):
        v = get(k, None)
        if isinstance(v, int) and not isinstance(v, bool) and not 0 <= v < 2**31:
            raise InputError(f"{origin}: config {k} = {v} is not a plausible size")
    est = estimated_parameters(config)
    avail = available_memory()
    if est is None or avail is None:
        return
    need = est * 4 * MEMORY_FACTOR
    if need > avail:
        raise InputError(f"{origin}: config.json describes a model of about {est:.3g} parameters "
                         f"(~{need / 2**30:.3g} GiB to compress), more than the {avail / 2**30:.3g} GiB "
                         "of memory available; check its sizes (num_hidden_layers, hidden_size, ...)")

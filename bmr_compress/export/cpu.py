"""The running CPU's identity: what decides how fast (and whether) int8 pays off here.

`cpu_info()` -> {"model", "arch", "logical_cores", "features", "feature_source",
"onnxruntime", "signature"}. `features` is the subset of the instruction-set extensions that
decide int8 / fp32 matmul speed on onnxruntime's CPU kernels:

* x86: avx2, fma, f16c (the fp32/u8s8 baseline), avx512f, avx512bw (wider int8), avx512_vnni,
  avx_vnni (int8 dot products), amx_tile, amx_int8 (tile int8 matmul);
* ARM: asimddp (int8 dot product), i8mm (int8 matrix multiply), sve, bf16.

Read from /proc/cpuinfo on Linux, `sysctl` on macOS, and from `platform` elsewhere (then
the feature list is empty and `feature_source` says "unknown"). `cpu_signature` is a short
stable hash of (model, arch, features): two machines that share it should rank the same
artefacts the same way; `bench` keys its results by it. Standard library only.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

X86_FEATURES = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni",
                "amx_tile", "amx_int8")
ARM_FEATURES = ("asimddp", "i8mm", "sve", "bf16")
INT8_DOT = frozenset({"avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm"})
# macOS sysctl names -> the Linux names above
MAC_X86 = {"AVX2": "avx2", "FMA": "fma", "F16C": "f16c", "AVX512F": "avx512f",
           "AVX512BW": "avx512bw", "AVX512VNNI": "avx512_vnni", "AVXVNNI": "avx_vnni",
           "AMXTILE": "amx_tile", "AMXINT8": "amx_int8"}
MAC_ARM = {"hw.optional.arm.FEAT_DotProd": "asimddp", "hw.optional.arm.FEAT_I8MM": "i8mm",
           "hw.optional.arm.FEAT_BF16": "bf16", "hw.optional.arm.FEAT_SVE": "sve"}
CPUINFO = Path("/proc/cpuinfo")


def is_arm(arch: str) -> bool:
    return arch.lower().startswith(("arm", "aarch64"))


def _wanted(arch: str) -> tuple[str, ...]:
    return ARM_FEATURES if is_arm(arch) else X86_FEATURES


def parse_cpuinfo(text: str, arch: str) -> tuple[str | None, tuple[str, ...]]:
    """(model name, relevant features) of the first processor in a /proc/cpuinfo text.

    x86 lists its extensions under "flags", ARM under "Features"; ARM kernels often give no
    "model name", so the implementer/part codes name the core instead."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields.get("flags") or fields.get("Features"):
                break  # the first processor block is complete
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    model = fields.get("model name") or fields.get("Model") or fields.get("Hardware")
    if not model and "CPU implementer" in fields:
        model = f"implementer {fields['CPU implementer']} part {fields.get('CPU part', '?')}"
    return model, tuple(f for f in _wanted(arch) if f in flags)


def parse_sysctl(text: str, arch: str) -> tuple[str | None, tuple[str, ...]]:
    """(model, features) from `sysctl -a` style "key: value" lines (macOS)."""
    kv = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            kv[key.strip()] = value.strip()
    model = kv.get("machdep.cpu.brand_string")
    found: set[str] = set()
    if is_arm(arch):
        found = {name for key, name in MAC_ARM.items() if kv.get(key) == "1"}
    else:
        words = set(f"{kv.get('machdep.cpu.features', '')} "
                    f"{kv.get('machdep.cpu.leaf7_features', '')}".upper().replace(".", "").split())
        found = {name for key, name in MAC_X86.items() if key in words}
    return model, tuple(f for f in _wanted(arch) if f in found)


def _read_platform(arch: str) -> tuple[str | None, tuple[str, ...], str]:
    """(model, features, where they came from) for the running machine."""
    if sys.platform.startswith("linux") and CPUINFO.is_file():
        try:
            model, feats = parse_cpuinfo(CPUINFO.read_text(errors="replace"), arch)
            return model, feats, "/proc/cpuinfo"
        except OSError:
            pass
    if sys.platform == "darwin":
        keys = ["machdep.cpu.brand_string", "machdep.cpu.features", "machdep.cpu.leaf7_features",
                *MAC_ARM]
        try:
            r = subprocess.run(["sysctl", *keys], capture_output=True, text=True, timeout=5, check=False)
            model, feats = parse_sysctl(r.stdout, arch)
            return model, feats, "sysctl"
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or None, (), "unknown"


def onnxruntime_version() -> str | None:
    """The installed onnxruntime's version (any of its CPU/GPU distributions), without importing it."""
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml"):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return None


def cpu_signature(info: Mapping[str, Any]) -> str:
    """12 hex digits of sha256 over (model, arch, sorted features): stable across runs, tool
    versions and core counts (a bigger VM of the same CPU ranks artefacts the same at 1 thread)."""
    key = json.dumps([info.get("model") or "", info.get("arch") or "",
                      sorted(info.get("features") or ())], separators=(",", ":"))
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def cpu_info(*, cpuinfo_text: str | None = None, arch: str | None = None) -> dict[str, Any]:
    """The running CPU (or, for tests, the one a given /proc/cpuinfo text describes)."""
    arch = arch or platform.machine() or "unknown"
    if cpuinfo_text is not None:
        model, feats = parse_cpuinfo(cpuinfo_text, arch)
        where = "/proc/cpuinfo"
    else:
        model, feats, where = _read_platform(arch)
    info: dict[str, Any] = {"model": model or "unknown CPU", "arch": arch,
                            "logical_cores": os.cpu_count(), "features": list(feats),
                            "feature_source": where, "onnxruntime": onnxruntime_version()}
    info["signature"] = cpu_signature(info)
    return info


def describe(info: Mapping[str, Any]) -> str:
    """One line: "AMD EPYC 7B13 (x86_64, 2 logical cores): avx2 fma f16c; no int8 dot-product
    instructions; onnxruntime 1.20.1"."""
    feats = list(info.get("features") or ())
    if info.get("feature_source") == "unknown":
        isa = "instruction-set features unknown"
    else:
        dot = [f for f in feats if f in INT8_DOT]
        isa = (" ".join(feats) or "none of the int8-relevant extensions") + (
            "" if dot else "; no int8 dot-product instructions")
    cores = info.get("logical_cores")
    ort = info.get("onnxruntime")
    return (f"{info.get('model')} ({info.get('arch')}" + (f", {cores} logical cores" if cores else "")
            + f"): {isa}" + (f"; onnxruntime {ort}" if ort else ""))

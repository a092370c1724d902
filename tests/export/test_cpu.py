"""export/cpu.py: CPU model and int8-relevant features from /proc/cpuinfo (and macOS sysctl)
texts, and a signature that depends on exactly (model, arch, features)."""

from __future__ import annotations

import re

from bmr_compress.export import cpu

AMD_AVX2 = """\
processor	: 0
vendor_id	: AuthenticAMD
model name	: AMD EPYC 7B13 64-Core Processor
flags		: fpu vme sse sse2 ssse3 fma cx16 sse4_1 sse4_2 avx f16c avx2 bmi2 sha_ni vaes
bugs		: sysret_ss_attrs

processor	: 1
vendor_id	: AuthenticAMD
model name	: AMD EPYC 7B13 64-Core Processor
flags		: fpu vme sse sse2 ssse3 fma cx16 sse4_1 sse4_2 avx f16c avx2 bmi2 sha_ni vaes avx512f
"""

SAPPHIRE = """\
processor	: 0
model name	: Intel(R) Xeon(R) Platinum 8480+
flags		: fpu avx f16c fma avx2 avx512f avx512dq avx512bw avx512vl avx512_vnni avx_vnni amx_bf16 amx_tile amx_int8 avx512_bf16

"""

GRAVITON = """\
processor	: 0
BogoMIPS	: 2100.00
Features	: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs paca pacg dcpodp svei8mm svebf16 i8mm bf16 dgh rng
CPU implementer	: 0x41
CPU architecture: 8
CPU variant	: 0x1
CPU part	: 0xd40
CPU revision	: 1

processor	: 1
BogoMIPS	: 2100.00
"""


def test_x86_avx2_without_vnni() -> None:
    info = cpu.cpu_info(cpuinfo_text=AMD_AVX2, arch="x86_64")
    assert info["model"] == "AMD EPYC 7B13 64-Core Processor"
    # only the first processor block counts (its avx512f-less flags); order is the fixed list's
    assert info["features"] == ["avx2", "fma", "f16c"]
    assert info["arch"] == "x86_64" and info["feature_source"] == "/proc/cpuinfo"
    assert re.fullmatch(r"[0-9a-f]{12}", info["signature"])
    line = cpu.describe(info)
    assert line.startswith("AMD EPYC 7B13 64-Core Processor (x86_64")
    assert "avx2 fma f16c; no int8 dot-product instructions" in line


def test_x86_with_vnni_and_amx() -> None:
    info = cpu.cpu_info(cpuinfo_text=SAPPHIRE, arch="x86_64")
    assert info["features"] == ["avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni",
                                "avx_vnni", "amx_tile", "amx_int8"]
    assert "no int8 dot-product" not in cpu.describe(info)


def test_arm_features_and_model_from_part_codes() -> None:
    info = cpu.cpu_info(cpuinfo_text=GRAVITON, arch="aarch64")
    assert info["features"] == ["asimddp", "i8mm", "sve", "bf16"]  # not svei8mm / svebf16 twice
    assert info["model"] == "implementer 0x41 part 0xd40"
    assert cpu.cpu_info(cpuinfo_text="Features\t: fp asimd\n", arch="aarch64")["features"] == []


def test_signature_depends_on_model_arch_and_features_only() -> None:
    a = cpu.cpu_info(cpuinfo_text=AMD_AVX2, arch="x86_64")
    assert cpu.cpu_signature(a) == a["signature"]
    same = {**a, "logical_cores": 96, "onnxruntime": "9.9", "features": list(reversed(a["features"]))}
    assert cpu.cpu_signature(same) == a["signature"]
    assert cpu.cpu_signature({**a, "features": [*a["features"], "avx512_vnni"]}) != a["signature"]
    assert cpu.cpu_signature({**a, "model": "AMD EPYC 9654"}) != a["signature"]
    assert cpu.cpu_signature({**a, "arch": "AMD64"}) != a["signature"]
    assert cpu.cpu_info(cpuinfo_text=AMD_AVX2, arch="x86_64")["signature"] == a["signature"]  # stable


def test_macos_sysctl_texts() -> None:
    m1 = ("machdep.cpu.brand_string: Apple M2\nhw.optional.arm.FEAT_DotProd: 1\n"
          "hw.optional.arm.FEAT_I8MM: 1\nhw.optional.arm.FEAT_BF16: 1\nhw.optional.arm.FEAT_SVE: 0\n")
    assert cpu.parse_sysctl(m1, "arm64") == ("Apple M2", ("asimddp", "i8mm", "bf16"))
    intel = ("machdep.cpu.brand_string: Intel(R) Core(TM) i9-9880H\n"
             "machdep.cpu.features: FPU VME FMA SSE4.2 AVX1.0 F16C\n"
             "machdep.cpu.leaf7_features: SMEP BMI1 AVX2 BMI2\n")
    assert cpu.parse_sysctl(intel, "x86_64") == ("Intel(R) Core(TM) i9-9880H", ("avx2", "fma", "f16c"))


def test_the_running_machine() -> None:
    info = cpu.cpu_info()
    assert info["arch"] and info["model"] and info["logical_cores"] >= 1
    assert set(info["features"]) <= set(cpu.X86_FEATURES) | set(cpu.ARM_FEATURES)
    assert info["onnxruntime"]  # the project depends on it
    assert info["signature"] == cpu.cpu_signature(info)

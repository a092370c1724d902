"""Throughput of per-weight spike scoring vs this machine's memory-copy bandwidth.

Scores N float32 weights (default 50 M): ΔlnZ = ½(v0 − v) − ½ μ² e^{−v} with a per-tensor
prior log-variance v0. The scoring must read μ and ln σ² and write ΔlnZ: 12 bytes per
parameter, so the bandwidth limit is (copy rate in bytes read+written per second) / 12.
The copy rate is measured in the same run, interleaved with the scoring repeats (this
machine is shared; interleaving exposes every method to the same load). Medians reported.

Run from the repository root:  python -m bench.bmr_throughput [--n 50000000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


import torch

from bench.report import write_section
from bmr_compress.bmr import score_spike_, spike_delta_lnz

BYTES_PER_PARAM = 12  # read μ (4) + read ln σ² (4) + write ΔlnZ (4), float32


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50_000_000, help="parameters to score")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md")
    args = ap.parse_args()
    n, v0 = args.n, -4.0
    gen = torch.Generator().manual_seed(0)
    mu = torch.randn(n, generator=gen) * 0.05  # [n] float32
    log_var = torch.randn(n, generator=gen) * 2.0 - 9.0  # [n]
    out = torch.zeros(n)
    src, dst = torch.randn(n, generator=gen), torch.zeros(n)  # copy probe, 4n bytes each way

    def naive() -> torch.Tensor:  # the obvious eager expression, fresh output
        return 0.5 * (v0 - log_var) - 0.5 * mu.square() * torch.exp(-log_var)

    t0 = time.perf_counter()
    score_spike_(torch.empty(1 << 22), mu[: 1 << 22], log_var[: 1 << 22], v0, backend="compiled")
    compile_s = time.perf_counter() - t0
    from bmr_compress.bmr import COMPILE_MIN_NUMEL, compile_failed

    methods = {
        "naive eager expression": naive,
        "chunked in-place torch ops (fallback)": lambda: score_spike_(out, mu, log_var, v0, backend="chunked"),
        "compiled fused kernel": lambda: score_spike_(out, mu, log_var, v0, backend="compiled"),
        "library default: spike_delta_lnz(..., out=out)": lambda: spike_delta_lnz(mu, log_var, v0, out=out),
    }
    for fn in methods.values():  # warm-up (page faults, thread pools)
        fn()
    dst.copy_(src)
    times: dict[str, list[float]] = {k: [] for k in methods}
    copy_times: list[float] = []
    for _ in range(args.repeats):
        copy_times.append(_timed(lambda: dst.copy_(src)))
        for name, fn in methods.items():
            times[name].append(_timed(fn))

    # correctness of what was timed, against float64
    ref = (0.5 * (v0 - log_var.double()) - 0.5 * mu.double().square() * torch.exp(-log_var.double())).float()
    spike_delta_lnz(mu, log_var, v0, out=out)
    max_err = float((out - ref).abs().max() / ref.abs().max())

    copy_rate = 2 * 4 * n / statistics.median(copy_times)  # bytes read + written per s
    limit = copy_rate / BYTES_PER_PARAM
    rows = []
    for name, ts in times.items():
        med = statistics.median(ts)
        rate = n / med
        rows.append(f"| {name} | {med * 1e3:.1f} | {rate / 1e6:.0f} | {100 * rate / limit:.0f} % |")
    backend = "compiled" if not compile_failed() else "chunked (compile failed)"
    md = "\n".join([
        "## bmr_throughput: per-weight spike ΔlnZ scoring (float32, CPU)",
        "",
        f"{n / 1e6:.0f} M parameters, per-tensor prior log-variance; medians over {args.repeats} "
        "repeats, each repeat running the copy probe and every method back to back.",
        f"Memory-copy rate (torch `copy_` of {4 * n / 2**20:.0f} MiB, bytes read + written per s): "
        f"**{copy_rate / 1e9:.1f} GB/s** ⇒ limit {limit / 1e6:.0f} M params/s at "
        f"{BYTES_PER_PARAM} bytes/param (read μ, ln σ², write ΔlnZ).",
        "",
        "| method | median ms | M params/s | % of copy limit |",
        "|---|---:|---:|---:|",
        *rows,
        "",
        f"Library default backend for tensors ≥ {COMPILE_MIN_NUMEL:,} elements: {backend} "
        f"(first-call compile incl. cache lookup: {compile_s:.1f} s, once per process; "
        "`BMR_COMPILE=0` forces the chunked path). Max relative error vs float64: "
        f"{max_err:.1e}. torch threads: {torch.get_num_threads()}; 1-min load average at the "
        f"end of the run: {os.getloadavg()[0]:.1f} (the machine may be shared: eager many-op "
        "paths and the copy probe itself degrade most under load, the one-pass kernel least).",
    ])
    print(md)
    if not args.no_write:
        write_section("bmr_throughput", md)


if __name__ == "__main__":
    main()

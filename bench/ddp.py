"""The default path's heavy stages shared between processes (torchrun, gloo on CPU): the Laplace
calibration statistics and N recovery steps on all-MiniLM-L6-v2, one process against two.

    nice -n 10 python -m bench.ddp --batches 4 --batch-size 16 --steps 10

Each configuration runs in fresh processes on the bundled model (`zoo:all-minilm-l6-v2`, its
docstring calibration data): one plain process with every core's thread, then
`torchrun --standalone --nproc_per_node 2` with one thread each (torchrun's default). Timed
on rank 0 between collectives, so a time is the slower rank's:

* statistics: the RMS output size, A = E[x xᵀ] and the row scales b of every consumer site
  (the FFN and attention output projections) over `--batches` calibration batches: the
  posterior stage of every round;
* recovery: the teacher pass on this process's slices, then `--steps` Adam steps of the
  distillation (a copy of the original as the student; the time does not depend on the
  weights), the gradients summed between the processes at every step.

The two runs' A and b are compared (largest relative difference): the same statistics up to
float summation order. Writes BENCHMARKS.md section `ddp`.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.report import write_section

MODEL = "zoo:all-minilm-l6-v2"


def _worker(args: argparse.Namespace) -> None:
    import torch
    from safetensors.torch import save_file

    from bmr_compress.algorithms import recover_
    from bmr_compress.coupling import discover_groups
    from bmr_compress.pipeline import StageTimer, build_config, load_stage
    from bmr_compress.scoring import consumer_sites, input_moments, output_scale, row_scales
    from bmr_compress.tasks import strip_labels
    from bmr_compress.variational import process_group, sharded

    need = (args.batches + args.steps) * args.batch_size
    config = build_config({"source": MODEL, "batch_size": args.batch_size,
                           "max_samples": int(need * 1.3) + 64, "progress": False})
    source, data = load_stage(config, StageTimer())
    model, task = source.model, str(source.task)
    stats = [strip_labels(b) for b in data.train_batches[:args.batches]]
    train = data.train_batches[args.batches:args.batches + args.steps]
    groups = discover_groups(model, strip_labels(data.heldout_batches[0]))
    names = list(consumer_sites(model, groups, ("neuron", "head"))[0])
    with process_group() as shard, sharded(shard):
        sync = (lambda: shard.total([0.0])) if shard is not None else (lambda: None)
        sync()
        t0 = time.perf_counter()
        scale = output_scale(model, stats, task)
        a = input_moments(model, names, stats)
        b = row_scales(model, names, stats, task, scale, a)
        t_stats = time.perf_counter() - t0
        student = copy.deepcopy(model)
        sync()
        t0 = time.perf_counter()
        rec = recover_(student, model, train, task, steps=args.steps, lr=1e-5, scale=scale)
        t_rec = time.perf_counter() - t0
        rank, world = (0, 1) if shard is None else (shard.rank, shard.world)
    if rank == 0:
        out = Path(args.out)
        save_file({**{f"a.{k}": v.contiguous() for k, v in a.items()},
                   **{f"b.{k}": v.contiguous() for k, v in b.items()}},
                  str(out / f"stats-{world}.safetensors"))
        (out / f"times-{world}.json").write_text(json.dumps({
            "world": world, "threads": torch.get_num_threads(), "statistics_s": t_stats,
            "recovery_s": t_rec, "sites": len(names), "first_loss": rec.first_loss}))


def _launch(cmd: list[str], threads: int, out: Path) -> float:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=os.getcwd())
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-4000:]}")
    return time.perf_counter() - t0


def _largest_difference(out: Path) -> float:
    from safetensors.torch import load_file

    one, two = load_file(str(out / "stats-1.safetensors")), load_file(str(out / "stats-2.safetensors"))
    return max(float(((two[k] - v).abs().max() / v.abs().max().clamp_min(1e-300)))
               for k, v in one.items())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, default=4, help="calibration batches for A and b")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10, help="recovery steps")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md")
    args = ap.parse_args(argv)
    if args.worker:
        return _worker(args)
    cores = os.cpu_count() or 1
    sizes = ["--batches", str(args.batches), "--batch-size", str(args.batch_size),
             "--steps", str(args.steps)]
    with tempfile.TemporaryDirectory(prefix="bmr-bench-ddp-") as tmp:
        out = Path(tmp)
        wall = {1: _launch([sys.executable, "-m", "bench.ddp", "--worker", "--out", tmp, *sizes],
                           cores, out),
                2: _launch([sys.executable, "-m", "torch.distributed.run", "--standalone",
                            "--nproc_per_node", "2", "-m", "bench.ddp", "--worker", "--out", tmp,
                            *sizes], 1, out)}
        times = {w: json.loads((out / f"times-{w}.json").read_text()) for w in (1, 2)}
        diff = _largest_difference(out)
    rows = [f"| {w} | {t['threads']} | {t['statistics_s']:.1f} | {t['recovery_s']:.1f} | "
            f"{wall[w]:.0f} |" for w, t in times.items()]
    s1, s2 = times[1], times[2]
    body = "\n".join([
        f"The default path's heavy stages on all-MiniLM-L6-v2 ({s1['sites']} consumer sites), "
        f"one process against two gloo processes under torchrun on this {cores}-core machine: "
        f"statistics over {args.batches} calibration batches of {args.batch_size}, recovery = "
        f"teacher pass + {args.steps} Adam steps on batches of {args.batch_size} "
        "(`python -m bench.ddp`).", "",
        "| processes | threads each | statistics (s) | recovery (s) | launch wall (s) |",
        "|---:|---:|---:|---:|---:|", *rows, "",
        f"Two processes against one: statistics x{s1['statistics_s'] / s2['statistics_s']:.2f}, "
        f"recovery x{s1['recovery_s'] / s2['recovery_s']:.2f} (above 1: faster). The two runs' "
        f"A and b agree to a largest relative difference of {diff:.1e} (float summation "
        "order). Launch wall includes starting Python, loading the model and the data in "
        "every process.",
    ])
    print(body)
    if not args.no_write:
        write_section("ddp", body)


if __name__ == "__main__":
    main()

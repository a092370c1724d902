"""all-MiniLM-L6-v2 at several tolerances: BMR's choice beside the choices a user would make
instead, every one given the same treatment after its choice.

    python -m bench.curve                       # tolerances 0.1 (the default) and 0.2
    python -m bench.curve --tolerances 0.1      # one operating point (~25 min on 2 cores)

Per tolerance T, on the docstring corpus exactly as `compress zoo:all-minilm-l6-v2` builds it:

- BMR: the default Laplace path at T, `bmr_compress.compress_` (calibrated ν, ΔlnZ ≥ 0 out,
  survivors to their reduced means, cut, recovery; 3 rounds);
- magnitude (Torch-Pruning's group L2 importance) and OBS saliency (the compensated output
  error of removing the unit, SparseGPT-style): the same rounds keeping the same number of
  units per layer at the same ν — hence the same widths and latency — then the same
  compensation, cut and recovery (`laplace_reduce(ranking=Ranking(...).following(rounds))`);
- Torch-Pruning's own pruner (global group-magnitude ranking, its own per-layer allocation,
  FFN layers only where it cannot follow head reshapes) to BMR's parameter count, then the
  recovery BMR got in total (its pruner has no compensation step);
- every model also quantised to int8 by the same quantiser.

References: the original fp32 and int8; encoder layers dropped (3 and 2 of 6, which ones
chosen among all subsets on calibration batches) with the recovery BMR got in total. Quality on the held-out
paragraphs (never used to decide); ORT CPU latency (1 thread, batch 1, sequence 128), all
models timed interleaved in one run. Reduced models are cached under bench/out/curve.
Writes the `curve` section of BENCHMARKS.md and bench/out/curve/curve.png.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import tempfile
import time
from pathlib import Path


from bench.report import write_section
from bench.references import drop_layers, embed_onnx, embedding_quality

ROOT = Path(__file__).resolve().parent.parent


class _Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str):
        import contextlib

        @contextlib.contextmanager
        def cm():
            t0 = time.perf_counter()
            try:
                yield
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0

        return cm()


class _Cache:
    """Reduced models cached under --out as (model, meta) .pt files."""

    def __init__(self, out: Path, only_cached: set[float]) -> None:
        self.out, self.only_cached = out, only_cached
        self.models: dict = {}
        self.info: dict[str, dict] = {}

    def __call__(self, name: str, build, tol: float | None = None) -> None:
        import torch

        path = self.out / f"{name}.pt"
        if tol in self.only_cached and not path.is_file():
            print(f"{name}: not cached, skipped (--cached-only)", flush=True)
            return
        if path.is_file():
            m, meta = torch.load(path, weights_only=False)
        else:
            t0 = time.perf_counter()
            m, meta = build()
            meta["seconds"] = time.perf_counter() - t0
            torch.save((m, meta), path)
        self.models[name], self.info[name] = m.eval(), meta
        print(f"{name}: {meta}", flush=True)


def _tolerance_rows(cached: _Cache, original, data, task: str, tol: float, defaults) -> None:
    """BMR (`compress_`) at `tol`, the magnitude / OBS rows following its rounds, and
    Torch-Pruning's own pruner to BMR's parameter count."""
    import torch

    from bmr_compress import compress_
    from bmr_compress.algorithms import laplace_reduce
    from bmr_compress.algorithms import recover_
    from bmr_compress.planning import Ranking
    from bmr_compress.tasks import strip_labels

    lap = defaults.laplace
    kw = dict(rounds=lap.rounds, recovery_steps=lap.recovery_steps, lr=lap.recovery_lr,
              round_to=defaults.plan.round_to)

    def run(ranking: str | None):
        torch.manual_seed(0)
        if ranking is None:  # BMR's choice: the default path itself
            config = defaults.replace(laplace=dataclasses.replace(lap, tolerance=tol))
            out = compress_(copy.deepcopy(original), data.train_batches, config, task=task,
                            example=data.heldout_batches[0])
        else:  # the same rounds at BMR's widths and ν, another ranking
            followed = Ranking(ranking).following(cached.info[f"BMR T={tol:g}"]["rounds"])
            out = laplace_reduce(original, data, task, tolerance=tol, timer=_Timer(),
                                 ranking=followed, **kw)
        rs = [{k: v for k, v in r.items()} for r in out.rounds]
        return out.model, {"rounds": rs, "check_distortion": out.final_distortion}

    cached(f"BMR T={tol:g}", lambda: run(None), tol)
    cached(f"magnitude T={tol:g}", lambda: run("magnitude"), tol)
    cached(f"OBS saliency T={tol:g}", lambda: run("distortion"), tol)

    def tp_row():
        from bench.baselines import tp_magnitude

        total = lap.rounds * lap.recovery_steps
        target = sum(p.numel() for p in cached.models[f"BMR T={tol:g}"].parameters())
        ex = {k: v for k, v in strip_labels(data.train_batches[0]).items()}
        m = tp_magnitude(original, ex, target)
        torch.manual_seed(0)
        fit = [strip_labels(b) for b in data.train_batches][4:]
        recover_(m, original, fit, task, steps=total, lr=lap.recovery_lr)
        return m, {"target_params": target, "recovery_steps": total}

    cached(f"Torch-Pruning global magnitude T={tol:g}", tp_row, tol)


def _layer_drop_rows(cached: _Cache, original, data, task: str, defaults) -> None:
    """Encoder layers dropped (which ones: least distortion on the check batches), then the
    recovery BMR got in total."""
    import itertools

    import torch

    from bmr_compress.algorithms import distortion, recover_
    from bmr_compress.tasks import strip_labels

    lap = defaults.laplace
    total_steps = lap.rounds * lap.recovery_steps
    train = [strip_labels(b) for b in data.train_batches]
    check, fit = train[:4], train[4:]
    for n_keep in (3, 4):
        def drop(n_keep=n_keep):
            cands = {k: drop_layers(original, list(k))
                     for k in itertools.combinations(range(6), n_keep)}
            choice = min(cands, key=lambda k: distortion(cands[k], original, check, task))
            m = cands[choice]
            torch.manual_seed(0)
            recover_(m, original, fit, task, steps=total_steps, lr=lap.recovery_lr)
            return m, {"layers": list(choice), "recovery_steps": total_steps}

        cached(f"{n_keep} of 6 layers", drop)


def _measure(original, models: dict, held: list) -> tuple[dict, dict, dict]:
    """Every model and its int8 exported and timed interleaved on ORT CPU; held-out quality.
    Returns (latency, quality, file sizes) keyed by row label."""
    import torch

    from bmr_compress.export import export_onnx, quantize_int8
    from bmr_compress.export import measure_latency

    example = {k: v[:1] for k, v in held[0].items()}
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        paths = {"original": export_onnx(original, t / "orig.onnx", example, sparse=False).path}
        for i, (name, m) in enumerate(models.items()):
            paths[name] = export_onnx(m, t / f"m{i}.onnx", example, sparse=False).path
        for name in list(paths):
            paths[f"{name} + int8"] = quantize_int8(
                paths[name], t / f"{Path(paths[name]).stem}.int8.onnx").path
        e0 = embed_onnx(paths["original"], held)
        quality = {k: embedding_quality(e0, embed_onnx(p, held)) for k, p in paths.items()}
        seq = 128
        ids = torch.full((1, seq), 1000, dtype=torch.long).numpy()
        feeds = {"input_ids": ids, "attention_mask": ids * 0 + 1, "token_type_ids": ids * 0}
        lat = measure_latency({k: str(p) for k, p in paths.items()}, feeds, threads=1, runs=30)
        sizes = {k: Path(p).stat().st_size for k, p in paths.items()}
    return lat, quality, sizes


def _table(lat: dict, quality: dict, sizes: dict, params: dict, info: dict, n_held: int,
           defaults, tolerances: list[float], only_cached: set[float]) -> list[str]:
    lap = defaults.laplace
    rounds, steps, lr = lap.rounds, lap.recovery_steps, lap.recovery_lr
    base = lat["original"]["median_ms"]
    lines = ["## curve: MiniLM operating points, BMR's choice beside the alternatives", "",
             f"Held-out: {n_held} docstring paragraphs (never used to decide). Every pruned model "
             f"got the same treatment after its choice: {rounds} rounds, the same compensation "
             f"(reduced means of the survivors), {steps} recovery steps per round at lr {lr:g}; "
             "magnitude and OBS-saliency rows keep exactly BMR's per-layer widths in each round "
             f"(equal latency by construction); Torch-Pruning rows: its own pruner (global "
             "group-magnitude ranking and allocation) to BMR's parameter count, no compensation "
             f"step; Torch-Pruning and layer dropping get {rounds * steps} recovery steps. "
             "Every model is also quantised by the same int8 quantiser. ORT CPU, 1 thread, "
             "batch 1, sequence 128, all timed interleaved (median of 30). 'check δ' is the "
             "relative output distortion on the calibration check batches that the tolerance "
             "bounds.", "",
             "| model | parameters | ORT ms | speed-up | file MB | cosine | NN agreement "
             "| check δ |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for k in sizes:  # the rows in the order they were exported
        stem = k.removesuffix(" + int8")
        ms = lat[k]["median_ms"]
        cos, nn = quality[k]
        cd = info.get(stem, {}).get("check_distortion")
        lines.append(f"| {k} | {params.get(stem, 0):,} | {ms:.2f} | {base / ms:.2f}x | "
                     f"{sizes[k] / 2**20:.1f} | {cos:.4f} | {nn:.3f} | "
                     f"{'' if cd is None or k.endswith('int8') else f'{cd:.4f}'} |")
    wins = []
    for tol in tolerances:
        if f"BMR T={tol:g}" not in quality:
            continue
        b = quality[f"BMR T={tol:g}"][0]
        for other in ("magnitude", "OBS saliency", "Torch-Pruning global magnitude"):
            if f"{other} T={tol:g}" not in quality:
                continue
            o = quality[f"{other} T={tol:g}"][0]
            wins.append(f"T={tol:g}: BMR cosine {b:.4f} vs {other} {o:.4f} — "
                        f"{'BMR better' if b > o else 'tie' if b == o else 'BMR worse'}")
    lines += ["", "Same widths, choice only (held-out cosine): " + "; ".join(wins) + "."]
    if only_cached:
        lines += ["", "At T = " + ", ".join(f"{t:g}" for t in sorted(only_cached)) + " only the "
                  "models already built were shown (`--cached-only`): rows missing there were "
                  "not run."]
    return lines


def main() -> None:
    from bmr_compress import CompressConfig
    from bmr_compress.io import make_dataset
    from bmr_compress.io import load_recipe
    from bmr_compress.pipeline import resolve_source
    from bmr_compress.tasks import strip_labels

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tolerances", default="0.1,0.2")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "curve")
    ap.add_argument("--cached-only", default="",
                    help="tolerances whose models are only shown if already cached, never built")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    recipe = load_recipe("all-minilm-l6-v2")
    src = resolve_source("zoo:all-minilm-l6-v2")
    data = make_dataset(None, src, default=recipe.data)
    original = src.model.eval()
    task = "embedding"
    defaults = CompressConfig(progress=False)  # the library's defaults, as `compress` runs them
    tolerances = [float(t) for t in args.tolerances.split(",")]
    cached = _Cache(args.out, {float(t) for t in args.cached_only.split(",") if t})
    for tol in tolerances:
        _tolerance_rows(cached, original, data, task, tol, defaults)
    _layer_drop_rows(cached, original, data, task, defaults)
    held = [strip_labels(b) for b in data.heldout_batches]
    lat, quality, sizes = _measure(original, cached.models, held)
    params = {"original": sum(p.numel() for p in original.parameters())}
    params.update({k: sum(p.numel() for p in m.parameters()) for k, m in cached.models.items()})
    n_held = sum(b["input_ids"].shape[0] for b in held)
    body = "\n".join(_table(lat, quality, sizes, params, cached.info, n_held, defaults,
                            tolerances, cached.only_cached))
    print(body)
    write_section("curve", body)
    info = cached.info
    (args.out / "curve.json").write_text(json.dumps(
        {"latency": lat, "quality": quality, "sizes": sizes, "params": params,
         "info": {k: {kk: vv for kk, vv in v.items() if kk != "rounds"} for k, v in info.items()}},
        indent=1, default=str))
    _plot(args.out / "curve.png", lat, quality, lat["original"]["median_ms"])


def _plot(path: Path, lat: dict, quality: dict, base: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for k in quality:
        x, y = base / lat[k]["median_ms"], quality[k][0]
        marker = "*" if k.startswith("BMR") else "o"
        ax.scatter(x, y, marker=marker, s=120 if marker == "*" else 40)
        ax.annotate(k, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("ORT CPU speed-up vs original fp32 (1 thread, batch 1, seq 128)")
    ax.set_ylabel("held-out mean cosine with the original")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=130)


if __name__ == "__main__":
    main()

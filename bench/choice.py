"""BMR's choice against magnitude's, everything else identical (digits zoo models).

    python -m bench.choice              # MLP and LeNet-5, 5 seeds (about 2-4 min on 2 cores)

For each seed the calibration examples (the training split: statistics, check and recovery
batches) are reshuffled, so every seed sees a different calibration split; the held-out
360 images are never used to decide anything. Per seed:

- BMR: the default Laplace path, `bmr_compress.compress_` (tolerance-calibrated ν, ΔlnZ ≥ 0
  units out, survivors to their reduced means, recovery, re-score; 3 rounds);
- magnitude: the same rounds keeping the *same number of units per layer* at the same ν (so
  the same widths, hence the same latency), but choosing which by the group L2 norm of the
  unit's weights (Torch-Pruning's magnitude importance) — then the same compensation, cut and
  recovery (`laplace_reduce(ranking=MAGNITUDE.following(rounds))`);
- magnitude without compensation: the same choice, survivors left as they were.

Reports held-out accuracy per method, and strict wins / ties / losses of BMR per seed
(a tie: the same number of correct held-out images). Writes the `choice` section of
BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import copy
import time


from bench.report import write_section


class _Timer:
    def __call__(self, name: str):
        import contextlib

        return contextlib.nullcontext()


def _reshuffled(data, seed: int):
    """`data` with its training examples permuted by `seed` and re-batched alike."""
    from bench.common import reshuffle_batches

    out = copy.copy(data)
    out.train_batches = reshuffle_batches(data.train_batches, seed)
    return out


def _correct(model, batches) -> int:
    import torch

    n = 0
    with torch.no_grad():
        for b in batches:
            logits = model(**{k: v for k, v in b.items() if k != "labels"})
            logits = getattr(logits, "logits", logits)
            n += int((logits.argmax(-1) == b["labels"]).sum())
    return n


def _params(model) -> int:
    return sum(p.numel() for p in model.parameters())


METHODS = {"magnitude + compensation": ("magnitude", True),  # (Ranking.by, compensate)
           "OBS saliency + compensation": ("distortion", True),
           "magnitude, no compensation": ("magnitude", False),
           "BMR's choice, no compensation": ("evidence", False)}


def _header(tol: float, seeds: int) -> list[str]:
    return ["## choice: BMR's choice against the alternatives, everything else identical", "",
            f"Default Laplace path (tolerance {tol}, 3 rounds of 100 recovery steps). Each "
            "alternative keeps the same number of units per layer in every round (same widths, "
            "same latency) at the same ν, chosen by the units' weight norm (Torch-Pruning's "
            "magnitude importance) or by the compensated output error of removing the unit "
            "(OBS saliency, SparseGPT-style), then the same compensation, cut and recovery. "
            f"{seeds} seeds, each a different shuffle of the calibration (training) split; "
            "held-out: the fixed 360 digits images, never used to decide. W/T/L: BMR's held-out "
            "correct count against the other's, per seed (strict). δ: mean relative logit "
            "distortion on the calibration check batches after the last round.", "",
            "| model | method | parameters (last seed) | held-out accuracy (mean) | BMR W/T/L "
            "| check δ |",
            "|---|---|---:|---:|---|---:|"]


def _one_seed(original, data, config) -> dict:
    """BMR's run (the default path, `compress_`) and every alternative following its rounds."""
    import torch

    from bmr_compress import compress_
    from bmr_compress.algorithms import laplace_reduce
    from bmr_compress.planning import Ranking

    lap = config.laplace
    kw = dict(tolerance=lap.tolerance, rounds=lap.rounds, recovery_steps=lap.recovery_steps,
              lr=lap.recovery_lr, round_to=config.plan.round_to, timer=_Timer())
    bmr = compress_(copy.deepcopy(original), data.train_batches, config, task="classification",
                    example=data.heldout_batches[0])
    outs = {"BMR (ΔlnZ)": bmr}
    for name, (by, compensate) in METHODS.items():
        torch.manual_seed(config.seed)
        ranking = Ranking(by, compensate=compensate).following(bmr.rounds)
        outs[name] = laplace_reduce(original, data, "classification", ranking=ranking, **kw)
    return outs


def _recipe_rows(recipe_name: str, tol: float, seeds: int) -> list[str]:
    import torch

    from bmr_compress import CompressConfig
    from bmr_compress.io import make_dataset
    from bmr_compress.io import load_recipe
    from bmr_compress.pipeline import resolve_source
    from bmr_compress.pipeline import LaplaceSettings, PlanConfig, from_recipe

    recipe = load_recipe(recipe_name)
    src = resolve_source(f"zoo:{recipe_name}")
    data0 = make_dataset(None, src, default=recipe.data)
    original = src.model.eval()
    held = data0.heldout_batches
    n_held = sum(b["labels"].shape[0] for b in held)
    base = _correct(original, held)
    acc: dict[str, list[int]] = {"BMR (ΔlnZ)": [], **{k: [] for k in METHODS}}
    delta: dict[str, list[float]] = {k: [] for k in acc}
    params = None
    recipe_lr = from_recipe(recipe.settings, recipe.path).laplace.recovery_lr
    lap = LaplaceSettings(tolerance=tol, rounds=3, recovery_steps=100, recovery_lr=recipe_lr)
    for seed in range(seeds):
        config = CompressConfig(seed=seed, progress=False, laplace=lap, plan=PlanConfig(round_to=8))
        torch.manual_seed(seed)
        outs = _one_seed(original, _reshuffled(data0, seed), config)
        params = {_params(o.model) for o in outs.values()}
        assert len(params) == 1, params
        for name, o in outs.items():
            acc[name].append(_correct(o.model.eval(), held))
            delta[name].append(o.final_distortion)

    def wtl(other: list[int]) -> str:
        w = sum(a > b for a, b in zip(acc["BMR (ΔlnZ)"], other))
        t = sum(a == b for a, b in zip(acc["BMR (ΔlnZ)"], other))
        return f"{w}/{t}/{len(other) - w - t}"

    rows = []
    for name in acc:
        rows.append(f"| {recipe_name} (original {base / n_held:.4f}) | {name} | "
                    f"{_params(original):,} → {params.pop() if params else 0:,} | "
                    f"{sum(acc[name]) / len(acc[name]) / n_held:.4f} | "
                    f"{'—' if name.startswith('BMR') else wtl(acc[name])} | "
                    f"{sum(delta[name]) / len(delta[name]):.4f} |")
        params = {_params(outs["BMR (ΔlnZ)"].model)}
    return rows


def main() -> None:
    from bmr_compress.pipeline import DEFAULT_TOLERANCE

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", default="mlp-digits,lenet5-digits")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="3 seeds")
    args = ap.parse_args()
    seeds = 3 if args.quick else args.seeds
    tol = DEFAULT_TOLERANCE["classification"]
    lines = _header(tol, seeds)
    for recipe_name in args.recipes.split(","):
        t0 = time.perf_counter()
        rows = _recipe_rows(recipe_name, tol, seeds)
        lines += rows
        print("\n".join(rows), f"({time.perf_counter() - t0:.0f} s)", flush=True)
    body = "\n".join(lines)
    print(body)
    write_section("choice", body)


if __name__ == "__main__":
    main()

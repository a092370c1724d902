"""Depth as a unit: BMR choosing between thinning a block and removing it whole, against
dropping every other layer, at the same recovery budget (digits zoo ViT; issue #26).

    nice -n 19 python -m bench.depth            # vit-digits, 3 seeds (about 1-2 min, 2 cores)

Per seed (a reshuffle of the calibration split; the fixed 360 held-out images decide nothing):

- BMR, thinning only: the default Laplace path (`laplace_reduce` at each of `--tolerances`,
  `--rounds` rounds of `--steps` recovery steps), every block keeping ≥ 1 unit;
- BMR, blocks too: the same with `branches=True`: an attention or FFN block goes whole when
  its joint ΔlnZ ≥ 0 (docs/theory.md §7c);
- every other layer dropped: both blocks of layers 1, 3, … cut to width 0 (each then adds
  its output bias), then `rounds × steps` recovery steps of the same recovery in one go.

Reports parameters, the blocks removed, held-out accuracy and onnxruntime CPU latency
(1 thread, batch 64) per method. Writes the `depth` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench.report import write_section


def _timer(name: str) -> contextlib.AbstractContextManager[None]:
    return contextlib.nullcontext()


def _correct(model: Any, batches: list[dict[str, Any]]) -> int:
    import torch

    with torch.no_grad():
        return sum(int((model(**{k: v for k, v in b.items() if k != "labels"}).argmax(-1)
                        == b["labels"]).sum()) for b in batches)


def _drop_every_other(original: Any, data: Any, steps: int, seed: int, lap: Any) -> Any:
    """Layers 1, 3, … at width 0 (both blocks), then `steps` of the tool's recovery."""
    from bench.common import recover_, strip
    from bmr_compress.coupling import discover_groups
    from bmr_compress.cutting import apply_plan_
    from bmr_compress.planning import Plan, PlanSettings

    model = copy.deepcopy(original)
    groups = discover_groups(model, strip(data.heldout_batches[0]))
    keep = {g.name: list(range(g.num_units)) for g in groups}
    for g in groups:
        parts = g.name.split(".")
        if g.kind != "hidden" and int(parts[1]) % 2 == 1:
            keep[g.name] = []
    apply_plan_(model, groups, Plan(keep, {}, PlanSettings(unstructured=False, round_to=1), {}))
    for p in model.parameters():
        p.requires_grad_(True)
    recover_(model, original, list(data.train_batches), "classification", steps, seed, lap)
    return model


def _blocks_removed(model: Any, example: dict[str, Any]) -> str:
    from bmr_compress.coupling import discover_groups

    gone = [g.name.removeprefix("layers.") for g in discover_groups(model, example)
            if g.kind != "hidden" and g.num_units == 0]
    return ", ".join(gone) or "none"


def _params(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def _verdict(rows: dict[str, tuple[float, int, float, str]], drop: str) -> str:
    """One sentence: the smallest BMR row at least as accurate as dropping, and how often a
    block went whole. rows: name -> (mean accuracy, parameters, ORT ms, blocks removed)."""
    acc, params, ms, _ = rows[drop]
    bmr = {n: r for n, r in rows.items() if n.startswith("BMR")}
    whole = sum(r[3] != "none" for r in bmr.values())
    fit = [(r[1], n) for n, r in bmr.items() if r[0] >= acc]
    head = (f"Dropping every other layer: {params:,} parameters, {acc:.4f} held-out, "
            f"{ms:.2f} ms. ")
    if fit:
        p, n = min(fit)
        head += (f"Smallest BMR row at least as accurate: {n}, {p:,} parameters, "
                 f"{bmr[n][0]:.4f}, {bmr[n][2]:.2f} ms. ")
    else:
        head += "No BMR row is as accurate. "
    return head + f"A block went whole in {whole} of {len(bmr)} BMR rows (last seed)."


def run(recipe: str, seeds: int, rounds: int, steps: int, tolerances: list[float],
        note: str = "") -> str:
    import torch

    from bench.common import onnx_and_latency, recovery_settings, reshuffle_batches, strip
    from bmr_compress.algorithms import laplace_reduce
    from bmr_compress.io import load_recipe, make_dataset
    from bmr_compress.pipeline import resolve_source

    src = resolve_source(f"zoo:{recipe}")
    data0 = make_dataset(None, src, default=load_recipe(recipe).data)
    original = src.model.eval()
    held = data0.heldout_batches
    n_held = sum(int(b["labels"].shape[0]) for b in held)
    example = strip(held[0])
    lap = recovery_settings(recipe)
    arms = [(f"BMR at tolerance {t:g}, {what}", t, branches) for t in tolerances
            for what, branches in (("thinning only", False), ("blocks too", True))]
    names = tuple(a[0] for a in arms) + ("every other layer dropped",)
    acc: dict[str, list[int]] = {n: [] for n in names}
    last: dict[str, Any] = {}
    for seed in range(seeds):
        data = copy.copy(data0)
        data.train_batches = reshuffle_batches(data0.train_batches, seed)
        for name, tol, branches in arms:
            torch.manual_seed(seed)
            out = laplace_reduce(original, data, "classification", tolerance=tol, rounds=rounds,
                                 recovery_steps=steps, lr=lap.recovery_lr, round_to=1,
                                 timer=_timer, branches=branches)
            last[name] = out.model.eval()
            last[name + " steps"] = sum(r["recovery_steps"] for r in out.rounds
                                        if not r.get("undone"))
        torch.manual_seed(seed)
        last[names[-1]] = _drop_every_other(original, data, rounds * steps, seed, lap).eval()
        last[names[-1] + " steps"] = rounds * steps
        for name in names:
            acc[name].append(_correct(last[name], held))
    with tempfile.TemporaryDirectory() as tmp:
        big = {k: v[:64] for k, v in example.items()}
        lat = onnx_and_latency({"original": original, **{f"m{i}": last[n]
                                                          for i, n in enumerate(names)}},
                               big, Path(tmp), runs=50)
    base = _correct(original, held) / n_held
    rows = {n: (statistics.mean(acc[n]) / n_held, _params(last[n]),
                lat[f"m{i}"]["latency_ms"], _blocks_removed(last[n], example))
            for i, n in enumerate(names)}
    lines = [f"## depth: BMR's blocks vs dropping every other layer ({recipe})", "",
             _verdict(rows, names[-1]), "",
             f"Digits zoo ViT ({_params(original):,} parameters, held-out accuracy {base:.4f}), "
             f"{seeds} seeds (each a reshuffle of the calibration split; the fixed {n_held} "
             f"held-out images never decide). BMR: the default Laplace path (the classification "
             f"default tolerance is 0.01; relative logit distortion on calibration check batches), "
             f"{rounds} rounds of {steps} recovery steps at lr {lap.recovery_lr}; 'blocks too' "
             "lets an attention or FFN block go whole when its joint ΔlnZ ≥ 0 (docs/theory.md "
             "§7c). Dropping: both blocks of every odd layer at width 0 (each adds its output "
             f"bias), then {rounds * steps} steps of the same recovery. Parameters, blocks "
             "removed and recovery steps of the last seed; ORT: onnxruntime CPU, 1 thread, "
             f"batch 64, median of 50.{(' ' + note) if note else ''}", "",
             "| method | parameters | blocks removed (layer.block) | recovery steps | held-out accuracy "
             "(mean [min–max]) | ORT ms |", "|---|---:|---:|---:|---:|---:|",
             f"| original | {_params(original):,} | none | 0 | {base:.4f} | "
             f"{lat['original']['latency_ms']:.3f} |"]
    for i, name in enumerate(names):
        a = [c / n_held for c in acc[name]]
        lines.append(f"| {name} | {rows[name][1]:,} | "
                     f"{rows[name][3]} | {last[name + ' steps']} | "
                     f"{statistics.mean(a):.4f} [{min(a):.4f}–{max(a):.4f}] | "
                     f"{lat[f'm{i}']['latency_ms']:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="vit-digits")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--tolerances", default="0.01,0.1,0.3",
                    help="BMR's tolerances, comma-separated (0.01: the classification default)")
    ap.add_argument("--note", default="", help="a sentence about the run's conditions")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()
    body = run(args.recipe, args.seeds, args.rounds, args.steps,
               [float(t) for t in args.tolerances.split(",")], args.note)
    print(body)
    if not args.no_write:
        write_section("depth", body)


if __name__ == "__main__":
    main()

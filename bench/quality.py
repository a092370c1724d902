"""Quality at equal size: BMR vs magnitude, SNR, Wanda, random and Torch-Pruning magnitude.

For each model and seed: one variational fine-tune (library defaults unless --n-data /
--temperature are given) → BMR chooses its structured + unstructured sparsity from ΔlnZ
alone → every baseline is cut to exactly BMR's nonzero count of wrapped weights (same
structure budget, then a global weight threshold; see bench/common.py) starting from the
same posterior mean μ → every method gets the same masked distillation fine-tune
(--recover-steps) → held-out metric. ONNX bytes and ORT CPU latency are measured on the
seed-0 models, side by side. Writes the "quality" section of BENCHMARKS.md.

    python bench/quality.py [--quick] [--models mlp-digits,...] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as C  # noqa: E402
from bench._report import write_section  # noqa: E402

MODELS = ("mlp-digits", "lenet5-digits", "mixer-digits", "vit-digits", "all-minilm-l6-v2")
BASELINES = ("magnitude", "snr", "wanda", "random", "tp_magnitude")
LABELS = {"bmr": "**BMR (ΔlnZ)**", "magnitude": "global magnitude \\|μ\\|",  # \| : table-safe
          "snr": "SNR \\|μ\\|/σ", "wanda": "Wanda \\|W\\|·‖X‖", "random": "random",
          "tp_magnitude": "Torch-Pruning magnitude"}


def profile(name: str, quick: bool) -> dict[str, Any]:
    """Steps and data size per model (quick: a few minutes on 2 CPU cores in all)."""
    if name == "all-minilm-l6-v2":
        return (dict(steps=4, recover=2, lr=1e-4, data=dict(max_samples=64, seq_len=32,
                                                             batch_size=8),
                     tp_iters=4, onnx=("bmr", "tp_magnitude")) if quick else
                dict(steps=100, recover=50, lr=1e-4, data=dict(max_samples=512, seq_len=64,
                                                               batch_size=16),
                     tp_iters=10, onnx=None))
    return (dict(steps=40, recover=20, lr=1e-3, data={}, tp_iters=8, onnx=None) if quick else
            dict(steps=300, recover=100, lr=1e-3, data={}, tp_iters=12, onnx=None))


def run_model(name: str, seeds: list[int], prof: dict[str, Any], fit_kw: dict[str, Any],
              log: logging.Logger) -> dict[str, Any]:
    from bmr_compress.surgery import score_groups, score_weights
    from bmr_compress.variational import posterior_tensors

    case = C.load_case(name, **prof["data"])
    example = C.strip(case.heldout[0])
    res: dict[str, Any] = {"model": name, "data": case.description, "metric": C.metric_name(case),
                           "task": case.task, "original_params": C.count_params(case.original),
                           "original_metric": C.metric(case, case.original), "runs": {}}
    seed0: dict[str, Any] = {}
    for seed in seeds:
        sw = C.Stopwatch()
        wrapped, _fit = C.fit_posterior(case, prof["steps"], seed, **fit_kw)
        post = posterior_tensors(wrapped)
        shapes = C.shapes_of(post)
        plain = C.plain_copy(wrapped)
        ref = C.bmr_plan(case.groups, score_groups(case.groups, post), score_weights(post), shapes)
        plans = {"bmr": ref}
        for b in BASELINES[:-1]:
            units, weights = C.baseline_scores(b, case.groups, post, plain, case.train[:8], seed)
            plans[b] = C.equal_plan(case.groups, units, weights, shapes, ref)
        models = {m: C.apply_method(plain, case.groups, p)[0] for m, p in plans.items()}
        try:
            models["tp_magnitude"] = C.tp_magnitude(plain, example, C.count_nonzero(models["bmr"]),
                                                    iters=prof["tp_iters"])
            res["tp_ffn_only"] = C._TP_FFN_ONLY.get(type(plain).__name__, False)
        except Exception as e:  # noqa: BLE001 - reported in the table, never hidden
            res["tp_error"] = f"{type(e).__name__}: {str(e)[:160]}"
        for m, model in models.items():
            C.recover_(model, case.original, case.train, case.task, prof["recover"], seed,
                       lr=prof["lr"])
            r = res["runs"].setdefault(m, {"metric": [], "params": [], "nonzero": []})
            r["metric"].append(C.metric(case, model))
            r["params"].append(C.count_params(model))
            r["nonzero"].append(C.count_nonzero(model))
        if seed == seeds[0]:  # --quick MiniLM: equal-architecture baselines are not exported
            seed0 = {m: v for m, v in models.items() if prof["onnx"] is None or m in prof["onnx"]}
        log.info("%s seed %d: %s (%.0f s)", name, seed,
                 {m: round(r["metric"][-1], 4) for m, r in res["runs"].items()}, sw())
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as work:
        res["onnx"] = C.onnx_and_latency({"original": case.original, **seed0}, example, Path(work))
    return res


def table(res: dict[str, Any]) -> str:
    n0 = res["original_params"]
    onnx = res.get("onnx", {})
    base = onnx.get("original", {})
    lines = [
        f"### {res['model']} — {res['metric']} ({res['data']})\n",
        f"Original: {n0:,} parameters, metric {res['original_metric']:.4f}, "
        f"ONNX {base.get('onnx_bytes', 0) / 1024:.1f} KiB, ORT {base.get('latency_ms', 0):.3f} ms.\n",
        "| method | params (dense) | nonzero | structured sparsity | total sparsity | metric median [min–max] | ONNX KiB | ORT ms (1 thread) |",
        "|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for m, r in res["runs"].items():
        p, nz = statistics.median(r["params"]), statistics.median(r["nonzero"])
        o = onnx.get(m)
        lines.append(
            f"| {LABELS[m]} | {p:,.0f} | {nz:,.0f} | {1 - p / n0:.1%} | {1 - nz / n0:.1%} | "
            f"{C.med_spread(r['metric'], '{:.4f}')} | "
            + (f"{o['onnx_bytes'] / 1024:.1f} | {o['latency_ms']:.3f} |" if o else " | |"))
    if res.get("tp_ffn_only"):
        lines.append("\nTorch-Pruning could not prune this model's attention/residual widths "
                     "consistently (head reshapes), so only its FFN expansion layers were "
                     "pruning roots here.")
    if res.get("tp_error"):
        lines.append(f"\nTorch-Pruning failed on this model: {res['tp_error']}")
    return "\n".join(lines) + "\n"


def verdict(results: list[dict[str, Any]]) -> tuple[str, int]:
    """Per model: does BMR's median metric reach every baseline's median?"""
    rows, wins = [], 0
    for res in results:
        med = {m: statistics.median(r["metric"]) for m, r in res["runs"].items()}
        beaten_by = [m for m in med if m != "bmr" and med[m] > med["bmr"]]
        ok = not beaten_by
        wins += ok
        rows.append(f"| {res['model']} | {med['bmr']:.4f} | "
                    f"{max(v for m, v in med.items() if m != 'bmr'):.4f} | "
                    f"{'yes' if ok else 'no: ' + ', '.join(LABELS[m] for m in beaten_by)} |")
    head = ("| model | BMR median | best baseline median | BMR ≥ every baseline |\n"
            "|---|---:|---:|---|\n")
    per = []
    for b in BASELINES:
        have = [r for r in results if b in r["runs"]]
        k = sum(statistics.median(r["runs"]["bmr"]["metric"])
                >= statistics.median(r["runs"][b]["metric"]) for r in have)
        per.append(f"{LABELS[b]} {k}/{len(have)}")
    return (head + "\n".join(rows) + "\n\nModels on which BMR's median ≥ the baseline's: "
            + "; ".join(per) + ".\n", wins)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--n-data", type=int, default=None, help="FinetuneSettings.n_data override")
    ap.add_argument("--temperature", type=float, default=None)
    ap.add_argument("--json", default=None, help="also write the raw results here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    log = logging.getLogger("bench.quality")
    seeds = [int(s) for s in args.seeds.split(",")]
    fit_kw = {"n_data": args.n_data, "temperature": args.temperature}
    sw = C.Stopwatch()
    results = []
    for name in args.models.split(","):
        prof = profile(name, args.quick)
        results.append(run_model(name, seeds, prof, fit_kw, log))
        log.info("%s done at %.0f s", name, sw())
    summary, wins = verdict(results)
    p0, pm = profile(MODELS[0], args.quick), profile(MODELS[-1], args.quick)
    body = (
        "## quality: metric at BMR's chosen sparsity, BMR vs baselines\n\n"
        "Protocol: one variational fine-tune per seed (library defaults"
        f"{'' if args.n_data is None else f', n_data={args.n_data}'}"
        f"{'' if args.temperature is None else f', temperature={args.temperature}'}; "
        f"digits models {p0['steps']} steps, MiniLM {pm['steps']} steps); BMR chooses its "
        "structured and unstructured sparsity from ΔlnZ (threshold 0, round_to 1); every "
        "baseline starts from the same posterior mean μ and is cut to exactly BMR's nonzero "
        "count of wrapped weights (structure under BMR's parameter budget, then a global "
        "weight threshold); Torch-Pruning (structured only, dense) is bisected to the smallest "
        "parameter count ≥ BMR's nonzero count. Every method then gets the same masked "
        f"distillation fine-tune (digits {p0['recover']} steps at Adam lr {p0['lr']}, MiniLM "
        f"{pm['recover']} steps at lr {pm['lr']}). Seeds {seeds} (fine-tune, baseline randomness); metric shown as median "
        "[min–max] over seeds. ONNX bytes (sparse initialisers where smaller) and onnxruntime "
        "CPU latency (1 thread, interleaved, median of 20 runs) are for the seed-0 models; "
        "the machine is shared, so latencies are noisy (blank ONNX cells: not exported in --quick; "
        "those models have BMR's architecture). Digits: scikit-learn 8x8 digits "
        "(not FashionMNIST/CIFAR).\n\n"
        f"**BMR ≥ every baseline (median) on {wins} of {len(results)} models.**\n\n"
        + summary + "\n" + "\n".join(table(r) for r in results)
        + f"\nWall time of this script: {sw():.0f} s.\n"
    )
    write_section("quality", body)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    print(body)
    return {"wins": wins, "models": len(results), "seconds": sw()}


if __name__ == "__main__":
    main()

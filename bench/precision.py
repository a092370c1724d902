"""precision: BMR chooses the storage precision of every matrix of all-MiniLM-L6-v2, against
uniform int8 and uniform 4-bit, in one run (docs/PRECISION.md).

The unpruned model is exported to ONNX (fp32). Row posteriors of every Linear and of the
embedding tables come from calibration text (the training split of the standard-library
docstring corpus `compress zoo:all-minilm-l6-v2` uses); for each tolerance the likelihood
precision ν is set by the discrepancy principle (predicted distortion = tolerance) and every
matrix gets the smallest grid with ΔlnZ ≥ 0 (fp32, int8 blocks of 128, int4 blocks of 32 or
128). Every artefact is written by export/mixed_precision.py (MatMulNBits 4/8 bits per node,
GatherBlockQuantized tables) and compared on the held-out paragraphs: file size, mean cosine
to fp32, nearest-neighbour agreement, the measured distortion 2(1 − cos) on calibration check
texts (never used for statistics) against the predicted one, and ORT CPU latency (1 thread,
batch 1, sequence 128, interleaved). The size-recommended artefact is the smallest whose
measured check distortion is within 0.02 (cosine ≥ 0.99): a choice made on calibration data.

    nice python -m bench.precision [--runs 20] [--tolerances 0.005,0.01,0.02] [--no-write]
"""

from __future__ import annotations

import argparse
import copy
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


from bench.report import write_section
from bench.int8 import compare, embed

CHECK_BAR = 0.02  # measured check distortion 2(1 − cos) of a recommendable artefact
SEQ = 128


def _encode(tok: Any, texts: list[str], max_length: int) -> dict[str, np.ndarray]:
    enc = tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="np")
    return {k: np.asarray(v, dtype=np.int64) for k, v in enc.items()}


def _batches(tok: Any, texts: list[str], size: int) -> list[dict[str, Any]]:
    import torch

    out = []
    for s in range(0, len(texts), size):
        enc = _encode(tok, texts[s:s + size], SEQ)
        out.append({k: torch.from_numpy(v) for k, v in enc.items()})
    return out


def _pairs(n: int) -> Any:
    """Held-out query/document pairs (first sentence -> rest) of the corpus' held-out bucket."""
    if n <= 0:
        return None
    from bmr_compress.export import make_pairs
    from bmr_compress.io import split_texts

    return make_pairs(split_texts("heldout"), max_pairs=n)


def _retrieval(path: Path, tok: Any, pairs: Any) -> dict[str, float]:
    from bmr_compress.export import cpu_session
    from bmr_compress.export import onnx_encoder, retrieval_metrics

    encode, names = onnx_encoder(cpu_session(path, threads=2))
    return retrieval_metrics(encode, tok, pairs, input_names=names)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--tolerances", default="0.005,0.01,0.02,0.04")
    ap.add_argument("--stats-texts", type=int, default=128)
    ap.add_argument("--pairs", type=int, default=300, help="held-out retrieval pairs (0: skip)")
    ap.add_argument("--no-write", action="store_true", help="print, leave BENCHMARKS.md alone")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("bmr_compress.export.onnx_export").setLevel(logging.WARNING)

    import torch

    from bmr_compress.bmr import GRIDS, KEEP
    from bmr_compress.export import export_onnx, measure_latency
    from bmr_compress.export import match_initializers, quantize_mixed
    from bmr_compress.export import make_inputs_like
    from bmr_compress.io import docstring_corpus
    from bmr_compress.pipeline import resolve_source
    from bmr_compress.scoring import (
        calibrate_precisions, matrix_posteriors, round_weights_,
    )
    from bmr_compress.scoring import output_scale

    torch.set_num_threads(1)
    src = resolve_source("zoo:all-minilm-l6-v2")
    model, tok = src.model.eval(), src.tokenizer_or_processor
    train, held = docstring_corpus(1024)
    train = list(train)
    stats_texts, check_texts = train[:args.stats_texts], train[-64:]
    t0 = time.perf_counter()
    stats = _batches(tok, stats_texts, 16)
    scale = output_scale(model, stats, "embedding")
    posts = matrix_posteriors(model, stats, "embedding", scale)
    t_stats = time.perf_counter() - t0
    log = logging.getLogger("bench.precision")
    log.info("posteriors of %d matrices in %.0f s", len(posts), t_stats)

    enc_held = _encode(tok, list(held), 256)
    enc_check = _encode(tok, check_texts, 256)
    weights = {}
    for name, m in model.named_modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Embedding)):
            weights[f"{name}.weight"] = m.weight.detach().numpy()
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-precision-") as work:
        w = Path(work)
        sample = {k: torch.from_numpy(v[:2, :16].copy()) for k, v in enc_held.items()}
        fp32 = export_onnx(model, w / "fp32.onnx", sample, sparse=False).path
        import onnx

        params = match_initializers(onnx.load(str(fp32)), weights)
        log.info("%d of %d matrices found in the ONNX graph", len(params), len(weights))
        paths = {"fp32": fp32}
        plans: dict[str, dict[str, str]] = {"fp32": {}}
        for g in ("int8", "int4-b32", "int4-b128"):
            plans[f"uniform {g}"] = {p: g for p in params}
        info: dict[str, dict[str, Any]] = {}
        for tol in [float(t) for t in args.tolerances.split(",")]:
            t1 = time.perf_counter()
            choice = calibrate_precisions(posts, tol)
            name = f"BMR tolerance {tol:g}"
            plans[name] = {p: g for p, g in choice.grids.items() if p in params}
            info[name] = {"nu": choice.nu, "predicted": choice.predicted_distortion,
                          "seconds": time.perf_counter() - t1,
                          "grids": {p: g for p, g in choice.grids.items()}}
        for name, plan in plans.items():
            if name != "fp32":
                paths[name] = quantize_mixed(fp32, w / f"{len(paths)}.onnx",
                                             {params[p]: g for p, g in plan.items()}).path
        ref_held, ref_check = embed(fp32, enc_held), embed(fp32, enc_check)
        pairs = _pairs(args.pairs)
        ref_ret = _retrieval(fp32, tok, pairs) if pairs else None
        for name, p in paths.items():
            got_check = embed(p, enc_check)
            r = {"bytes": p.stat().st_size, **compare(ref_held, embed(p, enc_held)),
                 "check_distortion": float(np.mean(2 * (1 - (ref_check * got_check).sum(1))))}
            if ref_ret is not None:
                from bmr_compress.export import retention

                r["retention"] = retention(_retrieval(p, tok, pairs), ref_ret)
            counts = {}
            for g in plans[name].values():
                counts[g] = counts.get(g, 0) + 1
            r["counts"] = counts
            if name in info:
                r.update(info[name])
                tmp = copy.deepcopy(model)
                round_weights_(tmp, info[name]["grids"])
                from bmr_compress.algorithms import distortion
                r["torch_distortion"] = distortion(tmp, model, _batches(tok, check_texts, 16),
                                                   "embedding", scale)
            rows[name] = r
            log.info("%s: %.1f MiB, cosine %.4f, check distortion %.4g", name, r["bytes"] / 2**20,
                     r["cosine_mean"], r["check_distortion"])
        x = make_inputs_like(sample, 1, SEQ, seed=0)
        x["attention_mask"][:] = 1
        lat = measure_latency({k: str(v) for k, v in paths.items()},
                              {k: v.numpy() for k, v in x.items()}, threads=1, runs=args.runs)
    text = render(rows, lat, len(held), args.runs, t_stats, list(GRIDS), KEEP)
    print(text)
    if not args.no_write:
        write_section("precision", text)


def render(rows: dict[str, dict[str, Any]], lat: dict[str, Any], n_held: int, runs: int,
           t_stats: float, grids: list[str], keep: str) -> str:
    base = rows["fp32"]["bytes"]
    ok = [n for n, r in rows.items() if n != "fp32" and r["check_distortion"] <= CHECK_BAR]
    rec = min(ok, key=lambda n: rows[n]["bytes"]) if ok else None
    lines = ["## precision: BMR's per-matrix precision vs uniform int8 / 4-bit (all-MiniLM-L6-v2)",
             "", f"Unpruned model, no fine-tune. Statistics for the row posteriors: {t_stats:.0f} s. "
             f"Quality on the {n_held} held-out docstring paragraphs (≤ 256 tokens) against the fp32 "
             "ONNX; check distortion 2(1 − cos) on 64 calibration paragraphs never used for the "
             "statistics (the recommendation is chosen on it: the smallest artefact with check "
             f"distortion ≤ {CHECK_BAR}). Latency: ORT CPU, 1 thread, batch 1, sequence {SEQ}, "
             f"median of {runs} interleaved runs.", "",
             "| artefact | file MiB | × smaller | mean cosine | min cosine | NN agreement | "
             "retrieval retention (MRR@10) | check distortion | predicted | ν | ms | matrices " + "/".join([keep, *grids]) + " |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        pred = f"{r['predicted']:.4f}" if "predicted" in r else ""
        nu = f"{r['nu']:.3g}" if "nu" in r else ""
        counts = "/".join(str(r["counts"].get(g, 0)) for g in [keep, *grids])
        mark = " **(recommended)**" if name == rec else ""
        lines.append(f"| {name}{mark} | {r['bytes'] / 2**20:.1f} | {base / r['bytes']:.2f} | "
                     f"{r['cosine_mean']:.4f} | {r['cosine_min']:.4f} | {r['nn']:.3f} | "
                     f"{r.get('retention', float('nan')):.4f} | {r['check_distortion']:.4f} | {pred} | {nu} | {lat[name]['median_ms']:.1f} | "
                     f"{counts} |")
    lines += ["", "Word-embedding table's grid per BMR artefact: " + ", ".join(
        f"{n}: {r['grids'].get('embeddings.word_embeddings.weight', keep)}"
        for n, r in rows.items() if "grids" in r) + "."]
    lines += ["Predicted distortion is the first-order sum over matrices (bmr/precision.py); the "
              "torch model with the same rounded weights measures " + ", ".join(
                  f"{r['torch_distortion']:.4f}" for r in rows.values() if "torch_distortion" in r)
              + " on the check texts (the ONNX adds int8 activation quantisation, accuracy level 4)."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

"""The mpnet benchmark: all-mpnet-base-v2 beside what a user would do instead, every artefact
timed interleaved in one onnxruntime run (CPU, 1 thread, batch 1, 128 tokens) and scored on
the held-out retrieval pairs `compress` reports (installed documentation, the held-out hash
bucket, first sentence -> the rest; 1,000 pairs, 128 tokens).

Rows:
- mpnet fp32 (the reference of every retention), + dynamic int8 per channel and per tensor;
- mpnet with 12 -> 6 and 12 -> 4 encoder layers kept evenly spaced ([0, 2, ..., 10] and
  [1, 4, 7, 10]), each given the same recovery (the tool's distillation with the recipe's lr
  and batches, the same steps), fp32 and + dynamic int8 per tensor;
- all-MiniLM-L6-v2 fp32 and + dynamic int8 per tensor, the sibling a user would switch to
  (its retention too is relative to mpnet's MRR@10);
- with --from OUT: the operating points of a `bmr-compress compress zoo:all-mpnet-base-v2`
  output whose files it ships (OUT/model.onnx, OUT/model.int8.onnx, OUT/candidates/).

    python -m bench.mpnet                     # ~35 min on 2 cores; writes the `mpnet` section
    python -m bench.mpnet --from out/mpnet    # + the BMR rows of an existing compress output
    python -m bench.mpnet --quick             # the code path on small settings; writes nothing
    python -m bench.mpnet --add-from out/mpnet   # an earlier run's rows (--work) + the BMR rows
                                                 # of a compress output, every row re-timed
                                                 # interleaved, only the new rows scored
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.mpnet_verdict import Row, evenly_spaced, section
from bench.report import command, git_rev, write_section

log = logging.getLogger("bench.mpnet")
ROOT = Path(__file__).resolve().parent.parent
PAIRS, SEQ, RUNS = 1000, 128, 20  # as pipeline/choose.py builds the held-out pairs
STEPS = 20  # recovery steps of each dropped model (20 of the 22 recovery batches, once each)
KEEP = (6, 4)  # encoder layers kept of 12
INT8 = {"dynamic": "int8 per channel", "dynamic-per-tensor": "int8 per tensor"}  # onnxruntime dynamic
# int8 of the dropped models and the sibling: per tensor, because per channel loses most of
# mpnet's retrieval quality on these pairs (its own row shows it) and was no faster here
DERIVED_INT8 = "dynamic-per-tensor"


def drop_layers(model: Any, keep: Sequence[int]) -> Any:
    """A copy of a transformers encoder (`model.encoder.layer`, as BERT and MPNet have it)
    with only the encoder layers `keep`, in their order; the config says how many are left.
    Everything else (embeddings, MPNet's shared relative-position bias) is kept as it is."""
    from torch import nn

    n = len(model.encoder.layer)
    if not keep or list(keep) != sorted(set(keep)) or keep[0] < 0 or keep[-1] >= n:
        raise ValueError(f"keep must be increasing layer indices in [0, {n}), got {list(keep)}")
    out = copy.deepcopy(model)
    out.encoder.layer = nn.ModuleList([out.encoder.layer[i] for i in keep])
    out.config.num_hidden_layers = len(keep)
    return out.eval()


def recover_dropped(original: Any, batches: Sequence[Mapping[str, Any]], keeps: Sequence[list[int]],
                    steps: int, settings: Any, seed: int = 0) -> tuple[list[tuple[Any, Any]], int]:
    """Each layer-dropped copy of `original` after `steps` of the tool's recovery (what the
    default path runs after a cut: the same calibration split, output scale, lr and
    schedule); the teacher's outputs are computed once for all of them. The layer-wise loss
    term is off: it needs the teacher's depth. Returns the models with their records, and
    how many recovery batches the steps cycle over."""
    import torch

    from bmr_compress.algorithms import TeacherTargets, recover_, split_calibration
    from bmr_compress.scoring import output_scale

    cal = split_calibration(list(batches))
    scale = output_scale(original, cal.stats, "embedding")
    fit = list(cal.labelled[:max(1, min(steps, len(cal.labelled)))])  # the batches `steps` visit
    targets = TeacherTargets.compute(original, fit, "embedding") if steps > 0 else None
    out = []
    for keep in keeps:
        torch.manual_seed(seed)
        m = drop_layers(original, keep)
        rec = recover_(m, original, fit, "embedding", steps=steps, lr=settings.recovery_lr,
                       scale=scale, targets=targets, schedule=settings.recovery_schedule)
        m.requires_grad_(False).eval()
        log.info("recovered %d layers %s: %d steps in %.0f s, loss %s -> %s", len(keep), keep,
                 rec.steps, rec.seconds, rec.first_loss, rec.last_loss)
        out.append((m, rec))
    return out, len(fit)


def export_family(rows: list[Row], model: Any, label: str, family: str, tokenizer: str,
                  example: Mapping[str, Any], schemes: Sequence[str], work: Path) -> None:
    """`model` as fp32 ONNX and each int8 scheme of it, appended to `rows`."""
    from bmr_compress.export import export_onnx, quantize_int8
    from bmr_compress.io import count_params

    stem = label.replace(" ", "").replace("+", "-")
    fp32 = export_onnx(model, work / f"{stem}.onnx", dict(example), sparse=False).path
    layers = getattr(model.config, "num_hidden_layers", None)
    rows.append(Row(label, family, fp32, tokenizer, count_params(model), layers, _size(fp32)))
    for s in schemes:
        q = quantize_int8(fp32, work / f"{stem}.{s}.onnx", scheme=s).path
        rows.append(Row(label.replace(" fp32", "") + f" + {INT8[s]}", family, q, tokenizer, None,
                        layers, _size(q)))


def _size(path: Path) -> int:
    data = Path(str(path) + ".data")
    return path.stat().st_size + (data.stat().st_size if data.is_file() else 0)


def bmr_rows(out: Path) -> list[Row]:
    """The operating points of a compress output whose files it ships (the original's own
    points are already rows here)."""
    report = out / "report.json"
    if not report.is_file():
        raise SystemExit(f"--from {out}: no report.json there")
    points = (json.loads(report.read_text()).get("operating_points") or {}).get("points") or []
    rows = [Row(f"BMR {p['label']}", "bmr", out / p["file"], "mpnet", p.get("params"))
            for p in points if p.get("base") != "original" and p.get("file")
            and (out / p["file"]).is_file()]
    for r in rows:
        r.size_bytes = _size(r.path)
    if not rows:
        log.warning("--from %s: no shipped operating point besides the original's", out)
    return rows


def time_rows(rows: list[Row], runs: int) -> dict[str, Any]:
    """One interleaved latency run of every row (1 thread, batch 1, SEQ tokens)."""
    from bmr_compress.export import measure_latency

    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 20000, size=(1, SEQ), dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids),
             "token_type_ids": np.zeros_like(ids)}
    load = os.getloadavg()[0]
    lat = measure_latency({r.label: r.path for r in rows}, feeds, threads=1, runs=runs)
    base = lat[rows[0].label]["median_ms"]
    for r in rows:
        r.median_ms = lat[r.label]["median_ms"]
        r.speedup = base / r.median_ms
    return {"runs": runs, "threads": 1, "batch": 1, "seq": SEQ,
            "load_before": load, "load_after": os.getloadavg()[0]}


def score_rows(rows: list[Row], tokenizers: Mapping[str, Any], pairs: Any,
               after_each: Callable[[], None] = lambda: None, rescore: bool = True) -> None:
    """Held-out MRR@10 of every row on the same pairs; retention and its paired standard
    error against the first row (mpnet fp32). `after_each` runs after every row (a
    checkpoint of what is measured so far)."""
    from bmr_compress.export import (
        cpu_session, onnx_encoder, paired_retention_se, reciprocal_ranks, retrieval_ranks,
    )

    for r in rows:
        if not rescore and r.rr is not None:  # scored before on the same pairs
            continue
        t = time.perf_counter()
        tok = tokenizers[r.tokenizer]
        seq = min(SEQ, int(getattr(tok, "model_max_length", SEQ) or SEQ))
        encode, names = onnx_encoder(cpu_session(r.path, threads=max(1, os.cpu_count() or 1)))
        rank = retrieval_ranks(encode, tok, pairs, max_length=seq, input_names=names)
        r.rr = reciprocal_ranks(rank)
        r.mrr, r.recall1 = float(r.rr.mean()), float((rank == 1).mean())
        r.score_seconds = time.perf_counter() - t
        ref = rows[0].rr
        r.retention, r.se = r.mrr / float(ref.mean()), paired_retention_se(r.rr, ref)
        log.info("scored %s: MRR@10 %.4f (%.1f %% of mpnet's) in %.0f s", r.label, r.mrr,
                 100 * r.retention, r.score_seconds)
        after_each()


def example_inputs(tokenizer: Any, texts: Sequence[str]) -> dict[str, Any]:
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=16, return_tensors="pt")
    return dict(enc)


def run(args: argparse.Namespace) -> tuple[list[Row], dict[str, Any]]:
    """Load, recover, export, time and score; (rows, run facts) with wall time per stage."""
    from bench.common import recovery_settings
    from bmr_compress.export import cpu_info, retrieval_pairs
    from bmr_compress.io import load_recipe, make_dataset
    from bmr_compress.pipeline import resolve_source

    stages: dict[str, float] = {}
    t = time.perf_counter()
    mpnet, minilm = resolve_source("zoo:all-mpnet-base-v2"), resolve_source("zoo:all-minilm-l6-v2")
    data = make_dataset(None, mpnet, default=load_recipe("all-mpnet-base-v2").data)
    pairs = retrieval_pairs(args.pairs)["heldout"]
    settings = recovery_settings("all-mpnet-base-v2")
    stages["load"] = time.perf_counter() - t
    n = len(mpnet.model.encoder.layer)
    keeps = [evenly_spaced(n, k) for k in args.keep]
    t = time.perf_counter()
    dropped, n_batches = recover_dropped(mpnet.model.eval(), data.train_batches, keeps,
                                         args.steps, settings)
    stages["recovery"] = time.perf_counter() - t
    t = time.perf_counter()
    rows: list[Row] = []
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    ex = {"mpnet": example_inputs(mpnet.tokenizer_or_processor, pairs.documents[:2]),
          "minilm": example_inputs(minilm.tokenizer_or_processor, pairs.documents[:2])}
    export_family(rows, mpnet.model, "mpnet fp32", "mpnet", "mpnet", ex["mpnet"], list(INT8), work)
    for keep, (m, _rec) in zip(keeps, dropped):
        export_family(rows, m, f"mpnet {len(keep)} layers + recovery", "drop", "mpnet",
                      ex["mpnet"], [DERIVED_INT8], work)
    export_family(rows, minilm.model.eval(), "MiniLM-L6 fp32", "minilm", "minilm",
                  ex["minilm"], [DERIVED_INT8], work)
    if args.src is not None:
        rows += bmr_rows(args.src)
    stages["export"] = time.perf_counter() - t
    t = time.perf_counter()
    timing = time_rows(rows, args.runs)
    stages["timing"] = time.perf_counter() - t
    facts = {"stages": stages, "timing": timing, "cpu": cpu_info(), "pairs": len(pairs),
             "steps": args.steps, "lr": settings.recovery_lr,
             "schedule": settings.recovery_schedule, "derived_int8": INT8[DERIVED_INT8],
             "recovery_batches": n_batches,
             "recipe_steps": settings.recovery_steps, "recipe_rounds": settings.rounds,
             "batch_size": int(data.train_batches[0]["input_ids"].shape[0]),
             "data": getattr(data, "name", "") or "stdlib docstrings",
             "recoveries": [{"keep": k, "steps": r.steps, "seconds": r.seconds,
                             "first_loss": r.first_loss, "last_loss": r.last_loss}
                            for k, (_m, r) in zip(keeps, dropped)],
             "from": str(args.src) if args.src else None}
    t = time.perf_counter()
    score_rows(rows, {"mpnet": mpnet.tokenizer_or_processor,
                      "minilm": minilm.tokenizer_or_processor}, pairs,
               after_each=lambda: save(work, rows, facts))
    stages["scoring"] = time.perf_counter() - t
    return rows, facts


def add_bmr(args: argparse.Namespace) -> tuple[list[Row], dict[str, Any]]:
    """An earlier run's rows (args.work/results.json) with the BMR rows of args.add_from in
    place of any it had: every row timed again, interleaved in one run, so the speed-ups
    stay side by side; only the rows without a score are scored (same pairs, same mpnet
    reference)."""
    from bmr_compress.export import retrieval_pairs
    from bmr_compress.pipeline import resolve_source

    path = args.work / "results.json"
    if not path.is_file():
        raise SystemExit(f"--add-from needs an earlier run's {path}: run `python -m bench.mpnet` first")
    facts = json.loads(path.read_text())
    rows = [Row.from_json(r) for r in facts.pop("rows") if r["family"] != "bmr"]
    missing = [r.label for r in rows if not r.path.is_file()]
    if missing:
        raise SystemExit(f"--add-from: files of the earlier rows are gone: {', '.join(missing)}")
    rows += bmr_rows(args.add_from)
    t = time.perf_counter()
    facts["timing"] = time_rows(rows, args.runs)
    facts["stages"]["timing"] = time.perf_counter() - t
    mpnet, minilm = resolve_source("zoo:all-mpnet-base-v2"), resolve_source("zoo:all-minilm-l6-v2")
    t = time.perf_counter()
    score_rows(rows, {"mpnet": mpnet.tokenizer_or_processor, "minilm": minilm.tokenizer_or_processor},
               retrieval_pairs(facts["pairs"])["heldout"], rescore=False)
    facts["stages"]["scoring BMR rows"] = time.perf_counter() - t
    facts["from"] = str(args.add_from)
    return rows, facts


def save(work: Path, rows: Sequence[Row], facts: Mapping[str, Any]) -> None:
    """results.json: every row (with its per-query reciprocal ranks) and the run's facts."""
    (work / "results.json").write_text(json.dumps(
        {"rows": [r.to_json() for r in rows], **facts}, default=str))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--from", dest="src", type=Path, default=None,
                    help="a `bmr-compress compress zoo:all-mpnet-base-v2` output: its operating "
                         "points join as BMR rows")
    ap.add_argument("--steps", type=int, default=STEPS, help="recovery steps per dropped model")
    ap.add_argument("--pairs", type=int, default=PAIRS)
    ap.add_argument("--runs", type=int, default=RUNS)
    ap.add_argument("--keep", default=",".join(map(str, KEEP)), type=lambda s: [int(x) for x in s.split(",")],
                    help="encoder layers kept of 12, one dropped model each")
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "out" / "mpnet",
                    help="where the ONNX files and results.json go")
    ap.add_argument("--render", type=Path, default=None,
                    help="re-write the section from a results.json of an earlier run")
    ap.add_argument("--add-from", type=Path, default=None,
                    help="add a compress output's BMR rows to the earlier run in --work: every row "
                         "re-timed interleaved, only the new rows scored")
    ap.add_argument("--quick", action="store_true",
                    help="40 pairs, 2 recovery steps, 3 runs; prints, writes no section")
    args = ap.parse_args()
    if args.quick:
        args.pairs, args.steps, args.runs = 40, 2, 3
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.add_from is not None:
        started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        rows, facts = add_bmr(args)
        facts["added"] = {"command": command(), "commit": git_rev(), "started": started}
        save(args.work, rows, facts)
    elif args.render is not None:
        facts = json.loads(args.render.read_text())
        rows = [Row.from_json(r) for r in facts.pop("rows")]
        facts["rendered"] = True
    else:
        t0 = time.perf_counter()
        started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        rows, facts = run(args)
        facts["measured"] = {"command": command(), "commit": git_rev(), "started": started}
        facts["stages"]["total"] = time.perf_counter() - t0
        save(args.work, rows, facts)
    body = section(rows, facts)
    print(body)
    if not args.quick:
        write_section("mpnet", body)


if __name__ == "__main__":
    main()

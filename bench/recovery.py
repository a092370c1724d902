"""Recovery side by side at one cut of all-MiniLM-L6-v2: output-only vs layer-wise loss, on the
standard-library docstrings vs the broader installed-documentation corpus (issue #26).

    nice -n 10 python -m bench.recovery --steps 150 --batch-size 16

1. One cut, shared by every row: a laplace round at the default tolerance (no recovery) gives
   ν; the cut then keeps the default main job's FFN widths (BENCHMARKS.md main_job) at that
   ν, compensation included. Saved under --work and reused on the next run.
2. Each row: a copy of the cut, the tool's recovery (algorithms/recovery.recover_, teacher
   targets cached once) for the same number of steps and batch size, on its corpus's
   training paragraphs; check batches excluded from every training set.
3. Judged on calibration check paragraphs (distortion 2(1 − cos), never trained on) and on
   the main job's retrieval task (export.retrieval_pairs: 1,000 selection and 1,000
   held-out query→document pairs of the installed documentation, hash buckets that never
   train): MRR@10 of the student over the original's (retention) ± its paired standard error.
   Selection pairs choose between rows; held-out pairs are reported.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path


import numpy as np
import torch

from bench.report import write_section

DEFAULT_WIDTHS = [552, 688, 544, 712, 808, 1064]  # main_job, commit 4d5b6ce
ROWS = (("docstrings", 0.0), ("docs", 0.0), ("docs", 1.0), ("docstrings", 1.0))


def _embed(model: torch.nn.Module, tok, texts: list[str], bs: int = 64) -> torch.Tensor:
    from bmr_compress.tasks import probe_output

    out = []
    with torch.no_grad():
        for i in range(0, len(texts), bs):
            enc = tok(texts[i:i + bs], padding=True, truncation=True, max_length=128, return_tensors="pt")
            out.append(probe_output(model, dict(enc), "embedding"))
    return torch.cat(out)


def _rr(q: torch.Tensor, d: torch.Tensor) -> np.ndarray:
    """Per-query reciprocal rank (MRR@10's terms) of query i finding document i among all."""
    from bmr_compress.export import ranks, reciprocal_ranks

    return reciprocal_ranks(ranks(q.numpy(), d.numpy()))


def _cut(src, data, work: Path) -> torch.nn.Module:
    from bmr_compress.algorithms import laplace_reduce
    from bmr_compress.coupling import discover_groups
    from bmr_compress.cutting import apply_plan_
    from bmr_compress.planning import FollowedRound, Plan, PlanSettings, Ranking

    path = work / "cut.pt"
    model = copy.deepcopy(src.model).eval()
    groups = discover_groups(copy.deepcopy(model).requires_grad_(True),
                             {k: v for k, v in data.heldout_batches[0].items() if k != "labels"})
    if path.is_file():
        saved = torch.load(path, weights_only=True)
        apply_plan_(model, groups, Plan(saved["keep"], {}, PlanSettings(unstructured=False), {}))
        model.load_state_dict(saved["state"])
        return model.eval()

    class _T:
        def __call__(self, _name: str):
            import contextlib
            return contextlib.nullcontext()

    first = laplace_reduce(src.model, data, "embedding", tolerance=0.1, rounds=1, recovery_steps=0,
                           lr=1e-4, round_to=8, timer=_T())
    nu = first.rounds[0]["nu"]
    counts = {f"layers.{i}.ffn": w for i, w in enumerate(DEFAULT_WIDTHS)}
    counts |= {f"layers.{i}.attention": 12 for i in range(len(DEFAULT_WIDTHS))}
    out = laplace_reduce(src.model, data, "embedding", tolerance=0.1, rounds=1, recovery_steps=0,
                         lr=1e-4, round_to=8, timer=_T(),
                         ranking=Ranking(follow=(FollowedRound(nu, counts),)))
    keep = {g: list(k) for g, k in out.keep.items()}
    work.mkdir(parents=True, exist_ok=True)
    torch.save({"keep": keep, "state": out.model.state_dict(), "nu": nu}, path)
    return out.model.eval()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--docs-samples", type=int, default=4096)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--schedule", default="constant")
    ap.add_argument("--rows", default="all", help="comma list of corpus:weight, e.g. docs:0,docs:1")
    ap.add_argument("--work", type=Path, default=Path("/tmp/bmr-recovery-bench"))
    ap.add_argument("--write", action="store_true", help="write the section of BENCHMARKS.md")
    a = ap.parse_args()
    from bmr_compress.io import make_dataset
    from bmr_compress.io import docs_corpus
    from bmr_compress.algorithms import split_calibration
    from bmr_compress.algorithms import distortion, recover_
    from bmr_compress.pipeline import resolve_source
    from bmr_compress.algorithms import TeacherTargets
    from bmr_compress.export import paired_retention_se
    from bmr_compress.export import retrieval_pairs

    torch.set_num_threads(2)
    src = resolve_source("zoo:all-minilm-l6-v2")
    tok, original = src.tokenizer_or_processor, src.model.eval()
    t0 = time.perf_counter()
    old = make_dataset("docstrings", src, max_samples=1024, batch_size=32)  # the main job's data
    cut = _cut(src, old, a.work)
    log = {"cut_seconds": time.perf_counter() - t0}
    # check batches: the first calibration batches of the main job's data, never trained on
    check = split_calibration(old.train_batches).check
    check_ids = {tuple(r[m.bool()].tolist()) for b in check for r, m in zip(b["input_ids"], b["attention_mask"])}

    def train_batches(kind: str) -> list[dict]:
        n = 1024 if kind == "docstrings" else a.docs_samples
        d = make_dataset(kind, src, max_samples=n, batch_size=a.batch_size)
        out = []
        for b in d.train_batches:
            keep = torch.tensor([tuple(r[m.bool()].tolist()) not in check_ids
                                 for r, m in zip(b["input_ids"], b["attention_mask"])])
            if keep.any():
                out.append({k: v[keep] for k, v in b.items()})
        return out

    corpus = docs_corpus(max(a.docs_samples, 4096))
    pairs = retrieval_pairs()

    def scores(model: torch.nn.Module) -> dict[str, np.ndarray]:
        return {split: _rr(_embed(model, tok, list(p.queries)), _embed(model, tok, list(p.documents)))
                for split, p in pairs.items()}

    base = scores(original)

    def retention(rr: dict) -> dict[str, dict[str, float]]:
        return {split: {"retention": float(rr[split].mean() / base[split].mean()),
                        "se": paired_retention_se(rr[split], base[split])} for split in rr}

    rows = [{"row": "cut, no recovery", "check": distortion(cut, original, check, "embedding"),
             "retention": retention(scores(cut)), "seconds": 0.0, "texts": 0}]
    wanted = ROWS if a.rows == "all" else [(r.split(":")[0], float(r.split(":")[1])) for r in a.rows.split(",")]
    for kind, weight in wanted:
        batches = train_batches(kind)[: a.steps]
        t1 = time.perf_counter()
        targets = TeacherTargets.compute(original, batches, "embedding", hidden=weight > 0)
        t_targets = time.perf_counter() - t1
        m = copy.deepcopy(cut)
        rec = recover_(m, original, batches, "embedding", steps=a.steps, lr=a.lr, targets=targets,
                       hidden_weight=weight, schedule=a.schedule)
        rows.append({"row": f"{kind}, {'output only' if weight == 0 else f'output + {weight:g} x layer-wise'}",
                     "check": distortion(m, original, check, "embedding"),
                     "retention": retention(scores(m)),
                     "seconds": rec.seconds, "target_seconds": t_targets,
                     "texts": sum(len(b["input_ids"]) for b in batches), "on_disk": targets.on_disk})
        print(json.dumps(rows[-1]), flush=True)
        del targets
    res = {"args": {k: str(v) for k, v in vars(a).items()},
           "pairs": {k: len(v) for k, v in pairs.items()},
           "original": {k: float(v.mean()) for k, v in base.items()},
           "rows": rows, "corpus_sources": corpus.sources, **log}
    (a.work / "results.json").write_text(json.dumps(res, indent=1))
    print(_table(res))
    if a.write:
        write_section("recovery", _table(res))


def _table(res: dict) -> str:
    a, mrr0 = res["args"], res["original"]
    lines = ["## recovery: output-only vs layer-wise recovery, stdlib vs broader corpus (issue #26)", "",
             f"all-MiniLM-L6-v2, one cut shared by every row (FFN widths of a default main job: "
             f"{'/'.join(map(str, DEFAULT_WIDTHS))} of 1536, compensated, no recovery), so every row "
             f"has the same speed. Each row: the tool's recovery, {a['steps']} Adam steps, batch "
             f"{a['batch_size']}, lr {a['lr']} ({a['schedule']}), teacher targets cached once, on its "
             "corpus's training paragraphs (`docstrings`: the standard library, the main job's default; "
             f"`docs`: the first {a['docs_samples']} paragraphs of the installed documentation). Check: "
             "2(1 − cos) on the main job's calibration check paragraphs (never trained on). "
             f"Retention: the main job's retrieval task ({res['pairs']['selection']} selection / "
             f"{res['pairs']['heldout']} held-out query→document pairs, hash buckets that never train), "
             f"MRR@10 ÷ the original's ({mrr0['selection']:.4f} / {mrr0['heldout']:.4f}) ± its paired "
             "standard error. Selection chooses; held-out is reported.", "",
             "| recovery | texts seen | check distortion | retention (selection) | retention (held-out) "
             "| wall s (steps) | wall s (teacher targets) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in res["rows"]:
        sel, held = (r["retention"][k] for k in ("selection", "heldout"))
        lines.append(f"| {r['row']} | {r['texts']} | {r['check']:.4f} | "
                     f"{100 * sel['retention']:.2f} ± {100 * sel['se']:.2f} % | "
                     f"{100 * held['retention']:.2f} ± {100 * held['se']:.2f} % | "
                     f"{r['seconds']:.0f} | {r.get('target_seconds', 0):.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

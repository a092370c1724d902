"""The mpnet benchmark's rows and the plain statements drawn from them (bench/mpnet.py runs
the stages). Pure functions over measured rows: which row keeps more of mpnet's retrieval
quality at a given latency, which rows the sibling model dominates, the acceptance points.

Retention is a row's held-out MRR@10 divided by mpnet fp32's on the same pairs; its
standard error and the standard error of a gap between two rows are paired over queries
(every row answers the same queries).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

TIMING_TOL = 0.03  # two medians within 3 % count as equal latency (interleaved-run noise)
MPNET_FAMILIES = ("mpnet", "drop", "bmr")  # rows derived from all-mpnet-base-v2
TARGET_SPEEDUP, TARGET_RETENTION = 2.5, 0.99


@dataclass
class Row:
    """One artefact: where it lies, what it is, and what was measured on it."""

    label: str
    family: str  # "mpnet" (the original, + int8), "drop" (layers dropped), "minilm", "bmr"
    path: Path
    tokenizer: str  # which tokenizer feeds it: "mpnet" or "minilm"
    params: int | None = None
    layers: int | None = None
    size_bytes: int = 0
    median_ms: float = 0.0
    speedup: float = 0.0
    mrr: float | None = None
    recall1: float | None = None
    retention: float | None = None
    se: float | None = None
    score_seconds: float = 0.0
    rr: np.ndarray | None = field(default=None, repr=False)  # per-query reciprocal ranks

    def to_json(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["path"] = str(self.path)
        out["rr"] = None if self.rr is None else [float(x) for x in self.rr]
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Row:
        rr = d.get("rr")
        return cls(**{**d, "path": Path(d["path"]), "rr": None if rr is None else np.asarray(rr)})


def evenly_spaced(n: int, k: int) -> list[int]:
    """k of n layer indices, the centres of k equal bins rounded down: 12 -> 6 keeps
    [0, 2, 4, 6, 8, 10], 12 -> 4 keeps [1, 4, 7, 10]."""
    if not 0 < k <= n:
        raise ValueError(f"cannot keep {k} of {n} layers")
    return [int((i + 0.5) * n / k - 0.5 + 1e-9) for i in range(k)]


def gap_se(a: np.ndarray, b: np.ndarray, reference: np.ndarray) -> float:
    """Standard error of retention(a) − retention(b) (per-query reciprocal ranks, both
    divided by the reference's mean MRR), paired over the queries."""
    ref = float(np.mean(reference))
    if len(a) < 2 or ref <= 0:
        return 0.0
    return float(np.std(a - b, ddof=1) / np.sqrt(len(a)) / ref)


def at_latency(rows: Sequence[Row], families: Sequence[str], max_ms: float,
               tol: float = TIMING_TOL) -> Row | None:
    """The row of `families` keeping most of mpnet's quality among those no slower than
    `max_ms` (within `tol`); None when none is that fast."""
    fits = [r for r in rows if r.family in families and r.retention is not None
            and r.median_ms <= max_ms * (1 + tol)]
    return max(fits, key=lambda r: r.retention, default=None)


def dominated_by(rows: Sequence[Row], row: Row, families: Sequence[str],
                 tol: float = TIMING_TOL) -> list[Row]:
    """Rows of `families` at least as fast as `row` (within `tol`) that keep at least as
    much of mpnet's quality: the ones a user should take instead."""
    return [r for r in rows if r is not row and r.family in families and r.retention is not None
            and row.retention is not None and r.median_ms <= row.median_ms * (1 + tol)
            and r.retention >= row.retention]


def pct(r: Row) -> str:
    if r.retention is None:
        return "not scored"
    return f"{100 * r.retention:.1f} ± {100 * (r.se or 0):.1f} %"


def compare_line(a: Row, b: Row, ref: Row) -> str:
    """'a keeps more of mpnet's MRR@10 than b: +x ± se points' (paired, over the queries)."""
    gap = (a.retention or 0) - (b.retention or 0)
    se = gap_se(a.rr, b.rr, ref.rr) if a.rr is not None and b.rr is not None and ref.rr is not None else 0.0
    better, worse = (a, b) if gap >= 0 else (b, a)
    noise = " (within 2 standard errors: not a clear difference)" if abs(gap) <= 2 * se else ""
    return (f"**{better.label}** ({better.median_ms:.1f} ms, {pct(better)}) keeps more of mpnet's "
            f"MRR@10 than {worse.label} ({worse.median_ms:.1f} ms, {pct(worse)}): "
            f"{100 * abs(gap):.1f} ± {100 * se:.1f} points{noise}.")


def sibling_statements(rows: Sequence[Row], ref: Row) -> list[str]:
    """At each MiniLM row's latency: which keeps more of mpnet's quality, the sibling or the
    best mpnet-derived row (layer dropping, int8, BMR) that is as fast; and where switching
    models is the better answer."""
    out = []
    for m in (r for r in rows if r.family == "minilm" and r.retention is not None):
        best = at_latency(rows, MPNET_FAMILIES, m.median_ms)
        if best is None:
            fastest = min((r for r in rows if r.family in MPNET_FAMILIES and r.retention is not None),
                          key=lambda r: r.median_ms)
            out.append(f"At {m.label}'s latency ({m.median_ms:.1f} ms) no mpnet-derived row is "
                       f"that fast: the fastest, {fastest.label}, takes {fastest.median_ms:.1f} ms "
                       f"({fastest.median_ms / m.median_ms:.1f}x the sibling's) and keeps "
                       f"{pct(fastest)}; the sibling keeps {pct(m)}.")
        else:
            out.append(f"At {m.label}'s latency ({m.median_ms:.1f} ms): " + compare_line(m, best, ref))
    sib = [r for r in rows if r.family == "minilm" and r.retention is not None]
    beaten = [r for r in rows if r.family in MPNET_FAMILIES and dominated_by(rows, r, ("minilm",))]
    alive = [r for r in rows if r.family in MPNET_FAMILIES and r.retention is not None
             and r not in beaten]
    if sib and beaten:
        out.append("**Switching models is the better answer** wherever one of these would be the "
                   "choice: " + ", ".join(f"{r.label} ({r.median_ms:.1f} ms, {pct(r)})" for r in beaten)
                   + ": all-MiniLM-L6-v2 is at least as fast and keeps at least as much of "
                   "mpnet's MRR@10 (point estimates).")
    if sib and not alive:
        best = max((r for r in rows if r.family in MPNET_FAMILIES and r.retention is not None),
                   key=lambda r: r.retention)
        out.append("Against the best mpnet-derived row: "
                   + compare_line(max(sib, key=lambda r: r.retention), best, ref))
    if sib and alive:
        top = max(sib, key=lambda r: r.retention)
        out.append("Staying with mpnet pays only where more quality is needed than the sibling "
                   "gives, at " f"{min(r.median_ms for r in alive) / min(r.median_ms for r in sib):.1f}x "
                   "the sibling's fastest latency or more: "
                   + " ".join(compare_line(r, top, ref) for r in alive))
    return out


def acceptance_rows(rows: Sequence[Row], bmr_pending: bool) -> list[str]:
    """The issue's acceptance points as table rows (reached, met)."""
    bmr = [r for r in rows if r.family == "bmr" and r.retention is not None]
    lines = ["| acceptance point | reached | met |", "|---|---|---|"]
    if bmr_pending or not bmr:
        lines.append(f"| a BMR artefact ≥ {TARGET_SPEEDUP}x faster than mpnet fp32 at ≥ "
                     f"{100 * TARGET_RETENTION:.0f} % held-out retention | BMR rows pending | pending |")
        lines.append("| ahead of mpnet + int8 alone and of layer dropping at equal latency | "
                     "BMR rows pending | pending |")
        return lines
    ok = [r for r in bmr if r.speedup >= TARGET_SPEEDUP and r.retention >= TARGET_RETENTION]
    best = max(bmr, key=lambda r: (r.retention >= TARGET_RETENTION, r.speedup))
    lines.append(f"| a BMR artefact ≥ {TARGET_SPEEDUP}x faster than mpnet fp32 at ≥ "
                 f"{100 * TARGET_RETENTION:.0f} % held-out retention | {best.label}: "
                 f"{best.speedup:.2f}x at {pct(best)} | {'yes' if ok else '**no**'} |")
    for fam, words in (("mpnet", "mpnet + int8 alone"), ("drop", "layer dropping")):
        beaten = [b for b in bmr if dominated_by(rows, b, (fam,))]
        lines.append(f"| some BMR artefact not dominated by {words} (as fast and as good) | "
                     f"{'; '.join(f'{b.label} by ' + ', '.join(d.label for d in dominated_by(rows, b, (fam,))) for b in beaten) or 'none dominated'} | "
                     f"{'yes' if len(beaten) < len(bmr) else '**no**'} |")
    return lines


def _layers(r: Row) -> str:
    return str(r.layers) if r.layers is not None else "-"


def section(rows: Sequence[Row], facts: dict[str, Any]) -> str:
    """The `mpnet` section of BENCHMARKS.md: the rows, the statements, the wall times."""
    ref = rows[0]
    cpu, timing, st = facts["cpu"], facts["timing"], facts["stages"]
    bmr_pending = not any(r.family == "bmr" for r in rows)
    sib = [r for r in rows if r.family == "minilm" and r.retention is not None]
    head = max(sib, key=lambda r: r.speedup) if sib else None
    lines = ["## mpnet: all-mpnet-base-v2 beside int8, layer dropping and all-MiniLM-L6-v2", ""]
    m = facts.get("measured")
    if m:
        lines += [f"Measured by `{m['command']}` at commit {m['commit']}, started {m['started']}"
                  + (f"; this section re-rendered from its results.json." if facts.get("rendered")
                     else "."), ""]
    a = facts.get("added")
    if a:
        lines += [f"BMR rows added by `{a['command']}` at commit {a['commit']}, started {a['started']}: "
                  "every row above timed again in that one interleaved run; the BMR rows scored on "
                  "the same pairs against the same mpnet fp32 scores.", ""]
    if head is not None:
        lines += [f"Headline: {head.label} runs {head.speedup:.1f}x faster than mpnet fp32 and keeps "
                  f"{pct(head)} of its held-out MRR@10; "
                  + ("BMR rows pending (no mpnet compress output yet)." if bmr_pending
                     else "BMR rows from `" + str(facts.get("from")) + "`."), ""]
    lines += [
        f"Held-out task: {facts['pairs']} query→document pairs from the installed documentation's "
        "held-out hash bucket (first sentence → the rest, 128 tokens), built as `compress` builds "
        "its held-out retrieval pairs; retention = a row's MRR@10 ÷ mpnet fp32's on the same "
        "pairs, ± its paired standard error over the queries (the sibling's too: how much of "
        "mpnet's quality it keeps). Every row is the ONNX file, scored on onnxruntime CPU.", "",
        f"Latency: every row timed interleaved in one run, onnxruntime CPU, {timing['threads']} "
        f"thread, batch {timing['batch']}, {timing['seq']} tokens, median of {timing['runs']} runs; "
        f"CPU {cpu.get('model')} ({cpu.get('arch')}, {cpu.get('logical_cores')} logical cores, "
        f"features: {', '.join(cpu.get('features') or []) or 'none'}; onnxruntime "
        f"{cpu.get('onnxruntime')}); 1-min load average {timing['load_before']:.1f} before the "
        f"timing and {timing['load_after']:.1f} after (above {cpu.get('logical_cores')}: other "
        "jobs shared the cores).", "",
        f"Layer dropping: the encoder layers listed are kept (evenly spaced), then "
        f"{facts['steps']} steps of the tool's recovery (distillation towards mpnet, the "
        f"recipe's lr {facts['lr']:g}, {facts['schedule']} schedule, batches of "
        f"{facts['batch_size']} from the default path's calibration corpus ({facts['data']}), "
        f"cycling over {facts['recovery_batches']} batches), the same for both. Kept layers: "
        + "; ".join(f"{len(r['keep'])} layers {r['keep']}" for r in facts["recoveries"])
        + f". The default path gives {facts['recipe_steps']} recovery steps per round (up to "
        f"{facts['recipe_rounds']} rounds); {facts['steps']} steps is what fits this benchmark's "
        "time on 2 cores, so a longer distillation would serve layer dropping better. int8 = "
        "onnxruntime dynamic int8 (the tool's `quantize_int8`); the dropped models and the sibling "
        f"get {facts['derived_int8']}, chosen before this run on 40 of these pairs (the scheme "
        "that kept more of mpnet's quality; both mpnet rows above show the two schemes).", "",
        "| row | layers | size MB | median ms | speed-up | MRR@10 | recall@1 | retention of mpnet |",
        "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        mrr = "-" if r.mrr is None else f"{r.mrr:.4f}"
        r1 = "-" if r.recall1 is None else f"{r.recall1:.3f}"
        lines.append(f"| {r.label} | {_layers(r)} | {r.size_bytes / 1e6:.1f} | {r.median_ms:.1f} | "
                     f"{r.speedup:.2f}x | {mrr} | {r1} | {pct(r)} |")
    broken = [r for r in rows if r.family == "mpnet" and "int8" in r.label
              and r.retention is not None and r.retention < 0.5]
    if broken:
        lines += ["", "Note: " + "; ".join(f"{r.label} keeps only {pct(r)} of mpnet's MRR@10"
                                         for r in broken)
                  + ": that onnxruntime dynamic int8 scheme breaks this model here (not a "
                  "timing artefact: the file runs, its embeddings are wrong)."]
    lines += ["", "### At the sibling's latency", ""] + [f"- {s}" for s in sibling_statements(rows, ref)]
    lines += ["", "### Acceptance (issue #24)", ""] + acceptance_rows(rows, bmr_pending)
    if bmr_pending:
        lines += ["", "BMR rows pending: no `bmr-compress compress zoo:all-mpnet-base-v2` output "
                  "exists yet (a full default run takes about 2 h on these 2 cores). When one does, "
                  "`python -m bench.mpnet --from OUT` times its shipped operating points in the same "
                  "run and scores them on the same pairs."]
    rec = "; ".join(f"{len(r['keep'])} layers {r['keep']}: {r['steps']} steps in {r['seconds']:.0f} s "
                    f"(loss {_num(r['first_loss'])} → {_num(r['last_loss'])})" for r in facts["recoveries"])
    lines += ["", "Wall time per stage (s, 2 cores): " + ", ".join(f"{k} {v:.0f}" for k, v in st.items())
              + ". Recovery: " + rec + ". Scoring per row (s): "
              + ", ".join(f"{r.label} {r.score_seconds:.0f}" for r in rows) + "."]
    return "\n".join(lines)


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"

"""bench/quality.py verdict: medians decide, ties are named, the ablation row is no baseline."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import quality as Q  # noqa: E402


def _res(name: str, **runs: list[float]) -> dict:
    return {"model": name, "runs": {m: {"metric": v} for m, v in runs.items()}}


def test_verdict_counts_ties_as_reached_and_ignores_the_ablation():
    base = dict(magnitude=[0.90, 0.91, 0.92], snr=[0.95, 0.96, 0.97], wanda=[0.5, 0.5, 0.5],
                random=[0.1, 0.1, 0.1], tp_magnitude=[0.8, 0.8, 0.8])
    results = [
        _res("tie", bmr=[0.94, 0.96, 0.99], bmr_zeroed=[1.0, 1.0, 1.0], **base),
        _res("loss", bmr=[0.95, 0.95, 0.99], bmr_zeroed=[0.0, 0.0, 0.0], **base),
    ]
    text, wins = Q.verdict(results)
    assert wins == 1
    rows: dict[str, str] = {}
    for line in text.splitlines():  # the verdict table comes first, the paired one after
        if line.startswith(("| tie", "| loss")):
            rows.setdefault(line.split("|")[1].strip(), line)
    assert "yes (equal median: SNR" in rows["tie"]
    assert "no: SNR" in rows["loss"] and "zeroed" not in rows["loss"]
    assert "SNR \\|μ\\|/σ 1/2" in text  # per-baseline count over models


def test_paired_counts_per_seed():
    assert Q.paired([1, 2, 3, 4], [0, 2, 5, 4]) == (1, 2, 1)

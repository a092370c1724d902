"""The human summary prints metrics a small held-out set leaves undefined (None) as '-'
(issue 16 #5: `nn_agreement` None crashed the summary after --out was written)."""

from __future__ import annotations

from bmr_compress.pipeline.summary import format_summary


def test_undefined_metric_prints_a_dash() -> None:
    text = format_summary({"parameters": {"original": 10, "compressed": 8},
                           "metric": {"n": 2, "original": {"cosine": 1.0, "nn_agreement": None},
                                      "compressed": {"cosine": 0.99, "nn_agreement": None}}})
    row = next(line for line in text.splitlines() if line.startswith("nn_agreement"))
    assert row.split()[-2:] == ["-", "-"]

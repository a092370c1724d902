"""Options shared by several commands, each defined once, and how they become a
pipeline.CompressConfig (`compress_config`). How a command runs (logging, output, signals,
exit codes) is cli/runtime.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click


F = TypeVar("F", bound=Callable[..., Any])

class _FinitePositive(click.ParamType):
    """A float > 0 that is finite: `inf` / `nan` are refused before any work starts."""

    name = "float"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        import math

        try:
            x = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not (math.isfinite(x) and x > 0):
            self.fail(f"{value!r} must be a finite number > 0", param, ctx)
        return x


FINITE_POSITIVE = _FinitePositive()


def _stack(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    def apply(f: F) -> F:
        for d in reversed(decorators):
            f = d(f)
        return f

    return apply


common_options = _stack(
    click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout."),
    click.option("--debug", is_flag=True, help="Show tracebacks and debug logs."),
    click.option("-v", "--verbose", is_flag=True, help="Log progress (INFO) to stderr."),
)

source_options = _stack(
    click.argument("source"),
    click.option("--recipe", metavar="NAME|FILE", help="Model-zoo recipe (needed for a bare weight file)."),
    click.option("--revision", help="Hub revision (commit, tag or branch); same as SOURCE@REV."),
    click.option("--trust-remote-code", is_flag=True, help="Allow the checkpoint's own Python code (off by default)."),
    click.option("--allow-pickle", is_flag=True,
                 help="Accept a pickled .pt/.pth/.bin state dict (read with weights_only=True; off by default)."),
    click.option("--task", type=click.Choice(["classification", "regression", "embedding", "causal_lm"]),
                 help="Override the task inferred from the checkpoint."),
)

data_options = _stack(
    click.option("--data", metavar="SPEC",
                 help="digits | docstrings | docs | hf:NAME[:CONFIG][:SPLIT] | FILE (.npz .pt .txt .jsonl) | IMAGE_DIR. "
                      "Text lines that are not UTF-8 are skipped with a warning naming them."),
    click.option("--max-samples", type=click.IntRange(2), help="Calibration examples (train + held-out)."),
    click.option("--batch-size", type=click.IntRange(1), help="Examples per batch."),
)

fit_options = _stack(
    click.option("--posterior", type=click.Choice(["laplace", "variational"]),
                 help="'laplace': Kronecker-factored Laplace unit posteriors around the "
                      "pretrained weights, BMR at a tolerance-calibrated likelihood, sequential "
                      "cuts and recovery rounds (minutes); 'variational': the mean-field "
                      "variational fine-tune of the seed papers [default: laplace]."),
    click.option("--tolerance", type=FINITE_POSITIVE,
                 help="How far the output may move, as relative distortion E|f-f0|^2/E|f0|^2 "
                      "on calibration data (embeddings: 2(1-cosine), so 0.1 ~ cosine 0.95; "
                      "logits: centred). Sets the likelihood's precision; BMR then removes "
                      "every unit with dlnZ >= 0 [default: 0.1 for embeddings, 0.01 for "
                      "classification, 0.03 for causal LM and regression]."),
    click.option("--rounds", type=click.IntRange(1),
                 help="Laplace: prune -> recover -> re-score rounds at most [default: 3]."),
    click.option("--recovery-steps", type=click.IntRange(0),
                 help="Laplace: distillation steps after each round's cut [default: 100]."),
    click.option("--recovery-lr", type=FINITE_POSITIVE,
                 help="Laplace: Adam learning rate of the recovery steps [default: 1e-4]."),
    click.option("--blocks/--no-blocks", "blocks", default=None,
                 help="Laplace: let a whole attention or FFN block go when the evidence for "
                      "removing it jointly says so (it then adds only its output bias); "
                      "BERT, RoBERTa, XLM-R and the zoo ViT [default: off]."),
    click.option("--steps", type=click.IntRange(0),
                 help="Variational fine-tune steps; giving it selects --posterior variational "
                      "(the default Laplace path has no fine-tune; said on stderr)."),
    click.option("--seed", type=int, help="Random seed."),
    click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N."),
    click.option("--lr", type=FINITE_POSITIVE, help="Learning rate of the means."),
    click.option("--n-data", type=click.IntRange(1),
                 help="Effective data-set size N of the ELBO: smaller N = wider posterior = "
                      "more pruning [default: examples seen, at least 10000]."),
    click.option("--temperature", type=click.FloatRange(0),
                 help="Weight of the KL term (1 = proper ELBO; < 1 cold posterior, less pruning)."),
    click.option("--laplace-batches", type=click.IntRange(0),
                 help="Start the posterior at its diagonal Gauss-Newton Laplace approximation "
                      "estimated on this many batches (0: off) [default: 0]."),
    click.option("--gates", type=click.Choice(["none", "bmrs_n", "bmrs_u"]),
                 help="Per-unit BMRS gates and the rule that scores them."),
)

plan_options = _stack(
    click.option("--structured/--no-structured", "structured", default=None,
                 help="Remove whole units (neurons, filters, heads, hidden dims): smaller and "
                      "faster on CPU [default: on]."),
    click.option("--unstructured/--no-unstructured", "unstructured", default=None,
                 help="Also zero single weights with dlnZ >= 0: smaller files only (sparse "
                      "storage), no CPU speed-up, costs accuracy [default: off]."),
    click.option("--threshold", type=click.Choice(["zero", "beta_bernoulli"]),
                 help="Prune where dlnZ >= 0 ('zero') or by the per-layer Beta-Bernoulli "
                      "threshold of Markovic et al."),
    click.option("--round-to", type=click.IntRange(0),
                 help="Round kept widths to a multiple of N (0 or 1: off) [default: 8]."),
    click.option("--size-budget", type=click.FloatRange(0, 1, min_open=True),
                 help="Keep at most this fraction of the original parameters, each counted "
                      "once (units then go in order of dlnZ per parameter saved; widths round "
                      "down; parameters no unit owns, such as embeddings, are counted but "
                      "never removed)."),
    click.option("--latency-budget", type=click.FloatRange(0, 1, min_open=True),
                 help="Keep at most this fraction of the dense layers' multiply-accumulates "
                      "per example (a MAC proxy for latency; units go in order of dlnZ per MAC "
                      "saved; the report measures real ORT latency)."),
    click.option("--compensate/--no-compensate", "compensate", default=None,
                 help="Move the surviving weights of every pruned Linear/Conv layer to their "
                      "BMR reduced posterior mean under a posterior coupled through the layer's "
                      "input statistics (an Optimal-Brain-Surgeon-like update, no retraining) "
                      "[default: on]."),
    click.option("--unit-prior", type=click.Choice(["ard", "layer"]), default=None,
                 help="The prior scale of each unit the default path scores: 'ard' (its own "
                      "scale, fitted by type-II maximum likelihood, so a unit is judged by how "
                      "much the output needs it after the survivors compensate) or 'layer' "
                      "(one empirical-Bayes scale per layer for every weight) [default: ard]."),
    click.option("--iterative", is_flag=True, default=None,
                 help="Beckers et al.: prune, pin at zero, refit, re-score, until a round prunes "
                      "nothing or held-out ELBO stops improving."),
)

# validate / reduce re-load the original: from where the user says, trusted as far as the user says
# the artefacts a run ships (compress and reduce): which int8 schemes are measured, and the
# task-quality budget the recommended artefact is chosen by (defaults: pipeline.config.ExportConfig)
export_options = _stack(
    click.option("--int8/--no-int8", "int8", default=None,
                 help="Measure int8 artefacts (of the original and of every round) on this CPU and "
                      "ship the fastest that keeps the quality budget, if it beats fp32 here "
                      "[default: on for models of 1M parameters or more]."),
    click.option("--int8-scheme",
                 type=click.Choice(["auto", "dynamic", "dynamic-per-tensor", "blockwise"]),
                 default=None,
                 help="auto: time every scheme here and keep the fastest that qualifies; or force "
                      "one: dynamic (onnxruntime int8, one scale per channel), dynamic-per-tensor, "
                      "blockwise (8-bit MatMulNBits, blocks of 128 inputs) [default: auto]."),
    click.option("--max-quality-loss", type=click.FloatRange(0, 1, max_open=True), default=None,
                 help="Quality budget: the recommended artefact keeps at least 1 - this of the "
                      "original's task metric (retrieval MRR@10 for sentence embeddings, accuracy "
                      "or top-1 agreement for classifiers, perplexity for LMs) on selection "
                      "examples that never train; held-out retention is reported "
                      "[default: 0.01, i.e. keep 99 %]."),
    click.option("--candidates/--no-candidates", "candidates", default=None,
                 help="Also ship the other qualifying artefacts and the original's ONNX under "
                      "candidates/, so `bmr-compress bench OUT` can choose on the deploy CPU "
                      "[default: on]."),
    click.option("--mixed-precision/--no-mixed-precision", "mixed_precision", default=None,
                 help="Also write model.mixed.onnx: the shipped model with every weight matrix, "
                      "the embedding table included, on the grid BMR chose for it (fp32, 8-bit "
                      "or 4-bit blocks; MatMulNBits / GatherBlockQuantized). Of a ladder of "
                      "tolerances, the smallest file whose selection retention keeps the "
                      "quality budget ships; validated and timed like the int8 file "
                      "(docs/PRECISION.md) [default: off]."),
)

reload_options = _stack(
    click.option("--original", metavar="SOURCE",
                 help="The checkpoint the directory was compressed from (hub id[@rev], local path "
                      "or zoo:NAME) [default: the recorded zoo recipe or hub id; a recorded local "
                      "path needs this or --use-recorded-source]."),
    click.option("--use-recorded-source", is_flag=True,
                 help="Reload the local path recorded in the directory's manifest (you confirm you "
                      "trust it)."),
    click.option("--trust-remote-code", is_flag=True,
                 help="Allow the original checkpoint's own Python code (never taken from the directory)."),
    click.option("--allow-pickle", is_flag=True,
                 help="Accept a pickled .pt/.pth/.bin original (weights_only=True; never taken from "
                      "the directory)."),
)

# where compress, reduce and finetune write
out_options = _stack(
    click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
                 help="Output directory (assembled aside, moved into place on success)."),
    click.option("--overwrite", is_flag=True,
                 help="Replace a previous bmr-compress output (only one: a directory holding other "
                      "files, the current directory, its parents or home is refused)."),
)


def compress_config(opts: dict[str, Any], *, what: str) -> Any:
    """pipeline.CompressConfig from a command's options: the one place CLI options meet the
    config (option names are the keys of pipeline.config.OPTIONS; None: not given, so the
    recipe's [settings] or the dataclass default applies). `out` and `overwrite` are not
    settings: the command passes them to the pipeline itself."""
    from bmr_compress.pipeline.config import build_config

    values = {k: (str(v) if isinstance(v, Path) else v) for k, v in opts.items()
              if k not in ("out", "overwrite")}
    return build_config({**values, "progress": True}, what=what)

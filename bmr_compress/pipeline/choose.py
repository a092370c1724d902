"""The choose stage: measure the run's operating points on this CPU and ship the recommended one.

Between the reduction and the export. Which model the output holds follows the choice: the
final round, an earlier round whose cut is cheaper in task quality, or the dense original
when only int8 of the original fits the budget (the report then says so plainly).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bmr_compress.pipeline.stages import Cut, Fitted

log = logging.getLogger(__name__)

MAX_PAIRS = 1000  # retrieval pairs per split (selection, held-out), from the installed docs
RETRIEVAL_TOKENS = 128  # queries and documents are cut to this many tokens
AUTO_INT8_MIN_PARAMS = 1_000_000  # int8 is considered by default from this model size on


def int8_schemes(f: Fitted) -> tuple[str, ...]:
    """The int8 schemes to measure: the forced one, every scheme ("auto"), or none."""
    from bmr_compress.algorithms.curve import AUTO_SCHEMES
    from bmr_compress.io.checks import count_params

    ex = f.config.export
    on = ex.int8 if ex.int8 is not None else count_params(f.original) >= AUTO_INT8_MIN_PARAMS
    if not on:
        return ()
    return AUTO_SCHEMES if ex.int8_scheme == "auto" else (ex.int8_scheme,)


_EVALUATORS: dict[tuple[Any, ...], Any] = {}  # the last run's evaluator, by reference file


def evaluator_for(f: Fitted, original_onnx: Path) -> Any:
    """`_evaluator_for`, built once per reference file (the operating points and
    --mixed-precision score against the same original: its pairs are encoded once)."""
    st = Path(original_onnx).stat()
    key = (str(Path(original_onnx).resolve()), st.st_mtime_ns, st.st_size, id(f.original))
    if key not in _EVALUATORS:
        _EVALUATORS.clear()
        _EVALUATORS[key] = _evaluator_for(f, original_onnx)
    return _EVALUATORS[key]


def _evaluator_for(f: Fitted, original_onnx: Path) -> Any:
    """Retrieval pairs for a text embedding model; the calibration check batches and the
    held-out batches for every other task."""
    from bmr_compress.export.retention import BatchRetention, RetrievalRetention
    tok = f.source.tokenizer_or_processor
    if str(f.source.task) == "embedding" and tok is not None and callable(tok) \
            and "input_ids" in f.data.heldout_batches[0]:
        from bmr_compress.export.retention import retrieval_pairs

        pairs = retrieval_pairs(MAX_PAIRS)
        from bmr_compress.export.validation import max_positions

        seq = min(RETRIEVAL_TOKENS, max_positions(f.original) or RETRIEVAL_TOKENS,
                  int(getattr(tok, "model_max_length", RETRIEVAL_TOKENS) or RETRIEVAL_TOKENS))
        log.info("retention: retrieval on %d selection / %d held-out query-document pairs "
                 "(installed documentation, hash buckets that never train)",
                 len(pairs["selection"]), len(pairs["heldout"]))
        return RetrievalRetention(tok, pairs, original_onnx, max_length=seq, source=(
            "installed documentation (standard library, the installed packages' docstrings and "
            "READMEs, man pages): each paragraph's first sentence as the query, the rest as its "
            "document; selection and held-out are hash buckets that never train"))
    from bmr_compress.algorithms.laplace_reduce import CHECK_BATCHES

    train = f.data.train_batches
    check = list(train[:min(CHECK_BATCHES, max(1, len(train) // 5))])
    return BatchRetention(f.original, str(f.source.task),
                          {"selection": check, "heldout": list(f.data.heldout_batches)})


def _rounds(f: Fitted) -> list[tuple[str, Any]]:
    snaps = getattr(getattr(f.iteration, "outcome", None), "snapshots", None)
    if snaps:
        return [*snaps[:-1], (snaps[-1][0], f.model)]
    return [("compressed", f.model)]


def choose_stage(f: Fitted, cut: Cut, timer: Any, work: Path, example: Mapping[str, Any],
                 latency_shape: Mapping[str, Any], original_onnx: Path
                 ) -> tuple[Fitted, Cut, Any]:
    """(Fitted, Cut) of the recommended base model, and the OperatingPoints (None when they
    could not be measured: the run then ships its final model, as before)."""
    from bmr_compress.algorithms.curve import measure_points
    from bmr_compress.io.checks import count_params

    rounds = _rounds(f)
    try:
        with timer("operating points"):
            ops = measure_points(
                original_onnx, rounds, work=work / "candidates", example=example,
                latency_shape=latency_shape, evaluator=evaluator_for(f, original_onnx),
                schemes=int8_schemes(f), max_quality_loss=f.config.export.max_quality_loss,
                original_params=count_params(f.original))
    except Exception as e:  # noqa: BLE001  (the output does not depend on the measurement)
        log.warning("operating points not measured (%s: %s): shipping the final model",
                    type(e).__name__, e)
        return f, cut, None
    base = ops.point(ops.recommended).base
    laplace = getattr(getattr(f.iteration, "outcome", None), "reduction", None) is not None
    if base != rounds[-1][0] and laplace:
        f, cut = _at(f, cut, base, example)
    elif base != rounds[-1][0]:  # the variational path ships what its fit chose (seed papers)
        log.warning("recommended on this CPU: %s; the variational path ships its own cut "
                    "(see the report's operating points)", ops.recommended)
    return f, cut, ops


def _at(f: Fitted, cut: Cut, base: str, example: Mapping[str, Any]) -> tuple[Fitted, Cut]:
    """The run as if it had stopped at round `base` (or had cut nothing: "original")."""
    from bmr_compress.algorithms.laplace_reduce import final_record
    from bmr_compress.planning.plan import Plan, PlanSettings

    if base == "original":
        from bmr_compress.coupling import discover_groups

        groups = discover_groups(f.original, example)
        red: Any = SimpleNamespace(model=copy.deepcopy(f.original),
                                   keep={g.name: list(range(g.num_units)) for g in groups},
                                   num_units={g.name: g.num_units for g in groups})
        log.info("recommended: the dense original (no cut of this run fits the budget better)")
    else:
        red = f.iteration.outcome.reduction.at(base)
        log.info("recommended: %s (a later round costs more task quality than it saves)", base)
    record = final_record(f.original, red, example)
    summary = {n: {"kind": g["kind"], "num_units": g["num_units"], "kept": len(g["kept"]),
                   "rule": f"ΔlnZ ≥ 0 at the tolerance-calibrated ν, stopped at {base}"}
               for n, g in record.groups.items()}
    plan = Plan({k: list(v["kept"]) for k, v in record.groups.items()}, {},
                PlanSettings(unstructured=False, round_to=cut.plan.settings.round_to), summary)
    f2 = copy.copy(f)
    f2.model = red.model
    return f2, Cut(plan, record, cut.unit_scores, cut.compensation)

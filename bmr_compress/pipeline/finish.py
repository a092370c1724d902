"""The last stage: export, validate, report, and move into place only if validation passed."""

from __future__ import annotations

import dataclasses
import logging
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bmr_compress.io.jsonsafe import to_jsonable
from bmr_compress.pipeline.config import flat_record
from bmr_compress.pipeline.shared import (
    CompressResult, StageTimer, recipe_for,
)
from bmr_compress.tasks import strip_labels
from bmr_compress.pipeline.stages import Cut, Fitted
from bmr_compress.pipeline.summary import recommended_of, summary_of

if TYPE_CHECKING:
    from bmr_compress.algorithms.curve import OperatingPoints
    from bmr_compress.export.onnx_export import OnnxArtifact
    from bmr_compress.export.validation import ValidationResult

log = logging.getLogger(__name__)

LATENCY_SEQ = 128  # text models are timed at batch 1 x 128 tokens (capped by max positions)


def validation_settings(settings: Any, model: Any, example: Mapping[str, Any]) -> Any:
    """`settings` (export.ValidationSettings) with, for token inputs and no latency_seq of
    its own, latency at LATENCY_SEQ tokens (the deployment shape the report quotes), not the
    length of whatever calibration batch came first."""
    from bmr_compress.export.validation import max_positions

    if "input_ids" not in example or settings.latency_seq is not None:
        return settings
    cap = max_positions(model)
    return dataclasses.replace(settings,
                               latency_seq=min(LATENCY_SEQ, cap) if cap else LATENCY_SEQ)


def _save_kwargs(model: Any, original: Any) -> dict[str, Any]:
    """Zoo models (no transformers config) are saved through their registered builder."""
    if hasattr(model, "config"):
        return {}
    from bmr_compress.zoo.adapters import BUILDER

    return {"architecture": BUILDER, "init_config": original.zoo_config_dict()}


def _sample_spec(example: Mapping[str, Any]) -> dict[str, Any]:
    """Shapes/dtypes/value range of the export sample, so `export` can rebuild one."""
    spec = {}
    for k, v in example.items():
        spec[k] = {"shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", ""),
                   "max": float(v.max()) if v.numel() else 0.0}
    return spec


def provenance(f: Fitted) -> dict[str, Any]:
    from bmr_compress import __version__

    src, d = f.config.source, f.config.data
    return {
        "source": f.source.source_id, "revision": f.source.revision,
        "family": f.source.family, "task": f.source.task, "tool_version": __version__,
        "settings": to_jsonable(flat_record(f.config)), "seed": f.config.seed,
        "reload": {"source": src.spec, "recipe": src.recipe, "revision": src.revision,
                   "task": src.task, "data": d.spec, "max_samples": d.max_samples,
                   "batch_size": d.batch_size, "trust_remote_code": src.trust_remote_code,
                   "allow_pickle": src.allow_pickle},
    }


@dataclass
class _Files:
    """What the export wrote: the compressed and the baseline ONNX, the baseline weights."""

    onnx: OnnxArtifact  # model.onnx
    base_onnx: OnnxArtifact  # the original's, for the side-by-side checks
    base_weights: Path
    int8: Path | None
    sentence_transformers: bool
    mixed: Any = None  # pipeline.mixed.MixedPrecision (--mixed-precision)


def _export(f: Fitted, cut: Cut, stage: Path, base_art: OnnxArtifact, example: Mapping[str, Any],
            prov: Mapping[str, Any], ops: OperatingPoints | None) -> _Files:
    """Write the weights (+ transformers twin, tokenizer, companions, posterior), model.onnx,
    the int8 file the operating points chose (or the forced scheme) and the candidates into
    `stage`; `base_art`: the original's ONNX (exported once, by the caller)."""
    from bmr_compress.export import export_onnx, export_safetensors
    from bmr_compress.export.st_layout import place_st_onnx_
    from bmr_compress.cutting import save_compressed

    compact = f.config.export.compact_zeros
    hf_model, layout = _transformers_layout(f.model, example)
    meta = {"source": prov["source"], "revision": prov["revision"] or "",
            "tool_version": prov["tool_version"]}
    save_compressed(  # writes model.safetensors once, plain or compact
        f.model, cut.record, stage, **_save_kwargs(f.model, f.original),
        extra={**prov, "export_sample": _sample_spec(example), "transformers_layout": layout},
        compact_zeros=compact, weights_metadata=meta)
    tok = f.source.tokenizer_or_processor
    if hf_model is not f.model:  # the files transformers reads hold the padded twin
        export_safetensors(hf_model, stage, meta, compact_zeros=compact, tokenizer=tok)
    elif tok is not None and hasattr(tok, "save_pretrained"):
        tok.save_pretrained(str(stage))
    st_source = _companions(f, stage, compact)
    if f.posterior_path.is_file():  # the variational fit's posterior (re-planning)
        shutil.copy2(f.posterior_path, stage / "posterior.safetensors")
    art = export_onnx(f.model, stage / "model.onnx", example)
    base_st = export_safetensors(f.original, Path(base_art.path).parent, {"source": prov["source"]})
    int8, scheme = _int8(f, art.path, stage / "model.int8.onnx", ops)
    if ops is not None:
        ship_candidates_(ops, stage, Path(base_art.path), scheme, f.config.export.candidates)
    if st_source:
        place_st_onnx_(stage, art.path, int8)
    return _Files(art, base_art, Path(base_st), int8, st_source)


def _int8(f: Fitted, onnx_path: Path, out: Path,
          ops: OperatingPoints | None) -> tuple[Path | None, str | None]:
    """model.int8.onnx and its scheme: the forced scheme, else the fastest int8 of the shipped
    model that met the budget and beat its fp32 here (none when none did)."""
    from bmr_compress.export import quantize_int8
    from bmr_compress.pipeline.choose import int8_schemes

    forced = f.config.export.int8_scheme != "auto"
    if not int8_schemes(f):
        return None, None
    scheme = f.config.export.int8_scheme if forced else None
    if ops is not None and not forced:
        best = ops.best_int8.get(ops.point(ops.recommended).base)
        if best is None:
            log.info("no int8 file shipped: no int8 scheme of the shipped model kept the quality "
                     "budget and ran faster than its fp32 on this CPU (report: operating points)")
            return None, None
        scheme = ops.point(best).scheme
    if scheme is None:  # auto, but nothing was measured: the scheme that keeps quality best
        scheme = "blockwise"
    return quantize_int8(onnx_path, out, scheme=scheme).path, scheme


def ship_candidates_(ops: OperatingPoints, stage: Path, original_onnx: Path, int8_scheme: str | None,
                     copy_files: bool) -> None:
    """Set each point's `file` (where it lies in the output). model.onnx / model.int8.onnx
    are the shipped model's; with `copy_files`, candidates/ holds the original's ONNX (the
    reference `bench` times against; model.onnx itself when the original is what ships) and
    every other qualifying artefact of the shipped model and of the original."""
    shipped = ops.point(ops.recommended).base
    cand = stage / "candidates"
    if copy_files and shipped != "original":  # else model.onnx is the original: no second copy
        cand.mkdir(exist_ok=True)
        shutil.copy2(original_onnx, cand / "original.onnx")
    for p in ops.points:
        if p.base == shipped and p.precision == "fp32":
            p.file = "model.onnx"
        elif p.base == shipped and p.precision == "int8" and p.scheme == int8_scheme:
            p.file = "model.int8.onnx"
        elif not copy_files:
            continue
        elif p.base == "original" and p.precision == "fp32":
            p.file = "candidates/original.onnx"
        elif p.qualifies and p.base in (shipped, "original"):
            name = f"{p.base.replace(' ', '')}.{p.precision}-{p.scheme}.onnx"
            cand.mkdir(exist_ok=True)
            shutil.copy2(p.path, cand / name)
            p.file = f"candidates/{name}"


def _validate(f: Fitted, stage: Path, files: _Files, example: Mapping[str, Any]
              ) -> tuple[Any, Any]:
    """The validation gate on onnxruntime (+ the sentence-transformers check of an ST
    folder). Returns (ValidationResult, sentence-transformers info or None)."""
    from bmr_compress.export import validate
    from bmr_compress.export.validation_checks import check_st_embeddings
    from bmr_compress.export.st_layout import texts_from_batch

    result = validate(
        f.original, f.model, onnx_path=files.onnx.path, original_onnx_path=files.base_onnx.path,
        sample_inputs=example, heldout_batches=f.data.heldout_batches,
        task=f.source.task, int8_path=files.int8, raise_on_failure=False,
        mixed_path=files.mixed.path if files.mixed is not None else None,
        settings=validation_settings(f.config.validate, f.original, example),
    )
    st_info = None
    if files.sentence_transformers:
        tok = f.source.tokenizer_or_processor
        st_info = check_st_embeddings(result, stage, f.model, tok,
                                      texts_from_batch(tok, example), onnx_path=files.onnx.path)
    return result, st_info


def _report(f: Fitted, cut: Cut, files: _Files, result: Any, extra: Mapping[str, Any],
            prov: Mapping[str, Any], timer: StageTimer) -> dict[str, Any]:
    from bmr_compress.export import build_report

    files_before = {"model.onnx": files.base_onnx.path.stat().st_size,
                    "model.safetensors": files.base_weights.stat().st_size}
    return build_report(
        source={"id": prov["source"], "revision": prov["revision"], "family": prov["family"],
                "task": prov["task"], "data": f.data.description,
                "dataset": getattr(f.data, "name", "") or f.data.description,
                "heldout": getattr(f.data, "heldout", ""),
                "data_choice": getattr(f.data, "choice", None), **_source_facts(f)},
        settings=prov["settings"], original=f.original, compressed=f.model,
        validation=result, files_before=files_before, stage_seconds=timer.total(),
        plan_summary=cut.plan.summary, onnx=files.onnx,
        extra={"finetune": fit_summary(f.fit), "coverage": dict(cut.record.coverage),
               "iterative": f.iteration.to_json() if f.iteration is not None else None,
               "reduced_means": cut.compensation, **extra},
    )


def finish_stage(f: Fitted, cut: Cut, timer: StageTimer, work: Path, out: Path, *,
                 overwrite: bool = False) -> CompressResult:
    """Measure the operating points and take the recommended model, then export, validate,
    report, and move into place only if validation passed."""
    from bmr_compress.errors import ValidationFailed
    from bmr_compress.export import export_onnx, write_report
    from bmr_compress.io.atomic import atomic_output_dir, keep_rejected
    from bmr_compress.io.integrity import INTEGRITY_KEY, file_hashes, seal_report_file
    from bmr_compress.pipeline.choose import choose_stage

    example = strip_labels(f.data.heldout_batches[0])
    baseline = work / "original"
    baseline.mkdir(exist_ok=True)
    with timer("export"):
        base_art = export_onnx(f.original, baseline / "model.onnx", example, sparse=False)
    vsettings = validation_settings(f.config.validate, f.original, example)
    shape = {"threads": vsettings.latency_threads, "batch": vsettings.latency_batch,
             "seq": vsettings.latency_seq}
    f, cut, ops = choose_stage(f, cut, timer, work, example, shape, Path(base_art.path))
    prov = provenance(f)
    with atomic_output_dir(out, overwrite) as stage:
        with timer("export"):
            files = _export(f, cut, stage, base_art, example, prov, ops)
        if f.config.export.mixed_precision:
            from bmr_compress.pipeline.mixed import write_mixed_precision

            with timer("mixed precision"):
                files.mixed = write_mixed_precision(f, stage, work / "mixed", example,
                                                    Path(base_art.path))
        with timer("validate"):
            result, st_info = _validate(f, stage, files, example)
            if ops is not None:
                retention_check(result, ops)
        curve = ops.to_json() if ops is not None else None
        extra = {"sentence_transformers": st_info, "operating_points": curve}
        if files.mixed is not None:
            from bmr_compress.pipeline.mixed import finalize_

            extra["mixed_precision"] = finalize_(files.mixed, result, GATE_FACTOR)
        report = _report(f, cut, files, result, extra, prov, timer)
        report["recommended"] = recommended_of(report)
        report[INTEGRITY_KEY] = file_hashes(stage)  # what was validated; push re-checks it
        write_report(stage, report, delta_lnz=cut.unit_scores)
        if result.passed:
            seal_report_file(stage)  # signed: push refuses an edited report.json
        if not result.passed:
            rejected = keep_rejected(stage, out)  # never over a user's files
            raise ValidationFailed(
                f"validation failed ({_failed_checks(report)}); nothing was written to {out}; "
                f"the rejected result and its report are in {rejected}"
            )
    _warn_if_nothing_removed(report, f.config)
    return CompressResult(out=out, report=report, passed=True, summary=summary_of(report))


GATE_FACTOR = 5.0  # the held-out retention gate: 1 - GATE_FACTOR x the budget


def retention_check(result: ValidationResult, ops: OperatingPoints) -> None:
    """Gate: the recommended artefact's held-out retention. It was chosen on selection data
    within the budget, and even on 1,000 retrieval pairs one retention carries a standard
    error of 0.5-1.5 % (measured on all-MiniLM-L6-v2: the same file at 100.9 % on selection,
    98.9 % held out), so the gate fails only below 1 - GATE_FACTOR x the budget: a broken
    artefact, not sampling noise (nothing is then published)."""
    rec = ops.point(ops.recommended)
    floor = 1.0 - GATE_FACTOR * ops.max_quality_loss
    r = rec.retention["heldout"]
    result.add("task_retention", r >= floor,
               f"{rec.label}: {ops.metric} retention {r:.4f} on held-out data (>= {floor:.4f}, "
               f"{GATE_FACTOR:g}x the budget {ops.max_quality_loss:g}; "
               f"{rec.retention['selection']:.4f} on the selection data that chose it)", r)


def _warn_if_nothing_removed(report: Mapping[str, Any], config: Any) -> None:
    """A passed validation of an unchanged model is no success: say so, and what to change."""
    p = report.get("parameters") or {}
    if p.get("original") and p.get("compressed") == p.get("original"):
        hint = (f"the variational path ran {config.finetune.steps} fine-tune steps: give more "
                "--steps, or drop --steps for the default Laplace path" if config.posterior == "variational"
                else "a larger --tolerance lets BMR remove more")
        log.warning("nothing was removed: the output has all %d parameters of the original (%s)",
                    p["original"], hint)


def _transformers_layout(model: Any, example: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The model written as config.json + model.safetensors: the cut model when its config
    states its widths, else a zero-padded equivalent (cutting.hf_layout); when neither works,
    the cut model and a warning (plain transformers then refuses the shapes; never loads
    random weights)."""
    from bmr_compress.errors import UnsupportedModelError
    from bmr_compress.cutting.hf_layout import transformers_layout

    if not hasattr(model, "config"):
        return model, {"layout": "bmr"}
    try:
        return transformers_layout(model, example)
    except UnsupportedModelError as e:
        log.warning("config.json cannot state the cut widths (%s): load the output with "
                    "bmr_compress.cutting.load_compressed or use model.onnx", e)
        return model, {"layout": "refused", "reason": str(e)}


def _source_facts(f: Fitted) -> dict[str, Any]:
    """base_model, license (for the card) and whether the weights are the source's own."""
    import torch

    from bmr_compress.io.card import source_facts

    recipe = recipe_for(f.config.source.recipe, f.config.source.spec)
    hub = recipe.source.hub if recipe is not None else None
    facts = source_facts(f.source.snapshot_dir, f.source.source_id, hub)
    a, b = f.original.state_dict(), f.model.state_dict()
    facts["weights_identical"] = a.keys() == b.keys() and all(
        a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in a)
    return facts


def _companions(f: Fitted, stage: Path, compact_zeros: bool) -> bool:
    """The source's tokenizer files (verbatim) and, for a sentence-transformers source, its
    module files. Returns whether the output is a sentence-transformers folder."""
    from bmr_compress.export.st_layout import write_companions_

    src = f.source.snapshot_dir
    is_st = src is not None and (Path(src) / "modules.json").is_file()
    if is_st and compact_zeros:
        log.warning("--compact-zeros weights load only with bmr-compress: the output is not "
                    "written as a sentence-transformers folder")
        is_st = False
    write_companions_(src, stage, sentence_transformers=is_st, tokenizer=f.source.tokenizer_or_processor,
                      hidden_size=getattr(getattr(f.model, "config", None), "hidden_size", None))
    return is_st


def _failed_checks(report: Mapping[str, Any]) -> str:
    checks = report.get("validation", {}).get("checks", [])
    bad = [c.get("name", "?") for c in checks if isinstance(c, dict) and not c.get("passed", True)]
    return "failed: " + ", ".join(bad) if bad else "see report"


def fit_summary(fit: Any) -> dict[str, Any] | None:
    if fit is None:
        return None
    hist = list(getattr(fit, "history", []) or [])
    return {
        "steps": getattr(fit, "steps", None), "wall_s": getattr(fit, "wall_s", None),
        "steps_per_s": getattr(fit, "steps_per_s", None), "device": getattr(fit, "device", None),
        "n_data": getattr(fit, "n_data", None), "last": hist[-1] if hist else None,
    }

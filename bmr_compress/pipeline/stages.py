"""The pipeline stages: load → fit → cut → finish (export, validate, report, move)."""

from __future__ import annotations

import copy
import json
import logging
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

from bmr_compress.pipeline.budgets import plan_settings
from bmr_compress.pipeline.settings import (
    _DISTILL, _FIT_KEYS, CompressResult, CompressSettings, StageTimer, _jsonable, _recipe_for,
    _strip_labels, resolve_settings,
)
from bmr_compress.pipeline.summary import summary_of


@dataclass
class Fitted:
    """What the fit stage hands on: the source, data, the wrapped & fitted model and groups."""

    source: Any
    data: Any
    opts: dict[str, Any]
    original: Any
    model: Any  # wrapped (variational) or, after cut(), the compressed plain model
    groups: list[Any]
    posterior_path: Path
    fit: Any = None
    iteration: Any = None


@dataclass
class Cut:
    plan: Any
    record: Any
    unit_scores: dict[str, Any]
    compensation: dict[str, float] | None = None  # reduced-means summary (None: not run)


def load_stage(settings: CompressSettings, timer: StageTimer) -> tuple[Any, Any, dict[str, Any]]:
    """Resolve the source and build the data bundle. Returns (source, data, opts)."""
    import torch

    from bmr_compress.io.data import make_dataset
    from bmr_compress.pipeline.sources import resolve_source

    recipe = _recipe_for(settings.recipe, settings.source)
    opts = resolve_settings(settings, recipe.settings if recipe is not None else None)
    torch.manual_seed(int(opts["seed"]))
    with timer("load"):
        source = resolve_source(
            settings.source, revision=settings.revision,
            trust_remote_code=settings.trust_remote_code, recipe=settings.recipe,
            task=settings.task, allow_pickle=settings.allow_pickle,
        )
    with timer("data"):
        data = make_dataset(
            settings.data, source, default=recipe.data if recipe is not None else None,
            max_samples=settings.max_samples, batch_size=settings.batch_size,
        )
    source.model.eval()
    for p in source.model.parameters():
        p.requires_grad_(False)
    return source, data, opts


def checkpoint_dir(settings: CompressSettings, opts: Mapping[str, Any]) -> Path:
    """Where the fine-tune checkpoints go: beside --out, keyed by what determines the fit, so
    a rerun after Ctrl-C or a crash resumes and a changed setting starts afresh."""
    import hashlib

    out = Path(settings.out).expanduser().resolve()
    key = json.dumps({"source": settings.source, "recipe": settings.recipe,
                      "revision": settings.revision, "data": settings.data,
                      "max_samples": settings.max_samples, "batch_size": settings.batch_size,
                      "opts": _jsonable(opts)}, sort_keys=True)
    return out.parent / f".{out.name}.bmr-ckpt-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def fit_stage(settings: CompressSettings, timer: StageTimer, work: Path) -> Fitted:
    """Load, discover coupled units, wrap in a Gaussian posterior and fine-tune.

    The fine-tune checkpoints every ~10 % of its steps into checkpoint_dir(); a rerun with
    the same settings resumes from there. The caller removes it once the output is in place.
    """
    from bmr_compress.surgery import discover_groups, gate_sites
    from bmr_compress.variational import FinetuneSettings, PosteriorSpec, finetune, save_posterior, wrap_

    source, data, opts = load_stage(settings, timer)
    original = source.model
    model = copy.deepcopy(original)
    example = _strip_labels(data.heldout_batches[0])
    with timer("coupling"):
        groups = discover_groups(model, example)
    sites = tuple(gate_sites(groups)) if opts["gates"] != "none" else ()
    steps = int(opts["steps"])
    ckpt = checkpoint_dir(settings, opts)
    ft = FinetuneSettings(
        steps=steps, seed=int(opts["seed"]), device=settings.device, progress=settings.progress,
        checkpoint_dir=str(ckpt), checkpoint_every=max(steps // 10, 10), resume=True,
        distill=_DISTILL.get(str(source.task), "auto"),
        **{k: opts[k] for k in _FIT_KEYS if opts.get(k) is not None},
        **({"hidden_noise_std": float(opts["noise_std"])} if opts.get("noise_std") else {}),
    )
    with timer("finetune"):
        for p in model.parameters():
            p.requires_grad_(True)
        wrap_(model, PosteriorSpec(gates=sites))
        fit = finetune(model, original, data.train_batches, ft)
    fitted = Fitted(source, data, opts, original, model, groups, work / "posterior.safetensors",
                    fit=fit)
    if opts["iterative"]:
        fitted.iteration = _iterate(fitted, ft, timer)
    save_posterior(fitted.posterior_path, model, {
        "source": source.source_id, "revision": source.revision or "", "settings": _jsonable(opts),
        "gate_sites": [list(s) for s in sites],
    })
    return fitted


def _rule(opts: Mapping[str, Any]) -> str:
    return {"none": "spike", "bmrs_n": "bmrs_n", "bmrs_u": "bmrs_u"}[str(opts["gates"])]


def _iterate(f: Fitted, ft: Any, timer: StageTimer) -> Any:
    """Beckers et al.: prune → pin at zero → refit → rescore, until nothing more goes."""
    from bmr_compress.pipeline.refit import iterate_with_finetune

    with timer("iterate"):
        result = iterate_with_finetune(
            f.model, f.groups, f.original, f.data.train_batches, f.data.heldout_batches, ft,
            plan_settings(f.opts, f.original, groups=f.groups, task=str(f.source.task)),
            rule=_rule(f.opts),
        )
    for r in result.rounds:
        log.info("round %d: pruned %.1f%% (new %d), held-out ELBO %.4g", r.index,
                 100 * r.pruned_fraction, r.newly_pruned, r.heldout_elbo)
    return result


def cut_stage(f: Fitted, timer: StageTimer) -> Cut:
    """Score every weight and unit from the posterior, plan, unwrap and cut for real."""
    from bmr_compress.surgery import (
        apply_plan_, make_plan, score_groups, score_weights, unstructured_masks,
    )
    from bmr_compress.surgery.iterate import pin_scores
    from bmr_compress.variational import gate_tensors, posterior_tensors, unwrap_

    with timer("score+plan"):
        posterior = posterior_tensors(f.model)
        rule = _rule(f.opts)
        gates = gate_tensors(f.model) if rule != "spike" else None
        macs = None
        if f.opts.get("latency_budget") is not None:
            from bmr_compress.surgery.costs import mac_weights

            macs = mac_weights(f.original, _strip_labels(f.data.heldout_batches[0]))
        psettings = plan_settings(f.opts, f.original, macs, f.groups, str(f.source.task))
        weight_scores = score_weights(posterior)
        unit_scores = score_groups(f.groups, posterior, gates, rule)
        if f.iteration is not None:  # units pruned in the rounds stay pruned
            unit_scores = pin_scores(unit_scores, f.iteration)
        plan = make_plan(f.groups, unit_scores, weight_scores, psettings,
                         shapes={k: v.shape for k, v in f.original.state_dict().items()},
                         mac_weights=macs)
        wmasks = unstructured_masks(plan, weight_scores) if psettings.unstructured else None
    comp = None
    with timer("surgery"):
        unwrap_(f.model)
        if f.opts.get("compensate", True):
            comp = _reduced_means(f, plan, posterior, wmasks)
        record = apply_plan_(f.model, f.groups, plan, weight_masks=wmasks)
    f.model.eval()
    log.info("parameters: %d -> %d", record.params_before, record.params_after)
    return Cut(plan, record, unit_scores, comp)


def _reduced_means(f: Fitted, plan: Any, posterior: Mapping[str, Any],
                   wmasks: Mapping[str, Any] | None) -> dict[str, float] | None:
    """Move the survivors of every pruned layer to their BMR reduced posterior mean under a
    row-correlated posterior (surgery/compensate.py), using up to CALIBRATION_BATCHES
    training batches. Returns the summary, or None when nothing was pruned."""
    import torch

    from bmr_compress.surgery import plan_masks
    from bmr_compress.surgery.compensate import compensate_

    shapes = {k: p.mu.shape for k, p in posterior.items()}
    masks = plan_masks(f.groups, plan, shapes, wmasks)
    if not any(not bool(m.all()) for m in masks.values()):
        return None
    batches = [_strip_labels(b) for b in f.data.train_batches[:CALIBRATION_BATCHES]]
    with torch.no_grad():
        report = compensate_(f.model, posterior, masks, batches)
    return report.summary()


CALIBRATION_BATCHES = 16


LATENCY_SEQ = 128  # text models are timed at batch 1 x 128 tokens (capped by max positions)


def validation_settings(model: Any, example: Mapping[str, Any]) -> Any:
    """Latency at batch 1 and, for token inputs, LATENCY_SEQ tokens (the deployment shape
    the report quotes), not the length of whatever calibration batch came first."""
    from bmr_compress.export import ValidationSettings
    from bmr_compress.export.validation import max_positions

    if "input_ids" not in example:
        return ValidationSettings()
    cap = max_positions(model)
    return ValidationSettings(latency_seq=min(LATENCY_SEQ, cap) if cap else LATENCY_SEQ)


def _save_kwargs(model: Any, original: Any) -> dict[str, Any]:
    """Zoo models (no transformers config) are saved through their registered builder."""
    if hasattr(model, "config"):
        return {}
    from bmr_compress.zoo.adapters import register_with_surgery

    return {"architecture": register_with_surgery(), "init_config": original.zoo_config_dict()}


def _sample_spec(example: Mapping[str, Any]) -> dict[str, Any]:
    """Shapes/dtypes/value range of the export sample, so `export` can rebuild one."""
    spec = {}
    for k, v in example.items():
        spec[k] = {"shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", ""),
                   "max": float(v.max()) if v.numel() else 0.0}
    return spec


def _provenance(f: Fitted, settings: CompressSettings) -> dict[str, Any]:
    from bmr_compress import __version__

    return {
        "source": f.source.source_id, "revision": f.source.revision,
        "family": f.source.family, "task": f.source.task, "tool_version": __version__,
        "settings": _jsonable(f.opts), "seed": f.opts["seed"],
        "reload": {"source": settings.source, "recipe": settings.recipe,
                   "revision": settings.revision, "task": settings.task, "data": settings.data,
                   "max_samples": settings.max_samples, "batch_size": settings.batch_size,
                   "trust_remote_code": settings.trust_remote_code,
                   "allow_pickle": settings.allow_pickle},
    }


def finish_stage(settings: CompressSettings, f: Fitted, cut: Cut, timer: StageTimer,
                 work: Path, out: Path) -> CompressResult:
    """Export, validate, report, and move into place only if validation passed."""
    from bmr_compress.errors import ValidationFailed
    from bmr_compress.export import (
        build_report, export_onnx, export_safetensors, quantize_int8, validate, write_report,
    )
    from bmr_compress.export.checks import check_st_embeddings
    from bmr_compress.export.st_layout import place_st_onnx_, texts_from_batch
    from bmr_compress.io.atomic import atomic_output_dir, keep_rejected
    from bmr_compress.io.integrity import INTEGRITY_KEY, file_hashes
    from bmr_compress.pipeline.curve import run_curve
    from bmr_compress.surgery import save_compressed

    example = _strip_labels(f.data.heldout_batches[0])
    prov = _provenance(f, settings)
    baseline = work / "original"
    baseline.mkdir(exist_ok=True)
    with atomic_output_dir(out, settings.overwrite) as stage:
        with timer("export"):
            hf_model, layout = _transformers_layout(f.model, example)
            meta = {"source": prov["source"], "revision": prov["revision"] or "",
                    "tool_version": prov["tool_version"]}
            save_compressed(  # writes model.safetensors once, plain or compact
                f.model, cut.record, stage, **_save_kwargs(f.model, f.original),
                extra={**prov, "export_sample": _sample_spec(example),
                       "transformers_layout": layout},
                compact_zeros=settings.compact_zeros, weights_metadata=meta)
            tok = f.source.tokenizer_or_processor
            if hf_model is not f.model:  # the files transformers reads hold the padded twin
                export_safetensors(hf_model, stage, meta, compact_zeros=settings.compact_zeros,
                                   tokenizer=tok)
            elif tok is not None and hasattr(tok, "save_pretrained"):
                tok.save_pretrained(str(stage))
            st_source = _companions(f, stage, settings.compact_zeros)
            if f.posterior_path.is_file():  # the variational fit's posterior (re-planning)
                shutil.copy2(f.posterior_path, stage / "posterior.safetensors")
            art = export_onnx(f.model, stage / "model.onnx", example)
            base_art = export_onnx(f.original, baseline / "model.onnx", example, sparse=False)
            base_st = export_safetensors(f.original, baseline, {"source": prov["source"]})
            int8 = quantize_int8(art.path, stage / "model.int8.onnx").path if f.opts.get("int8") else None
            if st_source:
                place_st_onnx_(stage, art.path, int8)
        with timer("validate"):
            result = validate(
                f.original, f.model, onnx_path=art.path, original_onnx_path=base_art.path,
                sample_inputs=example, heldout_batches=f.data.heldout_batches,
                task=f.source.task, int8_path=int8, raise_on_failure=False,
                settings=validation_settings(f.original, example),
            )
            st_info = None
            if st_source:
                tok = f.source.tokenizer_or_processor
                st_info = check_st_embeddings(result, stage, f.model, tok,
                                              texts_from_batch(tok, example), onnx_path=art.path)
        with timer("operating points"):
            curve = run_curve(f, base_art.path, art.path, int8, work, result, example)
        files_before = {"model.onnx": base_art.path.stat().st_size,
                        "model.safetensors": Path(base_st).stat().st_size}
        report = build_report(
            source={"id": prov["source"], "revision": prov["revision"], "family": prov["family"],
                    "task": prov["task"], "data": f.data.description,
                    "dataset": getattr(f.data, "name", "") or f.data.description,
                    "heldout": getattr(f.data, "heldout", ""),
                    "data_choice": getattr(f.data, "choice", None),
                    **_source_facts(settings, f)},
            settings=prov["settings"], original=f.original, compressed=f.model,
            validation=result, files_before=files_before, stage_seconds=timer.total(),
            plan_summary=cut.plan.summary, onnx=art,
            extra={"finetune": _fit_summary(f.fit), "coverage": dict(cut.record.coverage),
                   "iterative": f.iteration.to_json() if f.iteration is not None else None,
                   "reduced_means": cut.compensation, "sentence_transformers": st_info,
                   "operating_points": curve},
        )
        report[INTEGRITY_KEY] = file_hashes(stage)  # what was validated; push re-checks it
        write_report(stage, report, delta_lnz=cut.unit_scores)
        if not result.passed:
            rejected = keep_rejected(stage, out)  # never over a user's files
            raise ValidationFailed(
                f"validation failed ({_failed_checks(report)}); nothing was written to {out}; "
                f"the rejected result and its report are in {rejected}"
            )
    return CompressResult(out=out, report=report, passed=True, summary=summary_of(report))


def _transformers_layout(model: Any, example: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The model written as config.json + model.safetensors: the cut model when its config
    states its widths, else a zero-padded equivalent (surgery.hf_layout); when neither works,
    the cut model and a warning (plain transformers then refuses the shapes; never loads
    random weights)."""
    from bmr_compress.errors import UnsupportedModelError
    from bmr_compress.surgery.hf_layout import transformers_layout

    if not hasattr(model, "config"):
        return model, {"layout": "bmr"}
    try:
        return transformers_layout(model, example)
    except UnsupportedModelError as e:
        log.warning("config.json cannot state the cut widths (%s): load the output with "
                    "bmr_compress.surgery.load_compressed or use model.onnx", e)
        return model, {"layout": "refused", "reason": str(e)}


def _source_facts(settings: CompressSettings, f: Fitted) -> dict[str, Any]:
    """base_model, license (for the card) and whether the weights are the source's own."""
    import torch

    from bmr_compress.io.card import source_facts

    recipe = _recipe_for(settings.recipe, settings.source)
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


def _fit_summary(fit: Any) -> dict[str, Any] | None:
    if fit is None:
        return None
    hist = list(getattr(fit, "history", []) or [])
    return {
        "steps": getattr(fit, "steps", None), "wall_s": getattr(fit, "wall_s", None),
        "steps_per_s": getattr(fit, "steps_per_s", None), "device": getattr(fit, "device", None),
        "n_data": getattr(fit, "n_data", None), "last": hist[-1] if hist else None,
    }

"""The whole job: load → wrap → fine-tune → score → plan → cut → export → validate → report.

This module and the CLI are the only places that decide file locations (DESIGN.md). Each
stage is a call into its subpackage; this module wires them, times them and decides where
their outputs go. Results are assembled in a staging directory beside `--out` and renamed
into place only after validation passed (io.atomic). A failed validation leaves `--out`
untouched, copies the assembled files to `<out>.rejected/` for inspection and raises
ValidationFailed (exit code 1).

Entry points (one per CLI command): `compress`, `finetune_only`, `reduce`,
`export_directory`, `validate_directory`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FIT_RECORD = "bmr_fit.json"  # written by finetune_only: how to reload source and data


@dataclass(frozen=True)
class CompressSettings:
    """Everything `compress` needs. CLI flags and recipe `[settings]` map onto these fields.

    None means "the recipe's value, else DEFAULTS". `n_data` and `temperature` set how far the
    posterior widens (and so how much BMR prunes): see variational.FinetuneSettings.
    """

    source: str
    out: str
    overwrite: bool = False
    recipe: str | None = None
    revision: str | None = None
    trust_remote_code: bool = False
    allow_pickle: bool = False  # read .pt/.pth/.bin state dicts (always weights_only=True)
    task: str | None = None
    data: str | None = None
    max_samples: int | None = None
    batch_size: int | None = None
    # fine-tune
    steps: int | None = None
    lr: float | None = None
    n_data: int | None = None
    temperature: float | None = None
    noise_std: float | None = None  # distillation likelihood std, relative to the output RMS
    laplace_batches: int | None = None  # start from the diagonal Laplace posterior (0: off)
    seed: int | None = None
    device: str = "auto"
    # planning
    structured: bool | None = None
    unstructured: bool | None = None
    gates: str | None = None  # none | bmrs_n | bmrs_u
    threshold: str | None = None  # zero | beta_bernoulli
    iterative: bool | None = None
    round_to: int | None = None
    size_budget: float | None = None  # ≤ 1: fraction of the original parameters; > 1: count
    # fraction of the prunable units' multiply-accumulates to keep (a MAC proxy for latency,
    # at the export sample's shape; the report measures real ORT latency)
    latency_budget: float | None = None
    # export
    int8: bool | None = None
    compact_zeros: bool = False
    progress: bool = True


DEFAULTS: dict[str, Any] = {
    "steps": 200, "seed": 0, "structured": True, "unstructured": False, "gates": "none",
    "threshold": "zero", "iterative": False, "round_to": 8,
}
_FIT_KEYS = ("lr", "n_data", "temperature", "laplace_batches")
# the task's output decides the distillation likelihood (variational.objective)
_DISTILL = {"embedding": "pooled_gaussian"}


@dataclass
class CompressResult:
    out: Path
    report: dict[str, Any]
    passed: bool
    summary: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "passed": self.passed, "summary": self.summary,
                "report": self.report}


class StageTimer:
    """Wall time per stage, in the order the stages ran."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.t0 = time.perf_counter()

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        log.info("stage: %s", name)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0

    def total(self) -> dict[str, float]:
        return {**self.seconds, "total": time.perf_counter() - self.t0}


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


# ----------------------------------------------------------------------------- settings


def resolve_settings(settings: CompressSettings, recipe_settings: Any | None) -> dict[str, Any]:
    """Merge: explicit settings > recipe [settings] > DEFAULTS. Returns a plain dict."""
    merged = dict(DEFAULTS)
    for layer in (recipe_settings, settings):
        if layer is not None:
            merged.update({k: v for k, v in dataclasses.asdict(layer).items() if v is not None})
    return merged


def _recipe_for(recipe: str | None, source: str) -> Any | None:
    from bmr_compress.io.recipes import load_recipe

    if recipe:
        return load_recipe(recipe)
    if source.startswith("zoo:"):
        return load_recipe(source[4:])
    return None


def _strip_labels(batch: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in batch.items() if k != "labels"}


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


# ----------------------------------------------------------------------------- stages


def load_stage(settings: CompressSettings, timer: StageTimer) -> tuple[Any, Any, dict[str, Any]]:
    """Resolve the source and build the data bundle. Returns (source, data, opts)."""
    import torch

    from bmr_compress.io.data import make_dataset
    from bmr_compress.io.sources import resolve_source

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


def _plan_settings(opts: Mapping[str, Any], original: Any,
                   unit_macs: Mapping[str, float] | None = None,
                   groups: list[Any] | None = None, task: str | None = None) -> Any:
    from bmr_compress.surgery import PlanSettings

    budget = opts.get("size_budget")
    max_params = None
    if budget is not None:
        total = sum(p.numel() for p in original.parameters())
        max_params = int(total * float(budget)) if float(budget) <= 1.0 else int(budget)
    max_macs = None
    if opts.get("latency_budget") is not None and unit_macs is not None and groups:
        total_macs = sum(g.num_units * unit_macs.get(g.name, 0.0) for g in groups)
        max_macs = float(opts["latency_budget"]) * total_macs
    kinds = PlanSettings().kinds
    if task == "embedding":  # the hidden size *is* the embedding size users consume
        kinds = tuple(k for k in kinds if k != "hidden")
    return PlanSettings(
        structured=bool(opts["structured"]), unstructured=bool(opts["unstructured"]),
        threshold=str(opts["threshold"]), round_to=int(opts["round_to"]), max_params=max_params,
        max_macs=max_macs, kinds=kinds,
    )


def _rule(opts: Mapping[str, Any]) -> str:
    return {"none": "spike", "bmrs_n": "bmrs_n", "bmrs_u": "bmrs_u"}[str(opts["gates"])]


def _iterate(f: Fitted, ft: Any, timer: StageTimer) -> Any:
    """Beckers et al.: prune → pin at zero → refit → rescore, until nothing more goes."""
    from bmr_compress.surgery.refit import iterate_with_finetune

    with timer("iterate"):
        result = iterate_with_finetune(
            f.model, f.groups, f.original, f.data.train_batches, f.data.heldout_batches, ft,
            _plan_settings(f.opts, f.original, task=str(f.source.task)), rule=_rule(f.opts),
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
            from bmr_compress.surgery import unit_macs

            macs = unit_macs(f.original, f.groups, _strip_labels(f.data.heldout_batches[0]))
        plan_settings = _plan_settings(f.opts, f.original, macs, f.groups, str(f.source.task))
        weight_scores = score_weights(posterior)
        unit_scores = score_groups(f.groups, posterior, gates, rule)
        if f.iteration is not None:  # units pruned in the rounds stay pruned
            unit_scores = pin_scores(unit_scores, f.iteration)
        plan = make_plan(f.groups, unit_scores, weight_scores, plan_settings, unit_macs=macs)
        wmasks = unstructured_masks(plan, weight_scores) if plan_settings.unstructured else None
    with timer("surgery"):
        unwrap_(f.model)
        record = apply_plan_(f.model, f.groups, plan, weight_masks=wmasks)
    f.model.eval()
    log.info("parameters: %d -> %d", record.params_before, record.params_after)
    return Cut(plan, record, unit_scores)


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
    from bmr_compress.zoo.architectures import register_with_surgery

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
    from bmr_compress.io.atomic import atomic_output_dir
    from bmr_compress.surgery import save_compressed

    example = _strip_labels(f.data.heldout_batches[0])
    prov = _provenance(f, settings)
    baseline = work / "original"
    baseline.mkdir(exist_ok=True)
    with atomic_output_dir(out, settings.overwrite) as stage:
        with timer("export"):
            save_compressed(f.model, cut.record, stage, **_save_kwargs(f.model, f.original),
                            extra={**prov, "export_sample": _sample_spec(example)})
            export_safetensors(
                f.model, stage, {"source": prov["source"], "revision": prov["revision"] or "",
                                 "tool_version": prov["tool_version"]},
                compact_zeros=settings.compact_zeros, tokenizer=f.source.tokenizer_or_processor,
            )
            shutil.copy2(f.posterior_path, stage / "posterior.safetensors")
            art = export_onnx(f.model, stage / "model.onnx", example)
            base_art = export_onnx(f.original, baseline / "model.onnx", example, sparse=False)
            base_st = export_safetensors(f.original, baseline, {"source": prov["source"]})
            int8 = quantize_int8(art.path, stage / "model.int8.onnx").path if f.opts.get("int8") else None
        with timer("validate"):
            result = validate(
                f.original, f.model, onnx_path=art.path, original_onnx_path=base_art.path,
                sample_inputs=example, heldout_batches=f.data.heldout_batches,
                task=f.source.task, int8_path=int8, raise_on_failure=False,
                settings=validation_settings(f.original, example),
            )
        files_before = {"model.onnx": base_art.path.stat().st_size,
                        "model.safetensors": Path(base_st).stat().st_size}
        report = build_report(
            source={"id": prov["source"], "revision": prov["revision"], "family": prov["family"],
                    "task": prov["task"], "data": f.data.description},
            settings=prov["settings"], original=f.original, compressed=f.model,
            validation=result, files_before=files_before, stage_seconds=timer.total(),
            plan_summary=cut.plan.summary, onnx=art,
            extra={"finetune": _fit_summary(f.fit), "coverage": dict(cut.record.coverage),
                   "iterative": f.iteration.to_json() if f.iteration is not None else None},
        )
        write_report(stage, report, delta_lnz=cut.unit_scores)
        if not result.passed:
            rejected = out.with_name(out.name + ".rejected")
            partial = out.with_name(f".{out.name}.rejected-partial")
            shutil.rmtree(partial, ignore_errors=True)
            shutil.copytree(stage, partial)  # complete copy first, then one rename
            shutil.rmtree(rejected, ignore_errors=True)
            partial.rename(rejected)
            raise ValidationFailed(
                f"validation failed ({_failed_checks(report)}); nothing was written to {out}; "
                f"the rejected result and its report are in {rejected}"
            )
    return CompressResult(out=out, report=report, passed=True, summary=summary_of(report))


# ----------------------------------------------------------------------------- entry points


def compress(settings: CompressSettings) -> CompressResult:
    """The whole pipeline into `settings.out`. Raises BmrError subclasses."""
    from bmr_compress.io.atomic import check_output_dir

    out = check_output_dir(settings.out, settings.overwrite)  # fail fast, before any work
    timer = StageTimer()
    with tempfile.TemporaryDirectory(prefix="bmr-work-") as work_s:
        work = Path(work_s)
        fitted = fit_stage(settings, timer, work)
        cut = cut_stage(fitted, timer)
        try:
            return finish_stage(settings, fitted, cut, timer, work, out)
        finally:  # the fit is complete either way; only an interrupted run leaves it
            shutil.rmtree(checkpoint_dir(settings, fitted.opts), ignore_errors=True)


def finetune_only(settings: CompressSettings) -> dict[str, Any]:
    """Fit the posterior only: writes posterior.safetensors + bmr_fit.json into `out`."""
    from bmr_compress.io.atomic import atomic_output_dir, check_output_dir

    out = check_output_dir(settings.out, settings.overwrite)
    timer = StageTimer()
    with tempfile.TemporaryDirectory(prefix="bmr-work-") as work_s:
        f = fit_stage(settings, timer, Path(work_s))
        with atomic_output_dir(out, settings.overwrite) as stage:
            shutil.copy2(f.posterior_path, stage / "posterior.safetensors")
            record = {**_provenance(f, settings), "finetune": _fit_summary(f.fit),
                      "stage_seconds": timer.total()}
            (stage / FIT_RECORD).write_text(json.dumps(_jsonable(record), indent=2) + "\n")
        shutil.rmtree(checkpoint_dir(settings, f.opts), ignore_errors=True)
    return {"out": str(out), "posterior": str(out / "posterior.safetensors"),
            "finetune": _fit_summary(f.fit)}


def _reload_record(directory: Path) -> dict[str, Any]:
    from bmr_compress.errors import InputError

    for name in (FIT_RECORD, "bmr_manifest.json"):
        p = directory / name
        if p.is_file():
            try:
                rec = json.loads(p.read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise InputError(f"cannot read {p}: {e}") from None
            if isinstance(rec, dict) and isinstance(rec.get("reload"), dict):
                return rec
    raise InputError(f"{directory} has no {FIT_RECORD} or bmr_manifest.json with reload "
                     "information (was it written by `bmr-compress compress` or `finetune`?)")


def reduce(posterior_dir: str | Path, *, out: str, overwrite: bool = False, **plan_opts: Any
           ) -> CompressResult:
    """Re-plan and cut from `posterior_dir/posterior.safetensors` without refitting."""
    from bmr_compress.errors import InputError
    from bmr_compress.io.atomic import check_output_dir
    from bmr_compress.surgery import discover_groups
    from bmr_compress.variational import PosteriorSpec, load_posterior, restore_posterior_, wrap_

    posterior_dir = Path(posterior_dir)
    ppath = posterior_dir / "posterior.safetensors"
    if not ppath.is_file():
        raise InputError(f"no posterior.safetensors in {posterior_dir}")
    out_path = check_output_dir(out, overwrite)
    rec = _reload_record(posterior_dir)
    state = load_posterior(ppath)
    fields = {f.name for f in dataclasses.fields(CompressSettings)}
    old = {k: v for k, v in rec.get("settings", {}).items() if k in fields}
    new = {k: v for k, v in plan_opts.items() if k in fields and v is not None}
    settings = CompressSettings(**{**rec["reload"], **old, **new, "out": str(out_path),
                                   "overwrite": overwrite, "steps": 0})
    timer = StageTimer()
    source, data, opts = load_stage(settings, timer)
    with tempfile.TemporaryDirectory(prefix="bmr-work-") as work_s:
        work = Path(work_s)
        model = copy.deepcopy(source.model)
        example = _strip_labels(data.heldout_batches[0])
        with timer("coupling"):
            groups = discover_groups(model, example)
        sites = tuple(tuple(s) for s in state.settings.get("gate_sites", []))
        wrap_(model, PosteriorSpec(gates=sites))
        restore_posterior_(model, state)
        shutil.copy2(ppath, work / "posterior.safetensors")
        f = Fitted(source, data, opts, source.model, model, groups,
                   work / "posterior.safetensors")
        cut = cut_stage(f, timer)
        return finish_stage(settings, f, cut, timer, work, out_path)


def _example_from_spec(spec: Mapping[str, Any], seed: int = 0) -> dict[str, Any]:
    import torch

    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, s in spec.items():
        dtype = getattr(torch, s["dtype"])
        if dtype.is_floating_point:
            out[k] = torch.randn(s["shape"], generator=g, dtype=dtype)
        elif k == "attention_mask":
            out[k] = torch.ones(s["shape"], dtype=dtype)
        else:
            out[k] = torch.randint(0, int(s["max"]) + 1, s["shape"], generator=g, dtype=dtype)
    return out


def _load_compressed(directory: Path) -> Any:
    """surgery.load_compressed, with the zoo architectures registered for zoo models."""
    from bmr_compress.surgery import load_compressed
    from bmr_compress.zoo.architectures import register_with_surgery

    register_with_surgery()
    return load_compressed(directory).eval()


def export_directory(directory: str | Path, *, int8: bool = False, compact_zeros: bool = False
                     ) -> dict[str, Any]:
    """Reload a compressed directory with the project's loader and (re-)write its ONNX files."""
    from bmr_compress.errors import InputError
    from bmr_compress.export import export_onnx, export_safetensors, quantize_int8
    from bmr_compress.io.atomic import replace_files
    from bmr_compress.surgery import read_manifest

    directory = Path(directory)
    manifest = read_manifest(directory)
    if "export_sample" not in manifest:
        raise InputError(f"{directory / 'bmr_manifest.json'} has no export_sample")
    model = _load_compressed(directory)
    example = _example_from_spec(manifest["export_sample"])
    with replace_files(directory) as stage:
        art = export_onnx(model, stage / "model.onnx", example)
        written = [art.path.name]
        if compact_zeros:
            export_safetensors(model, stage, {"source": str(manifest.get("source", ""))},
                               compact_zeros=True)
            written.append("model.safetensors")
        if int8:
            written.append(quantize_int8(art.path, stage / "model.int8.onnx").path.name)
        info = art.to_dict()  # while the staged files still exist
    return {"directory": str(directory), "written": written, "onnx": info}


def validate_directory(directory: str | Path, *, data: str | None = None) -> dict[str, Any]:
    """Re-run validation of a compressed directory against its original source."""
    from bmr_compress.export import export_onnx, validate
    from bmr_compress.surgery import read_manifest

    directory = Path(directory)
    manifest = read_manifest(directory)
    rec = _reload_record(directory)
    reload = dict(rec["reload"])
    if data is not None:
        reload["data"] = data
    settings = CompressSettings(**reload, out=str(directory), overwrite=True, steps=0,
                                progress=False)
    source, bundle, _ = load_stage(settings, StageTimer())
    model = _load_compressed(directory)
    example = _strip_labels(bundle.heldout_batches[0])
    with tempfile.TemporaryDirectory(prefix="bmr-validate-") as work:
        base = export_onnx(source.model, Path(work) / "original.onnx", example, sparse=False)
        int8 = directory / "model.int8.onnx"
        result = validate(
            source.model, model, onnx_path=directory / "model.onnx",
            original_onnx_path=base.path, sample_inputs=example,
            heldout_batches=bundle.heldout_batches, task=manifest.get("task", source.task),
            int8_path=int8 if int8.is_file() else None, raise_on_failure=False,
            settings=validation_settings(source.model, example),
        )
    _update_report_validation(directory, result)
    result.raise_if_failed()
    return result.to_dict()


def _update_report_validation(directory: Path, result: Any) -> None:
    """Record a re-validation in report.json (push reads `validation.passed` from there)."""
    path = directory / "report.json"
    if not path.is_file():
        return
    report = json.loads(path.read_text())
    d = result.to_dict()
    report["validation"] = {"passed": bool(d.get("passed")), "checks": d.get("checks", [])}
    for key in ("metric", "parity", "latency"):
        report[key] = d.get(key, report.get(key))
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_jsonable(report), indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


# ----------------------------------------------------------------------------- summaries


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


def summary_of(report: Mapping[str, Any]) -> dict[str, Any]:
    """The short table the CLI prints: parameters, sizes, latency, metric, wall time."""
    files = report.get("files", {})
    return {
        "parameters": report.get("parameters"),
        "bytes": {k: {"before": files.get("before", {}).get(k), "after": files.get("after", {}).get(k)}
                  for k in ("model.safetensors", "model.onnx")},
        "int8_onnx_bytes": files.get("after", {}).get("model.int8.onnx"),
        "latency": report.get("latency"),
        "metric": report.get("metric"),
        "wall_s": report.get("stage_seconds", {}).get("total"),
    }


def _mb(n: Any) -> str:
    return "-" if n is None else f"{n / 1e6:.2f} MB"


def _ratio(a: Any, b: Any) -> str:
    return "-" if not a or not b else f"{a / b:.2f}x"


def format_summary(summary: Mapping[str, Any]) -> str:
    """Human table of `summary_of(report)`: before / after / ratio per row."""
    p = summary.get("parameters") or {}
    rows = [("parameters", f"{p.get('original', 0):,}", f"{p.get('compressed', 0):,}",
             _ratio(p.get("original"), p.get("compressed")))]
    for k, v in (summary.get("bytes") or {}).items():
        rows.append((k, _mb(v.get("before")), _mb(v.get("after")),
                     _ratio(v.get("before"), v.get("after"))))
    if summary.get("int8_onnx_bytes"):
        before = ((summary.get("bytes") or {}).get("model.onnx") or {}).get("before")
        rows.append(("model.int8.onnx", _mb(before), _mb(summary["int8_onnx_bytes"]),
                     _ratio(before, summary["int8_onnx_bytes"])))
    lat = summary.get("latency") or {}
    if lat.get("original") and lat.get("compressed"):
        o, c = lat["original"]["median_ms"], lat["compressed"]["median_ms"]
        dims = f"batch {lat.get('batch')}" + (f", seq {lat['seq']}" if lat.get("seq") else "")
        rows.append((f"ORT CPU latency, median ({lat.get('threads')} thread, {dims})",
                     f"{o:.3f} ms", f"{c:.3f} ms", _ratio(o, c)))
    m = summary.get("metric") or {}
    for k, v in (m.get("compressed") or {}).items():
        before = (m.get("original") or {}).get(k)
        rows.append((f"{k} (held-out, n={m.get('n')})", "-" if before is None else f"{before:.4f}",
                     f"{v:.4f}", ""))
    width = max(len(r[0]) for r in rows)
    lines = [f"{'':<{width}}  {'before':>12}  {'after':>12}  {'ratio':>7}"]
    lines += [f"{a:<{width}}  {b:>12}  {c:>12}  {d:>7}" for a, b, c, d in rows]
    if summary.get("wall_s") is not None:
        lines.append(f"wall time: {summary['wall_s']:.1f} s")
    return "\n".join(lines)

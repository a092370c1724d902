"""Entry points, one per CLI command; each wires the stages and decides file locations."""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

from bmr_compress.io.jsonsafe import to_jsonable
from bmr_compress.pipeline.config import OPTIONS, CompressConfig, build_config, with_options
from bmr_compress.pipeline.finish import (
    fit_summary, provenance, finish_stage, validation_settings,
)
from bmr_compress.pipeline.shared import (
    FIT_RECORD, CompressResult, StageTimer,
)
from bmr_compress.tasks import strip_labels
from bmr_compress.pipeline.stages import (
    Fitted, checkpoint_dir, cut_stage, fit_stage, load_stage,
)


def compress(config: CompressConfig, out: str | Path, *, overwrite: bool = False
             ) -> CompressResult | None:
    """The whole pipeline from `config.source` into `out`. Raises BmrError subclasses.

    The default path is `compress_` (pipeline/api.py) between loading and export. Under
    torchrun every process runs it (each a slice of every batch, variational.ddp); rank 0
    then exports, validates and writes `out` alone, the others return None."""
    from bmr_compress.io.atomic import check_output_dir, check_rejected_dir, work_dir
    from bmr_compress.io.ownership import own_checkpoint
    from bmr_compress.variational.ddp import env_world, process_group

    _check_inputs_outside(Path(out), config)  # first: replacing --out must not delete an input
    out = check_output_dir(out, overwrite)  # fail fast, before any work
    check_rejected_dir(out)  # a failed validation must not delete a user's files there
    timer = StageTimer()
    rank, world = env_world()
    if world > 1:
        _check_shareable(config)
        if rank > 0:
            return _helper_rank(config, timer, rank)
    with work_dir(out) as work, contextlib.ExitStack() as owned:  # beside --out, removed on every exit path
        if config.posterior == "laplace":
            from bmr_compress.pipeline.api import laplace_stage

            with process_group(SHARED_BACKEND):  # torchrun: the ranks share this stage
                fitted, cut = laplace_stage(config, timer, work)
        else:
            owned.enter_context(own_checkpoint(checkpoint_dir(config, out)))  # no live run's
            fitted = fit_stage(config, out, timer, work)
            cut = cut_stage(fitted, timer)
        try:
            return finish_stage(fitted, cut, timer, work, out, overwrite=overwrite)
        finally:  # the fit is complete either way; only an interrupted run leaves it
            shutil.rmtree(checkpoint_dir(config, out), ignore_errors=True)


# the Laplace stage computes on the CPU (its sums are CPU tensors); gloo also reduces CUDA
# tensors, and needs no GPU per process
SHARED_BACKEND = "gloo"


def _check_shareable(config: CompressConfig) -> None:
    from bmr_compress.errors import InputError

    if config.posterior != "laplace":
        raise InputError("under torchrun `compress` shares the default (Laplace) path only; "
                         "the variational fine-tune runs under torchrun as "
                         "`-m bmr_compress.variational.ddp` (README, several processes)")


def _helper_rank(config: CompressConfig, timer: StageTimer, rank: int) -> None:
    """A torchrun process other than rank 0: its share of the Laplace stage, nothing written
    (its scratch folder is a private temporary one, removed on return)."""
    from bmr_compress.pipeline.api import laplace_stage
    from bmr_compress.variational.ddp import process_group

    with tempfile.TemporaryDirectory(prefix="bmr-rank-") as work, process_group(SHARED_BACKEND):
        laplace_stage(config, timer, Path(work))
    log.info("rank %d: reduction shared; rank 0 exports and validates", rank)
    return None


def _check_inputs_outside(out: Path, config: CompressConfig) -> None:
    from bmr_compress.io.atomic import check_inputs_outside

    check_inputs_outside(out, {"source": config.source.spec, "recipe": config.source.recipe,
                               "data": config.data.spec})


def finetune_only(config: CompressConfig, out: str | Path, *, overwrite: bool = False
                  ) -> dict[str, Any]:
    """Fit the posterior only: writes posterior.safetensors + bmr_fit.json into `out`."""
    from bmr_compress.io.atomic import atomic_output_dir, check_output_dir, work_dir
    from bmr_compress.io.ownership import own_checkpoint

    _check_inputs_outside(Path(out), config)
    out = check_output_dir(out, overwrite)
    timer = StageTimer()
    with work_dir(out) as work, own_checkpoint(checkpoint_dir(config, out)):
        f = fit_stage(config, out, timer, work)
        with atomic_output_dir(out, overwrite) as stage:
            shutil.copy2(f.posterior_path, stage / "posterior.safetensors")
            record = {**provenance(f), "finetune": fit_summary(f.fit),
                      "stage_seconds": timer.total()}
            (stage / FIT_RECORD).write_text(json.dumps(to_jsonable(record), indent=2) + "\n")
        shutil.rmtree(checkpoint_dir(config, out), ignore_errors=True)
    return {"out": str(out), "posterior": str(out / "posterior.safetensors"),
            "finetune": fit_summary(f.fit)}


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


# what `reload` may say: where the source and data were; never how far to trust them
_RELOAD_KEYS = ("source", "recipe", "revision", "task", "data", "max_samples", "batch_size")


def _is_local_path(spec: str) -> bool:
    """A filesystem path (existing, or written like one), not zoo:NAME and not a hub id."""
    if spec.startswith("zoo:"):
        return False
    return Path(spec).expanduser().exists() or spec.startswith((".", "/", "~")) or spec.endswith(
        (".safetensors", ".pt", ".pth", ".bin", ".toml"))


def _related(a: Path, b: Path) -> bool:
    a, b = a.resolve(), b.resolve()
    return a == b or a in b.parents or b in a.parents


def reload_settings(directory: Path, rec: Mapping[str, Any], *, original: str | None = None,
                    trust_remote_code: bool = False, allow_pickle: bool = False,
                    use_recorded_source: bool = False) -> dict[str, Any]:
    """The load settings for re-reading the source of an output directory, safely.

    A directory is data someone else may have written: trust (`trust_remote_code`,
    `allow_pickle`) comes only from the caller (the command line), never from the files.
    The source is `original` when given; else the recorded one if it is a zoo recipe or a
    hub id; a recorded *local path* (or local recipe file) is used only when the caller
    confirms it (`use_recorded_source`). A source that is, contains or lies inside
    `directory` is refused: validating a model against itself proves nothing.
    """
    from bmr_compress.errors import InputError

    raw = rec.get("reload") if isinstance(rec.get("reload"), dict) else {}
    reload: dict[str, Any] = {}
    for k in _RELOAD_KEYS:
        v = raw.get(k)
        ok = v is None or (isinstance(v, int) and not isinstance(v, bool) if k in ("max_samples", "batch_size")
                           else isinstance(v, str))
        if not ok:
            raise InputError(f"{directory}: reload.{k} in its manifest is not a valid value: {v!r}")
        reload[k] = v
    if original is not None:
        reload.update(source=original, revision=None)
    elif not isinstance(reload["source"], str) or not reload["source"]:
        raise InputError(f"{directory}: its manifest names no source; pass --original SOURCE")
    elif not use_recorded_source:
        for key in ("source", "recipe"):
            v = reload[key]
            if isinstance(v, str) and _is_local_path(v):
                raise InputError(
                    f"{directory} names a local {key} {v!r}: pass --original SOURCE (the checkpoint "
                    f"it was compressed from) or --use-recorded-source to confirm that path")
    for key in ("source", "recipe"):
        v = reload[key]
        if isinstance(v, str) and _is_local_path(v) and _related(Path(v).expanduser(), directory):
            raise InputError(f"the {key} {v!r} is {directory} itself (or inside it): a model cannot be "
                             "validated against itself; pass --original SOURCE")
    return {**reload, "trust_remote_code": bool(trust_remote_code), "allow_pickle": bool(allow_pickle)}


def reduce(posterior_dir: str | Path, out: str | Path, *, overwrite: bool = False,
           original: str | None = None, trust_remote_code: bool = False,
           allow_pickle: bool = False, use_recorded_source: bool = False,
           options: Mapping[str, Any] | None = None) -> CompressResult:
    """Re-plan and cut from `posterior_dir/posterior.safetensors` without refitting.

    `options`: new settings by option name (pipeline.config.OPTIONS; None: keep the recorded
    value; an unknown name is an InputError) over the directory's recorded settings. The
    source is reloaded as `reload_settings` allows (trust only from the arguments)."""
    from bmr_compress.errors import InputError
    from bmr_compress.io.atomic import (
        check_inputs_outside, check_output_dir, check_rejected_dir, work_dir,
    )
    from bmr_compress.coupling import discover_groups
    from bmr_compress.variational import PosteriorSpec, load_posterior, restore_posterior_, wrap_

    posterior_dir = Path(posterior_dir)
    ppath = posterior_dir / "posterior.safetensors"
    if not ppath.is_file():
        raise InputError(f"no posterior.safetensors in {posterior_dir}: `reduce` re-plans a "
                         "variational fit (`compress --posterior variational` or `finetune`); "
                         "for the default Laplace path run `compress` again with another "
                         "--tolerance")
    check_inputs_outside(Path(out), {"posterior directory": posterior_dir})
    out_path = check_output_dir(out, overwrite)
    check_rejected_dir(out_path)
    rec = _reload_record(posterior_dir)
    state = load_posterior(ppath)
    reload = reload_settings(posterior_dir, rec, original=original,
                             trust_remote_code=trust_remote_code, allow_pickle=allow_pickle,
                             use_recorded_source=use_recorded_source)
    recorded = rec.get("settings") if isinstance(rec.get("settings"), dict) else {}
    old = {k: v for k, v in recorded.items() if k in OPTIONS and k not in _NOT_FROM_FILES}
    config = build_config({**old, **reload, "steps": 0}, what=f"{posterior_dir} (recorded)")
    config = with_options(config, dict(options or {}), what="reduce")
    _check_inputs_outside(out_path, config)
    timer = StageTimer()
    source, data = load_stage(config, timer)
    with work_dir(out_path) as work:
        model = copy.deepcopy(source.model)
        example = strip_labels(data.heldout_batches[0])
        with timer("coupling"):
            groups = discover_groups(model, example)
        sites = tuple(tuple(s) for s in state.settings.get("gate_sites", []))
        wrap_(model, PosteriorSpec(gates=sites))
        restore_posterior_(model, state)
        shutil.copy2(ppath, work / "posterior.safetensors")
        f = Fitted(source, data, config, source.model, model, groups,
                   work / "posterior.safetensors")
        cut = cut_stage(f, timer)
        return finish_stage(f, cut, timer, work, out_path, overwrite=overwrite)


# never taken from a directory's recorded settings (where to load from, how far to trust it)
_NOT_FROM_FILES = frozenset({*_RELOAD_KEYS, "trust_remote_code", "allow_pickle", "out", "overwrite",
                             "device", "progress"})


def _example_from_spec(spec: Mapping[str, Any], seed: int = 0) -> dict[str, Any]:
    import torch

    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, s in spec.items():
        dtype = getattr(torch, str(s["dtype"]), None)  # a name from the manifest: a dtype only
        if not isinstance(dtype, torch.dtype):
            from bmr_compress.errors import InputError

            raise InputError(f"bmr_manifest.json export_sample: {str(s['dtype'])[:40]!r} is not a torch dtype")
        if dtype.is_floating_point:
            out[k] = torch.randn(s["shape"], generator=g, dtype=dtype)
        elif k == "attention_mask":
            out[k] = torch.ones(s["shape"], dtype=dtype)
        else:
            out[k] = torch.randint(0, int(s["max"]) + 1, s["shape"], generator=g, dtype=dtype)
    return out


def _load_compressed(directory: Path) -> Any:
    """cutting.load_compressed in eval mode (a zoo output's manifest names its builder module,
    whose import registers the adapters)."""
    from bmr_compress.cutting import load_compressed

    return load_compressed(directory).eval()


def export_directory(directory: str | Path, *, int8: bool = False, compact_zeros: bool = False
                     ) -> dict[str, Any]:
    """Reload a compressed directory with the project's loader and (re-)write its ONNX files."""
    from bmr_compress.errors import InputError
    from bmr_compress.export import export_onnx, quantize_int8
    from bmr_compress.export.safetensors_export import read_metadata, write_weights
    from bmr_compress.io.atomic import replace_files
    from bmr_compress.cutting import read_manifest

    directory = Path(directory)
    manifest = read_manifest(directory)
    if "export_sample" not in manifest:
        raise InputError(f"{directory / 'bmr_manifest.json'} has no export_sample")
    model = _load_compressed(directory)
    example = _example_from_spec(manifest["export_sample"])
    with replace_files(directory) as stage:
        art = export_onnx(model, stage / "model.onnx", example)
        written = [art.path.name]
        if compact_zeros:  # the same writer compress uses; load_compressed reads either form
            meta = read_metadata(directory / "model.safetensors")
            keep = {k: v for k, v in meta.items() if not k.startswith("bmr_") and k != "format"}
            write_weights(model, stage, keep, compact_zeros=True)
            written.append("model.safetensors")
        if int8:
            written.append(quantize_int8(art.path, stage / "model.int8.onnx").path.name)
        info = art.to_dict()  # while the staged files still exist
    return {"directory": str(directory), "written": written, "onnx": info}


def validate_directory(directory: str | Path, *, data: str | None = None,
                       original: str | None = None, trust_remote_code: bool = False,
                       allow_pickle: bool = False, use_recorded_source: bool = False
                       ) -> dict[str, Any]:
    """Re-run validation of a compressed directory against its original source (loaded as
    `reload_settings` allows: trust only from the arguments, never from the directory)."""
    from bmr_compress.export import export_onnx, validate
    from bmr_compress.cutting import read_manifest

    from bmr_compress.io.integrity import check_manifest_consistent

    directory = Path(directory)
    manifest = read_manifest(directory)
    check_manifest_consistent(directory)
    rec = _reload_record(directory)
    reload = reload_settings(directory, rec, original=original,
                             trust_remote_code=trust_remote_code, allow_pickle=allow_pickle,
                             use_recorded_source=use_recorded_source)
    if data is not None:
        reload["data"] = data
    config = build_config({**reload, "steps": 0, "progress": False}, what="validate")
    source, bundle = load_stage(config, StageTimer())
    model = _load_compressed(directory)
    example = strip_labels(bundle.heldout_batches[0])
    with tempfile.TemporaryDirectory(prefix="bmr-validate-") as work:
        base = export_onnx(source.model, Path(work) / "original.onnx", example, sparse=False)
        int8, mixed = directory / "model.int8.onnx", directory / "model.mixed.onnx"
        result = validate(
            source.model, model, onnx_path=directory / "model.onnx",
            original_onnx_path=base.path, sample_inputs=example,
            heldout_batches=bundle.heldout_batches, task=manifest.get("task", source.task),
            int8_path=int8 if int8.is_file() else None, raise_on_failure=False,
            mixed_path=mixed if mixed.is_file() else None,
            settings=validation_settings(config.validate, source.model, example),
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
    from bmr_compress.io.integrity import INTEGRITY_KEY, file_hashes, seal_report_file

    old = (report.get(INTEGRITY_KEY) or {}).get("sha256") or {}
    report[INTEGRITY_KEY] = file_hashes(directory)  # the files this validation covered
    changed = sorted(k for k, v in report[INTEGRITY_KEY]["sha256"].items() if old and old.get(k) != v)
    if changed:
        log.warning("%s: %s changed since the previous validation; this validation covers the "
                    "files as they are now", directory, ", ".join(changed[:5]))
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(to_jsonable(report), indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    if report["validation"]["passed"]:
        seal_report_file(directory)  # this validation ran for real: push accepts these files

"""`bmr-compress bench OUT`: re-time a compress output's operating points on this CPU and
pick the artefact to deploy here.

Needs only onnxruntime, numpy and OUT: report.json's ``operating_points`` (the candidates,
their files and the retention measured at compress time), the ONNX files it names and, for
input shapes, bmr_manifest.json's ``export_sample``. Every file present is timed interleaved
in one run (`latency.measure_latency`) at the recorded latency shape; quality is never
re-measured: the recorded retention on calibration ("selection") data decides, through the
same rule as compress time (`choice.choose`), and the held-out figure is what is reported.
The result goes to ``OUT/bench/<cpu signature>.json``, which the integrity seal and `push`
ignore, so the validated files are untouched and a later `push` still passes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bmr_compress.errors import InputError
from bmr_compress.export.choice import Candidate, choose

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

BENCH_DIR = "bench"  # OUT/bench/<signature>.json; outside the integrity seal and the upload
TOKEN_ID_HIGH = 1000  # token ids drawn from [0, 1000) (or the vocabulary, when smaller)
WARMUP = 3
NP_TYPES = {"tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(float)": "float32",
            "tensor(float16)": "float16", "tensor(double)": "float64", "tensor(bool)": "bool"}


def read_operating_points(out: Path) -> dict[str, Any]:
    """OUT/report.json's operating_points; InputError when OUT has none (an output of an older
    version or of the variational path) or it is malformed."""
    path = out / "report.json"
    if not out.is_dir():
        raise InputError(f"no output directory at {out}")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path} does not exist: bench needs a `bmr-compress compress` output") from None
    except (OSError, ValueError) as e:
        raise InputError(f"{path} is not readable JSON ({type(e).__name__})") from None
    ops = report.get("operating_points") if isinstance(report, dict) else None
    if not isinstance(ops, dict) or not ops.get("points"):
        raise InputError(f"{path} records no operating_points (an output of an older bmr-compress "
                         "or of the variational path): nothing to bench; compress again with this "
                         "version's default path")
    if "reference_file" not in ops or "max_quality_loss" not in ops:
        raise InputError(f"{path} records operating points in an older format (no retention, no "
                         "reference file to time against): compress again with this version")
    for key in ("metric", "latency_shape"):
        if key not in ops:
            raise InputError(f"{path}: operating_points has no {key!r}")
    if not all(isinstance(p, dict) and isinstance(p.get("label"), str) for p in ops["points"]):
        raise InputError(f"{path}: every operating point needs a label")
    return ops


def inside(out: Path, rel: Any) -> Path | None:
    """OUT/rel when `rel` is a relative path that stays inside OUT, else None (a downloaded
    report.json must not point the tool at files elsewhere)."""
    if not isinstance(rel, str) or not rel or os.path.isabs(rel):
        return None
    p = (out / rel).resolve()
    return p if p.is_relative_to(out.resolve()) else None


def _onnx_inputs(path: Path) -> list[tuple[str, str, list[Any]]]:
    """(name, ORT type, shape with symbolic dims as str/None) of each graph input."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    try:
        s = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - any load failure is the file's fault
        raise InputError(f"{path}: onnxruntime cannot load it ({str(e).splitlines()[0][:200]})") from None
    return [(i.name, i.type, list(i.shape)) for i in s.get_inputs()]


def _input_shape(name: str, onnx_shape: list[Any], sample: Any, batch: int, seq: int | None,
                 where: Path) -> list[int]:
    """Static ONNX dims as they are; a dynamic axis 0 is the batch, a token input's dynamic
    axis 1 the sequence, any other dynamic axis the export sample's size."""
    from bmr_compress.export.onnx_export import SEQUENCE_INPUTS

    recorded = sample.get("shape") if isinstance(sample, Mapping) else None
    if not (isinstance(recorded, list) and len(recorded) == len(onnx_shape)):
        recorded = [None] * len(onnx_shape)
    shape: list[int] = []
    for axis, (dim, rec) in enumerate(zip(onnx_shape, recorded)):
        if isinstance(dim, int) and dim > 0:
            shape.append(dim)
        elif axis == 0:
            shape.append(batch)
        elif axis == 1 and name in SEQUENCE_INPUTS and seq:
            shape.append(int(seq))
        elif isinstance(rec, int) and rec > 0:
            shape.append(rec)
        else:
            raise InputError(f"{where}: input {name!r} has a dynamic axis {axis} of unknown size "
                             "and OUT/bmr_manifest.json records no export_sample for it")
    return shape


def build_feeds(files: list[Path], shape: Mapping[str, Any], sample: Mapping[str, Any],
                *, vocab: int | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """One input per name any of `files` takes, at the recorded (batch, seq): token ids in
    [0, 1000) (or the vocabulary), attention_mask ones, token_type_ids zeros, position_ids
    0..seq-1, float inputs standard normal at the export sample's shape."""
    import numpy as np

    rng = np.random.default_rng(seed)
    batch, seq = int(shape.get("batch") or 1), shape.get("seq")
    feeds: dict[str, np.ndarray] = {}
    for f in files:
        for name, typ, dims in _onnx_inputs(f):
            if name in feeds:
                continue
            if typ not in NP_TYPES:
                raise InputError(f"{f}: input {name!r} has type {typ}, which bench cannot feed")
            dt = np.dtype(NP_TYPES[typ])
            s = _input_shape(name, dims, sample.get(name), batch, seq, f)
            if name == "attention_mask" or dt == np.bool_:
                x = np.ones(s, dtype=dt)
            elif name == "position_ids":
                x = np.broadcast_to(np.arange(s[-1]), s).astype(dt)
            elif dt.kind == "f":
                x = rng.standard_normal(s).astype(dt)
            elif name == "input_ids":
                x = rng.integers(0, min(TOKEN_ID_HIGH, vocab or TOKEN_ID_HIGH), s).astype(dt)
            else:  # token_type_ids and other integer inputs
                x = np.zeros(s, dtype=dt)
            feeds[name] = x
    return feeds


def _json_or_empty(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _retention(p: Mapping[str, Any], key: str) -> float | None:
    r = p.get("retention")
    v = r.get(key) if isinstance(r, Mapping) else None
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def _mixed_record(out: Path) -> dict[str, Any] | None:
    """report.json's mixed_precision record when OUT ships its file (`compress --mixed-precision`)."""
    report = _json_or_empty(out / "report.json")
    rec = report.get("mixed_precision")
    if not isinstance(rec, Mapping) or not isinstance(rec.get("file"), str):
        return None
    path = inside(out, rec["file"])
    if path is None or not path.is_file():
        log.warning("skipping the mixed-precision file %r: missing from OUT", rec["file"])
        return None
    return {**rec, "path": path}


def _mixed_row(d: Path, rec: Mapping[str, Any], ref: Path, lat: Mapping[str, Any]) -> dict[str, Any]:
    """The mixed-precision file timed here beside the original: a size artefact, shown with its
    recorded retention, never a candidate of the speed recommendation."""
    f, ref_ms = rel_name(d, rec["path"]), lat[rel_name(d, ref)]["median_ms"]
    ret = rec.get("retention") if isinstance(rec.get("retention"), Mapping) else {}
    size = rec["path"].stat().st_size
    return {"label": "mixed precision", "file": f, "median_ms": lat[f]["median_ms"],
            "p90_ms": lat[f]["p90_ms"], "speedup": ref_ms / lat[f]["median_ms"], "size_bytes": size,
            "times_smaller": (rec.get("original_bytes") or 0) / max(size, 1) or None,
            "retention": {k: _retention({"retention": ret}, k) for k in ("selection", "heldout")},
            "recorded_median_ms": rec.get("median_ms"), "recorded_speedup": rec.get("speedup")}


def _timed_files(out: Path, ops: Mapping[str, Any]) -> tuple[Path, dict[str, Path], list[dict[str, str]]]:
    """(reference path, label -> file path of every point that can be timed here, skipped
    points with why)."""
    ref = inside(out, ops["reference_file"])
    if ref is None or not ref.is_file():
        raise InputError(f"{out}: the reference file {ops['reference_file']!r} (the fp32 original) "
                         "is missing, so there is nothing to measure speed-ups against")
    files: dict[str, Path] = {}
    skipped: list[dict[str, str]] = []
    for p in ops["points"]:
        label, rel = p["label"], p.get("file")
        is_ref = p.get("base") == "original" and p.get("precision") == "fp32"
        path = ref if is_ref and not rel else inside(out, rel)
        why = None
        if rel is None and not is_ref:
            why = "not shipped in OUT (no file)"
        elif path is None:
            why = f"file {rel!r} is not a path inside OUT"
        elif not path.is_file():
            why = f"file {rel} is missing from OUT"
        elif _retention(p, "selection") is None:
            why = "no recorded retention on selection data"
        if why:
            skipped.append({"label": label, "file": rel, "why": why})
        else:
            files[label] = path
    for p in ops["points"]:  # an int8 point is judged against its fp32 source, timed here too
        if p.get("precision") == "int8" and p["label"] in files and p.get("source") not in files:
            del files[p["label"]]
            skipped.append({"label": p["label"], "file": p.get("file"),
                            "why": f"its fp32 source {p.get('source')!r} cannot be timed here"})
    return ref, files, skipped


def _measure(d: Path, ops: Mapping[str, Any], paths: list[Path], threads: int | None,
             runs: int | None) -> dict[str, Any]:
    """measure_latency of `paths` (keyed by their path inside OUT) at the recorded shape."""
    from bmr_compress.export.latency import measure_latency

    shape = ops["latency_shape"] if isinstance(ops["latency_shape"], Mapping) else {}
    sample = _json_or_empty(d / "bmr_manifest.json").get("export_sample")
    vocab = _json_or_empty(d / "config.json").get("vocab_size")
    feeds = build_feeds(paths, shape, sample if isinstance(sample, dict) else {},
                        vocab=vocab if isinstance(vocab, int) and vocab > 0 else None)
    runs = int(runs or ops.get("runs") or 20)
    log.info("timing %d files, %d runs each, interleaved", len(paths), runs)
    lat = measure_latency({rel_name(d, p): p for p in paths}, feeds,
                          threads=int(threads or shape.get("threads") or 1), runs=runs, warmup=WARMUP)
    return {**lat, "batch": shape.get("batch"), "seq": shape.get("seq")}


def rel_name(d: Path, p: Path) -> str:
    return p.relative_to(d.resolve()).as_posix()


def _joined(d: Path, ops: Mapping[str, Any], files: dict[str, Path], ref: Path,
            lat: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[Candidate]]:
    """The timed points (new timings, recorded retention) and their candidates for `choose`."""
    ref_ms = lat[rel_name(d, ref)]["median_ms"]
    points, cands = [], []
    for p in ops["points"]:
        if p["label"] not in files:
            continue
        f = rel_name(d, files[p["label"]])
        ms, sel = lat[f]["median_ms"], _retention(p, "selection")
        cands.append(Candidate(p["label"], str(p.get("base")), str(p.get("precision")), p.get("scheme"),
                               sel, ms, p.get("source")))  # type: ignore[arg-type]
        points.append({"label": p["label"], "base": p.get("base"), "precision": p.get("precision"),
                       "scheme": p.get("scheme"), "source": p.get("source"), "file": f,
                       "median_ms": ms, "p90_ms": lat[f]["p90_ms"], "speedup": ref_ms / ms,
                       "retention": {"selection": sel, "heldout": _retention(p, "heldout")},
                       "recorded_median_ms": p.get("median_ms"), "recorded_speedup": p.get("speedup")})
    if not any(c.is_reference for c in cands):  # the report lists no original fp32 point
        f = rel_name(d, ref)
        cands.append(Candidate("original", "original", "fp32", None, 1.0, ref_ms))
        points.insert(0, {"label": "original", "base": "original", "precision": "fp32", "scheme": None,
                          "source": None, "file": f, "median_ms": ref_ms, "p90_ms": lat[f]["p90_ms"],
                          "speedup": 1.0, "retention": {"selection": 1.0, "heldout": 1.0}})
    return points, cands


def bench_directory(out: str | Path, *, threads: int | None = None, runs: int | None = None,
                    max_quality_loss: float | None = None) -> dict[str, Any]:
    """Time OUT's artefacts here, join the recorded retention, choose; the result dict (also
    what `write_bench` stores)."""
    from bmr_compress import __version__
    from bmr_compress.export.cpu import cpu_info

    d = Path(out)
    ops = read_operating_points(d)
    budget = ops["max_quality_loss"] if max_quality_loss is None else max_quality_loss
    if not isinstance(budget, (int, float)) or isinstance(budget, bool):
        raise InputError(f"{d / 'report.json'}: operating_points.max_quality_loss is not a number")
    ref, files, skipped = _timed_files(d, ops)
    for s in skipped:
        log.warning("skipping %r: %s", s["label"], s["why"])
    mixed = _mixed_record(d)
    timed = {ref, *files.values(), *([mixed["path"]] if mixed else [])}
    lat = _measure(d, ops, sorted(timed), threads, runs)
    points, cands = _joined(d, ops, files, ref, lat)
    choice = choose(cands, float(budget))
    for q in points:
        q.update(qualifies=choice.qualifies[q["label"]], reason=choice.reasons[q["label"]],
                 recommended=q["label"] == choice.recommended)
    keys = ("threads", "runs", "warmup", "input_shapes", "provider", "interleaved", "batch", "seq")
    result = {"directory": str(d), "cpu": cpu_info(), "metric": ops["metric"],
              "max_quality_loss": float(budget), "recorded_max_quality_loss": ops["max_quality_loss"],
              "latency": {k: lat[k] for k in keys},
              "reference": {"file": rel_name(d, ref), "median_ms": lat[rel_name(d, ref)]["median_ms"]},
              "points": points, "skipped": skipped, "recommended": choice.recommended,
              "recommended_file": next(q["file"] for q in points if q["recommended"]),
              "recorded_recommended": ops.get("recommended"), "tool_version": __version__,
              "mixed": _mixed_row(d, mixed, ref, lat) if mixed else None,
              "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    result["deploy"] = deploy_line(result)
    return result


def deploy_line(result: Mapping[str, Any]) -> str:
    best = next(q for q in result["points"] if q["recommended"])
    if best["base"] == "original" and best["precision"] == "fp32":
        return (f"deploy here: {best['file']} — the dense original: nothing smaller or int8 is faster "
                f"within the budget on this CPU")
    held = best["retention"]["heldout"]
    kept = (f"{held:.1%} of its {result['metric']} on held-out data" if held is not None
            else f"held-out {result['metric']} not recorded")
    return (f"deploy here: {best['file']} — {best['speedup']:.2f}x faster than the original on "
            f"this CPU, {kept}")


def write_bench(out: str | Path, result: Mapping[str, Any]) -> Path:
    """OUT/bench/<cpu signature>.json (written aside, then renamed into place)."""
    from bmr_compress.io.jsonsafe import to_jsonable

    where = Path(out) / BENCH_DIR
    where.mkdir(exist_ok=True)
    path = where / f"{result['cpu']['signature']}.json"
    tmp = where / f".{path.name}.tmp"
    tmp.write_text(json.dumps(to_jsonable(result, nonfinite="mark"), indent=2, sort_keys=True) + "\n",
                   encoding="utf-8")
    os.replace(tmp, path)
    return path

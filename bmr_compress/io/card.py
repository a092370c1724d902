"""The hub model card of a `compress` output: metadata that tells the truth, snippets that run.

Front matter: `base_model` (the hub id the weights came from) with `base_model_relation`
(`quantized` when the weights are the source's own and only the int8 artefact differs, else
`finetune`), the licence inherited from the source, `library_name` / `pipeline_tag`
(`sentence-transformers` + `sentence-similarity` for a sentence-transformers folder), and
`model-index` results on the named data set. The body states the decision rule actually
used (ΔlnZ ≥ 0, the Beta–Bernoulli threshold, or a size / latency budget), what was removed
(no "pruned" claim when nothing was), and usage snippets for the files present:
sentence-transformers (torch and ONNX backends) and plain onnxruntime with the tokenizer,
the folder's pooling and normalisation. No local filesystem path is written.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

_HUB_TASK = {"embedding": "feature-extraction", "causal_lm": "text-generation",
             "regression": "tabular-regression"}
_PATHISH = re.compile(r"^(/|~|\.{1,2}/|[A-Za-z]:\\)")


def hub_task(report: dict[str, Any], st: bool = False) -> str:
    if st:
        return "sentence-similarity"
    task = report.get("metric", {}).get("task") or report.get("source", {}).get("task", "")
    if task == "classification":
        inputs = report.get("onnx", {}).get("input_names", [])
        return "image-classification" if "pixel_values" in inputs else "text-classification"
    return _HUB_TASK.get(task, "other")


def library_name(report: dict[str, Any], directory: Path | None) -> str:
    if report.get("source", {}).get("library_name"):
        return str(report["source"]["library_name"])
    if directory is not None and (directory / "modules.json").is_file():
        return "sentence-transformers"
    cfg = directory / "config.json" if directory is not None else None
    if cfg is not None and cfg.is_file():
        try:
            if "model_type" in json.loads(cfg.read_text()):
                return "transformers"
        except json.JSONDecodeError:
            pass
    return "onnx"


def is_local(value: Any) -> bool:
    s = str(value)
    return bool(_PATHISH.match(s)) or Path(s).expanduser().exists()


def _scrub(x: Any) -> Any:
    """Settings without local paths (a path becomes its file name)."""
    if isinstance(x, dict):
        return {k: _scrub(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_scrub(v) for v in x]
    if isinstance(x, str) and ("/" in x or "\\" in x) and is_local(x):
        return Path(x).name
    return x


def base_model(report: dict[str, Any]) -> str | None:
    src = report.get("source", {})
    for key in ("base_model", "id"):
        v = src.get(key)
        if v and "/" in str(v) and not str(v).startswith("zoo:") and not is_local(v):
            return str(v).split("@")[0]
    return None


def relation(report: dict[str, Any]) -> str:
    same = report.get("source", {}).get("weights_identical")
    return "quantized" if same and report.get("int8") else "finetune"


def decision_rule(report: dict[str, Any]) -> str:
    s = report.get("settings", {})
    if not s.get("structured", True) and not s.get("unstructured", False):
        return "nothing was scored for removal (structured and unstructured pruning both off)"
    if s.get("size_budget") is not None:
        return (f"a size budget ({s['size_budget']} of the parameters): units were removed in "
                "order of their ΔlnZ (most evidence for removal first) until the budget was met, "
                "whatever the sign of ΔlnZ")
    if s.get("latency_budget") is not None:
        return (f"a latency budget ({s['latency_budget']} of the multiply-accumulates): units were "
                "removed in ΔlnZ order until the budget was met, whatever the sign of ΔlnZ")
    if s.get("threshold") == "beta_bernoulli":
        return "ΔlnZ above a Beta–Bernoulli threshold ζ per group (Marković et al.)"
    return "ΔlnZ ≥ 0: a unit goes only where dropping it raises the model evidence"


def removal_sentence(report: dict[str, Any]) -> str:
    sp = report.get("sparsity", {})
    removed = float(sp.get("structured", {}).get("removed_fraction", 0.0) or 0.0)
    zeros = float(sp.get("unstructured", {}).get("zero_fraction", 0.0) or 0.0)
    if not report.get("settings", {}).get("unstructured", False):
        zeros = 0.0  # zeros the source already had are not the tool's doing
    if removed <= 0 and zeros <= 0:
        return ("Nothing was removed: every unit was kept under this rule, so the model has the "
                "source's architecture and size.")
    parts = []
    if removed > 0:
        parts.append(f"{removed:.1%} of the parameters were physically removed (whole FFN "
                     "neurons, attention heads or filters; the matrices are smaller)")
    if zeros > 0:
        parts.append(f"{zeros:.2%} of the remaining weights were set to zero (file size only: "
                     "onnxruntime densifies them at load)")
    text = "; ".join(parts)
    return text[:1].upper() + text[1:] + "."


def build_model_card(report: dict[str, Any], repo_id: str, directory: str | Path | None = None,
                     *, with_posterior: bool = False) -> str:
    """The card text (YAML front matter + body) for `directory`'s report."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    d = Path(directory) if directory is not None else None
    st = d is not None and (d / "modules.json").is_file()
    src, metric = report.get("source", {}), report.get("metric", {})
    task_type = hub_task(report, st)
    dataset = str(src.get("dataset") or src.get("data") or "unnamed calibration data").split(":")[0]
    evals = [
        EvalResult(task_type=task_type, dataset_type=dataset, dataset_name=dataset,
                   dataset_split="held-out", metric_type=str(k),
                   metric_name=f"{k} (compressed vs original)", metric_value=float(v))
        for k, v in sorted((metric.get("compressed") or {}).items()) if isinstance(v, (int, float))
    ]
    base = base_model(report)
    extra = {"base_model_relation": relation(report)} if base else {}
    data = ModelCardData(
        base_model=base, library_name=library_name(report, d), license=src.get("license"),
        tags=["bmr-compress", "bayesian-model-reduction", "pruning", "onnx"]
        + (["sentence-transformers", "int8"] if st else []),
        pipeline_tag=task_type if task_type != "other" else None, datasets=None,
        model_name=repo_id.split("/")[-1], eval_results=evals or None, **extra,
    )
    body = _body(report, repo_id, d, st, base, with_posterior)
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")
    return str(card)


def _body(report: dict[str, Any], repo_id: str, d: Path | None, st: bool, base: str | None,
          with_posterior: bool) -> str:
    src, p, m = report.get("source", {}), report.get("parameters", {}), report.get("metric", {})
    name = m.get("name", "metric")
    source = base or (src.get("id") if not is_local(src.get("id", "")) else "a local checkpoint")
    rev = f" @ `{src['revision']}`" if src.get("revision") and not is_local(src["revision"]) else ""
    lines = [f"# {repo_id.split('/')[-1]}", "",
             f"Made with bmr-compress {report.get('tool', {}).get('version', '?')} from `{source}`{rev}.",
             f"Decision rule: {decision_rule(report)}. {removal_sentence(report)}", ""]
    if st:
        lines += [f"Sentence embeddings: {(report.get('sentence_transformers') or {}).get('pipeline', 'pooling as the source')}.", ""]
    lines += ["## Result", "", "| | original | compressed |", "|---|---|---|",
              f"| parameters | {p.get('original', 0):,} | {p.get('compressed', 0):,} |"]
    sizes = report.get("onnx_sizes", {}).get("onnx_file_bytes", {})
    if sizes:
        lines.append(f"| ONNX bytes | {sizes.get('original', 0):,} | {sizes.get('compressed', 0):,} |")
    lines.append(f"| {name} vs original | 1 | {_num((m.get('compressed') or {}).get(name))} |")
    q = report.get("int8") or {}
    if q:
        qm = (q.get("metric") or {}).get("gate")
        lines.append(f"| int8 ONNX bytes / {name} | | {q.get('file_bytes', 0):,} / {_num(qm)} |")
    lines += _mixed_row(report.get("mixed_precision"))
    lines += ["", f"Held-out data: {src.get('heldout') or src.get('data') or 'not stated'}.", ""]
    lines += _retention_lines(report.get("recommended"))
    lines += _mixed_lines(report.get("mixed_precision"), repo_id)
    lines += _latency_lines(report.get("latency", {}))
    lines += ["## Settings", "", "```json", json.dumps(_scrub(report.get("settings", {})), indent=2,
                                                        sort_keys=True), "```", ""]
    lines += _usage(report, repo_id, d, st)
    if not with_posterior:
        lines += ["The posterior (`posterior.safetensors`, needed only to re-plan with "
                  "`bmr-compress reduce`) is not uploaded.", ""]
    return "\n".join(lines)


def _retention_lines(rec: dict[str, Any] | None) -> list[str]:
    """The recommended artefact in task terms (measured on the CPU that compressed)."""
    if not rec:
        return []
    ret = rec.get("retention") or {}
    feats = ", ".join(rec.get("cpu_features") or []) or "no int8 dot-product features recorded"
    out = ["## Task retention", "",
           f"Recommended file: `{rec.get('file') or rec['label']}` ({rec['label']}): "
           f"{rec['speedup']:.2f}x faster than the original and "
           f"{100 * ret.get('heldout', float('nan')):.1f} % of its {rec['metric']} on held-out "
           f"text, measured on {rec.get('cpu') or 'the compressing CPU'} ({feats}). int8 speed "
           "depends on the CPU: `bmr-compress bench` re-times every artefact on yours.", ""]
    d = rec.get("dense_int8")
    if d:
        out += [f"For comparison, the original + int8 ({d['label']}): {d['speedup']:.2f}x at "
                f"{100 * (d.get('retention') or {}).get('heldout', float('nan')):.1f} %.", ""]
    return out


def _mixed_row(mp: dict[str, Any] | None) -> list[str]:
    if not mp or not mp.get("file"):
        return []
    ret = (mp.get("retention") or {}).get("heldout")
    return [f"| mixed-precision ONNX bytes / {mp.get('metric')} retention (held-out) | | "
            f"{mp.get('size_bytes', 0):,} / {_num(ret)} |"]


def _mixed_lines(mp: dict[str, Any] | None, repo_id: str) -> list[str]:
    """model.mixed.onnx: what it is and how to load it (--mixed-precision)."""
    if not mp or not mp.get("file"):
        return []
    ret = mp.get("retention") or {}
    speed = f", {mp['speedup']:.2f}x the original's speed" if mp.get("speedup") else ""
    return ["## Mixed precision", "",
            f"`{mp['file']}`: every weight matrix (the embedding table included) on the grid "
            f"Bayesian model reduction chose for it ({mp.get('bits_per_weight', 0):.2f} bits per "
            f"weight on average), {mp.get('times_smaller', 0):.2f}x smaller than the original's "
            f"ONNX{speed}, {100 * ret.get('heldout', float('nan')):.1f} % of its "
            f"{mp.get('metric')} on held-out data. onnxruntime CPU runs it (contrib ops "
            "MatMulNBits, GatherBlockQuantized):", "", "```python", "import onnxruntime as ort",
            "from huggingface_hub import hf_hub_download", "",
            f'path = hf_hub_download("{repo_id}", "{mp["file"]}")',
            'session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])', "```", ""]


def _latency_lines(lat: dict[str, Any]) -> list[str]:
    if "original" not in lat:
        return []
    names = [k for k in ("original", "compressed", "int8", "mixed") if k in lat]
    rows = lat.get("grid") or [{"batch": lat.get("batch"), "threads": lat.get("threads"),
                                **{k: lat[k] for k in names}}]
    out = [f"onnxruntime CPU latency, median ms (sequence {lat.get('seq')}, all models timed in "
           "the same run, interleaved):", "", "| batch | threads | " + " | ".join(names) + " |",
           "|---|---|" + "---|" * len(names)]
    out += [f"| {r['batch']} | {r['threads']} | " + " | ".join(f"{r[k]['median_ms']:.3f}" for k in names)
            + " |" for r in rows]
    return out + [""]


def _num(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, (int, float)) else "n/a"


def _usage(report: dict[str, Any], repo_id: str, d: Path | None, st: bool) -> list[str]:
    from bmr_compress.io.st_pipeline import ST_INT8, ST_ONNX, read_st_pipeline

    pipe = read_st_pipeline(d) if st else None
    if pipe is None:
        return _plain_usage(report, repo_id)
    int8 = d is not None and (d / ST_INT8).is_file()
    texts = '["A first sentence.", "Another one."]'
    out = ["## Use with sentence-transformers", "", "```python",
           "from sentence_transformers import SentenceTransformer", "",
           f'model = SentenceTransformer("{repo_id}")',
           f"embeddings = model.encode({texts})", "print(embeddings.shape)", "```", "",
           "On CPU with onnxruntime through the ONNX backend "
           "(`pip install \"sentence-transformers[onnx]\"`):", "", "```python",
           "from sentence_transformers import SentenceTransformer", "",
           f'model = SentenceTransformer("{repo_id}", backend="onnx")  # {ST_ONNX}']
    if int8:
        out += ["# the int8 model (8-bit weights in blocks of up to 128 input channels):",
                f'model = SentenceTransformer("{repo_id}", backend="onnx", '
                f'model_kwargs={{"file_name": "{ST_INT8}"}})']
    out += [f"embeddings = model.encode({texts})", "print(embeddings.shape)", "```", ""]
    if not pipe.replayable:
        return out
    pool = {"cls": "embeddings = hidden[:, 0]",
            "max": "embeddings = np.where(mask > 0, hidden, -1e9).max(axis=1)  # max pooling",
            "lasttoken": "embeddings = hidden[np.arange(len(hidden)), enc[\"attention_mask\"].sum(1) - 1]",
            "mean": "embeddings = (hidden * mask).sum(1) / np.clip(mask.sum(1), 1e-9, None)  # mean pooling",
            "mean_sqrt_len": "embeddings = (hidden * mask).sum(1) / np.sqrt(np.clip(mask.sum(1), 1e-9, None))"}
    out += ["Plain onnxruntime, no PyTorch: tokenizer, the model, then the folder's "
            f"{pipe.describe()}:", "", "```python", "import numpy as np",
            "import onnxruntime as ort", "from huggingface_hub import snapshot_download",
            "from transformers import AutoTokenizer", "",
            f'path = snapshot_download("{repo_id}")',
            "tokenizer = AutoTokenizer.from_pretrained(path)",
            f'session = ort.InferenceSession(f"{{path}}/{ST_ONNX}", providers=["CPUExecutionProvider"])',
            f"enc = tokenizer({texts}, padding=True, truncation=True, "
            f"max_length={pipe.max_seq_length or 512}, return_tensors=\"np\")",
            "hidden = session.run(None, {i.name: enc[i.name] for i in session.get_inputs()})[0]",
            'mask = enc["attention_mask"][..., None].astype(np.float32)', pool[pipe.pooling]]
    if pipe.normalize:
        out.append("embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)  # L2 normalisation")
    return out + ["print(embeddings.shape)", "```", ""]


def _plain_usage(report: dict[str, Any], repo_id: str) -> list[str]:
    onnx_info = report.get("onnx", {})
    out_name = onnx_info.get("output_name", "last_hidden_state")
    feed = _feed_code(list(onnx_info.get("input_names", ["input_ids", "attention_mask"])))
    return ["## Use on CPU with onnxruntime", "", "```python", "import numpy as np",
            "import onnxruntime as ort", "from huggingface_hub import hf_hub_download", "",
            f'path = hf_hub_download("{repo_id}", "model.onnx")',
            'session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])',
            f"feed = {feed}", f'{out_name} = session.run(["{out_name}"], feed)[0]',
            f"print({out_name}.shape)", "```", ""]


def _feed_code(inputs: list[str]) -> str:
    parts = []
    for name in inputs:
        if name == "attention_mask":
            parts.append('"attention_mask": np.ones((1, 8), dtype=np.int64)')
        elif name in ("input_ids", "token_type_ids"):
            fill = "np.arange(1, 9)[None]" if name == "input_ids" else "np.zeros((1, 8))"
            parts.append(f'"{name}": {fill}.astype(np.int64)')
        else:
            parts.append(f'"{name}": np.random.rand(1, *session.get_inputs()[0].shape[1:]).astype(np.float32)')
    return "{" + ", ".join(parts) + "}"


def source_facts(snapshot_dir: str | Path | None, source_id: str, hub_id: str | None = None
                 ) -> dict[str, Any]:
    """`base_model` and `license` of a source: the recipe's hub id, a hub-id SOURCE, or the
    hub cache folder name (models--org--name); the licence from the source's own card front
    matter (README.md) or config.json."""
    facts: dict[str, Any] = {"base_model": None, "license": None}
    if hub_id:
        facts["base_model"] = hub_id
    elif "/" in source_id and not is_local(source_id) and not source_id.startswith("zoo:"):
        facts["base_model"] = source_id.split("@")[0]
    d = Path(snapshot_dir) if snapshot_dir is not None else None
    if d is not None and facts["base_model"] is None:
        for part in d.parts:
            if part.startswith("models--") and part.count("--") >= 2:
                facts["base_model"] = part[len("models--"):].replace("--", "/", 1)
    if d is not None and (d / "README.md").is_file():
        text = d / "README.md"
        try:
            if not text.read_text(encoding="utf-8", errors="replace").lstrip().startswith("---"):
                raise ValueError("no front matter")  # huggingface_hub would warn about it
            from huggingface_hub import ModelCard

            meta = ModelCard.load(str(text), ignore_metadata_errors=True).data.to_dict()
            facts["license"] = meta.get("license")
        except Exception:  # noqa: BLE001 - a malformed source card just gives no licence
            pass
    if d is not None and facts["license"] is None and (d / "config.json").is_file():
        try:
            facts["license"] = json.loads((d / "config.json").read_text()).get("license")
        except (json.JSONDecodeError, OSError, AttributeError):
            pass
    return facts

"""Publish a validated output directory to the Hugging Face hub, with a generated model card.

`push_to_hub` refuses (ValidationFailed, exit code 1) a directory whose report.json is missing
or says validation did not pass, whose files differ from the hashes report.json recorded when
they were validated, or whose manifest disagrees with its weights. `dry_run=True` touches neither the network nor the directory:
it returns (and logs) the file list and the card.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bmr_compress.errors import InputError, ValidationFailed

log = logging.getLogger(__name__)

CARD_NAME = "README.md"
_HUB_TASK = {"embedding": "feature-extraction", "causal_lm": "text-generation",
             "regression": "tabular-regression"}


@dataclass(frozen=True)
class PushResult:
    repo_id: str
    revision: str | None
    files: tuple[str, ...]  # paths relative to the directory, README.md included
    card: str
    dry_run: bool
    url: str | None = None


def load_validated_report(directory: str | Path) -> dict[str, Any]:
    """report.json of `directory`; ValidationFailed unless it exists and validation passed."""
    path = Path(directory) / "report.json"
    if not path.is_file():
        raise ValidationFailed(f"refusing to push {directory}: no report.json (run validation first)")
    try:
        report = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValidationFailed(f"refusing to push {directory}: report.json is not valid JSON ({e})") from None
    if not (isinstance(report, dict) and report.get("validation", {}).get("passed") is True):
        raise ValidationFailed(f"refusing to push {directory}: report.json says validation did not pass")
    return report


def _hub_task(report: dict[str, Any]) -> str:
    task = report.get("metric", {}).get("task") or report.get("source", {}).get("task", "")
    if task == "classification":
        inputs = report.get("onnx", {}).get("input_names", [])
        return "image-classification" if "pixel_values" in inputs else "text-classification"
    return _HUB_TASK.get(task, "other")


def _library_name(report: dict[str, Any], directory: Path | None) -> str:
    """`transformers` when the directory's config.json is a transformers config, else `onnx`."""
    if report.get("source", {}).get("library_name"):
        return str(report["source"]["library_name"])
    cfg = directory / "config.json" if directory is not None else None
    if cfg is not None and cfg.is_file():
        try:
            if "model_type" in json.loads(cfg.read_text()):
                return "transformers"
        except json.JSONDecodeError:
            pass
    return "onnx"


def build_model_card(report: dict[str, Any], repo_id: str, directory: str | Path | None = None) -> str:
    """Model card text: YAML front matter (base_model, tags, library_name, license, model-index)
    and a body with method, settings, sizes, latency and an onnxruntime snippet."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    src, metric = report.get("source", {}), report.get("metric", {})
    task_type = _hub_task(report)
    dataset = src.get("dataset") or "held-out"
    evals = [
        EvalResult(task_type=task_type, dataset_type=str(dataset), dataset_name=str(dataset),
                   dataset_split=src.get("heldout_split", "held-out"), metric_type=str(k),
                   metric_name=f"{k} (compressed)", metric_value=float(v))
        for k, v in sorted((metric.get("compressed") or {}).items()) if isinstance(v, (int, float))
    ]
    base = src.get("id") if src.get("id") and "/" in str(src.get("id")) and not Path(str(src["id"])).exists() else None
    data = ModelCardData(
        base_model=base, library_name=_library_name(report, Path(directory) if directory else None),
        license=src.get("license"), tags=["bmr-compress", "bayesian-model-reduction", "pruning", "onnx"],
        pipeline_tag=task_type if task_type != "other" else None,
        model_name=repo_id.split("/")[-1], eval_results=evals or None,
    )
    card = ModelCard.from_template(data, template_str=_BODY, **_body_fields(report, repo_id))
    return str(card)


_BODY = """---
{{ card_data }}
---

# {{ title }}

Physically pruned with [bmr-compress](https://pypi.org/project/bmr-compress/) {{ tool_version }}
from `{{ source }}`{{ revision }}: units (FFN neurons, attention heads, filters) were removed
where Bayesian model reduction found that dropping them raises the model evidence (ΔlnZ ≥ 0).

## Result

| | original | compressed |
|---|---|---|
| parameters | {{ params_o }} | {{ params_c }} |
| ONNX bytes | {{ onnx_o }} | {{ onnx_c }} |
| {{ metric_name }} | {{ metric_o }} | {{ metric_c }} |
| ORT CPU median / p90 ms | {{ lat_o }} | {{ lat_c }} |

Latency: onnxruntime CPU, {{ lat_setup }}, both models timed in the same run, interleaved.
ONNX parity with PyTorch: max |error| {{ parity }}.

## Settings

```json
{{ settings }}
```

## Use on CPU with onnxruntime

```python
import numpy as np
import onnxruntime as ort
from huggingface_hub import hf_hub_download

path = hf_hub_download("{{ repo_id }}", "model.onnx")
session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
feed = {{ feed }}
{{ output_name }} = session.run(["{{ output_name }}"], feed)[0]
print({{ output_name }}.shape)
```
"""


def _feed_code(inputs: list[str]) -> str:
    parts = []
    for name in inputs:
        if name == "pixel_values":
            parts.append('"pixel_values": np.random.rand(1, *session.get_inputs()[0].shape[1:]).astype(np.float32)')
        elif name == "attention_mask":
            parts.append('"attention_mask": np.ones((1, 8), dtype=np.int64)')
        elif name in ("input_ids", "token_type_ids"):
            fill = "np.arange(1, 9)[None]" if name == "input_ids" else "np.zeros((1, 8))"
            parts.append(f'"{name}": {fill}.astype(np.int64)')
        else:
            parts.append(f'"{name}": np.random.rand(1, *session.get_inputs()[0].shape[1:]).astype(np.float32)')
    return "{" + ", ".join(parts) + "}"


def _body_fields(report: dict[str, Any], repo_id: str) -> dict[str, Any]:
    src, p, m = report.get("source", {}), report.get("parameters", {}), report.get("metric", {})
    sizes = report.get("onnx_sizes", {}).get("onnx_file_bytes", {})
    lat = report.get("latency", {})
    onnx_info = report.get("onnx", {})

    def lat_s(k: str) -> str:
        return f"{lat[k]['median_ms']:.3f} / {lat[k]['p90_ms']:.3f}" if k in lat else "n/a"

    name = m.get("name", "metric")
    return {
        "title": repo_id.split("/")[-1], "repo_id": repo_id,
        "tool_version": report.get("tool", {}).get("version", "?"),
        "source": src.get("id", "?"), "revision": f" @ `{src['revision']}`" if src.get("revision") else "",
        "params_o": f"{p.get('original', 0):,}", "params_c": f"{p.get('compressed', 0):,}",
        "onnx_o": f"{sizes.get('original', 'n/a'):,}" if sizes else "n/a",
        "onnx_c": f"{sizes.get('compressed', 'n/a'):,}" if sizes else "n/a",
        "metric_name": name, "metric_o": _num((m.get("original") or {}).get(name)),
        "metric_c": _num((m.get("compressed") or {}).get(name)),
        "lat_o": lat_s("original"), "lat_c": lat_s("compressed"),
        "lat_setup": (f"{lat.get('threads')} thread(s), batch {lat.get('batch')}, sequence {lat.get('seq')}"
                      if lat else "not measured"),
        "parity": _num(report.get("parity", {}).get("max_abs_error")),
        "settings": json.dumps(report.get("settings", {}), indent=2, sort_keys=True),
        "feed": _feed_code(list(onnx_info.get("input_names", ["input_ids", "attention_mask"]))),
        "output_name": onnx_info.get("output_name", "last_hidden_state"),
    }


def _num(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, (int, float)) else "n/a"


def push_to_hub(
    directory: str | Path,
    repo_id: str,
    *,
    revision: str | None = None,
    private: bool = False,
    dry_run: bool = False,
    token: str | None = None,
) -> PushResult:
    """Create `repo_id` (if needed) and upload `directory` with a generated README.md card."""
    d = Path(directory)
    if not d.is_dir():
        raise InputError(f"no output directory at {d}")
    report = load_validated_report(d)
    from bmr_compress.io.checks import check_artifacts
    from bmr_compress.io.integrity import (
        check_integrity, check_manifest_consistent, check_report_consistent,
    )

    check_artifacts(d)  # the files themselves: sound, readable, no NaN/Inf (else nothing is pushed)
    check_report_consistent(d, report)  # `passed` agrees with every check it summarises
    check_integrity(d, report)  # exactly the files that were validated, unchanged
    check_manifest_consistent(d)  # kept units, widths and shapes agree with the weights
    card = build_model_card(report, repo_id, d)
    files = sorted({str(p.relative_to(d)) for p in d.rglob("*") if p.is_file() and not p.name.startswith(".")}
                   | {CARD_NAME})
    if dry_run:
        log.info("dry run: would upload %d files to %s:\n%s", len(files), repo_id, "\n".join(files))
        return PushResult(repo_id, revision, tuple(files), card, dry_run=True)
    from huggingface_hub import HfApi

    (d / CARD_NAME).write_text(card, encoding="utf-8")
    api = HfApi(token=token)
    url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    if revision:
        api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
    api.upload_folder(folder_path=str(d), repo_id=repo_id, repo_type="model", revision=revision,
                      commit_message="Upload model compressed with bmr-compress")
    log.info("pushed %s to %s", d, url)
    return PushResult(repo_id, revision, tuple(files), card, dry_run=False, url=str(url))

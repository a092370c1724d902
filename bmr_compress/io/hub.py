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


@dataclass(frozen=True)
class PushResult:
    repo_id: str
    revision: str | None
    files: tuple[str, ...]  # paths relative to the directory, README.md included
    card: str
    dry_run: bool
    url: str | None = None


CANDIDATES = "candidates"  # not uploaded: the artefacts `bench` chooses among, the original's ONNX

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


def build_model_card(report: dict[str, Any], repo_id: str, directory: str | Path | None = None,
                     *, with_posterior: bool = False) -> str:
    """Model card text (io/card.py): YAML front matter (base_model + relation, licence,
    library_name, pipeline_tag, model-index) and a body with the decision rule, sizes,
    latency and usage snippets for the files present."""
    from bmr_compress.io.card import build_model_card as build

    return build(report, repo_id, directory, with_posterior=with_posterior)


POSTERIOR = "posterior.safetensors"


def push_to_hub(
    directory: str | Path,
    repo_id: str,
    *,
    revision: str | None = None,
    private: bool = False,
    dry_run: bool = False,
    token: str | None = None,
    with_posterior: bool = False,
) -> PushResult:
    """Create `repo_id` (if needed) and upload `directory` with a generated README.md card.

    `posterior.safetensors` (the size of the model again; only `reduce` needs it) is uploaded
    only with `with_posterior=True`."""
    d = Path(directory)
    if not d.is_dir():
        raise InputError(f"no output directory at {d}")
    report = load_validated_report(d)
    from bmr_compress.io.checks import check_artifacts
    from bmr_compress.io.integrity import (
        check_integrity, check_manifest_consistent, check_report_consistent, check_signature,
    )

    check_artifacts(d)  # the files themselves: sound, readable, no NaN/Inf (else nothing is pushed)
    check_report_consistent(d, report)  # `passed` agrees with every check it summarises
    check_integrity(d, report)  # exactly the files that were validated, unchanged
    check_signature(d, report)  # written as it stands by this user's real validation
    check_manifest_consistent(d)  # kept units, widths and shapes agree with the weights
    card = build_model_card(report, repo_id, d, with_posterior=with_posterior)
    from bmr_compress.io.integrity import LOCAL_DIRS

    # bench/ holds timings of the deploy machines this copy ran on: theirs, not the model's;
    # candidates/ (the original's ONNX and the other artefacts `bench` may choose) stays local
    skip = LOCAL_DIRS | {CANDIDATES}
    ignore = ([] if with_posterior else [POSTERIOR]) + [f"{x}/*" for x in sorted(skip)]
    files = sorted({str(p.relative_to(d)) for p in d.rglob("*") if p.is_file() and not p.name.startswith(".")
                    and str(p.relative_to(d)) not in ignore
                    and p.relative_to(d).parts[0] not in skip} | {CARD_NAME})
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
                      commit_message="Upload model compressed with bmr-compress",
                      ignore_patterns=ignore)
    log.info("pushed %s to %s", d, url)
    return PushResult(repo_id, revision, tuple(files), card, dry_run=False, url=str(url))

"""`bmr-compress compress`: the whole pipeline (bmr_compress.pipeline.compress)."""

from __future__ import annotations

from typing import Any

import click

from bmr_compress.cli.options import (
    common_options, compress_config, data_options, export_options, fit_options, out_options, plan_options, source_options,
)
from bmr_compress.cli.runtime import emit, run_command

EPILOG = """\b
Examples:
  bmr-compress compress zoo:mlp-digits --out out/mlp
  bmr-compress compress zoo:all-minilm-l6-v2 --out out/minilm --steps 100 --round-to 8
  bmr-compress compress openai-community/gpt2@607a30d --out out/gpt2 --size-budget 0.7
  bmr-compress compress weights.safetensors --recipe lenet5-digits --out out/lenet --int8 --json
"""


def human_summary(result: Any) -> str:
    from bmr_compress.pipeline import format_summary

    return (f"wrote {result.out} (validation passed)\n"
            + format_summary({**result.summary, "out": str(result.out)}))


@click.command("compress", epilog=EPILOG)
@source_options
@out_options
@data_options
@fit_options
@plan_options
@export_options
@click.option("--compact-zeros", is_flag=True,
              help="Store mostly-zero tensors sparsely in model.safetensors (restored on load).")
@common_options
@run_command
def command(as_json: bool, debug: bool, verbose: bool, **opts: Any) -> None:
    """Compress SOURCE into --out: model.safetensors, config.json, model.onnx,
    bmr_manifest.json and report.json/.md (the variational path also writes
    posterior.safetensors, which `reduce` re-plans from).

    --overwrite replaces only a previous bmr-compress output (never a directory holding
    other files, the current directory, its parents or your home).

    SOURCE is a hub id (org/name[@rev]), a local hub snapshot directory, zoo:RECIPE,
    or a .safetensors / .pt state-dict file together with --recipe.
    """
    from bmr_compress import pipeline

    config = compress_config(opts, what="compress")
    result = pipeline.compress(config, str(opts["out"]), overwrite=bool(opts["overwrite"]))
    if result is not None:  # None: a torchrun rank other than 0 (rank 0 reports)
        emit(result, as_json, human_summary)

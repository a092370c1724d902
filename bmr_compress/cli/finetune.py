"""`bmr-compress finetune`: fit the variational posterior only (pipeline.finetune_only)."""

from __future__ import annotations

from typing import Any

import click

from bmr_compress.cli.options import (
    common_options, compress_config, data_options, fit_options, out_options, source_options,
)
from bmr_compress.cli.runtime import emit, run_command

EPILOG = """\b
Examples:
  bmr-compress finetune zoo:mlp-digits --out fit/mlp --steps 300
  bmr-compress finetune zoo:all-minilm-l6-v2 --out fit/minilm --gates bmrs_n --json
Then: bmr-compress reduce fit/mlp --out out/mlp --size-budget 0.5
"""


@click.command("finetune", epilog=EPILOG)
@source_options
@out_options
@data_options
@fit_options
@common_options
@run_command
def command(as_json: bool, debug: bool, verbose: bool, **opts: Any) -> None:
    """Wrap SOURCE in a Gaussian posterior, fine-tune it briefly and write
    posterior.safetensors (+ the settings needed to reload the source) into --out."""
    from bmr_compress.pipeline import finetune_only

    config = compress_config(opts, what="finetune")
    emit(finetune_only(config, str(opts["out"]), overwrite=bool(opts["overwrite"])), as_json)

"""`bmr-compress reduce`: re-plan and cut from a saved posterior, no refit (pipeline.reduce)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from bmr_compress.cli.options import (
    common_options, export_options, out_options, plan_options, reload_options,
)
from bmr_compress.cli.runtime import emit, run_command

EPILOG = """\b
Examples:
  bmr-compress reduce out/mlp --out out/mlp-half --size-budget 0.5 --overwrite
  bmr-compress reduce fit/minilm --out out/minilm-r16 --round-to 16 --json
  bmr-compress reduce fit/mine --original ./my-snapshot --out out/mine-half --size-budget 0.5
A local source path recorded in POSTERIOR_DIR is used only with --original or
--use-recorded-source; --trust-remote-code / --allow-pickle come from the command line only.
"""


@click.command("reduce", epilog=EPILOG)
@click.argument("posterior_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@out_options
@plan_options
@export_options
@reload_options
@common_options
@run_command
def command(posterior_dir: Path, as_json: bool, debug: bool, verbose: bool, **opts: Any) -> None:
    """Re-plan from POSTERIOR_DIR/posterior.safetensors (written by `compress` or `finetune`)
    with new planning options, cut, export and validate into --out, without refitting."""
    from bmr_compress.cli.compress import human_summary
    from bmr_compress.pipeline import reduce

    trust = {k: opts.pop(k) for k in ("original", "trust_remote_code", "allow_pickle",
                                      "use_recorded_source")}
    out, overwrite = str(opts.pop("out")), bool(opts.pop("overwrite"))
    result = reduce(posterior_dir, out, overwrite=overwrite, **trust, options=opts)
    emit(result, as_json, human_summary)

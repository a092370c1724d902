"""`bmr-compress validate`: validate an output directory on onnxruntime CPU (pipeline.validate_directory)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from bmr_compress.cli.options import common_options, reload_options
from bmr_compress.cli.runtime import emit, run_command

EPILOG = """\b
Examples:
  bmr-compress validate out/mlp
  bmr-compress validate out/minilm --json
  bmr-compress validate out/mine --original ./my-snapshot
Settings such as --trust-remote-code are taken from the command line only, never from
DIRECTORY; a local source path recorded there is used only with --original or
--use-recorded-source. Exit code 1 when a check fails.
"""


@click.command("validate", epilog=EPILOG)
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--data", metavar="SPEC", help="Held-out data to measure the task metric on.")
@reload_options
@common_options
@run_command
def command(directory: Path, data: str | None, as_json: bool, debug: bool, verbose: bool,
            **reload: Any) -> None:
    """Re-run the checks on DIRECTORY: ONNX checker, ORT parity at other shapes, task metric,
    sizes and latency. Raises exit code 1 if any check fails."""
    from bmr_compress.io.checks import check_artifacts
    from bmr_compress.pipeline import validate_directory

    check_artifacts(directory)  # unreadable files: exit 2 naming the file; NaN/Inf: exit 1
    emit(validate_directory(directory, data=data, **reload), as_json)

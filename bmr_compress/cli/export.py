"""`bmr-compress export`: (re-)export a compressed directory to ONNX (pipeline.export_directory)."""

from __future__ import annotations

from pathlib import Path

import click

from bmr_compress.cli.options import common_options
from bmr_compress.cli.runtime import emit, run_command

EPILOG = """\b
Examples:
  bmr-compress export out/mlp --int8
  bmr-compress export out/minilm --compact-zeros --json
The rewritten files are not yet validated: run `bmr-compress validate DIRECTORY` before `push`.
"""


@click.command("export", epilog=EPILOG)
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--int8", is_flag=True, help="Also write model.int8.onnx (8-bit weights, see export/quantize.py).")
@click.option("--compact-zeros", is_flag=True, help="Store mostly-zero tensors sparsely.")
@common_options
@run_command
def command(directory: Path, int8: bool, compact_zeros: bool, as_json: bool, debug: bool, verbose: bool) -> None:
    """Reload DIRECTORY with the project's own loader and write model.onnx (+ int8) into it,
    each checked against onnxruntime."""
    from bmr_compress.io.checks import check_artifacts
    from bmr_compress.pipeline import export_directory

    check_artifacts(directory, onnx=False)  # model.onnx is rewritten, the rest must be sound
    emit(export_directory(directory, int8=int8, compact_zeros=compact_zeros), as_json)

"""`bmr-compress zoo list|show|train`: the shipped model-zoo recipes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from bmr_compress.cli.options import common_options
from bmr_compress.cli.runtime import emit, run_command

EPILOG = """\b
Examples:
  bmr-compress zoo list
  bmr-compress zoo show vit-digits --json
  bmr-compress zoo train mlp-digits            # -> ~/.cache/bmr-compress/zoo/mlp-digits
  bmr-compress zoo train lenet5-digits --out ckpt/lenet5 --epochs 5
"""


@click.group("zoo", epilog=EPILOG)
def command() -> None:
    """List, show and train the model-zoo recipes (model_zoo/*.toml, shipped with the tool)."""


def _source_str(r: object) -> str:
    s = r.source  # type: ignore[attr-defined]
    if s.zoo:
        return f"zoo architecture {s.zoo}"
    if s.package:
        return f"package {s.package} ({s.hub}@{s.revision})" if s.hub else f"package {s.package}"
    if s.split_zip:
        return f"split zip in {len(s.split_zip)} packages (bmr-compress[{s.extra}])"
    return f"{s.hub}@{s.revision}"


@command.command("list", epilog="Example:\n\n  bmr-compress zoo list --json")
@common_options
@run_command
def list_cmd(as_json: bool, debug: bool, verbose: bool) -> None:
    """List the recipes with their task and source."""
    from bmr_compress.io.recipes import load_recipe, recipe_names
    from bmr_compress.zoo.train import zoo_cache_dir

    rows = []
    for name in recipe_names():
        r = load_recipe(name)
        trained = (zoo_cache_dir() / name / "model.safetensors").is_file() if r.source.zoo else None
        rows.append({"name": name, "task": r.task, "source": _source_str(r), "trained": trained})
    emit(rows, as_json, lambda rs: "\n".join(
        f"{x['name']:<24} {x['task']:<15} {x['source']}" + ("" if x["trained"] is None else
                                                            " [trained]" if x["trained"] else " [not trained]")
        for x in rs))


@command.command("show", epilog="Example:\n\n  bmr-compress zoo show gpt2")
@click.argument("name")
@common_options
@run_command
def show_cmd(name: str, as_json: bool, debug: bool, verbose: bool) -> None:
    """Print recipe NAME (a shipped recipe name or a .toml path), as parsed."""
    from bmr_compress.io.recipes import load_recipe
    from bmr_compress.pipeline.config import from_recipe

    recipe = load_recipe(name)
    from_recipe(recipe.settings, recipe.path)  # its [settings] tables are read strictly too
    emit(dataclasses.asdict(recipe), as_json)


@command.command("train", epilog="Examples:\n\n  bmr-compress zoo train vit-digits\n\n"
                                 "  bmr-compress zoo train mlp-digits --out ckpt/mlp --overwrite")
@click.argument("name")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Checkpoint directory [default: the zoo cache, $BMR_COMPRESS_CACHE/zoo/NAME].")
@click.option("--overwrite", is_flag=True, help="Replace an existing checkpoint.")
@click.option("--epochs", type=click.IntRange(1), help="Override the recipe's [train] epochs.")
@click.option("--seed", type=int, help="Override the recipe's [train] seed.")
@common_options
@run_command
def train_cmd(name: str, out: Path | None, overwrite: bool, epochs: int | None, seed: int | None,
              as_json: bool, debug: bool, verbose: bool) -> None:
    """Train zoo recipe NAME's seed model on 8x8 digits and save it in hub layout."""
    from bmr_compress.zoo.train import train_recipe

    result = train_recipe(name, out, overwrite=overwrite, epochs=epochs, seed=seed)
    emit(result, as_json, lambda x: f"trained {name}: held-out accuracy {x.heldout_accuracy:.4f} "
                                    f"({x.steps} steps, {x.seconds:.1f} s) -> {x.directory}")

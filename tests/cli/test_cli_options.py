"""Options shared by several commands are declared once and say what the code does."""

from __future__ import annotations

import click

from bmr_compress.cli.compress import command as compress_command
from bmr_compress.cli.reduce import command as reduce_command


def _option(command: click.Command, name: str) -> click.Option:
    found = [p for p in command.params if isinstance(p, click.Option) and name in p.opts]
    assert len(found) == 1, (command.name, name, found)
    return found[0]


def test_export_options_are_shared_by_compress_and_reduce() -> None:
    """--int8, --int8-scheme, --max-quality-loss and --candidates: one declaration, the
    config's defaults stated in the help."""
    from bmr_compress.export.quantize import SCHEMES
    from bmr_compress.pipeline.config import ExportConfig

    for name in ("--int8", "--int8-scheme", "--max-quality-loss", "--candidates"):
        a, b = (_option(c, name) for c in (compress_command, reduce_command))
        assert a.help == b.help and a.default is None and b.default is None
    a = _option(compress_command, "--int8-scheme")
    assert sorted(a.type.choices) == sorted(["auto", *SCHEMES])
    assert f"[default: {ExportConfig().int8_scheme}]" in a.help
    q = _option(compress_command, "--max-quality-loss")
    assert f"[default: {ExportConfig().max_quality_loss:g}" in q.help


def test_tolerance_help_states_the_default_of_every_task() -> None:
    import re

    from bmr_compress.pipeline.config import DEFAULT_TOLERANCE

    words = {"embedding": "embeddings", "classification": "classification",
             "causal_lm": "causal LM", "regression": "regression"}
    assert set(DEFAULT_TOLERANCE) == set(words)
    text = " ".join(_option(compress_command, "--tolerance").help.split())
    stated = re.search(r"\[default: ([^\]]*)\]", text).group(1)
    for task, value in DEFAULT_TOLERANCE.items():
        # "<value> for <task>" or "<value> for <other task> and <task>"
        assert re.search(rf"{value:g} for (?:[\w ]+ and )?{words[task]}\b", stated), (task, stated)


def test_tolerance_help_states_the_real_defaults() -> None:
    """--tolerance's help names DEFAULT_TOLERANCE's value for every task (the help is
    written out so that --help imports no pipeline module)."""
    from bmr_compress.pipeline.config import DEFAULT_TOLERANCE

    words = {"embedding": "embeddings", "classification": "classification",
             "causal_lm": "causal LM", "regression": "regression"}
    text = " ".join(_option(compress_command, "--tolerance").help.split())
    default = text[text.index("[default:"):]
    for task, value in DEFAULT_TOLERANCE.items():
        said = [part for part in default.split(",") if words[task] in part]
        assert said and f"{value:g}" in said[0].split(" for ")[0], (task, value, default)

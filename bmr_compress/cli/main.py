"""`bmr-compress` entry point: a click group whose commands load lazily (no torch at --help).

Each command lives in its own module ``bmr_compress.cli.<name>`` and exposes ``command``;
the module is imported only when that command runs or prints its own help.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

# command name -> (module, one-line help shown in `bmr-compress --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "compress": ("bmr_compress.cli.compress", "Compress a checkpoint end to end (load, fit, cut, export, validate)."),
    "finetune": ("bmr_compress.cli.finetune", "Fit the variational posterior only; write posterior.safetensors."),
    "reduce": ("bmr_compress.cli.reduce", "Re-plan and cut from a saved posterior without refitting."),
    "export": ("bmr_compress.cli.export", "Export a compressed directory to ONNX (optionally int8)."),
    "validate": ("bmr_compress.cli.validate", "Validate an output directory on onnxruntime CPU."),
    "push": ("bmr_compress.cli.push", "Upload a validated output directory to the Hugging Face hub."),
    "inspect": ("bmr_compress.cli.inspect", "Show what the tool sees in a checkpoint: family, units, coverage."),
    "zoo": ("bmr_compress.cli.zoo", "List, show and train the model-zoo recipes."),
    "bench": ("bmr_compress.cli.bench", "Time an output's artefacts on this CPU; name the one to deploy here."),
}


class LazyGroup(click.Group):
    """click.Group that imports a command's module on first use."""

    def __init__(self, *args: Any, lazy: dict[str, tuple[str, str]], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            module = importlib.import_module(self.lazy[cmd_name][0])
            cmd = module.command
            if not isinstance(cmd, click.Command):  # pragma: no cover - programming error
                raise TypeError(f"{module.__name__}.command is not a click command")
            return cmd
        return super().get_command(ctx, cmd_name)

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        """click's main, but a usage error is one line on stderr (exit 2), like every other error."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Exit as e:
            sys.exit(e.exit_code)
        except click.UsageError as e:
            hint = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
            click.echo(f"error: {e.format_message()}{hint}", err=True)
            sys.exit(e.exit_code)
        except click.ClickException as e:
            click.echo(f"error: {e.format_message()}", err=True)
            sys.exit(e.exit_code)
        except click.Abort as e:
            from bmr_compress.errors import Terminated

            if isinstance(e.__cause__ or e.__context__, Terminated):
                click.echo("terminated (SIGTERM): temporary files removed, outputs are complete or "
                           "untouched; a rerun resumes the fine-tune from its checkpoint", err=True)
                sys.exit(Terminated.exit_code)
            click.echo("aborted", err=True)
            sys.exit(130)
        sys.exit(rv if isinstance(rv, int) else 0)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # one-line help from the table, so the group's --help imports no command module
        rows = [(name, self.lazy[name][1]) for name in sorted(self.lazy)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _version() -> str:
    from bmr_compress import __version__

    return __version__


@click.group(
    cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]},
    epilog="""\b
Examples:
  bmr-compress zoo train mlp-digits
  bmr-compress compress zoo:mlp-digits --out out/mlp
  bmr-compress compress sentence-transformers/all-MiniLM-L6-v2@main --out out/minilm --data docstrings
  bmr-compress push out/mlp --repo-id me/mlp-digits-bmr --dry-run
  bmr-compress bench out/minilm      (on the deploy machine: the artefact to ship there)

Exit codes: 0 ok, 1 validation failed (nothing published), 2 bad input or usage,
130 Ctrl-C / 143 SIGTERM (temporary files removed).""",
)
@click.version_option(version=_version(), prog_name="bmr-compress")
def cli() -> None:
    """Make pretrained networks physically smaller and faster for CPU deployment,
    choosing what to remove by Bayesian model reduction."""


def main(argv: list[str] | None = None) -> None:
    """Console-script entry (pyproject: bmr-compress = bmr_compress.cli.main:main)."""
    cli.main(args=argv, prog_name="bmr-compress")


if __name__ == "__main__":  # pragma: no cover
    main()

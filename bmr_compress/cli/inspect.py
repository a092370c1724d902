"""`bmr-compress inspect`: what the tool sees in a checkpoint (family, prunable units, coverage)."""

from __future__ import annotations

from typing import Any

import click

from bmr_compress.cli.options import common_options, source_options
from bmr_compress.cli.runtime import emit, run_command

EPILOG = """\b
Examples:
  bmr-compress inspect zoo:all-minilm-l6-v2
  bmr-compress inspect ./my-snapshot --json
  bmr-compress inspect weights.safetensors --recipe mlp-digits
"""


def _human(info: dict[str, Any]) -> str:
    lines = [f"{info['source']}: {info['model_class']} (family {info['family']}, task {info['task']})",
             *([f"  {info['family_note']}"] if info.get("family_note") else []),
             f"  parameters: {info['parameters']:,}",
             f"  unit groups: {len(info['unit_groups'])} ({info['prunable_units']:,} prunable units: "
             + ", ".join(f"{k} x{v}" for k, v in info["unit_kinds"].items()) + ")"]
    for g in info["unit_groups"][:40]:
        lines.append(f"    {g['name']:<48} {g['kind']:<9} {g['units']}")
    if len(info["unit_groups"]) > 40:
        lines.append(f"    ... {len(info['unit_groups']) - 40} more (use --json)")
    out = info.get("output", {})
    if out:
        lines.append(f"  output: {out.get('describe')}")
    for kind, v in info.get("unit_kind_shares", {}).items():
        lines.append(f"  {kind:<9} units own {v['param_share']:6.1%} of the parameters, "
                     f"{v['mac_share']:6.1%} of the MACs"
                     + (" (overlapping the other kinds)" if v.get("overlaps_other_kinds") else ""))
    u = info.get("untouchable")
    if u:
        lines.append(f"  untouchable by structured removal: embeddings {u['embeddings']:,} parameters "
                     f"({u['embedding_share']:.1%}): {u['why']}")
    lines.append("  coverage: " + ", ".join(f"{k} {v}" for k, v in info["coverage"].items()))
    for k, v in list(info["skipped"].items())[:10]:
        lines.append(f"    {k}: {v}")
    return "\n".join(lines)


@click.command("inspect", epilog=EPILOG)
@source_options
@common_options
@run_command
def command(source: str, recipe: str | None, revision: str | None, trust_remote_code: bool,
            task: str | None, allow_pickle: bool, as_json: bool, debug: bool, verbose: bool) -> None:
    """Load SOURCE and report its family, task, prunable unit groups and posterior coverage."""
    from bmr_compress.pipeline.inspect import inspect_source
    from bmr_compress.pipeline.sources import resolve_source

    loaded = resolve_source(source, revision=revision, trust_remote_code=trust_remote_code,
                            recipe=recipe, task=task, allow_pickle=allow_pickle)
    emit(inspect_source(loaded), as_json, _human)

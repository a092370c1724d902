"""`bmr-compress push`: upload a validated output directory (bmr_compress.io.hub.push_to_hub)."""

from __future__ import annotations

from pathlib import Path

import click

from bmr_compress.cli.options import common_options
from bmr_compress.cli.runtime import emit, run_command

EPILOG = """\b
Examples:
  bmr-compress push out/mlp --repo-id me/mlp-digits-bmr --dry-run
  bmr-compress push out/minilm --repo-id me/minilm-bmr --revision v1 --private
  bmr-compress push out/mlp me/mlp-digits-bmr      (REPO_ID may also be positional)
"""


@click.command("push", epilog=EPILOG)
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.argument("repo_id", required=False)
@click.option("--repo-id", "repo_id_opt", metavar="NAME", help="Hub repo id (org/name).")
@click.option("--revision", help="Branch to upload to (created if missing).")
@click.option("--private", is_flag=True, help="Create the repo as private.")
@click.option("--dry-run", is_flag=True, help="Only list what would be uploaded and print the card.")
@click.option("--with-posterior", is_flag=True,
              help="Also upload posterior.safetensors (as large as the model; only needed to "
                   "re-plan with `bmr-compress reduce`).")
@common_options
@run_command
def command(directory: Path, repo_id: str | None, repo_id_opt: str | None, revision: str | None,
            private: bool, dry_run: bool, with_posterior: bool, as_json: bool, debug: bool, verbose: bool) -> None:
    """Push DIRECTORY (a validated `compress` output) to hub repo --repo-id with a model card.

    Refuses a directory whose report.json does not record a passed validation, is not signed
    by your bmr-compress (an HMAC with the per-user key in $BMR_COMPRESS_HOME or
    ~/.config/bmr-compress/seal.key, written by `compress` / `validate`: a hand-edited report
    fails), whose files differ from those that validation covered (sha256 in report.json),
    or whose manifest disagrees with its weights. `bmr-compress validate DIR` re-validates
    for real and signs again.
    """
    from bmr_compress.errors import InputError
    from bmr_compress.io.hub import push_to_hub
    from bmr_compress.io.sources import parse_hub_spec

    if repo_id and repo_id_opt and repo_id != repo_id_opt:
        raise InputError(f"two different repo ids given: {repo_id!r} and --repo-id {repo_id_opt!r}")
    if not (repo_id or repo_id_opt):
        raise InputError("no repo id: pass --repo-id NAME (org/name)")
    repo, _ = parse_hub_spec(repo_id or repo_id_opt)
    result = push_to_hub(directory, repo, revision=revision, private=private, dry_run=dry_run,
                         with_posterior=with_posterior)
    emit(result, as_json, lambda r: "\n".join(
        [f"{'would upload' if dry_run else 'uploaded'} {len(r.files)} files to {repo}"]
        + [f"  {f}" for f in r.files]
        + ([f"\nmodel card (README.md):\n{r.card}"] if dry_run else [])))

"""`ocp-bundler prune`: remove from a mirror the images no kept bundle needs (a dry run unless --yes)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import click

from bundler.cli.support import CONTEXT, command_body, common_options, emit_json, make_registries, registry_options


@click.command("prune", context_settings=CONTEXT)
@click.option("--registry", required=True, metavar="HOST[:PORT][/PREFIX]", help="The mirror, as given to unpack.")
@click.option("--prefix", default="", help="Repository prefix on the mirror, as given to unpack.")
@click.option(
    "--keep",
    "keep",
    multiple=True,
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="A bundle (directory or its bundle-manifest.json) whose images stay; repeat for each bundle still in use.",
)
@click.option(
    "--ledger",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The record of what unpack pushed into this registry. Default: "
    "$XDG_STATE_HOME/ocp-bundler/mirrors/<registry>.jsonl (~/.local/state/...).",
)
@click.option("--yes", "apply", is_flag=True, help="Delete. Without it, prune only lists what it would delete.")
@registry_options
@common_options
@command_body
def prune(
    registry: str,
    prefix: str,
    keep: Tuple[Path, ...],
    ledger: Optional[Path],
    apply: bool,
    authfile: Optional[Path],
    ca_file: Optional[Path],
    insecure: Tuple[str, ...],
    workers: int,
    timeout: float,
    retry_times: int,
    verbose: int,
    as_json: bool,
) -> None:
    """Delete from the mirror what no kept bundle needs, and only what unpack put there.

    Candidates are the tags unpack recorded for this registry (its ledger) that no --keep bundle maps an
    image to; a tag that now points at other content is left alone. Tags go first, then the children of
    deleted manifest lists; blobs are left to the registry's garbage collection.

    \b
    Examples:
      ocp-bundler prune --registry mirror.example:8443 --keep /media/usb2            # list only
      ocp-bundler prune --registry mirror.example:8443 --keep /media/usb2 --yes      # delete
    """
    from bundler.flows.prune import GC_HINT, PruneOptions
    from bundler.flows.prune import prune as run_prune

    registries = make_registries(authfile, ca_file, insecure, workers, timeout, retry_times)
    try:
        result = run_prune(PruneOptions(registry=registry, prefix=prefix, keep=keep, ledger=ledger, apply=apply), registries)
    finally:
        registries.close()
    if as_json:
        emit_json(result.to_json())
        return
    verb = "" if apply else "would "
    for action in result.actions:
        state = "failed: " + action.error if action.error else ("done" if action.done else "")
        click.echo(f"  {action.action:<15} {action.repository}:{action.reference}  {action.reason}  {state}".rstrip())
    deletes = sum(result.count(a) for a in ("delete-tag", "delete-manifest", "delete-child"))
    click.echo(
        f"{'' if apply else 'dry run: '}{deletes} manifests/tags {verb}deleted from {result.registry}; "
        f"{result.count('keep')} kept (still used), {result.count('skip-moved')} left alone (moved), "
        f"{result.count('gone')} already gone; {result.kept_tags} tags of the kept bundles untouched"
    )
    if not apply and deletes:
        click.echo("rerun with --yes to delete")
    if apply and deletes:
        click.echo(f"then: {GC_HINT}")

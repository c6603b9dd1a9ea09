"""`ocp-bundler list`: what a source offers, before writing an image-set config (glue over
`bundler.openshift.catalog.listing`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import click

from bundler.cli.support import CONTEXT, command_body, common_options, emit_json, make_registries, registry_options


@click.group("list", context_settings=CONTEXT)
def list_group() -> None:
    """List what a source offers (like oc-mirror list)."""


@list_group.command("operators", context_settings=CONTEXT)
@click.option("--catalog", required=True, metavar="REF", help="The catalog: a registry reference (registry.redhat.io/redhat/redhat-operator-index:v4.18) or oci:///path/to/layout.")
@click.option("--package", metavar="NAME", help="Only this package, with every channel's versions.")
@click.option("--platform", default="linux/amd64", show_default=True, metavar="OS/ARCH", help="Which image of a multi-platform catalog to read.")
@registry_options
@common_options
@command_body
def operators(
    catalog: str, package: Optional[str], platform: str, authfile: Optional[Path], ca_file: Optional[Path], insecure: Tuple[str, ...],
    workers: int, timeout: float, retry_times: int, proxy: Optional[str], verbose: int, as_json: bool,
) -> None:
    """List the packages of an operator catalog: default channel, channel heads and versions.

    \b
    Examples:
      ocp-bundler list operators --catalog registry.redhat.io/redhat/redhat-operator-index:v4.18
      ocp-bundler list operators --catalog registry.redhat.io/redhat/redhat-operator-index:v4.18 --package cluster-logging
      ocp-bundler list operators --catalog oci:///data/my-catalog
    """
    from bundler.openshift.catalog.listing import list_operators

    registries = make_registries(authfile, ca_file, insecure, workers, timeout, retry_times, proxy=proxy)
    try:
        listing = list_operators(catalog, registries=registries, package=package, platform=platform)
    finally:
        registries.close()
    if as_json:
        emit_json(listing.to_json())
        return
    click.echo(f"catalog {listing.catalog} ({listing.digest}, {listing.format}): {len(listing.packages)} package(s)")
    if package is None:
        rows = [("NAME", "DEFAULT CHANNEL", "CHANNELS")] + [
            (p.name, p.default_channel or "", ",".join(c.name for c in p.channels)) for p in listing.packages
        ]
    else:
        rows = [("CHANNEL", "HEAD", "VERSIONS")] + [
            (c.name + (" (default)" if c.name == p.default_channel else ""), c.head, " ".join(c.versions))
            for p in listing.packages for c in p.channels
        ]
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    for row in rows:
        click.echo(f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]}".rstrip())

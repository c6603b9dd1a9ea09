"""`ocp-bundler list`: what a source offers, before writing an image-set config (glue over
`bundler.openshift.catalog.listing` and `bundler.openshift.release_listing`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import click

from bundler.cli.support import CONTEXT, command_body, common_options, emit_json, make_registries, make_transport, registry_options
from bundler.openshift.cincinnati import DEFAULT_GRAPH_URL
from bundler.openshift.release_listing import DEFAULT_RELEASE_REPOSITORY


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


@list_group.command("releases", context_settings=CONTEXT)
@click.option("--channel", metavar="NAME", help="List the releases in this channel (stable-4.18, fast-4.18, eus-4.18, candidate-4.19, …).")
@click.option("--version", "version", metavar="MAJOR.MINOR", help="Only this minor's releases; alone, the channel is stable-MAJOR.MINOR.")
@click.option("--channels", "list_channels", is_flag=True, help="List the channels known for --version instead of releases.")
@click.option(
    "--arch", "--filter-by-archs", "arches", multiple=True, metavar="ARCH",
    help="Architecture(s) of the releases: amd64 (default), arm64, ppc64le, s390x, multi; repeat or separate with commas.",
)
@click.option(
    "--graph-url", envvar="UPDATE_URL_OVERRIDE", show_envvar=True, metavar="URL", help="Update service (Cincinnati) graph endpoint.",
    default=DEFAULT_GRAPH_URL, show_default=True,
)
@click.option(
    "--release-repo", metavar="REPOSITORY", default=DEFAULT_RELEASE_REPOSITORY, show_default=True,
    help="Without --channel or --version: the repository whose tags name the release versions.",
)
@registry_options
@common_options
@command_body
def releases(
    channel: Optional[str], version: Optional[str], list_channels: bool, arches: Tuple[str, ...], graph_url: str, release_repo: str,
    authfile: Optional[Path], ca_file: Optional[Path], insecure: Tuple[str, ...], proxy: Optional[str],
    workers: int, timeout: float, retry_times: int, verbose: int, as_json: bool,
) -> None:
    """List OpenShift releases: the versions in a channel, the channels of a version, or the versions there are.

    \b
    The versions come from the OpenShift update service (the graph of a channel for an architecture), sorted by
    semver; with neither --channel nor --version, the MAJOR.MINOR versions the release repository has tags for.

    \b
    Examples:
      ocp-bundler list releases --channel stable-4.18
      ocp-bundler list releases --channel fast-4.18 --arch amd64,arm64 --json
      ocp-bundler list releases --version 4.18            # the 4.18 releases in stable-4.18
      ocp-bundler list releases --channels --version 4.18 # channels known around 4.18
      ocp-bundler list releases                           # the MAJOR.MINOR versions there are
    """
    from bundler.base.errors import UsageError
    from bundler.openshift import release_listing as rl

    if list_channels and version is None:
        raise UsageError("--channels needs --version", hint="e.g. ocp-bundler list releases --channels --version 4.18")
    if list_channels and channel is not None:
        raise UsageError("--channels lists the channels of --version; it takes no --channel", hint="drop --channel")
    architectures = rl.parse_architectures(arches)
    if list_channels:
        assert version is not None
        if len(architectures) > 1:
            raise UsageError("--channels takes one --arch", hint="channels are the same for every architecture; drop the extra ones")
        options = make_transport(ca_file, insecure, workers, timeout, retry_times, proxy=proxy)
        found = rl.list_channels(version, architecture=architectures[0], graph_url=graph_url, options=options)
        if as_json:
            emit_json(found.to_json())
            return
        click.echo(f"Channels for version {found.version} (named by the releases in {found.channel}, {found.architecture}):")
        for name in found.channels:
            click.echo(name)
        return
    if channel is None and version is None:
        registries = make_registries(authfile, ca_file, insecure, workers, timeout, retry_times, proxy=proxy)
        try:
            minors = rl.list_minor_versions(registries, release_repo)
        finally:
            registries.close()
        if as_json:
            emit_json(minors.to_json())
            return
        click.echo(f"OpenShift release versions in {minors.repository}:")
        for minor in minors.versions:
            click.echo(f"  {minor}")
        return
    name = channel or f"stable-{rl.minor_version(version or '')}"
    options = make_transport(ca_file, insecure, workers, timeout, retry_times, proxy=proxy)
    listing = rl.list_channel_releases(name, architectures, version=version, graph_url=graph_url, options=options)
    if as_json:
        emit_json(listing.to_json())
        return
    for i, arch in enumerate(listing.architectures):
        if i:
            click.echo("")
        click.echo(f"Channel: {listing.channel}")
        click.echo(f"Architecture: {arch.architecture}")
        for release in arch.releases:
            click.echo(release.version)

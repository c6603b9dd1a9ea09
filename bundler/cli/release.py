"""`ocp-bundler extract`: take openshift-install or oc out of a bundled release (glue over `bundler.openshift.extract`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from bundler.cli.support import CONTEXT, command_body, common_options, emit_json, warn
from bundler.openshift.extract import COMMANDS as EXTRACT_COMMANDS


@click.command(context_settings=CONTEXT)
@click.argument("bundle", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--command", "command_name", type=click.Choice(EXTRACT_COMMANDS), required=True, help="The binary to extract.")
@click.option(
    "--platform",
    metavar="OS/ARCH",
    help="Platform of the binary (linux/amd64, linux/arm64, darwin/amd64, darwin/arm64, windows/amd64). Default: linux on the release's architecture.",
)
@click.option("--to", "to", type=click.Path(file_okay=False, path_type=Path), required=True, help="Directory to write the binary into.")
@click.option(
    "--registry",
    metavar="HOST[:PORT]",
    help="The mirror registry: openshift-install is stamped with <registry>[/<prefix>]/<release repository>@<digest>.",
)
@click.option("--prefix", metavar="PATH", help="Repository prefix used when unpacking into the mirror.")
@click.option("--release", "release", metavar="VERSION[-ARCH]", help="Which release, when the bundle carries several.")
@common_options
@command_body
def extract(
    bundle: Path,
    command_name: str,
    platform: Optional[str],
    to: Path,
    registry: Optional[str],
    prefix: Optional[str],
    release: Optional[str],
    verbose: int,
    as_json: bool,
) -> None:
    """Extract openshift-install or oc from the release carried in BUNDLE.

    Like `oc adm release extract --command`, the binary is streamed out of the release's component
    images (newest layer wins), made executable, and stamped with the release version; openshift-install
    also gets the release pull spec it installs from: the mirror's, when --registry is given.

    \b
    Examples:
      ocp-bundler extract /media/usb --command openshift-install --to ./bin --registry mirror.example:8443
      ocp-bundler extract /media/usb --command oc --platform darwin/arm64 --to ./bin
    """
    from bundler.openshift.extract import extract_from_bundle

    result = extract_from_bundle(
        bundle, command=command_name, to=to, platform=platform, registry=registry, prefix=prefix, release=release
    )
    for name in result.not_stamped:
        warn(f"{result.path}: the binary has no {name} marker; it was written unchanged there")
    if as_json:
        emit_json(
            {
                "path": str(result.path),
                "command": result.command,
                "platform": result.platform,
                "component": result.component,
                "sourcePath": result.source_path,
                "size": result.size,
                "sha256": result.sha256,
                "releasePullSpec": result.release_pull_spec,
                "stamped": list(result.stamped),
                "notStamped": list(result.not_stamped),
            }
        )
    else:
        stamped = f"; release image {result.release_pull_spec}" if result.release_pull_spec and "release image" in result.stamped else ""
        click.echo(f"{result.path} ({result.platform}, {result.size} bytes, sha256 {result.sha256}){stamped}")

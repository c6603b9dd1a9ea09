"""The `ocp-bundler` command line: parse flags, call one library function, render its result.

Exit codes: 0 ok, 1 internal error, 2 usage/config, 3 integrity, 4 partial failure, 5 registry
unreachable or authentication failed (see `bundler.base.errors`).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

import click

from bundler import __version__
from bundler.cli.support import CONTEXT, CliProgress, command_body, common_options, emit_json, make_registries, registry_options
from bundler.base.units import human_bytes

#: Commands of each area live in their own module, imported only when that command runs (a no-op
#: `unpack` should not pay for importing `quay` or `pack`); `--help` imports them all for their summaries.
LAZY_COMMANDS = {
    "pack": "bundler.cli.pack:pack",
    "keygen": "bundler.cli.bundle:keygen",
    "verify": "bundler.cli.bundle:verify",
    "inspect": "bundler.cli.bundle:inspect",
    "unpack": "bundler.cli.unpack:unpack",
    "pull-secret": "bundler.cli.unpack:pull_secret",
    "serve": "bundler.cli.serve:serve",
    "prune": "bundler.cli.prune:prune",
    "extract": "bundler.cli.release:extract",
    "quay": "bundler.cli.quay:quay",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> List[str]:
        return sorted(set(super().list_commands(ctx)) | set(LAZY_COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> Optional[click.Command]:
        target = LAZY_COMMANDS.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        import importlib

        module, _, attr = target.partition(":")
        command = getattr(importlib.import_module(module), attr)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings=CONTEXT)
@click.version_option(__version__, prog_name="ocp-bundler")
def main() -> None:
    """Carry OpenShift content into disconnected networks.

    \b
    On the connected host:
      ocp-bundler pack --config image-set.yaml --out /media/usb     resolve, pull and write a signed bundle
    Across the air gap, on the disconnected side:
      ocp-bundler verify /media/usb --key bundle.pub                  prove every volume and blob is intact
      ocp-bundler unpack /media/usb --registry mirror.example:8443    push digest-exact, read back, write YAML

    \b
    Exit codes: 0 ok, 1 internal error, 2 usage/config/environment, 3 integrity (digest, checksum,
    signature), 4 partial failure (rerun resumes), 5 registry unreachable or authentication failed.
    """


@main.command(context_settings=CONTEXT)
@click.argument("source")
@click.argument("destination")
@registry_options
@common_options
@command_body
def copy(
    source: str, destination: str, authfile: Optional[Path], ca_file: Optional[Path], insecure: Tuple[str, ...], workers: int,
    timeout: float, retry_times: int, verbose: int, as_json: bool,
) -> None:
    """Copy an image (a whole manifest list by default) digest-exactly.

    SOURCE and DESTINATION are docker://HOST/REPO[:TAG][@DIGEST] or oci:DIR[:REF].

    \b
    Examples:
      ocp-bundler copy docker://quay.io/org/app:v1 oci:/data/layout
      ocp-bundler copy oci:/data/layout:quay.io/org/app:v1 docker://mirror.example:8443/org/app:v1
    """
    from bundler.transfer.copy import Copier, CopyOptions
    from bundler.transfer.transports import check_pinned, open_sink, open_source, parse_location

    src_loc, dst_loc = parse_location(source), parse_location(destination)
    registries = make_registries(authfile, ca_file, insecure, workers, timeout, retry_times)
    progress = CliProgress("copy", enabled=not as_json)
    try:
        src = open_source(src_loc, registries)
        dst = open_sink(dst_loc, registries, source=src_loc)
        with Copier(CopyOptions(workers=workers, progress=progress)) as copier:
            top = src.resolve()
            check_pinned(dst_loc, top)
            result = copier.copy(src, dst, expected=src_loc.reference.digest if src_loc.reference else None)
    finally:
        progress.close()
        registries.close()
    if as_json:
        emit_json(result.to_json())
    else:
        s = result.stats
        click.echo(
            f"{result.status}: {src_loc} -> {dst_loc} {result.digest} "
            f"({s.blobs_copied} blobs copied, {human_bytes(s.bytes_copied)}; {s.blobs_present} present; {s.blobs_mounted} mounted)"
        )


if __name__ == "__main__":  # pragma: no cover
    main()

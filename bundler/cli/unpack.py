"""The `unpack` and `pull-secret` commands: parse flags, call `bundler.flows.unpack` / `bundler.openshift.pullsecret`, render.

Registered lazily by `bundler.cli.main`. Exit codes as everywhere (`bundler.base.errors`): 2 usage,
3 integrity (bundle or read-back), 4 partial failure (rerun resumes), 5 registry/authentication.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Tuple

import click

from bundler.cli.support import CONTEXT, CliProgress, command_body, common_options, emit_json, make_transport, registry_options
from bundler.base.errors import UsageError
from bundler.base.units import human_bytes

if TYPE_CHECKING:
    from bundler.flows.unpack import UnpackResult


@click.command(context_settings=CONTEXT)
@click.argument("bundle", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--registry", required=True, metavar="HOST[:PORT]", help="The mirror registry to push into.")
@click.option("--prefix", default="", metavar="PATH", help="Path prefix under the registry for every target repository.")
@click.option(
    "--registry-kind",
    type=click.Choice(["auto", "quay", "plain"]),
    default="auto",
    show_default=True,
    help="auto: ask the registry whether it is Quay; quay: create organisations first; plain: never use a Quay API.",
)
@click.option(
    "--quay-token",
    envvar="OCPB_QUAY_TOKEN",
    metavar="TOKEN",
    help="Quay API token to create organisations (or set OCPB_QUAY_TOKEN; default: from the Quay bring-up's data dir).",
)
@click.option(
    "--quay-data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Data directory of `ocp-bundler quay up`: its API token, robot credentials and CA are used "
    "(with --quay-up default: that command's default data dir).",
)
@click.option(
    "--quay-up",
    is_flag=True,
    help="First bring Quay up on this host with podman (as `ocp-bundler quay up`) at --registry, from the Quay, "
    "PostgreSQL and Redis images the bundle carries, with every organisation the bundle needs; then push into it.",
)
@click.option(
    "--resources-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write the cluster resources (IDMS/ITMS or ICSP, CatalogSources, ...). Default: ./ocp-bundler-resources",
)
@click.option("--icsp", is_flag=True, help="Write ImageContentSourcePolicy (OCP 4.4-4.12) instead of IDMS/ITMS (4.13+).")
@click.option(
    "--resources-fresh",
    is_flag=True,
    help="Start the cluster resources in --resources-dir again from this bundle alone. Default: add to what "
    "earlier bundles left there, so the newest set holds every mirror and never drops one a cluster still uses.",
)
@click.option(
    "--ledger",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Record the tags pushed here, for `ocp-bundler prune`. Default: "
    "$XDG_STATE_HOME/ocp-bundler/mirrors/<registry>.jsonl (~/.local/state/...).",
)
@click.option("--dry-run", is_flag=True, help="Show what would be pushed where, sizes and organisations; write nothing.")
@click.option("--no-verify", is_flag=True, help="Skip bundle verification (NOT recommended; a loud warning is printed).")
@click.option("--reverify", is_flag=True, help="Hash every volume again even if these unchanged files were fully verified before.")
@click.option("--key", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Public key to check the bundle signature with.")
@click.option("--require-signature", is_flag=True, help="Fail unless the bundle is signed and the signature checks out.")
@registry_options
@common_options
@command_body
def unpack(
    bundle: Path,
    registry: str,
    prefix: str,
    registry_kind: str,
    quay_token: Optional[str],
    quay_data_dir: Optional[Path],
    quay_up: bool,
    resources_dir: Optional[Path],
    icsp: bool,
    resources_fresh: bool,
    ledger: Optional[Path],
    dry_run: bool,
    no_verify: bool,
    reverify: bool,
    key: Optional[Path],
    require_signature: bool,
    authfile: Optional[Path],
    ca_file: Optional[Path],
    insecure: Tuple[str, ...],
    workers: int,
    timeout: float,
    retry_times: int,
    verbose: int,
    as_json: bool,
) -> None:
    """Push a bundle into a mirror registry, digest-exact, read it back and write the cluster YAML.

    Verifies the bundle first, creates Quay organisations when the registry is Quay, pushes every image
    with its tag (blobs read in place from the volumes, shared layers mounted across repositories,
    whatever the registry already has is skipped), reads every tag back and compares it with the signed
    bundle manifest, then writes the cluster resources for the registry used. Rerunning after an
    interruption pushes only what is missing.

    \b
    Examples:
      ocp-bundler unpack /media/usb --registry mirror.example:8443 --key bundle.pub
      ocp-bundler unpack /media/usb --registry quay.example:8443 --registry-kind quay --quay-token "$TOKEN"
      ocp-bundler unpack /media/usb --registry mirror.example:8443 --prefix ocp --dry-run
    """
    from bundler.flows.unpack import UnpackIntegrityError, UnpackOptions, UnpackPartialFailureError, unpack_bundle

    if no_verify:
        click.echo("WARNING: --no-verify: the bundle's volumes and signature will NOT be checked", err=True)
    progress = CliProgress("unpack", enabled=not as_json)
    options = UnpackOptions(
        registry=registry,
        prefix=prefix,
        authfile=authfile,
        transport=make_transport(ca_file, insecure, workers, timeout, retry_times),
        workers=workers,
        dry_run=dry_run,
        verify=not no_verify,
        reverify=reverify,
        key=key,
        require_signature=require_signature,
        registry_kind=registry_kind,
        quay_token=quay_token,
        quay_data_dir=quay_data_dir,
        quay_up=quay_up,
        resources_dir=resources_dir,
        icsp=icsp,
        resources_fresh=resources_fresh,
        ledger=ledger,
        progress=progress,
    )
    try:
        result = unpack_bundle(bundle, options=options)
    except (UnpackPartialFailureError, UnpackIntegrityError) as exc:
        progress.close()
        _render(exc.result, as_json)
        raise
    finally:
        progress.close()
    _render(result, as_json)


def _render(result: UnpackResult, as_json: bool) -> None:
    if as_json:
        emit_json(result.to_json())
        return
    s = result.stats
    if result.dry_run:
        click.echo(f"dry run: nothing was written. Registry {result.registry} ({result.registry_kind})")
        if result.organizations:
            verb = "to create if missing" if result.registry_kind == "quay" else "needed (Quay only)"
            click.echo(f"organisations {verb}: {', '.join(result.organizations)}")
        total = 0
        for image in result.images:
            size = image.size or 0
            if image.status == "would-push":
                total += size
            click.echo(f"  {image.status:<10} {image.target}  {image.digest}  {human_bytes(size) if image.size is not None else ''}")
            if image.status == "refused":
                click.echo(f"             {image.error}")
        refused = f", {result.count('refused')} that {result.registry_kind} refuses (not pushed)" if result.count("refused") else ""
        click.echo(f"{result.count('would-push')} to push (up to {human_bytes(total)} before de-duplication), {result.count('present')} already present{refused}")
        return
    for image in result.images:
        if image.status in ("failed", "refused", "mismatch"):
            click.echo(f"  {image.status:<8} {image.target}: {image.error}")
    click.echo(f"bundle {result.bundle_id}: verification {result.verification}")
    click.echo(
        f"{result.count('pushed')} pushed, {result.count('present')} already present, {len(result.failed)} failed "
        f"of {len(result.images)} images in {result.registry} ({result.registry_kind}); "
        f"{s.blobs_copied} blobs uploaded ({human_bytes(s.bytes_copied)}), {s.blobs_mounted} mounted, {s.blobs_present} present; "
        f"{result.seconds:.1f}s"
    )
    if result.organizations_created:
        click.echo(f"created organisations: {', '.join(result.organizations_created)}")
    if result.resources_dir is not None:
        click.echo(f"cluster resources in {result.resources_dir} (see README.txt there)")
        if result.resource_changes is not None:
            click.echo(f"cluster resources against the earlier set there: {result.resource_changes.summary()}")
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)


@click.command("pull-secret", context_settings=CONTEXT)
@click.option("--file", "path", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Pull secret or auth file to edit (created if missing).")
@click.option("--registry", required=True, metavar="HOST[:PORT]", help="The mirror registry.")
@click.option("--username", required=True, help="User (or Quay robot, org+name) for the mirror.")
@click.option("--password-stdin", is_flag=True, help="Read the password (or token) from stdin.")
@click.option("--email", default=None, help="Optional e-mail recorded with the entry.")
@click.option("-v", "--verbose", count=True, help="More detail on stderr.")
@command_body
def pull_secret(path: Path, registry: str, username: str, password_stdin: bool, email: Optional[str], verbose: int) -> None:
    """Add the mirror's credentials to a pull secret (mode 0600, other entries untouched, atomic).

    \b
    Example:
      printf '%s' "$TOKEN" | ocp-bundler pull-secret --file pull-secret.json \\
          --registry mirror.example:8443 --username 'ocp+mirror' --password-stdin
    """
    from bundler.openshift.pullsecret import add_registry_credentials

    if password_stdin:
        password = sys.stdin.read()
        if password.endswith("\n"):
            password = password[:-1]
        if password.endswith("\r"):
            password = password[:-1]
    elif sys.stdin.isatty():
        password = click.prompt("Password", hide_input=True, err=True)
    else:
        raise UsageError("no password given", hint="pipe it in with --password-stdin")
    add_registry_credentials(path, registry=registry, username=username, password=password, email=email)
    click.echo(f"added credentials for {registry} (user {username}) to {path}")

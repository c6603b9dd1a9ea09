"""`ocp-bundler quay up|status|down`: run a Quay mirror registry with podman from a bundle's images.

Glue only: flags → `bundler.quay.bringup` options → one library call → rendered result. Registered lazily by
`bundler.cli.main`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Tuple

import click

from bundler.cli.support import CONTEXT, command_body, common_options, emit_json, option_group
from bundler.base.errors import UsageError
from bundler.base.safefile import read_regular

if TYPE_CHECKING:
    from bundler.quay.bringup import QuayUpOptions
    from bundler.quay.config import S3StorageOptions

DATA_DIR_HELP = "Where Quay keeps config, certificates, secrets, database and storage. Default: ~/.local/share/ocp-bundler/quay."


def _data_dir(value: Optional[Path]) -> Path:
    from bundler.quay.bringup import default_data_dir

    return (value or default_data_dir()).expanduser().absolute()


def _read_secret_file(path: Optional[Path], what: str) -> Optional[str]:
    if path is None:
        return None
    try:
        text = read_regular(path, max_size=64 * 1024, what=f"{what} file", follow_links=True).decode("utf-8", "replace").strip()
    except OSError as exc:
        raise UsageError(f"cannot read {what} from {path}: {exc.strerror}") from None
    if not text:
        raise UsageError(f"{path} is empty", hint=f"put the {what} on its first line")
    return text.splitlines()[0].strip()


def _step(message: str) -> None:
    click.echo(f"quay: {message}", err=True)


@click.group("quay", context_settings=CONTEXT)
def quay() -> None:
    """Run a Quay mirror registry with podman, from the images carried in a bundle.

    \b
      ocp-bundler quay up --bundle /media/usb --hostname mirror.example.com
      ocp-bundler quay status
      ocp-bundler quay down [--purge --yes]
    """


@dataclass(frozen=True)
class _Placement:
    """Where Quay runs and how clients reach it."""

    bundle_dir: Optional[Path]
    hostname: str
    port: int
    bind_address: str
    extra_names: Tuple[str, ...]
    data_dir: Optional[Path]
    name: str


@dataclass(frozen=True)
class _Accounts:
    """The first user, and the organisations with a robot in each."""

    init_user: str
    init_email: Optional[str]
    init_password_file: Optional[Path]
    organizations: Tuple[str, ...]
    robot: str


@dataclass(frozen=True)
class _Tls:
    ssl_cert: Optional[Path]
    ssl_key: Optional[Path]
    ssl_ca: Optional[Path]
    key_type: str


@dataclass(frozen=True)
class _S3:
    """Object storage instead of the local volume (used when a host, bucket or access key is given)."""

    s3_host: Optional[str]
    s3_port: Optional[int]
    s3_bucket: Optional[str]
    s3_access_key: Optional[str]
    s3_secret_key: Optional[str]
    s3_path: str
    s3_insecure: bool
    s3_kind: str
    s3_region: Optional[str]

    def storage(self) -> Optional[S3StorageOptions]:
        from bundler.quay.config import S3StorageOptions

        if not (self.s3_host or self.s3_bucket or self.s3_access_key):
            return None
        return S3StorageOptions(
            host=self.s3_host or "",
            port=self.s3_port,
            bucket=self.s3_bucket or "",
            access_key=self.s3_access_key or "",
            secret_key=self.s3_secret_key or "",
            storage_path=self.s3_path,
            is_secure=not self.s3_insecure,
            kind=self.s3_kind,
            region=self.s3_region,
        )


@dataclass(frozen=True)
class _Service:
    systemd: bool
    systemd_dir: Optional[Path]
    api_token_file: Optional[Path]
    timeout: float


@dataclass(frozen=True)
class _StandIn:
    """For stand-in images (tests, demos): a registry that is not Quay answers another path, has no psql, and
    its REST API may be served elsewhere. Hidden flags: a real Quay never needs them."""

    health_path: str
    skip_database_setup: bool
    api_url: Optional[str]


_placement_options = option_group(
    "placement",
    _Placement,
    click.option("--bundle", "bundle_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), help="Bundle holding the Quay, PostgreSQL and Redis images. Not needed when podman already has them from an earlier run."),
    click.option("--hostname", required=True, help="Host name (or IP) clients use to reach the registry; goes into the certificate and SERVER_HOSTNAME."),
    click.option("--port", type=click.IntRange(1, 65535), default=8443, show_default=True, help="Host port to publish Quay's HTTPS on."),
    click.option("--bind-address", default="", metavar="IP", help="Publish only on this host address (default: all)."),
    click.option("--san", "extra_names", multiple=True, metavar="NAME|IP", help="Extra DNS name or IP address for the certificate (repeatable)."),
    click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), help=DATA_DIR_HELP),
    click.option("--name", default="ocpb-quay", show_default=True, help="Pod name; containers are NAME-postgres, NAME-redis, NAME-app."),
)
_account_options = option_group(
    "accounts",
    _Accounts,
    click.option("--init-user", default="init", show_default=True, help="First (super) user."),
    click.option("--init-email", help="First user's e-mail address."),
    click.option("--init-password-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="File with the first user's password (8+ characters). Default: generated and kept in the data dir."),
    click.option("--org", "organizations", multiple=True, metavar="ORG", help="Organisation to create, with a robot that may create repositories in it (repeatable). Default: ocp4."),
    click.option("--robot", default="bundler", show_default=True, help="Short name of the robot made in each organisation."),
)
_tls_options = option_group(
    "tls",
    _Tls,
    click.option("--ssl-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Your own server certificate (PEM, leaf first, chain after). Default: a CA and certificate are made."),
    click.option("--ssl-key", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="The key of --ssl-cert."),
    click.option("--ssl-ca", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="The CA that issued --ssl-cert (for the health check and the trust hints)."),
    click.option("--key-type", type=click.Choice(["ec", "rsa"]), default="ec", show_default=True, help="Key type of a generated CA and certificate (EC P-256 or RSA 3072)."),
)
_s3_options = option_group(
    "s3",
    _S3,
    click.option("--s3-host", help="S3-compatible object storage for image data (MinIO, Ceph RadosGW, ODF, AWS S3) instead of the local volume."),
    click.option("--s3-port", type=click.IntRange(1, 65535)),
    click.option("--s3-bucket"),
    click.option("--s3-access-key"),
    click.option("--s3-secret-key", envvar="OCPB_S3_SECRET_KEY", show_envvar=True, help="Prefer the environment variable: a flag shows in `ps`."),
    click.option("--s3-path", default="/datastorage/registry", show_default=True, help="Path prefix inside the bucket."),
    click.option("--s3-insecure", is_flag=True, help="Talk plain HTTP to the object storage (is_secure: false)."),
    click.option("--s3-kind", type=click.Choice(["radosgw", "s3"]), default="radosgw", show_default=True, help="radosgw: MinIO, Ceph RadosGW, ODF; s3: AWS S3."),
    click.option("--s3-region", help="Region (AWS S3 only)."),
)
_service_options = option_group(
    "service",
    _Service,
    click.option("--systemd", "systemd", is_flag=True, help="Also write systemd units so Quay comes back after a reboot."),
    click.option("--systemd-dir", type=click.Path(file_okay=False, path_type=Path), help="Where to write the units. Default: DATA_DIR/systemd."),
    click.option("--api-token-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="OAuth token of a Quay superuser, for a Quay initialised by someone else."),
    click.option("--timeout", type=click.FloatRange(1, 7200), default=600, show_default=True, help="Seconds to wait for Quay to become healthy."),
)
_stand_in_options = option_group(
    "stand_in",
    _StandIn,
    click.option("--health-path", default="/health/instance", hidden=True),
    click.option("--skip-database-setup", is_flag=True, hidden=True),
    click.option("--api-url", hidden=True),
)


def _up_options(placement: _Placement, accounts: _Accounts, tls: _Tls, s3: _S3, service: _Service, stand_in: _StandIn) -> QuayUpOptions:
    from bundler.quay.bringup import QuayUpOptions

    root = _data_dir(placement.data_dir)
    return QuayUpOptions(
        hostname=placement.hostname,
        data_dir=root,
        port=placement.port,
        bind_address=placement.bind_address,
        name=placement.name,
        extra_names=tuple(placement.extra_names),
        init_user=accounts.init_user,
        init_email=accounts.init_email,
        init_password=_read_secret_file(accounts.init_password_file, "password"),
        organizations=tuple(accounts.organizations) or ("ocp4",),
        robot=accounts.robot,
        storage=s3.storage(),
        ssl_cert=tls.ssl_cert,
        ssl_key=tls.ssl_key,
        ssl_ca=tls.ssl_ca,
        key_type=tls.key_type,
        systemd_dir=(service.systemd_dir or root / "systemd") if service.systemd else None,
        health_timeout=service.timeout,
        health_path=stand_in.health_path,
        database_setup=not stand_in.skip_database_setup,
        api_url=stand_in.api_url,
        api_token=_read_secret_file(service.api_token_file, "API token"),
    )


@quay.command("up", context_settings=CONTEXT)
@_placement_options
@_account_options
@_tls_options
@_s3_options
@_service_options
@_stand_in_options
@common_options
@command_body
def up(placement: _Placement, accounts: _Accounts, tls: _Tls, s3: _S3, service: _Service, stand_in: _StandIn, verbose: int, as_json: bool) -> None:
    """Load Quay's images into podman and run Quay, PostgreSQL and Redis in a pod; idempotent.

    \b
    Makes a CA and certificate (or uses --ssl-cert/--ssl-key), writes config.yaml with secrets kept in
    DATA_DIR/secrets.json (0600, never regenerated), waits for /health/instance, initialises the first
    user, creates the organisations and a robot in each, and writes DATA_DIR/auth.json (0600) for pushes.
    Rerunning on a running Quay changes nothing.

    \b
    Example:
      ocp-bundler quay up --bundle /media/usb --hostname mirror.example.com --org ocp4 --org olm --systemd
    """
    from bundler.quay.bringup import images_from_bundle, quay_up

    options = _up_options(placement, accounts, tls, s3, service, stand_in)
    options.validate()
    images = images_from_bundle(placement.bundle_dir) if placement.bundle_dir is not None else []
    result = quay_up(options, images, on_step=_step if not as_json else lambda m: None)
    if as_json:
        emit_json(result.to_json())
        return
    for w in result.warnings:
        click.echo(f"warning: {w}", err=True)
    if result.changes:
        click.echo(f"Quay is running at {result.url} (pod {result.pod}); changes:")
        for change in result.changes:
            click.echo(f"  - {change}")
    else:
        click.echo(f"Quay is running at {result.url} (pod {result.pod}); nothing changed")
    for line in result.next_steps():
        click.echo(line)


@quay.command("status", context_settings=CONTEXT)
@click.option("--name", default="ocpb-quay", show_default=True, help="Pod name given to `quay up`.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), help=DATA_DIR_HELP)
@common_options
@command_body
def status(name: str, data_dir: Optional[Path], verbose: int, as_json: bool) -> None:
    """Show the pod, its containers' states and Quay's health. Exit 0 when all run and Quay is healthy, 5 otherwise."""
    from bundler.quay.bringup import quay_status

    result = quay_status(name=name, data_dir=_data_dir(data_dir))
    ok = result.running and result.healthy is not False
    if as_json:
        emit_json(result.to_json())
    else:
        if result.pod is None:
            click.echo(f"pod {name}: not found")
        else:
            pub = ", ".join(f"{ip or '*'}:{hp}->{cp}" for ip, hp, cp in result.pod.published)
            click.echo(f"pod {result.pod.name}: {result.pod.state} ({pub or 'no published ports'})")
        for role, c in result.containers.items():
            if c is None:
                click.echo(f"  {role}: no container")
            else:
                extra = f", exit status {c.exit_code}" if not c.running and c.state in ("exited", "stopped") else ""
                click.echo(f"  {role}: {c.name} {c.state}{extra} ({c.image_name})")
        if result.url:
            health = "healthy" if result.healthy else "not checked" if result.healthy is None else f"unhealthy ({result.health_detail})"
            click.echo(f"Quay {result.url}: {health}")
    if not ok:
        sys.exit(5)


@quay.command("down", context_settings=CONTEXT)
@click.option("--name", default="ocpb-quay", show_default=True, help="Pod name given to `quay up`.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), help=DATA_DIR_HELP)
@click.option("--purge", is_flag=True, help="Also delete the data directory: database, images pushed, secrets, certificates.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before --purge deletes data.")
@common_options
@command_body
def down(name: str, data_dir: Optional[Path], purge: bool, yes: bool, verbose: int, as_json: bool) -> None:
    """Stop and remove the Quay pod and its containers (data is kept unless --purge)."""
    from bundler.quay.bringup import quay_down

    root = _data_dir(data_dir)
    if purge and not yes:
        if not sys.stdin.isatty():
            raise UsageError(f"--purge deletes {root} and everything pushed to this registry", hint="add --yes to confirm")
        click.confirm(f"Delete {root} (database, stored images, secrets, certificates)?", abort=True)
    result = quay_down(name=name, data_dir=root, purge=purge)
    if as_json:
        emit_json(result.to_json())
        return
    if result.removed_pod or result.removed_containers:
        click.echo(f"removed pod {name}" + (f" and {', '.join(result.removed_containers)}" if result.removed_containers else ""))
    else:
        click.echo(f"no pod or containers named {name}")
    if result.purged:
        click.echo(f"deleted {result.purged}")
    elif root.exists():
        click.echo(f"data kept in {root}; `ocp-bundler quay up` brings Quay back with it")

"""Bring up, inspect and remove a Quay mirror registry with podman, from images carried in a bundle.

Owns the use-cases behind `ocp-bundler quay up|status|down` (PROTOCOL-NOTES §4); each step lives in its own
module, and `quay_up` runs them in order:

1. **Configure** (here): secrets created once (`bundler.quay.config`), a CA and server certificate
   (`bundler.quay.certs`), config.yaml, and the containers' env files.
2. **Load** the Quay, PostgreSQL and Redis images into podman (`bundler.quay.images`).
3. **Run** the pod and its containers, and **wait** for `GET https://HOST:PORT/health/instance` (verified with
   the CA) (`bundler.quay.pod`); on failure the error names the container that failed and shows the end of
   its log (secrets redacted).
4. **Prepare pushes** through the REST API (`bundler.quay.accounts`): first user, organisations, a robot per
   organisation with a `creator` team and a `write` default permission; an auth file (0600) with the robot
   tokens; optional systemd units (`bundler.quay.pod`).

Everything is idempotent: a rerun on a running Quay leaves pod, containers, secrets, certificates, robots
and files as they are (`QuayUpResult.changes` is then empty).

Test hooks (both documented on `QuayUpOptions`): `health_path` (stand-in images answer `/v2/`, not
`/health/instance`) and `database_setup=False` (stand-in PostgreSQL images have no `psql`).

The data directory's layout is `bundler.quay.datadir.QuayPaths`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from bundler.base.errors import BundlerError, UsageError
from bundler.quay.accounts import READER_ROBOT, AccountOptions, QuayEndpoint, prepare_pushes, prepare_readers, write_auth_file
from bundler.quay.api import HEALTH_PATH, QuayAPI
from bundler.quay.certs import CertificateResult, ensure_certificates, install_user_certificate
from bundler.quay.config import (
    QuayConfigOptions,
    QuaySecrets,
    S3StorageOptions,
    load_or_create_secrets,
    render_config,
    save_secrets,
    server_hostname,
    write_config,
)
from bundler.quay.datadir import STATE_VERSION, QuayPaths, default_data_dir, read_state, write_json
from bundler.quay.images import (
    LOCAL_REPOSITORY,
    ROLES,
    LoadedImage,
    RegistryImage,
    Step,
    ensure_images,
    images_from_bundle,
    load_image,
    no_step,
    registry_role,
    write_oci_archive,
)
from bundler.quay.pod import (
    POSTGRES_UID,
    QUAY_UID,
    QuayHealthError,
    QuayStartError,
    Redactor,
    check_podman_version,
    container_names,
    container_specs,
    ensure_pod,
    env_file,
    local_address,
    own_for_container,
    start_containers,
    wait_healthy,
    write_systemd_units,
)
from bundler.oci.platform import host_platform
from bundler.quay.podman import ContainerInfo, PodInfo, Podman

log = logging.getLogger(__name__)

DEFAULT_NAME = "ocpb-quay"


@dataclass(frozen=True)
class QuayUpOptions:
    """Inputs of `quay_up` (pass by keyword).

    `health_path`: the path polled until it answers 200 (`/health/instance` for Quay; tests running a
    stand-in image set `/v2/`). `database_setup`: run the PostgreSQL steps inside the container
    (`pg_isready`, `CREATE EXTENSION IF NOT EXISTS pg_trgm`); tests with stand-in images lacking `psql`
    set False. `api_url`: where to reach Quay's REST API (default `https://HOST:PORT`, connected through the
    local published address so it works before DNS knows HOST).
    """

    hostname: str
    data_dir: Path
    port: int = 8443
    bind_address: str = ""
    name: str = DEFAULT_NAME
    extra_names: Tuple[str, ...] = ()
    init_user: str = "init"
    init_email: Optional[str] = None
    init_password: Optional[str] = field(default=None, repr=False)
    organizations: Tuple[str, ...] = ("ocp4",)
    robot: str = "bundler"
    reader: str = READER_ROBOT
    storage: Optional[S3StorageOptions] = None
    ssl_cert: Optional[Path] = None
    ssl_key: Optional[Path] = None
    ssl_ca: Optional[Path] = None
    key_type: str = "ec"
    systemd_dir: Optional[Path] = None
    health_path: str = HEALTH_PATH
    health_timeout: float = 600.0
    database_setup: bool = True
    api_url: Optional[str] = None
    api_token: Optional[str] = field(default=None, repr=False)
    create_namespace_on_push: bool = False
    config_extra: Mapping[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if not self.hostname or "/" in self.hostname or " " in self.hostname:
            raise UsageError(f"invalid --hostname {self.hostname!r}", hint="give the host name clients will use, e.g. mirror.example.com")
        if not 1 <= self.port <= 65535:
            raise UsageError(f"invalid --port {self.port}")
        if (self.ssl_cert is None) != (self.ssl_key is None):
            raise UsageError("--ssl-cert and --ssl-key go together")
        if not self.organizations:
            raise UsageError("at least one organisation is needed")
        if self.init_password is not None and (len(self.init_password) < 8 or any(c.isspace() for c in self.init_password)):
            raise UsageError("the first user's password must have at least 8 characters and no spaces")


@dataclass
class QuayUpResult:
    name: str
    server: str  # host[:port] as clients type it
    url: str
    pod: str
    containers: Dict[str, str]
    images: List[LoadedImage]
    changes: List[str]
    ca_file: Optional[Path]
    auth_file: Optional[Path]
    pull_secret_file: Optional[Path]
    """The read-only robots' credentials (0600): what the cluster's pull secret needs."""
    secrets_file: Path
    config_file: Path
    init_user: str
    initialized_now: bool
    robots: List[str]
    readers: List[str]
    organizations: List[str]
    systemd_units: List[Path]
    warnings: List[str]

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    def to_json(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "server": self.server,
            "url": self.url,
            "pod": self.pod,
            "containers": dict(self.containers),
            "images": [i.to_json() for i in self.images],
            "changes": list(self.changes),
            "caFile": str(self.ca_file) if self.ca_file else None,
            "authFile": str(self.auth_file) if self.auth_file else None,
            "pullSecretFile": str(self.pull_secret_file) if self.pull_secret_file else None,
            "secretsFile": str(self.secrets_file),
            "configFile": str(self.config_file),
            "initUser": self.init_user,
            "initializedNow": self.initialized_now,
            "robots": list(self.robots),
            "readers": list(self.readers),
            "organizations": list(self.organizations),
            "systemdUnits": [str(p) for p in self.systemd_units],
            "warnings": list(self.warnings),
        }

    def next_steps(self) -> List[str]:
        """What the user does next: trust the CA, log in, unpack. No secret appears here."""
        lines: List[str] = []
        if self.ca_file is not None:
            lines += [
                "Trust the registry's CA on every machine that pulls from it:",
                f"  RHEL/Fedora:   sudo cp {self.ca_file} /etc/pki/ca-trust/source/anchors/{self.server.replace(':', '_')}.crt && sudo update-ca-trust",
                f"  Debian/Ubuntu: sudo cp {self.ca_file} /usr/local/share/ca-certificates/{self.server.replace(':', '_')}.crt && sudo update-ca-certificates",
                f"  podman only:   sudo mkdir -p /etc/containers/certs.d/{self.server} && sudo cp {self.ca_file} /etc/containers/certs.d/{self.server}/ca.crt",
                "  OpenShift:     add it to additionalTrustBundle in install-config.yaml",
            ]
        if self.auth_file is not None:
            lines += [
                f"Push with the robot credentials in {self.auth_file} (robot{'s' if len(self.robots) > 1 else ''} {', '.join(self.robots)}):",
                f"  ocp-bundler unpack BUNDLE --registry {self.server} --authfile {self.auth_file} --quay-data-dir {self.secrets_file.parent}",
                "  (--quay-data-dir lets unpack create, with this Quay's stored token, the organisations the bundle needs beyond --org)",
                f"  podman login --authfile {self.auth_file} {self.server}   (checks the stored credentials)",
            ]
        if self.pull_secret_file is not None:
            lines += [
                f"The cluster pulls with the read-only robots in {self.pull_secret_file} ({', '.join(self.readers)}); add them to its pull secret:",
                f"  ocp-bundler pull-secret --file pull-secret.json --from {self.pull_secret_file}",
            ]
        lines.append(f"Web UI: {self.url} (user {self.init_user}; its password is in {self.secrets_file}, key init_password)")
        if self.systemd_units:
            lines += [
                f"Start Quay at boot with the units in {self.systemd_units[0].parent}:",
                f"  sudo cp {self.systemd_units[0].parent}/*.service /etc/systemd/system/ && sudo systemctl daemon-reload && sudo systemctl enable pod-{self.pod}.service",
            ]
        return lines


# -- the use-case: up ----------------------------------------------------------------------------------------


def quay_up(
    options: QuayUpOptions,
    images: Sequence[RegistryImage] = (),
    *,
    podman: Optional[Podman] = None,
    on_step: Step = no_step,
) -> QuayUpResult:
    """Bring Quay up (or confirm it is up). See the module docstring for the steps."""
    options.validate()
    pm = podman or Podman()
    check_podman_version(pm)
    paths = QuayPaths(Path(options.data_dir))
    names = container_names(options.name)
    changes: List[str] = []
    warnings: List[str] = []

    _make_directories(paths)
    secrets = _secrets(options, paths, changes)
    redact = Redactor(secrets.values())
    state = read_state(paths.state_file)
    on_step("certificates")
    cert = _certificates(options, paths)
    if cert.changed:
        changes.append("issued a new server certificate" + (" and CA" if cert.ca_created else ""))
    config_changed = _configure(pm, options, paths, secrets, changes)

    on_step("images")
    loaded = ensure_images(pm, images, state, paths.work_dir, on_step)
    changes += [f"loaded {li.role} image {li.name}" for li in loaded.values() if li.loaded]
    _run_pod(pm, options, paths, loaded, config_changed or cert.server_issued, changes, warnings, redact, on_step)

    # what `quay status` needs to know, written before waiting so it can tell about a Quay that fails
    server = server_hostname(options.hostname, options.port)
    url = f"https://{server}"
    state_now = _state_document(options, server, cert, loaded, state)
    write_json(paths.state_file, state_now, mode=0o644)

    on_step(f"waiting for {url}{options.health_path}")
    local = local_address(options.bind_address)
    wait_healthy(pm, names, url, cert.ca_file, local, redact, health_path=options.health_path, timeout=options.health_timeout)

    on_step("preparing organisations and robots")
    endpoint = QuayEndpoint(options.api_url or url, cert.ca_file, None if options.api_url else local)
    accounts = _account_options(options)
    initialized_now, robots = prepare_pushes(accounts, secrets, paths.secrets_file, endpoint, changes)
    readers = prepare_readers(accounts, secrets, paths.secrets_file, endpoint, changes)
    auth_file = _credentials_file(paths.auth_file, server, robots, secrets.robot_tokens, changes)
    pull_secret_file = _credentials_file(paths.pull_secret_file, server, readers, secrets.reader_tokens, changes)
    units = _systemd_units(pm, options, changes, on_step)

    state_now.update(
        organizations=list(options.organizations),
        robots=[name for _, name in robots],
        readers=[name for _, name in readers],
        systemd_dir=str(options.systemd_dir) if options.systemd_dir else state.get("systemd_dir"),
    )
    write_json(paths.state_file, state_now, mode=0o644)
    return QuayUpResult(
        name=options.name,
        server=server,
        url=url,
        pod=options.name,
        containers=dict(names),
        images=[loaded[r] for r in ROLES],
        changes=changes,
        ca_file=cert.ca_file,
        auth_file=auth_file,
        pull_secret_file=pull_secret_file,
        secrets_file=paths.secrets_file,
        config_file=paths.config_file,
        init_user=options.init_user,
        initialized_now=initialized_now,
        robots=[name for _, name in robots],
        readers=[name for _, name in readers],
        organizations=list(options.organizations),
        systemd_units=units,
        warnings=warnings,
    )


def _credentials_file(path: Path, server: str, robots: Sequence[Tuple[str, str]], tokens: Mapping[str, str], changes: List[str]) -> Optional[Path]:
    """The auth file (0600) for `robots` ([(org, robot)]), or None without robots."""
    if not robots:
        return None
    if write_auth_file(path, server, [(org, name, tokens[name]) for org, name in robots]):
        changes.append(f"wrote {path}")
    return path


def _make_directories(paths: QuayPaths) -> None:
    for d in (paths.root, paths.ca_dir, paths.env_dir):
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, 0o700)
    for d in (paths.config_dir, paths.storage_dir, paths.postgres_dir):
        d.mkdir(parents=True, exist_ok=True)


def _secrets(options: QuayUpOptions, paths: QuayPaths, changes: List[str]) -> QuaySecrets:
    """The secrets (created once, never regenerated), with the storage settings and first password given now."""
    secrets, created = load_or_create_secrets(paths.secrets_file)
    if created:
        changes.append(f"generated secrets in {paths.secrets_file}")
    dirty = False
    if options.storage is not None and options.storage != secrets.storage:
        secrets.storage = options.storage
        dirty = True
    if options.init_password is not None and secrets.admin_token is None and options.init_password != secrets.init_password:
        secrets.init_password = options.init_password
        dirty = True
    if dirty:
        save_secrets(paths.secrets_file, secrets)
    return secrets


def _configure(pm: Podman, options: QuayUpOptions, paths: QuayPaths, secrets: QuaySecrets, changes: List[str]) -> bool:
    """config.yaml, the containers' env files, and ownership for the containers' users. Returns whether
    config.yaml changed (Quay then needs a restart)."""
    config = render_config(
        QuayConfigOptions(
            hostname=options.hostname,
            port=options.port,
            superusers=(options.init_user,),
            storage=secrets.storage,
            create_namespace_on_push=options.create_namespace_on_push,
            extra=options.config_extra,
        ),
        secrets,
    )
    config_changed = write_config(paths.config_file, config)
    if config_changed:
        changes.append(f"wrote {paths.config_file}")
    own_for_container(pm, paths.config_dir, QUAY_UID, 0, mode=0o750)
    for f in (paths.config_file, paths.certificates.server_cert, paths.certificates.server_key):
        if f.exists():
            own_for_container(pm, f, QUAY_UID, 0, mode=0o640)
    if secrets.storage is None:
        own_for_container(pm, paths.storage_dir, QUAY_UID, 0, mode=0o770)
    own_for_container(pm, paths.postgres_dir, POSTGRES_UID, POSTGRES_UID, mode=0o700)
    env_file(
        paths.env_dir / "postgres.env",
        {
            "POSTGRESQL_USER": "quay",
            "POSTGRESQL_PASSWORD": secrets.postgres_password,
            "POSTGRESQL_DATABASE": "quay",
            "POSTGRESQL_ADMIN_PASSWORD": secrets.postgres_admin_password,
        },
    )
    env_file(paths.env_dir / "redis.env", {"REDIS_PASSWORD": secrets.redis_password})
    return config_changed


def _run_pod(
    pm: Podman,
    options: QuayUpOptions,
    paths: QuayPaths,
    loaded: Mapping[str, LoadedImage],
    reconfigured: bool,
    changes: List[str],
    warnings: List[str],
    redact: Redactor,
    on_step: Step,
) -> None:
    """The pod and its containers, started in dependency order; Quay restarted when its configuration changed."""
    ensure_pod(pm, options.name, bind_address=options.bind_address, port=options.port, changes=changes, on_step=on_step)
    specs = container_specs(
        options.name,
        loaded,
        env_postgres=paths.env_dir / "postgres.env",
        env_redis=paths.env_dir / "redis.env",
        postgres_dir=paths.postgres_dir,
        config_dir=paths.config_dir,
        storage_dir=paths.storage_dir,
    )
    started_now = start_containers(
        pm,
        specs,
        loaded,
        database_setup=options.database_setup,
        timeout=options.health_timeout,
        changes=changes,
        warnings=warnings,
        redact=redact,
        on_step=on_step,
    )
    if not started_now["quay"] and reconfigured:
        on_step("restarting Quay to read its new configuration")
        pm.container_restart(specs["quay"].name)
        changes.append(f"restarted {specs['quay'].name} (configuration changed)")


def _state_document(options: QuayUpOptions, server: str, cert: CertificateResult, loaded: Mapping[str, LoadedImage], state: Mapping[str, Any]) -> Dict[str, Any]:
    return {
        "version": STATE_VERSION,
        "name": options.name,
        "hostname": options.hostname,
        "port": options.port,
        "bind_address": options.bind_address,
        "server": server,
        "health_path": options.health_path,
        "api_url": options.api_url,
        "ca_file": str(cert.ca_file) if cert.ca_file else None,
        "images": {role: {"name": li.name, "id": li.image_id, "manifest_digest": li.manifest_digest} for role, li in loaded.items()},
        "organizations": list(state.get("organizations") or []),
        "robots": list(state.get("robots") or []),
        "readers": list(state.get("readers") or []),
        "systemd_dir": state.get("systemd_dir"),
    }


def _account_options(options: QuayUpOptions) -> AccountOptions:
    return AccountOptions(
        organizations=options.organizations,
        robot=options.robot,
        init_user=options.init_user,
        init_email=options.init_email,
        reader=options.reader,
        api_token=options.api_token,
    )


def _systemd_units(pm: Podman, options: QuayUpOptions, changes: List[str], on_step: Step) -> List[Path]:
    if options.systemd_dir is None:
        return []
    on_step(f"writing systemd units to {options.systemd_dir}")
    units, rewritten = write_systemd_units(pm, options.name, options.systemd_dir)
    if rewritten:
        changes.append(f"wrote {len(units)} systemd units to {options.systemd_dir}")
    return units


def _certificates(options: QuayUpOptions, paths: QuayPaths) -> CertificateResult:
    if options.ssl_cert is not None and options.ssl_key is not None:
        return install_user_certificate(
            paths.certificates,
            cert_file=options.ssl_cert,
            key_file=options.ssl_key,
            ca_file=options.ssl_ca,
            hostname=options.hostname,
            extra_names=options.extra_names,
        )
    return ensure_certificates(paths.certificates, hostname=options.hostname, extra_names=options.extra_names, key_type=options.key_type)


# -- status --------------------------------------------------------------------------------------------------


@dataclass
class QuayStatus:
    name: str
    pod: Optional[PodInfo]
    containers: Dict[str, Optional[ContainerInfo]]
    url: Optional[str]
    healthy: Optional[bool]
    health_detail: str = ""

    @property
    def running(self) -> bool:
        return self.pod is not None and all(c is not None and c.running for c in self.containers.values())

    def to_json(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "pod": None if self.pod is None else {"name": self.pod.name, "id": self.pod.id[:12], "state": self.pod.state, "published": [f"{ip or '*'}:{hp}->{cp}" for ip, hp, cp in self.pod.published]},
            "containers": {
                role: None if c is None else {"name": c.name, "state": c.state, "exitCode": c.exit_code, "image": c.image_name, "imageId": c.image_id[:12], "startedAt": c.started_at}
                for role, c in self.containers.items()
            },
            "url": self.url,
            "healthy": self.healthy,
            "healthDetail": self.health_detail,
            "running": self.running,
        }


def quay_status(*, name: str = DEFAULT_NAME, data_dir: Optional[Path] = None, podman: Optional[Podman] = None, check_health: bool = True) -> QuayStatus:
    """What runs: the pod, each container's state, and (when the data dir tells where) Quay's health."""
    pm = podman or Podman()
    names = container_names(name)
    pod = pm.pod_inspect(name)
    containers = {role: pm.container_inspect(names[role]) for role in ROLES}
    state = read_state(QuayPaths(data_dir).state_file) if data_dir is not None else {}
    url: Optional[str] = None
    healthy: Optional[bool] = None
    detail = ""
    if state.get("server"):
        url = f"https://{state['server']}"
        if check_health and pod is not None:
            ca = Path(state["ca_file"]) if state.get("ca_file") else None
            connect_to = local_address(str(state.get("bind_address") or ""))
            try:
                with QuayAPI(url, ca_file=ca, connect_to=connect_to, timeout=5) as api:
                    status = api.health(str(state.get("health_path") or HEALTH_PATH))
                healthy = status == 200
                detail = f"HTTP {status}"
            except BundlerError as exc:
                healthy = False
                detail = exc.message
    return QuayStatus(name, pod, containers, url, healthy, detail)


# -- down ----------------------------------------------------------------------------------------------------


@dataclass
class QuayDownResult:
    name: str
    removed_pod: bool
    removed_containers: List[str]
    purged: Optional[Path]

    def to_json(self) -> Dict[str, Any]:
        return {"name": self.name, "removedPod": self.removed_pod, "removedContainers": self.removed_containers, "purged": str(self.purged) if self.purged else None}


def quay_down(*, name: str = DEFAULT_NAME, data_dir: Optional[Path] = None, purge: bool = False, podman: Optional[Podman] = None, stop_timeout: int = 30) -> QuayDownResult:
    """Stop and remove the pod and its containers; with `purge`, also delete the data directory (the
    caller confirms first). Images stay in podman so a later `quay up` needs no bundle."""
    pm = podman or Podman()
    paths = QuayPaths(Path(data_dir)) if data_dir is not None else None
    if purge:
        if paths is None:
            raise UsageError("--purge needs --data-dir")
        why = paths.not_ours_because() if paths.root.exists() else None
        if why is not None:
            raise UsageError(f"{paths.root} is not a Quay data directory made by ocp-bundler: {why}", hint="check --data-dir; nothing was removed")
    removed: List[str] = []
    pod = pm.pod_inspect(name)
    if pod is not None:
        removed += list(pod.containers)
    removed_pod = pm.pod_remove(name, timeout=stop_timeout)
    for cname in container_names(name).values():
        if pm.container_remove(cname, timeout=stop_timeout):
            removed.append(cname)
    purged: Optional[Path] = None
    if purge and paths is not None and paths.root.exists():
        pm.remove_tree(paths.root)
        purged = paths.root
    return QuayDownResult(name, removed_pod, sorted(set(removed)), purged)


__all__ = [
    "DEFAULT_NAME",
    "LOCAL_REPOSITORY",
    "LoadedImage",
    "QuayDownResult",
    "QuayHealthError",
    "QuayPaths",
    "QuayStartError",
    "QuayStatus",
    "QuayUpOptions",
    "QuayUpResult",
    "RegistryImage",
    "default_data_dir",
    "host_platform",
    "images_from_bundle",
    "load_image",
    "quay_down",
    "quay_status",
    "quay_up",
    "registry_role",
    "write_oci_archive",
]

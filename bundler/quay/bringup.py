"""Bring up, inspect and remove a Quay mirror registry with podman, from images carried in a bundle.

Owns the use-cases behind `ocp-bundler quay up|status|down` (PROTOCOL-NOTES §4):

1. **Load** the Quay, PostgreSQL and Redis images into podman. An `ImageSource` (the bundle, or any OCI
   layout) is copied with `Copier` into a temporary OCI layout holding only the host platform's image
   (picked from a list), written as an `oci-archive` tar and `podman load`ed, then tagged with a stable
   local name. The archive keeps the manifest bytes and the config, so podman's image ID is the config
   digest and its recorded digest is the manifest's digest, for OCI- and Docker-typed images alike (podman
   4.3.1 / containers/image 5.23 reads a Docker schema-2 manifest inside an OCI layout; what it cannot
   handle is skopeo writing Docker *lists* into `oci:`, which we never ask of it: lists are resolved here).
   An image podman already has (same ID) is not loaded again.
2. **Run** a pod publishing `HOST_PORT:8443` with three containers: PostgreSQL (`POSTGRESQL_*` env, the
   `pg_trgm` extension created with `podman exec ... psql`), Redis (`REDIS_PASSWORD`), Quay (config volume
   on `/quay-registry/conf/stack`, storage volume on `/datastorage`). Secrets reach containers through
   0600 `--env-file`s, never on a command line.
3. **Configure**: config.yaml with stable secrets (`bundler.quay.config`), CA and server certificate
   (`bundler.quay.certs`).
4. **Wait** for `GET https://HOST:PORT/health/instance` (verified with the CA); on failure the error names
   the container that failed and shows the end of its log (secrets redacted).
5. **Prepare pushes** through the REST API (`bundler.quay.api`): first user, organisations, a robot per
   organisation with a `creator` team and a `write` default permission; an auth file (0600) with the robot
   tokens; optional systemd units.

Everything is idempotent: a rerun on a running Quay leaves pod, containers, secrets, certificates, robots
and files as they are (`QuayUpResult.changes` is then empty).

Test hooks (both documented on `QuayUpOptions`): `health_path` (stand-in images answer `/v2/`, not
`/health/instance`) and `database_setup=False` (stand-in PostgreSQL images have no `psql`).

Data directory layout (`QuayPaths`): `config/` (config.yaml, ssl.cert, ssl.key → Quay's config volume),
`storage/` (→ /datastorage), `postgres/` (→ /var/lib/pgsql/data), `ca/` (ca.crt, ca.key), `env/`
(container env files), `secrets.json` (0600), `state.json`, `auth.json` (0600), `systemd/`.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import json
import logging
import os
import socket
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from bundler.quay.certs import CertificatePaths, CertificateResult, ensure_certificates, install_user_certificate
from bundler.transfer.copy import Copier, CopyOptions
from bundler.base.errors import AuthenticationError, BundlerError, IntegrityError, RegistryUnreachableError, UsageError
from bundler.base.fsutil import atomic_write
from bundler.base.jsonlimits import loads_bounded
from bundler.base.safefile import read_regular
from bundler.layout.store import Layout
from bundler.oci.media import Descriptor, is_index, parse_manifest
from bundler.oci.platform import Platform, choose_child, host_platform
from bundler.quay.podman import ContainerInfo, ContainerSpec, Mount, PodInfo, Podman, PodmanError
from bundler.quay.api import HEALTH_PATH, QuayAPI
from bundler.quay.config import (
    QuayConfigOptions,
    QuaySecrets,
    S3StorageOptions,
    load_or_create_secrets,
    load_secrets,
    render_config,
    save_secrets,
    server_hostname,
    write_config,
)
from bundler.registry.client import FetchedManifest
from bundler.transfer.transports import ImageSource, LayoutImage

log = logging.getLogger(__name__)

DEFAULT_NAME = "ocpb-quay"
QUAY_CONTAINER_PORT = 8443
ROLES = ("postgres", "redis", "quay")
CONTAINER_SUFFIX = {"postgres": "postgres", "redis": "redis", "quay": "app"}
LOCAL_REPOSITORY = "localhost/ocp-bundler"
LABEL = "io.ocp-bundler.quay.bringup"
STATE_VERSION = 1
LOG_TAIL = 30

POSTGRES_DATA = "/var/lib/pgsql/data"
POSTGRES_UID = 26
QUAY_CONFIG = "/quay-registry/conf/stack"
QUAY_STORAGE = "/datastorage"
QUAY_UID = 1001

Step = Callable[[str], None]


def _no_step(message: str) -> None:
    pass


# -- errors --------------------------------------------------------------------------------------------------


class _WithLog:
    container: str
    log_tail: str

    def _render(self, base: str) -> str:
        if not self.log_tail:
            return base
        return f"{base}\n--- podman logs --tail {LOG_TAIL} {self.container} ---\n{self.log_tail}"


class QuayStartError(UsageError, _WithLog):
    """A container of the Quay pod could not start or stopped (exit 2); carries its name and log tail."""

    def __init__(self, message: str, *, container: str = "", log_tail: str = "", hint: Optional[str] = None) -> None:
        super().__init__(message, hint=hint)
        self.container = container
        self.log_tail = log_tail

    def __str__(self) -> str:
        return self._render(super().__str__())


class QuayHealthError(RegistryUnreachableError, _WithLog):
    """Quay runs but does not answer its health check in time (exit 5); carries the container's log tail."""

    def __init__(self, message: str, *, container: str = "", log_tail: str = "", url: str = "", hint: Optional[str] = None) -> None:
        super().__init__(message, url=url, hint=hint)
        self.container = container
        self.log_tail = log_tail

    def __str__(self) -> str:
        return self._render(super().__str__())


# -- paths and state -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuayPaths:
    root: Path

    @property
    def config_dir(self) -> Path:
        return self.root / "config"

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.yaml"

    @property
    def storage_dir(self) -> Path:
        return self.root / "storage"

    @property
    def postgres_dir(self) -> Path:
        return self.root / "postgres"

    @property
    def ca_dir(self) -> Path:
        return self.root / "ca"

    @property
    def env_dir(self) -> Path:
        return self.root / "env"

    @property
    def secrets_file(self) -> Path:
        return self.root / "secrets.json"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def auth_file(self) -> Path:
        return self.root / "auth.json"

    @property
    def systemd_dir(self) -> Path:
        return self.root / "systemd"

    @property
    def work_dir(self) -> Path:
        return self.root / "tmp"

    @property
    def certificates(self) -> CertificatePaths:
        return CertificatePaths.in_directories(self.ca_dir, self.config_dir)

    def not_ours_because(self) -> Optional[str]:
        """Why this directory is not a data directory `quay up` made (None when it is one).

        It must hold what `quay up` creates first (config/, ca/, env/), nothing `quay up` never writes, and
        either a `state.json` of this tool's shape or a `secrets.json` that parses as Quay's secrets."""
        try:
            entries = {p.name for p in self.root.iterdir()}
        except OSError as exc:
            return f"it cannot be listed ({exc.strerror or exc})"
        missing = sorted(_FIRST_ENTRIES - entries)
        if missing:
            return f"it lacks {', '.join(missing)}"
        foreign = sorted(e for e in entries - _DATA_ENTRIES if not e.startswith("."))
        if foreign:
            return f"it holds {', '.join(foreign[:5])}, which quay up never writes"
        if _state_is_ours(self.state_file):
            return None
        try:
            if self.secrets_file.is_file() and load_secrets(self.secrets_file) is not None:
                return None
        except BundlerError:
            pass
        return "neither its state.json nor its secrets.json is one quay up wrote"


_FIRST_ENTRIES = frozenset({"config", "ca", "env"})
_DATA_ENTRIES = frozenset({"config", "storage", "postgres", "ca", "env", "secrets.json", "state.json", "auth.json", "systemd", "tmp"})


def _state_is_ours(path: Path) -> bool:
    try:
        obj = loads_bounded(read_regular(path, max_size=1 << 20, what="state file"))
    except (OSError, ValueError, UsageError):
        return False
    return (
        isinstance(obj, dict)
        and obj.get("version") == STATE_VERSION
        and not isinstance(obj.get("version"), bool)
        and all(isinstance(obj.get(k), str) and obj.get(k) for k in ("name", "hostname", "server"))
        and isinstance(obj.get("images"), dict)
    )


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "ocp-bundler" / "quay"


def _read_state(path: Path) -> Dict[str, Any]:
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError:
        raise UsageError(f"{path} is not valid JSON", hint="remove it; the next `quay up` writes it again") from None
    return obj if isinstance(obj, dict) else {}


def _write_json(path: Path, obj: Any, *, mode: int) -> bool:
    data = (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    atomic_write(path, data, mode=mode)
    return True


# -- loading images ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegistryImage:
    """One image the registry needs: its role, where to read it, and the local name to give it."""

    role: str  # "quay", "postgres" or "redis"
    source: ImageSource
    local_name: str


@dataclass(frozen=True)
class LoadedImage:
    role: str
    name: str
    image_id: str
    manifest_digest: str
    loaded: bool
    """False when podman already had the image (same ID) and nothing was loaded."""

    def to_json(self) -> Dict[str, Any]:
        return {"role": self.role, "name": self.name, "id": self.image_id, "manifestDigest": self.manifest_digest, "loaded": self.loaded}


def _pick_child(source: ImageSource, top: FetchedManifest, want: Platform) -> FetchedManifest:
    parsed = parse_manifest(top.raw, top.media_type)
    available = [str(child.platform) for child in parsed.children if child.platform is not None]
    fallback = choose_child(parsed.children, want)
    if fallback is None:
        raise UsageError(
            f"{source.description} has no image for {want} (it has: {', '.join(available) or 'no platforms'})",
            hint="pack the registry images for this machine's architecture",
        )
    chosen = source.fetch_manifest(fallback)
    if chosen.digest != fallback.digest:
        raise IntegrityError(f"{source.description}: child {fallback.digest} arrived as {chosen.digest}")
    if is_index(chosen.media_type):
        return _pick_child(source, chosen, want)
    return chosen


class _ChosenImage:
    """An `ImageSource` whose top manifest is one chosen child of another source's list."""

    def __init__(self, source: ImageSource, manifest: FetchedManifest) -> None:
        self._source = source
        self._manifest = manifest
        self.description = source.description

    def resolve(self) -> FetchedManifest:
        return self._manifest

    def fetch_manifest(self, descriptor: Descriptor) -> FetchedManifest:
        return self._source.fetch_manifest(descriptor)

    def open_blob(self, descriptor: Descriptor, offset: int) -> Any:
        return self._source.open_blob(descriptor, offset)


def write_oci_archive(layout_root: Path, archive: Path, *, consume: bool = False) -> None:
    """Tar an OCI layout (`oci-layout`, `index.json`, `blobs/`) as podman's `oci-archive:` reads it.
    With `consume`, each blob is deleted once it is in the archive (peak disk use ≈ one copy)."""
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(str(layout_root / "oci-layout"), arcname="oci-layout")
        tar.add(str(layout_root / "index.json"), arcname="index.json")
        blobs = layout_root / "blobs"
        tar.add(str(blobs), arcname="blobs", recursive=False)
        for alg_dir in sorted(p for p in blobs.iterdir() if p.is_dir()):
            tar.add(str(alg_dir), arcname=f"blobs/{alg_dir.name}", recursive=False)
            for blob in sorted(alg_dir.iterdir()):
                if blob.name.startswith("."):
                    continue
                tar.add(str(blob), arcname=f"blobs/{alg_dir.name}/{blob.name}")
                if consume:
                    blob.unlink()


def load_image(
    podman: Podman,
    image: RegistryImage,
    *,
    work_dir: Path,
    platform: Optional[Platform] = None,
    copier: Optional[Copier] = None,
) -> LoadedImage:
    """Make `image` available in podman under `image.local_name`; load it only when podman lacks its ID."""
    source = image.source
    top = source.resolve()
    manifest = _pick_child(source, top, platform or host_platform()) if is_index(top.media_type) else top
    parsed = parse_manifest(manifest.raw, manifest.media_type)
    if parsed.config is None:
        raise IntegrityError(f"{source.description}: the image has no config")
    image_id = parsed.config.digest.encoded
    loaded = False
    if not podman.image_exists(image_id):
        work_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f"load-{image.role}-", dir=work_dir) as tmp:
            layout = Layout(Path(tmp) / "layout")
            sink = LayoutImage(layout, image.local_name)
            own = copier is None
            c = copier or Copier(CopyOptions(workers=4))
            try:
                c.copy(_ChosenImage(source, manifest), sink, expected=manifest.digest)
            finally:
                if own:
                    c.close()
            archive = Path(tmp) / "image.oci.tar"
            write_oci_archive(layout.root, archive, consume=True)
            log.info("loading %s (%s) into podman", image.local_name, manifest.digest)
            podman.load(archive)
        if not podman.image_exists(image_id):
            raise PodmanError(
                f"podman loaded {source.description} but has no image with ID {image_id[:12]}",
                hint="the image config was changed on the way; check the podman version (4.3 or newer is needed)",
            )
        loaded = True
    podman.tag(image_id, image.local_name)
    return LoadedImage(image.role, image.local_name, image_id, str(manifest.digest), loaded)


def registry_role(name: str, annotations: Mapping[str, str] = {}) -> Optional[str]:
    """Which part of the registry an image is: an explicit `io.ocp-bundler.registry.client-role` annotation, or
    its repository name (…quay…, …postgres…, …redis…)."""
    explicit = annotations.get("io.ocp-bundler.registry.client-role")
    if explicit in ROLES:
        return explicit
    repo = name.split("@", 1)[0].lower()
    last = repo.rsplit("/", 1)[-1].split(":", 1)[0]
    for role, words in (("postgres", ("postgres",)), ("redis", ("redis",)), ("quay", ("quay",))):
        if any(w in last for w in words):
            return role
    return None


def images_from_bundle(bundle_dir: Path) -> List[RegistryImage]:
    """The registry images (kind `registry`) of a bundle, one per role, with their local names."""
    try:
        from bundler.bundle.volumes import Bundle
    except ImportError:
        raise UsageError("this ocp-bundler build cannot read bundles yet", hint="update ocp-bundler") from None
    bundle = Bundle.open(bundle_dir)
    found: Dict[str, RegistryImage] = {}
    for img in bundle.manifest.images:
        if img.kind != "registry":
            continue
        name = img.target_repository or img.source
        role = registry_role(name, img.annotations) or registry_role(img.source, img.annotations)
        if role is None or role in found:
            continue
        tag = img.target_tag or "latest"
        found[role] = RegistryImage(role, bundle.image_source(img), f"{LOCAL_REPOSITORY}/{role}:{tag}")
    missing = [r for r in ROLES if r not in found]
    if missing:
        raise UsageError(
            f"the bundle in {bundle_dir} does not carry the {', '.join(missing)} image(s) needed to run Quay",
            hint="pack with registry images enabled (registryImages: {enabled: true} in the image-set config)",
        )
    return [found[r] for r in ROLES]


# -- options and results -------------------------------------------------------------------------------------


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
    secrets_file: Path
    config_file: Path
    init_user: str
    initialized_now: bool
    robots: List[str]
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
            "secretsFile": str(self.secrets_file),
            "configFile": str(self.config_file),
            "initUser": self.init_user,
            "initializedNow": self.initialized_now,
            "robots": list(self.robots),
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
        lines.append(f"Web UI: {self.url} (user {self.init_user}; its password is in {self.secrets_file}, key init_password)")
        if self.systemd_units:
            lines += [
                f"Start Quay at boot with the units in {self.systemd_units[0].parent}:",
                f"  sudo cp {self.systemd_units[0].parent}/*.service /etc/systemd/system/ && sudo systemctl daemon-reload && sudo systemctl enable pod-{self.pod}.service",
            ]
        return lines


# -- the use-case: up ----------------------------------------------------------------------------------------


def _container_names(name: str) -> Dict[str, str]:
    return {role: f"{name}-{CONTAINER_SUFFIX[role]}" for role in ROLES}


def _local_address(bind_address: str) -> str:
    if bind_address in ("", "0.0.0.0"):
        return "127.0.0.1"
    if bind_address == "::":
        return "::1"
    return bind_address


def port_in_use(address: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address or ("::" if family == socket.AF_INET6 else "0.0.0.0"), port))
        except OSError as exc:
            return exc.errno in (errno.EADDRINUSE, errno.EACCES)
    return False


def _env_file(path: Path, values: Mapping[str, str]) -> bool:
    data = "".join(f"{k}={v}\n" for k, v in values.items()).encode()
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    atomic_write(path, data, mode=0o600)
    return True


class _Redactor:
    def __init__(self, secrets: Sequence[str]) -> None:
        self._secrets = sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for s in self._secrets:
            text = text.replace(s, "***")
        return text


def quay_up(
    options: QuayUpOptions,
    images: Sequence[RegistryImage] = (),
    *,
    podman: Optional[Podman] = None,
    on_step: Step = _no_step,
) -> QuayUpResult:
    """Bring Quay up (or confirm it is up). See the module docstring for the steps."""
    options.validate()
    pm = podman or Podman()
    _check_podman_version(pm)
    paths = QuayPaths(Path(options.data_dir))
    names = _container_names(options.name)
    changes: List[str] = []
    warnings: List[str] = []

    for d in (paths.root, paths.ca_dir, paths.env_dir):
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, 0o700)
    for d in (paths.config_dir, paths.storage_dir, paths.postgres_dir):
        d.mkdir(parents=True, exist_ok=True)

    # secrets (created once, never regenerated) and storage settings remembered across runs
    secrets, created = load_or_create_secrets(paths.secrets_file)
    if created:
        changes.append(f"generated secrets in {paths.secrets_file}")
    secrets_dirty = False
    if options.storage is not None and options.storage != secrets.storage:
        secrets.storage = options.storage
        secrets_dirty = True
    if options.init_password is not None and secrets.admin_token is None and options.init_password != secrets.init_password:
        secrets.init_password = options.init_password
        secrets_dirty = True
    if secrets_dirty:
        save_secrets(paths.secrets_file, secrets)
    redact = _Redactor(secrets.values())
    state = _read_state(paths.state_file)

    # certificates
    on_step("certificates")
    cert = _certificates(options, paths)
    if cert.changed:
        changes.append("issued a new server certificate" + (" and CA" if cert.ca_created else ""))

    # config.yaml
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
    _own_for_container(pm, paths.config_dir, QUAY_UID, 0, mode=0o750)
    for f in (paths.config_file, paths.certificates.server_cert, paths.certificates.server_key):
        if f.exists():
            _own_for_container(pm, f, QUAY_UID, 0, mode=0o640)
    if secrets.storage is None:
        _own_for_container(pm, paths.storage_dir, QUAY_UID, 0, mode=0o770)
    _own_for_container(pm, paths.postgres_dir, POSTGRES_UID, POSTGRES_UID, mode=0o700)

    env_postgres = paths.env_dir / "postgres.env"
    env_redis = paths.env_dir / "redis.env"
    _env_file(
        env_postgres,
        {
            "POSTGRESQL_USER": "quay",
            "POSTGRESQL_PASSWORD": secrets.postgres_password,
            "POSTGRESQL_DATABASE": "quay",
            "POSTGRESQL_ADMIN_PASSWORD": secrets.postgres_admin_password,
        },
    )
    _env_file(env_redis, {"REDIS_PASSWORD": secrets.redis_password})

    # images
    on_step("images")
    loaded = _ensure_images(pm, images, state, paths, on_step)
    for li in loaded.values():
        if li.loaded:
            changes.append(f"loaded {li.role} image {li.name}")

    # pod
    pod_info = pm.pod_inspect(options.name)
    local = _local_address(options.bind_address)
    publish = f"{options.bind_address + ':' if options.bind_address else ''}{options.port}:{QUAY_CONTAINER_PORT}"
    if pod_info is None:
        if port_in_use(options.bind_address, options.port):
            raise QuayStartError(
                f"port {options.port} is already in use on this machine",
                hint=f"stop what listens there (ss -ltnp 'sport = :{options.port}') or choose another --port",
            )
        on_step(f"creating pod {options.name} publishing {publish}")
        pm.pod_create(options.name, publish=[publish], labels={LABEL: options.name})
        changes.append(f"created pod {options.name}")
    else:
        ports = {(hp, cp) for _, hp, cp in pod_info.published}
        if (options.port, QUAY_CONTAINER_PORT) not in ports:
            have = ", ".join(f"{hp}->{cp}" for _, hp, cp in pod_info.published) or "none"
            raise UsageError(
                f"pod {options.name} already exists and publishes {have}, not {options.port}->{QUAY_CONTAINER_PORT}",
                hint=f"run `ocp-bundler quay down --name {options.name}` first to move it to another port (data is kept)",
            )

    # containers, in dependency order
    specs = {
        "postgres": ContainerSpec(
            name=names["postgres"],
            image=loaded["postgres"].name,
            pod=options.name,
            env_files=(env_postgres,),
            mounts=(Mount(paths.postgres_dir, POSTGRES_DATA),),
            labels={LABEL: options.name},
        ),
        "redis": ContainerSpec(
            name=names["redis"], image=loaded["redis"].name, pod=options.name, env_files=(env_redis,), labels={LABEL: options.name}
        ),
        "quay": ContainerSpec(
            name=names["quay"],
            image=loaded["quay"].name,
            pod=options.name,
            mounts=(Mount(paths.config_dir, QUAY_CONFIG), Mount(paths.storage_dir, QUAY_STORAGE)),
            labels={LABEL: options.name},
        ),
    }
    started_now: Dict[str, bool] = {}
    for role in ROLES:
        if role == "quay" and options.database_setup:
            _setup_database(pm, names["postgres"], options.health_timeout, redact, on_step)
        started_now[role] = _ensure_container(pm, specs[role], loaded[role], changes, warnings, redact, on_step)
    if not started_now["quay"] and (config_changed or cert.server_issued):
        on_step("restarting Quay to read its new configuration")
        pm.container_restart(names["quay"])
        changes.append(f"restarted {names['quay']} (configuration changed)")

    # what `quay status` needs to know, written before waiting so it can tell about a Quay that fails
    server = server_hostname(options.hostname, options.port)
    url = f"https://{server}"
    state_now = {
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
        "systemd_dir": state.get("systemd_dir"),
    }
    _write_json(paths.state_file, state_now, mode=0o644)

    # health
    on_step(f"waiting for {url}{options.health_path}")
    _wait_healthy(pm, options, names, url, cert.ca_file, local, redact)

    # first user, organisations, robots
    on_step("preparing organisations and robots")
    api_url = options.api_url or url
    connect_to = None if options.api_url else local
    initialized_now, robots = _prepare_pushes(options, secrets, paths, api_url, cert.ca_file, connect_to, changes)

    auth_file: Optional[Path] = None
    if robots:
        auth_file = paths.auth_file
        if _write_auth_file(auth_file, server, [(org, name, secrets.robot_tokens[name]) for org, name in robots]):
            changes.append(f"wrote {auth_file}")

    units: List[Path] = []
    if options.systemd_dir is not None:
        on_step(f"writing systemd units to {options.systemd_dir}")
        units, rewritten = _write_systemd_units(pm, options.name, options.systemd_dir)
        if rewritten:
            changes.append(f"wrote {len(units)} systemd units to {options.systemd_dir}")

    state_now.update(
        organizations=list(options.organizations),
        robots=[name for _, name in robots],
        systemd_dir=str(options.systemd_dir) if options.systemd_dir else state.get("systemd_dir"),
    )
    _write_json(paths.state_file, state_now, mode=0o644)

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
        secrets_file=paths.secrets_file,
        config_file=paths.config_file,
        init_user=options.init_user,
        initialized_now=initialized_now,
        robots=[name for _, name in robots],
        organizations=list(options.organizations),
        systemd_units=units,
        warnings=warnings,
    )


def _check_podman_version(pm: Podman) -> None:
    try:
        text = pm.version()
    except PodmanError as exc:
        raise PodmanError(f"podman does not work here: {exc.message}", hint="check `podman info` (runtime and /etc/containers/containers.conf)") from None
    try:
        major, minor = (int(x) for x in text.split(".")[:2])
    except ValueError:
        return
    if (major, minor) < (4, 3):
        log.warning("podman %s is older than 4.3; loading images and pods may fail", text)


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


def _own_for_container(pm: Podman, path: Path, uid: int, gid: int, *, mode: int) -> None:
    """Mode and owner so the container's user can use `path`. As root: the container uid itself; rootless:
    the mapped uid through `podman unshare` (container uid N is not host uid N there)."""
    st = path.stat()
    if st.st_mode & 0o777 != mode:
        os.chmod(path, mode)
    if os.geteuid() != 0 or (st.st_uid, st.st_gid) != (uid, gid):
        pm.chown_for_container(path, uid, gid)


def _ensure_images(pm: Podman, images: Sequence[RegistryImage], state: Mapping[str, Any], paths: QuayPaths, on_step: Step) -> Dict[str, LoadedImage]:
    given = {img.role: img for img in images}
    unknown = [r for r in given if r not in ROLES]
    if unknown:
        raise UsageError(f"unknown registry image role(s): {', '.join(unknown)}")
    out: Dict[str, LoadedImage] = {}
    known = state.get("images") if isinstance(state.get("images"), dict) else {}
    copier: Optional[Copier] = None
    try:
        for role in ROLES:
            if role in given:
                on_step(f"loading the {role} image ({given[role].source.description})")
                if copier is None:
                    copier = Copier(CopyOptions(workers=4))
                out[role] = load_image(pm, given[role], work_dir=paths.work_dir, copier=copier)
                continue
            entry = known.get(role) if isinstance(known, dict) else None
            if isinstance(entry, dict) and entry.get("id") and pm.image_exists(str(entry["id"])):
                name = str(entry.get("name") or f"{LOCAL_REPOSITORY}/{role}:latest")
                pm.tag(str(entry["id"]), name)
                out[role] = LoadedImage(role, name, str(entry["id"]), str(entry.get("manifest_digest", "")), False)
                continue
            raise UsageError(
                f"podman has no {role} image for Quay",
                hint="pass --bundle DIR with a bundle packed with registry images (registryImages: {enabled: true})",
            )
    finally:
        if copier is not None:
            copier.close()
    with contextlib.suppress(OSError):
        paths.work_dir.rmdir()
    return out


def _ensure_container(
    pm: Podman,
    spec: ContainerSpec,
    image: LoadedImage,
    changes: List[str],
    warnings: List[str],
    redact: Callable[[str], str],
    on_step: Step,
) -> bool:
    """Create and/or start one container; True when it was (re)started by this call."""
    info = pm.container_inspect(spec.name)
    if info is None:
        on_step(f"starting {spec.name}")
        pm.container_create(spec)
        _start(pm, spec.name, redact)
        changes.append(f"created container {spec.name}")
        return True
    if info.image_id and info.image_id != image.image_id:
        warnings.append(
            f"{spec.name} runs image {info.image_id[:12]}, the bundle has {image.image_id[:12]}: "
            f"`ocp-bundler quay down` then `quay up` replaces the containers (data is kept)"
        )
    if info.running:
        return False
    on_step(f"starting {spec.name} (was {info.state})")
    _start(pm, spec.name, redact)
    changes.append(f"started container {spec.name}")
    return True


def _start(pm: Podman, name: str, redact: Callable[[str], str]) -> None:
    try:
        pm.container_start(name)
    except PodmanError as exc:
        text = (exc.stderr or exc.message).lower()
        if "address already in use" in text or "bind" in text and "in use" in text:
            raise QuayStartError(
                f"{name} cannot start: the published port is already in use",
                container=name,
                hint="stop what listens there or `ocp-bundler quay down` and rerun with another --port",
            ) from None
        raise QuayStartError(
            f"{name} cannot start: {exc.message}",
            container=name,
            log_tail=redact(pm.logs(name, tail=LOG_TAIL)),
            hint="fix the cause and rerun `ocp-bundler quay up`",
        ) from None


def _setup_database(pm: Podman, container: str, timeout: float, redact: Callable[[str], str], on_step: Step) -> None:
    """Wait for PostgreSQL, then `CREATE EXTENSION IF NOT EXISTS pg_trgm` in the quay database."""
    on_step("waiting for PostgreSQL and creating the pg_trgm extension")
    deadline = time.monotonic() + timeout
    while True:
        info = pm.container_inspect(container)
        if info is not None and not info.running:
            raise _exited(pm, info, redact)
        proc = pm.exec(container, ["pg_isready", "-h", "127.0.0.1", "-p", "5432", "-d", "quay"], check=False, timeout=30)
        if proc.returncode == 0:
            break
        if time.monotonic() > deadline:
            raise QuayStartError(
                f"PostgreSQL in {container} did not accept connections within {timeout:.0f} s",
                container=container,
                log_tail=redact(pm.logs(container, tail=LOG_TAIL)),
                hint="fix the cause shown in its log and rerun `ocp-bundler quay up`",
            )
        time.sleep(2)
    sql = "CREATE EXTENSION IF NOT EXISTS pg_trgm"
    last = ""
    for _ in range(10):
        proc = pm.exec(container, ["psql", "-v", "ON_ERROR_STOP=1", "-d", "quay", "-U", "postgres", "-c", sql], check=False, timeout=60)
        if proc.returncode == 0:
            return
        output = (proc.stderr or proc.stdout).strip().splitlines()
        last = output[-1] if output else f"exit status {proc.returncode}"
        time.sleep(2)
    raise QuayStartError(
        f"could not create the pg_trgm extension in {container}: {redact(last)}",
        container=container,
        log_tail=redact(pm.logs(container, tail=LOG_TAIL)),
        hint="Quay needs pg_trgm; check that the PostgreSQL image has the contrib extensions",
    )


def _exited(pm: Podman, info: ContainerInfo, redact: Callable[[str], str]) -> QuayStartError:
    return QuayStartError(
        f"container {info.name} stopped ({info.state}, exit status {info.exit_code}) while Quay was starting",
        container=info.name,
        log_tail=redact(pm.logs(info.name, tail=LOG_TAIL)),
        hint="fix the cause shown in its log and rerun `ocp-bundler quay up`",
    )


def _wait_healthy(
    pm: Podman,
    options: QuayUpOptions,
    names: Mapping[str, str],
    api_url: str,
    ca_file: Optional[Path],
    connect_to: Optional[str],
    redact: Callable[[str], str],
) -> None:
    deadline = time.monotonic() + options.health_timeout
    last = "no answer yet"
    with QuayAPI(api_url, ca_file=ca_file, connect_to=connect_to, timeout=10) as api:
        while True:
            healthy = False
            try:
                status = api.health(options.health_path)
                healthy = status == 200
                last = f"HTTP {status}"
            except RegistryUnreachableError as exc:
                last = exc.message.split(": ", 1)[-1]
            # A container that stopped is the cause to report, even when Quay still answers.
            for role in ROLES:
                info = pm.container_inspect(names[role])
                if info is None or not info.running:
                    if info is None:
                        raise QuayStartError(f"container {names[role]} disappeared while Quay was starting", container=names[role])
                    raise _exited(pm, info, redact)
            if healthy:
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(min(1.0, max(0.1, deadline - time.monotonic())))
    container = names["quay"]
    raise QuayHealthError(
        f"Quay did not become healthy within {options.health_timeout:.0f} s: container {container} is running "
        f"but GET {api_url}{options.health_path} gives {last}",
        container=container,
        log_tail=redact(pm.logs(container, tail=LOG_TAIL)),
        url=f"{api_url}{options.health_path}",
        hint="see its last log lines below; fix the cause and rerun `ocp-bundler quay up` (a first start can take minutes: raise --timeout)",
    )


def _prepare_pushes(
    options: QuayUpOptions,
    secrets: QuaySecrets,
    paths: QuayPaths,
    api_url: str,
    ca_file: Optional[Path],
    connect_to: Optional[str],
    changes: List[str],
) -> Tuple[bool, List[Tuple[str, str]]]:
    """Initialise the first user, then each organisation with its robot. Returns (initialised now, [(org, robot)])."""
    wanted = [(org, f"{org}+{options.robot}") for org in options.organizations]
    email = options.init_email or f"{options.init_user}@localhost.localdomain"
    with QuayAPI(api_url, ca_file=ca_file, connect_to=connect_to, token=options.api_token or secrets.admin_token) as api:
        token = api.initialize_user(options.init_user, secrets.init_password, email)
        initialized_now = token is not None
        if initialized_now:
            # A fresh database: whatever robots we remembered belong to an older one.
            secrets.admin_token = token
            secrets.robot_tokens.clear()
            save_secrets(paths.secrets_file, secrets)
            changes.append(f"initialised the first user {options.init_user}")
        missing = [(org, name) for org, name in wanted if name not in secrets.robot_tokens]
        if not missing:
            return initialized_now, wanted
        if options.api_token:
            api.token = options.api_token
        if not api.token:
            raise AuthenticationError(
                f"Quay at {api_url} was initialised before and no API token is stored to create {', '.join(n for _, n in missing)}",
                url=api_url,
                hint="create an OAuth token for a superuser in Quay's UI and pass it with --api-token-file (quay up) or --quay-token (unpack)",
            )
        for org, _name in missing:
            if api.ensure_organization(org):
                changes.append(f"created organisation {org}")
            robot = api.ensure_robot(org, options.robot)
            api.grant_creator(org, robot.name)
            secrets.robot_tokens[robot.name] = robot.token
            save_secrets(paths.secrets_file, secrets)
            changes.append(f"prepared robot {robot.name} (creator in {org})")
    return initialized_now, wanted


def _write_auth_file(path: Path, server: str, robots: Sequence[Tuple[str, str, str]]) -> bool:
    """Docker/containers auth file: the first robot for the host, and each robot for its organisation."""
    def entry(name: str, token: str) -> Dict[str, str]:
        return {"auth": base64.b64encode(f"{name}:{token}".encode()).decode()}

    auths: Dict[str, Dict[str, str]] = {}
    if robots:
        _, first, first_token = robots[0]
        auths[server] = entry(first, first_token)
    if len(robots) > 1:
        for org, name, token in robots:
            auths[f"{server}/{org}"] = entry(name, token)
    return _write_json(path, {"auths": auths}, mode=0o600)


def _write_systemd_units(pm: Podman, pod: str, directory: Path) -> Tuple[List[Path], bool]:
    """`podman generate systemd` into `directory`; files whose content (comments aside: podman stamps the
    date) is unchanged are left alone. Returns (unit files, whether any was written)."""
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".units-", dir=directory) as tmp:
        fresh = pm.generate_systemd(pod, Path(tmp))
        if not fresh:
            raise PodmanError(f"podman generate systemd wrote no unit for pod {pod}")
        units: List[Path] = []
        rewritten = False
        for unit in sorted(fresh):
            target = directory / unit.name
            if not (target.exists() and _unit_body(target) == _unit_body(unit)):
                atomic_write(target, unit.read_bytes(), mode=0o644)
                rewritten = True
            units.append(target)
    return units, rewritten


def _unit_body(path: Path) -> List[str]:
    return [ln for ln in path.read_text().splitlines() if not ln.startswith("#")]


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
    names = _container_names(name)
    pod = pm.pod_inspect(name)
    containers = {role: pm.container_inspect(names[role]) for role in ROLES}
    state = _read_state(QuayPaths(data_dir).state_file) if data_dir is not None else {}
    url: Optional[str] = None
    healthy: Optional[bool] = None
    detail = ""
    if state.get("server"):
        url = f"https://{state['server']}"
        if check_health and pod is not None:
            ca = Path(state["ca_file"]) if state.get("ca_file") else None
            connect_to = _local_address(str(state.get("bind_address") or ""))
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
    for cname in _container_names(name).values():
        if pm.container_remove(cname, timeout=stop_timeout):
            removed.append(cname)
    purged: Optional[Path] = None
    if purge and paths is not None and paths.root.exists():
        pm.remove_tree(paths.root)
        purged = paths.root
    return QuayDownResult(name, removed_pod, sorted(set(removed)), purged)


__all__ = [
    "DEFAULT_NAME",
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

"""The Quay pod: PostgreSQL, Redis and Quay in one podman pod publishing `HOST_PORT:8443`.

Owns the pod and its three containers: their names and specs (PostgreSQL with `POSTGRESQL_*` env and the
`pg_trgm` extension created with `podman exec ... psql`; Redis with `REDIS_PASSWORD`; Quay with its config
volume on `/quay-registry/conf/stack` and storage volume on `/datastorage`), env files (0600, so secrets never
reach a command line), file ownership for the containers' users, starting in dependency order, waiting for
Quay's health check, systemd units, and the errors that name the container that failed with the end of its
log (secrets redacted).
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from bundler.base.errors import RegistryUnreachableError, UsageError
from bundler.base.fsutil import atomic_write
from bundler.quay.api import QuayAPI
from bundler.quay.images import ROLES, LoadedImage, Step
from bundler.quay.podman import ContainerInfo, ContainerSpec, Mount, Podman, PodmanError

log = logging.getLogger(__name__)

QUAY_CONTAINER_PORT = 8443
CONTAINER_SUFFIX = {"postgres": "postgres", "redis": "redis", "quay": "app"}
LABEL = "io.ocp-bundler.quay.bringup"
LOG_TAIL = 30

POSTGRES_DATA = "/var/lib/pgsql/data"
POSTGRES_UID = 26
QUAY_CONFIG = "/quay-registry/conf/stack"
QUAY_STORAGE = "/datastorage"
QUAY_UID = 1001


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


def container_names(name: str) -> Dict[str, str]:
    return {role: f"{name}-{CONTAINER_SUFFIX[role]}" for role in ROLES}


def local_address(bind_address: str) -> str:
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


def env_file(path: Path, values: Mapping[str, str]) -> bool:
    data = "".join(f"{k}={v}\n" for k, v in values.items()).encode()
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    atomic_write(path, data, mode=0o600)
    return True


class Redactor:
    def __init__(self, secrets: Sequence[str]) -> None:
        self._secrets = sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for s in self._secrets:
            text = text.replace(s, "***")
        return text


def check_podman_version(pm: Podman) -> None:
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


def own_for_container(pm: Podman, path: Path, uid: int, gid: int, *, mode: int) -> None:
    """Mode and owner so the container's user can use `path`. As root: the container uid itself; rootless:
    the mapped uid through `podman unshare` (container uid N is not host uid N there)."""
    st = path.stat()
    if st.st_mode & 0o777 != mode:
        os.chmod(path, mode)
    if os.geteuid() != 0 or (st.st_uid, st.st_gid) != (uid, gid):
        pm.chown_for_container(path, uid, gid)


def ensure_container(
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


def setup_database(pm: Podman, container: str, timeout: float, redact: Callable[[str], str], on_step: Step) -> None:
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


def wait_healthy(
    pm: Podman,
    names: Mapping[str, str],
    api_url: str,
    ca_file: Optional[Path],
    connect_to: Optional[str],
    redact: Callable[[str], str],
    *,
    health_path: str,
    timeout: float,
) -> None:
    """Poll `GET api_url + health_path` until 200; a container that stops, or the timeout, is an error."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    with QuayAPI(api_url, ca_file=ca_file, connect_to=connect_to, timeout=10) as api:
        while True:
            healthy = False
            try:
                status = api.health(health_path)
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
        f"Quay did not become healthy within {timeout:.0f} s: container {container} is running "
        f"but GET {api_url}{health_path} gives {last}",
        container=container,
        log_tail=redact(pm.logs(container, tail=LOG_TAIL)),
        url=f"{api_url}{health_path}",
        hint="see its last log lines below; fix the cause and rerun `ocp-bundler quay up` (a first start can take minutes: raise --timeout)",
    )


def write_systemd_units(pm: Podman, pod: str, directory: Path) -> Tuple[List[Path], bool]:
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


def ensure_pod(pm: Podman, name: str, *, bind_address: str, port: int, changes: List[str], on_step: Step) -> None:
    """Create the pod publishing `[bind_address:]port:8443`, or check that the existing one publishes it."""
    pod_info = pm.pod_inspect(name)
    publish = f"{bind_address + ':' if bind_address else ''}{port}:{QUAY_CONTAINER_PORT}"
    if pod_info is None:
        if port_in_use(bind_address, port):
            raise QuayStartError(
                f"port {port} is already in use on this machine",
                hint=f"stop what listens there (ss -ltnp 'sport = :{port}') or choose another --port",
            )
        on_step(f"creating pod {name} publishing {publish}")
        pm.pod_create(name, publish=[publish], labels={LABEL: name})
        changes.append(f"created pod {name}")
        return
    ports = {(hp, cp) for _, hp, cp in pod_info.published}
    if (port, QUAY_CONTAINER_PORT) not in ports:
        have = ", ".join(f"{hp}->{cp}" for _, hp, cp in pod_info.published) or "none"
        raise UsageError(
            f"pod {name} already exists and publishes {have}, not {port}->{QUAY_CONTAINER_PORT}",
            hint=f"run `ocp-bundler quay down --name {name}` first to move it to another port (data is kept)",
        )


def container_specs(
    pod: str, loaded: Mapping[str, LoadedImage], *, env_postgres: Path, env_redis: Path, postgres_dir: Path, config_dir: Path, storage_dir: Path
) -> Dict[str, ContainerSpec]:
    """The three containers of pod `pod`, by role."""
    names = container_names(pod)
    return {
        "postgres": ContainerSpec(
            name=names["postgres"],
            image=loaded["postgres"].name,
            pod=pod,
            env_files=(env_postgres,),
            mounts=(Mount(postgres_dir, POSTGRES_DATA),),
            labels={LABEL: pod},
        ),
        "redis": ContainerSpec(name=names["redis"], image=loaded["redis"].name, pod=pod, env_files=(env_redis,), labels={LABEL: pod}),
        "quay": ContainerSpec(
            name=names["quay"],
            image=loaded["quay"].name,
            pod=pod,
            mounts=(Mount(config_dir, QUAY_CONFIG), Mount(storage_dir, QUAY_STORAGE)),
            labels={LABEL: pod},
        ),
    }


def start_containers(
    pm: Podman,
    specs: Mapping[str, ContainerSpec],
    loaded: Mapping[str, LoadedImage],
    *,
    database_setup: bool,
    timeout: float,
    changes: List[str],
    warnings: List[str],
    redact: Callable[[str], str],
    on_step: Step,
) -> Dict[str, bool]:
    """Create and start the containers in dependency order (the database is set up before Quay starts).
    Returns, per role, whether this call (re)started it."""
    started_now: Dict[str, bool] = {}
    for role in ROLES:
        if role == "quay" and database_setup:
            setup_database(pm, specs["postgres"].name, timeout, redact, on_step)
        started_now[role] = ensure_container(pm, specs[role], loaded[role], changes, warnings, redact, on_step)
    return started_now

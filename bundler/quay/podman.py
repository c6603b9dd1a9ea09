"""A thin, typed wrapper over the podman command line (podman 4.3+), run with `subprocess`.

Owns every podman invocation ocp-bundler makes: image presence, `load`, `tag`, pods, containers, `exec`,
`logs`, `generate systemd`. Each method runs one podman command and turns its output into values or a
`PodmanError` that names the command and podman's own message. Nothing here decides *what* to run; that is
`bundler.quay.bringup`'s job.

Secrets never appear on a podman command line built by ocp-bundler: containers get them through
`--env-file` files (0600) instead of `-e KEY=VALUE`, so they show neither in `ps` nor in the debug log.
The command lines that are logged are redacted anyway (`-e`/`--env` values) as a second line of defence.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from bundler.base.errors import BundlerError, ExitCode

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 600.0


class PodmanError(BundlerError):
    """A podman command failed; carries the command (redacted), its exit status and podman's message."""

    exit_code = ExitCode.USAGE

    def __init__(self, message: str, *, command: Sequence[str] = (), returncode: Optional[int] = None, stderr: str = "", hint: Optional[str] = None) -> None:
        super().__init__(message, hint=hint)
        self.command = list(command)
        self.returncode = returncode
        self.stderr = stderr


class PodmanNotFoundError(PodmanError):
    pass


def redact_args(args: Sequence[str]) -> List[str]:
    """A command line fit for logs: values of `-e`/`--env` and of `--*password*` flags become `***`."""
    out: List[str] = []
    hide_next = False
    for arg in args:
        if hide_next:
            name, sep, _ = arg.partition("=")
            out.append(f"{name}=***" if sep else "***")
            hide_next = False
        elif arg in ("-e", "--env") or (arg.startswith("--") and "password" in arg and "=" not in arg):
            out.append(arg)
            hide_next = True
        elif arg.startswith("--env="):
            key = arg[len("--env=") :].partition("=")[0]
            out.append(f"--env={key}=***")
        elif arg.startswith("--") and "password" in arg:
            out.append(arg.partition("=")[0] + "=***")
        else:
            out.append(arg)
    return out


@dataclass(frozen=True)
class Mount:
    """A bind mount `host:container[:options]`."""

    host: Path
    container: str
    options: str = "Z"

    def arg(self) -> str:
        return f"{self.host}:{self.container}" + (f":{self.options}" if self.options else "")


@dataclass(frozen=True)
class ContainerSpec:
    """What `podman create` needs for one container of a pod."""

    name: str
    image: str
    pod: Optional[str] = None
    env_files: Tuple[Path, ...] = ()
    mounts: Tuple[Mount, ...] = ()
    command: Tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    extra_args: Tuple[str, ...] = ()


@dataclass(frozen=True)
class ContainerInfo:
    """The parts of `podman container inspect` that ocp-bundler reads."""

    name: str
    id: str
    image_id: str
    image_name: str
    state: str  # created, running, exited, stopped, paused, ...
    exit_code: int
    pod: str
    mounts: Tuple[Tuple[str, str], ...]  # (source, destination)
    started_at: str = ""
    error: str = ""

    @property
    def running(self) -> bool:
        return self.state == "running"


@dataclass(frozen=True)
class PodInfo:
    name: str
    id: str
    state: str  # Created, Running, Degraded, Exited, Stopped
    containers: Tuple[str, ...]  # names, infra container excluded
    published: Tuple[Tuple[str, int, int], ...]  # (host ip, host port, container port)


@dataclass(frozen=True)
class ImageInfo:
    id: str
    names: Tuple[str, ...]
    digest: str
    config: Mapping[str, Any]


class Podman:
    """Runs podman. `binary` defaults to the `podman` on PATH; a missing binary is a `PodmanNotFoundError`."""

    def __init__(self, binary: Optional[str] = None, *, timeout: float = DEFAULT_TIMEOUT, env: Optional[Mapping[str, str]] = None) -> None:
        found = shutil.which(binary or "podman")
        if found is None:
            raise PodmanNotFoundError(
                "podman is not installed",
                hint="install podman 4.3 or newer (dnf install podman / apt-get install podman runc) and rerun",
            )
        self.binary = found
        self.timeout = timeout
        self.env = dict(env) if env is not None else None

    # -- running -------------------------------------------------------------------------------------------

    def run(
        self,
        args: Sequence[str],
        *,
        check: bool = True,
        timeout: Optional[float] = None,
        cwd: Optional[Path] = None,
        what: Optional[str] = None,
    ) -> "subprocess.CompletedProcess[str]":
        """Run `podman ARGS`; raise `PodmanError` on a non-zero exit when `check`."""
        argv = [self.binary, *args]
        shown = " ".join(redact_args(["podman", *args]))
        log.debug("running %s", shown)
        env = None
        if self.env is not None:
            env = {**os.environ, **self.env}
        try:
            proc = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout or self.timeout,
                cwd=str(cwd) if cwd else None,
                env=env,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            raise PodmanError(f"{shown} did not finish within {timeout or self.timeout:.0f} s", command=redact_args(argv), hint="check `podman ps -a` and the system load") from None
        except OSError as exc:
            raise PodmanError(f"cannot run {self.binary}: {exc.strerror}", command=redact_args(argv)) from None
        if check and proc.returncode != 0:
            message = _last_error_line(proc.stderr) or f"exit status {proc.returncode}"
            raise PodmanError(
                f"{what or shown} failed: {message}",
                command=redact_args(argv),
                returncode=proc.returncode,
                stderr=proc.stderr,
            )
        return proc

    def version(self) -> str:
        return self.run(["version", "--format", "{{.Client.Version}}"]).stdout.strip()

    # -- images --------------------------------------------------------------------------------------------

    def image_exists(self, ref: str) -> bool:
        return self.run(["image", "exists", ref], check=False).returncode == 0

    def image_inspect(self, ref: str) -> Optional[ImageInfo]:
        proc = self.run(["image", "inspect", ref], check=False)
        if proc.returncode != 0:
            return None
        obj = _first(proc.stdout)
        return ImageInfo(
            id=str(obj.get("Id", "")),
            names=tuple(obj.get("RepoTags") or ()),
            digest=str(obj.get("Digest", "")),
            config=dict(obj.get("Config") or {}),
        )

    def load(self, archive: Path) -> List[str]:
        """`podman load -i ARCHIVE`; returns the names podman reports as loaded."""
        proc = self.run(["load", "-i", str(archive)], what=f"podman load -i {archive}", timeout=max(self.timeout, 3600.0))
        names: List[str] = []
        for line in proc.stdout.splitlines():
            if line.startswith("Loaded image"):
                names.extend(n.strip() for n in line.split(":", 1)[1].split(","))
        return names

    def tag(self, image: str, name: str) -> None:
        self.run(["tag", image, name])

    def remove_image(self, ref: str, *, force: bool = False) -> bool:
        args = ["rmi"] + (["--force"] if force else []) + [ref]
        return self.run(args, check=False).returncode == 0

    # -- pods ----------------------------------------------------------------------------------------------

    def pod_inspect(self, name: str) -> Optional[PodInfo]:
        proc = self.run(["pod", "inspect", name], check=False)
        if proc.returncode != 0:
            return None
        obj = _first(proc.stdout)
        infra = str(obj.get("InfraContainerID", ""))
        containers = tuple(
            str(c.get("Name", "")) for c in (obj.get("Containers") or []) if str(c.get("Id", "")) != infra
        )
        published: List[Tuple[str, int, int]] = []
        infra_cfg = obj.get("InfraConfig") or {}
        for cport, bindings in (infra_cfg.get("PortBindings") or {}).items():
            for b in bindings or []:
                try:
                    published.append((str(b.get("HostIp", "")), int(b.get("HostPort", 0)), int(str(cport).split("/")[0])))
                except (TypeError, ValueError):
                    continue
        return PodInfo(
            name=str(obj.get("Name", name)),
            id=str(obj.get("Id", "")),
            state=str(obj.get("State", "")),
            containers=containers,
            published=tuple(published),
        )

    def pod_create(self, name: str, *, publish: Sequence[str] = (), labels: Mapping[str, str] = {}) -> str:
        args = ["pod", "create", "--name", name]
        for p in publish:
            args += ["--publish", p]
        for k, v in labels.items():
            args += ["--label", f"{k}={v}"]
        return self.run(args, what=f"creating pod {name}").stdout.strip()

    def pod_start(self, name: str) -> None:
        self.run(["pod", "start", name], what=f"starting pod {name}")

    def pod_stop(self, name: str, *, timeout: int = 30) -> None:
        self.run(["pod", "stop", "--time", str(timeout), name], what=f"stopping pod {name}")

    def pod_remove(self, name: str, *, timeout: int = 30) -> bool:
        """Stop and remove a pod with its containers; False when there was no such pod."""
        if self.pod_inspect(name) is None:
            return False
        self.run(["pod", "rm", "--force", "--time", str(timeout), name], what=f"removing pod {name}")
        return True

    # -- containers ----------------------------------------------------------------------------------------

    def container_inspect(self, name: str) -> Optional[ContainerInfo]:
        proc = self.run(["container", "inspect", name], check=False)
        if proc.returncode != 0:
            return None
        obj = _first(proc.stdout)
        state = obj.get("State") or {}
        mounts = tuple((str(m.get("Source", "")), str(m.get("Destination", ""))) for m in (obj.get("Mounts") or []))
        return ContainerInfo(
            name=str(obj.get("Name", name)),
            id=str(obj.get("Id", "")),
            image_id=str(obj.get("Image", "")),
            image_name=str(obj.get("ImageName", "")),
            state=str(state.get("Status", "")),
            exit_code=int(state.get("ExitCode", 0) or 0),
            pod=str(obj.get("Pod", "")),
            mounts=mounts,
            started_at=str(state.get("StartedAt", "")),
            error=str(state.get("Error", "")),
        )

    def container_create(self, spec: ContainerSpec) -> str:
        args = ["create", "--name", spec.name]
        if spec.pod:
            args += ["--pod", spec.pod]
        for f in spec.env_files:
            args += ["--env-file", str(f)]
        for m in spec.mounts:
            args += ["--volume", m.arg()]
        for k, v in spec.labels.items():
            args += ["--label", f"{k}={v}"]
        args += list(spec.extra_args)
        args.append(spec.image)
        args += list(spec.command)
        return self.run(args, what=f"creating container {spec.name}").stdout.strip()

    def container_start(self, name: str) -> None:
        self.run(["start", name], what=f"starting container {name}")

    def container_restart(self, name: str, *, timeout: int = 30) -> None:
        self.run(["restart", "--time", str(timeout), name], what=f"restarting container {name}")

    def container_remove(self, name: str, *, timeout: int = 30) -> bool:
        if self.container_inspect(name) is None:
            return False
        self.run(["rm", "--force", "--time", str(timeout), name], what=f"removing container {name}")
        return True

    def exec(self, name: str, command: Sequence[str], *, check: bool = True, timeout: Optional[float] = None) -> "subprocess.CompletedProcess[str]":
        return self.run(["exec", name, *command], check=check, timeout=timeout, what=f"podman exec {name} {command[0] if command else ''}".strip())

    def logs(self, name: str, *, tail: int = 30) -> str:
        """The last `tail` lines a container wrote (stdout and stderr), or "" when there is none."""
        proc = self.run(["logs", "--tail", str(tail), name], check=False)
        if proc.returncode != 0:
            return ""
        text = proc.stdout + (("\n" + proc.stderr) if proc.stderr.strip() else "")
        lines = [ln for ln in text.splitlines() if ln.strip()]
        return "\n".join(lines[-tail:])

    # -- systemd -------------------------------------------------------------------------------------------

    def generate_systemd(self, pod: str, directory: Path, *, restart_policy: str = "always") -> List[Path]:
        """`podman generate systemd --files --name POD` into `directory`; returns the unit files written."""
        directory.mkdir(parents=True, exist_ok=True)
        proc = self.run(
            ["generate", "systemd", "--files", "--name", "--restart-policy", restart_policy, pod],
            cwd=directory,
            what=f"podman generate systemd for pod {pod}",
        )
        out: List[Path] = []
        for line in proc.stdout.splitlines():
            line = line.strip()
            if line.endswith(".service"):
                out.append(Path(line) if os.path.isabs(line) else directory / line)
        return out

    # -- files owned by container users --------------------------------------------------------------------

    def chown_for_container(self, path: Path, uid: int, gid: int) -> None:
        """Give `path` to a container's user: `chown` as root, `podman unshare chown` rootless."""
        if os.geteuid() == 0:
            os.chown(path, uid, gid)
        else:
            self.run(["unshare", "chown", f"{uid}:{gid}", str(path)], what=f"podman unshare chown {path}")

    def remove_tree(self, path: Path) -> None:
        """Remove a directory that may hold files owned by container users (rootless: via `podman unshare`)."""
        try:
            shutil.rmtree(path)
        except FileNotFoundError:
            return
        except PermissionError:
            if os.geteuid() == 0:
                raise
            self.run(["unshare", "rm", "-rf", str(path)], what=f"removing {path}")


def _first(stdout: str) -> Dict[str, Any]:
    try:
        obj = json.loads(stdout)
    except ValueError:
        raise PodmanError("podman printed something that is not JSON", hint="check the podman installation") from None
    if isinstance(obj, list):
        obj = obj[0] if obj else {}
    if not isinstance(obj, dict):
        raise PodmanError("podman printed unexpected JSON", hint="check the podman installation")
    return obj


def _last_error_line(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.lower().startswith("error") or "error" in ln.lower():
            return ln[len("Error: ") :] if ln.startswith("Error: ") else ln
    return lines[-1] if lines else ""


__all__ = [
    "ContainerInfo",
    "ContainerSpec",
    "ImageInfo",
    "Mount",
    "PodInfo",
    "Podman",
    "PodmanError",
    "PodmanNotFoundError",
    "redact_args",
]

"""``RegistryServer``: the Debian ``docker-registry`` (distribution 2.8.2) on loopback.

Owns one registry process, its private working directory (config.yml, storage, log,
certificates, htpasswd) and, in ``"token"`` mode, the :class:`TokenServer` it trusts.
Never uses the packaged ``/etc/docker/registry/config.yml``.

Modes:

- ``"plain"``         HTTP, no authentication
- ``"tls-htpasswd"``  HTTPS (certificate from a throw-away CA: ``ca_file``) + htpasswd
                      bcrypt users (made with ``htpasswd -Bbn``)
- ``"token"``         HTTP + token (Bearer) auth against ``token_server``
- ``"tls-clientcert"`` HTTPS that also requires a client certificate signed by the test CA
                      (``http.tls.clientcas``; ``client_cert``/``client_key`` hold one), no htpasswd

``tls_names``: extra DNS names the server certificate is valid for (besides 127.0.0.1, ::1 and
localhost), e.g. a name only a test proxy resolves.

The registry listens on ``127.0.0.1:0``; the real port is read from its log line
``listening on 127.0.0.1:<port>`` (no port races). ``restart()`` keeps the data dir and
asks for the same port again; should that port have been taken meanwhile, the registry
comes back on a new port and ``host``/``url`` change (a warning is emitted).
Every started process is stopped by ``stop()``/``close()``/context exit, and at
interpreter exit as a last resort.
"""

from __future__ import annotations

import atexit
import base64
import http.client
import json
import re
import shutil
import ssl
import subprocess
import tempfile
import time
import warnings
import weakref
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import yaml

from .certs import TLSFiles, make_client_cert, make_tls_files
from .token_server import TokenServer

MODES = ("plain", "tls-htpasswd", "token", "tls-clientcert")
_LISTEN_RE = re.compile(r"listening on (?:\[[^\]]*\]|[0-9.]+):(\d+)")
_LIVE: "weakref.WeakSet[RegistryServer]" = weakref.WeakSet()


@atexit.register
def stop_all_registries() -> None:
    """Stop every registry process still running (also run at interpreter exit)."""
    for server in list(_LIVE):
        server.stop()


class RegistryError(RuntimeError):
    pass


class RegistryServer:
    """A docker-registry process on loopback. Use as a context manager.

    Attributes: ``mode``, ``host`` ("127.0.0.1:PORT"), ``url`` (scheme://host),
    ``ca_file``/``cert_dir`` (TLS mode, else None), ``username``/``password`` (None in
    plain mode), ``data_dir``, ``config_file``, ``log_file``, ``token_server``.
    """

    def __init__(
        self,
        mode: str = "plain",
        *,
        workdir: Optional[Union[str, Path]] = None,
        username: str = "user",
        password: str = "pass",
        token_server: Optional[TokenServer] = None,
        token_expires_in: int = 300,
        anonymous_pull: bool = False,
        binary: str = "docker-registry",
        start_timeout: float = 15.0,
        tls_names: Sequence[str] = (),
    ) -> None:
        if mode not in MODES:
            raise ValueError("mode must be one of %s, not %r" % (MODES, mode))
        self.mode = mode
        self.binary = binary
        self.start_timeout = start_timeout
        self._owns_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="ocpb-registry-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.workdir / "data"
        self.data_dir.mkdir(exist_ok=True)
        self.config_file = self.workdir / "config.yml"
        self.log_file = self.workdir / "registry.log"
        self.username: Optional[str] = None if mode in ("plain", "tls-clientcert") else username
        self.password: Optional[str] = None if mode in ("plain", "tls-clientcert") else password
        self.tls: Optional[TLSFiles] = None
        self.token_server: Optional[TokenServer] = None
        self._owns_token_server = False
        self._htpasswd: Optional[Path] = None
        self._proc: Optional["subprocess.Popen[bytes]"] = None
        self._port = 0
        self.host = ""

        self.client_cert: Optional[Path] = None
        self.client_key: Optional[Path] = None
        if mode in ("tls-htpasswd", "tls-clientcert"):
            self.tls = make_tls_files(self.workdir / "tls", hosts=("127.0.0.1", "::1", "localhost", *tls_names))
        if mode == "tls-clientcert":
            assert self.tls is not None
            self.client_cert, self.client_key = make_client_cert(self.tls, self.workdir / "tls" / "client")
        if mode == "tls-htpasswd":
            self._htpasswd = self.workdir / "htpasswd"
            self._htpasswd.write_text(_bcrypt_line(username, password) + "\n")
        elif mode == "token":
            if token_server is None:
                token_server = TokenServer(
                    {username: password},
                    directory=self.workdir / "token",
                    expires_in=token_expires_in,
                    anonymous_pull=anonymous_pull,
                )
                self._owns_token_server = True
            self.token_server = token_server

    # -- public info ----------------------------------------------------------------
    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def url(self) -> str:
        return "%s://%s" % (self.scheme, self.host)

    @property
    def ca_file(self) -> Optional[Path]:
        return self.tls.ca_file if self.tls else None

    @property
    def cert_dir(self) -> Optional[Path]:
        """Directory with only the CA certificate (for ``skopeo --cert-dir``)."""
        return self.tls.ca_dir if self.tls else None

    @property
    def port(self) -> int:
        return self._port

    @property
    def pid(self) -> Optional[int]:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def auth(self) -> Optional[Tuple[str, str]]:
        """``(username, password)`` or None (plain mode)."""
        if self.username is None or self.password is None:
            return None
        return (self.username, self.password)

    def log_text(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def write_authfile(self, path: Union[str, Path], *, merge: bool = True) -> Path:
        """Write (or, with ``merge``, add to) a docker/podman auth file
        ``{"auths": {host: {"auth": base64(user:pass)}}}``. Plain mode writes no entry."""
        target = Path(path)
        data: Dict[str, Any] = {"auths": {}}
        if merge and target.exists():
            data = json.loads(target.read_text() or "{}")
            data.setdefault("auths", {})
        if self.username is not None and self.password is not None:
            token = base64.b64encode(("%s:%s" % (self.username, self.password)).encode()).decode()
            data["auths"][self.host] = {"auth": token}
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(data, indent=2) + "\n")
        return target

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> "RegistryServer":
        if self.running:
            return self
        if shutil.which(self.binary) is None:
            raise RegistryError("%s not found on PATH" % self.binary)
        if self.token_server is not None and self._owns_token_server:
            self.token_server.start()
        wanted = self._port
        try:
            self._spawn(wanted)
        except RegistryError:
            if not wanted:
                raise
            warnings.warn("registry could not get port %d back; using a new port" % wanted, stacklevel=2)
            self._spawn(0)
        return self

    def stop(self) -> None:
        """Stop the registry process (data is kept; ``start()`` brings it back)."""
        proc, self._proc = self._proc, None
        _LIVE.discard(self)
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def restart(self) -> "RegistryServer":
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop everything and delete the working directory if we created it."""
        self.stop()
        if self.token_server is not None and self._owns_token_server:
            self.token_server.stop()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "RegistryServer":
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()

    def garbage_collect(self, *, delete_untagged: bool = False) -> str:
        """Run ``docker-registry garbage-collect`` (the registry must be stopped)."""
        if self.running:
            raise RegistryError("stop the registry before garbage-collect")
        args = [self.binary, "garbage-collect", str(self.config_file)]
        if delete_untagged:
            args.append("--delete-untagged")
        done = subprocess.run(args, capture_output=True, text=True, check=True)
        return done.stdout + done.stderr

    # -- internals ------------------------------------------------------------------
    def _config(self, port: int) -> Dict[str, Any]:
        http_cfg: Dict[str, Any] = {
            "addr": "127.0.0.1:%d" % port,
            "secret": "ocpb-test-registry-secret",
            "headers": {"X-Content-Type-Options": ["nosniff"]},
        }
        cfg: Dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.data_dir)},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": http_cfg,
        }
        if self.tls is not None:
            http_cfg["tls"] = {
                "certificate": str(self.tls.cert_file),
                "key": str(self.tls.key_file),
            }
            if self.mode == "tls-clientcert":
                http_cfg["tls"]["clientcas"] = [str(self.tls.ca_file)]
        if self._htpasswd is not None:
            cfg["auth"] = {"htpasswd": {"realm": "ocpb-test", "path": str(self._htpasswd)}}
        if self.token_server is not None:
            ts = self.token_server
            cfg["auth"] = {
                "token": {
                    "realm": ts.realm,
                    "service": ts.service,
                    "issuer": ts.issuer,
                    "rootcertbundle": str(ts.cert_file),
                    "autoredirect": False,
                }
            }
        return cfg

    def _spawn(self, port: int) -> None:
        self.config_file.write_text(yaml.safe_dump(self._config(port), sort_keys=False))
        offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(
                [self.binary, "serve", str(self.config_file)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=str(self.workdir),
            )
        self._proc = proc
        _LIVE.add(self)
        try:
            self._port = self._wait_port(proc, offset)
            self.host = "127.0.0.1:%d" % self._port
            self._wait_ready(proc)
        except BaseException:
            self.stop()
            raise

    def _new_log(self, offset: int) -> str:
        with open(self.log_file, "rb") as fh:
            fh.seek(offset)
            return fh.read().decode(errors="replace")

    def _wait_port(self, proc: "subprocess.Popen[bytes]", offset: int) -> int:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            match = _LISTEN_RE.search(self._new_log(offset))
            if match:
                return int(match.group(1))
            if proc.poll() is not None:
                break
            time.sleep(0.01)
        raise RegistryError(
            "docker-registry did not start (exit %s); log:\n%s" % (proc.poll(), self._new_log(offset)[-3000:])
        )

    def _wait_ready(self, proc: "subprocess.Popen[bytes]") -> None:
        deadline = time.monotonic() + self.start_timeout
        last: Optional[BaseException] = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            try:
                if self.tls is not None:
                    ctx = ssl.create_default_context(cafile=str(self.tls.ca_file))
                    if self.client_cert is not None and self.client_key is not None:
                        ctx.load_cert_chain(str(self.client_cert), str(self.client_key))
                    conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                        "127.0.0.1", self._port, timeout=2, context=ctx
                    )
                else:
                    conn = http.client.HTTPConnection("127.0.0.1", self._port, timeout=2)
                try:
                    conn.request("GET", "/v2/")
                    status = conn.getresponse().status
                finally:
                    conn.close()
                if status in (200, 401):
                    return
                last = RegistryError("GET /v2/ answered %d" % status)
            except (OSError, http.client.HTTPException) as exc:
                last = exc
            time.sleep(0.01)
        raise RegistryError("docker-registry not ready: %r; log:\n%s" % (last, self.log_text()[-3000:]))


def _bcrypt_line(username: str, password: str) -> str:
    """One htpasswd line with a bcrypt hash (docker-registry accepts bcrypt only)."""
    tool = shutil.which("htpasswd")
    if tool is None:
        raise RegistryError("htpasswd (apache2-utils) not found on PATH")
    out = subprocess.run(
        [tool, "-Bbn", username, password], capture_output=True, text=True, check=True
    ).stdout
    return out.strip()


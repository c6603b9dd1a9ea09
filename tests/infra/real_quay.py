"""``RealQuay``: a real Project Quay 3.18 (from ``../shared/quay``) on loopback, for tests and benchmarks.

Owns one Quay instance started by ``../shared/quay/start.sh``: its state directory (PostgreSQL, Redis,
gunicorn logs), its ports, and the superuser initialised on it with an API token. Nothing here imports
``bundler``.

Usage::

    from tests.infra.real_quay import RealQuay, ensure_installed

    ensure_installed()                    # ../shared/quay/install.sh (idempotent; 1-2 min the first time)
    with RealQuay() as quay:              # ~10-20 s: initdb, migrations, gunicorn
        quay.url                          # "http://127.0.0.1:PORT"
        quay.host                         # "127.0.0.1:PORT" (plain HTTP: clients need --insecure-registry)
        quay.token                        # the superuser's API token (Bearer for /api/v1, $oauthtoken on /v2)
        quay.username, quay.password      # the superuser
        quay.api("POST", "/api/v1/organization/", {"name": "org"})   # -> (status, parsed JSON or text)
        quay.log_file                     # gunicorn's log

``RealQuay(extra_config={"CREATE_NAMESPACE_ON_PUSH": True})`` merges Quay config keys over the defaults
(``start.sh --extra-config``). Every started instance is stopped (and its state wiped) by ``stop()``,
context exit, or at interpreter exit as a last resort. The state directory lives under ``/tmp`` with mode
0755 because PostgreSQL runs as the ``postgres`` user and must reach it.
"""

from __future__ import annotations

import atexit
import base64
import http.client
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import yaml

QUAY_DIR = Path(os.environ.get("OCPB_QUAY_DIR", Path(__file__).resolve().parents[2].parent / "shared" / "quay"))
_LIVE: "weakref.WeakSet[RealQuay]" = weakref.WeakSet()


class RealQuayError(RuntimeError):
    pass


@atexit.register
def stop_all_quays() -> None:
    """Stop every Quay instance still running (also run at interpreter exit)."""
    for quay in list(_LIVE):
        quay.stop()


def available() -> Optional[str]:
    """None when ``../shared/quay`` is present, else the reason it cannot run here."""
    if not (QUAY_DIR / "start.sh").is_file():
        return "no real Quay scripts at %s" % QUAY_DIR
    return None


def ensure_installed(timeout: float = 900.0) -> None:
    """Run ``install.sh`` (a no-op under a second once installed); raise RealQuayError on failure."""
    reason = available()
    if reason:
        raise RealQuayError(reason)
    done = subprocess.run(
        ["bash", str(QUAY_DIR / "install.sh")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout
    )
    if done.returncode != 0:
        tail = done.stdout.decode("utf-8", "replace")[-2000:]
        raise RealQuayError("real Quay install failed (exit %d):\n%s" % (done.returncode, tail))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RealQuay:
    """One real Quay on loopback, initialised with a superuser and an API token. Use as a context manager."""

    def __init__(
        self,
        *,
        username: str = "quayadmin",
        password: str = "quay-admin-pass-1",
        extra_config: Optional[Dict[str, Any]] = None,
        start_timeout: float = 180.0,
    ) -> None:
        self.username = username
        self.password = password
        self.extra_config = dict(extra_config or {})
        self.start_timeout = start_timeout
        self.state_dir = Path(tempfile.mkdtemp(prefix="ocpb-quay-", dir="/tmp"))
        os.chmod(self.state_dir, 0o755)
        self.port = _free_port()
        self.pg_port = _free_port()
        self.redis_port = _free_port()
        self.host = "127.0.0.1:%d" % self.port
        self.url = "http://" + self.host
        self.token = ""
        self.log_file = self.state_dir / "logs" / "quay.log"
        self._running = False

    # lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> "RealQuay":
        reason = available()
        if reason:
            raise RealQuayError(reason)
        args = [
            "bash", str(QUAY_DIR / "start.sh"), "--state", str(self.state_dir), "--port", str(self.port),
            "--pg-port", str(self.pg_port), "--redis-port", str(self.redis_port),
        ]
        if self.extra_config:
            extra = self.state_dir / "extra-config.yaml"
            extra.write_text(yaml.safe_dump(self.extra_config))
            args += ["--extra-config", str(extra)]
        _LIVE.add(self)
        self._running = True
        try:
            done = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=self.start_timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise RealQuayError("real Quay did not start within %ds" % self.start_timeout)
        if done.returncode != 0 and not self._late_start(done.stdout):
            out = done.stdout.decode("utf-8", "replace")[-3000:]
            self.stop()
            raise RealQuayError("real Quay failed to start (exit %d):\n%s" % (done.returncode, out))
        self._initialise()
        return self

    def _late_start(self, output: bytes, wait: float = 120.0) -> bool:
        """start.sh gives gunicorn ~10 s to write its pid file, which it does only after loading the whole
        app (preload_app): on a loaded machine that takes longer and start.sh reports "gunicorn died" while
        it is still starting. Wait for ``GET /v2/`` to answer 401 instead; True when it does."""
        if b"gunicorn died" not in output:
            return False
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/v2/")
                status = conn.getresponse().status
                conn.close()
                if status in (200, 401):
                    return True
            except OSError:
                pass
            time.sleep(1.0)
        return False

    def _initialise(self) -> None:
        status, body = self.api(
            "POST", "/api/v1/user/initialize",
            {"username": self.username, "password": self.password, "email": "admin@example.com",
             "access_token": True},
            auth=False,
        )
        if status != 200 or not isinstance(body, dict) or not body.get("access_token"):
            raise RealQuayError("could not initialise the superuser: %s %r" % (status, body))
        self.token = str(body["access_token"])

    def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        subprocess.run(
            ["bash", str(QUAY_DIR / "stop.sh"), "--state", str(self.state_dir), "--wipe"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120, check=False,
        )
        shutil.rmtree(self.state_dir, ignore_errors=True)

    close = stop

    def __enter__(self) -> "RealQuay":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # REST ------------------------------------------------------------------------------------------------
    def api(
        self, method: str, path: str, body: Optional[Any] = None, *, auth: bool = True,
        token: Optional[str] = None,
    ) -> Tuple[int, Any]:
        """One REST call; returns (status, parsed JSON body, or the text when it is not JSON)."""
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if auth:
            headers["Authorization"] = "Bearer " + (token or self.token)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        try:
            return resp.status, json.loads(raw) if raw else None
        except ValueError:
            return resp.status, raw.decode("utf-8", "replace")

    def create_org(self, name: str) -> None:
        status, body = self.api("POST", "/api/v1/organization/", {"name": name, "email": "%s@example.com" % name})
        if status not in (200, 201):
            raise RealQuayError("creating organisation %s: %s %r" % (name, status, body))

    def create_robot(self, org: str, name: str, *, team_role: Optional[str] = "creator") -> Tuple[str, str]:
        """A robot in ``org`` (in a team with ``team_role`` when given); returns (``org+name``, token)."""
        status, body = self.api("PUT", "/api/v1/organization/%s/robots/%s" % (org, name), {})
        if status not in (200, 201) or not isinstance(body, dict):
            raise RealQuayError("creating robot %s+%s: %s %r" % (org, name, status, body))
        if team_role:
            team = "%s-%s" % (name, team_role)
            status, out = self.api("PUT", "/api/v1/organization/%s/team/%s" % (org, team), {"role": team_role})
            if status != 200:
                raise RealQuayError("creating team %s: %s %r" % (team, status, out))
            status, out = self.api("PUT", "/api/v1/organization/%s/team/%s/members/%s" % (org, team, body["name"]))
            if status != 200:
                raise RealQuayError("adding %s to %s: %s %r" % (body["name"], team, status, out))
        return str(body["name"]), str(body["token"])

    def tags(self, org: str, repo: str) -> Dict[str, str]:
        """{tag: manifest digest} of a repository, as the superuser sees it ({} when absent)."""
        status, body = self.api("GET", "/api/v1/repository/%s/%s/tag/?onlyActiveTags=true&limit=100" % (org, repo))
        if status != 200 or not isinstance(body, dict):
            return {}
        return {str(t["name"]): str(t["manifest_digest"]) for t in body.get("tags", [])}

    def auth_entry(self) -> Dict[str, Any]:
        """An auth-file entry for this Quay as the superuser ($oauthtoken + API token)."""
        return {"auth": base64.b64encode(("$oauthtoken:" + self.token).encode()).decode()}

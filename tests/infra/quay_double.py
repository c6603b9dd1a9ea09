"""``QuayDouble``: a loopback stand-in for Quay's REST API and registry, for tests.

Answers the REST calls a mirror makes the way Quay does (PROTOCOL-NOTES §4), and serves ``/v2/`` as a
registry by proxying to a real ``docker-registry`` (:class:`~tests.infra.registry.RegistryServer`, plain
mode) while enforcing what Quay enforces at push time: the first path component is the organisation, and a
push (POST/PUT/PATCH/DELETE) into an organisation that does not exist, or by someone without rights there,
gets ``401 {"errors":[{"code":"UNAUTHORIZED",...}]}``. Nothing here imports ``bundler``.

Usage::

    from tests.infra.quay_double import QuayDouble

    with QuayDouble() as quay:                # HTTPS with a throw-away CA; QuayDouble(tls=False) for HTTP
        quay.url                              # "https://127.0.0.1:PORT"
        quay.host                             # "127.0.0.1:PORT"  (registry host for pushes)
        quay.ca_file                          # CA to verify it (None with tls=False)
        ...
        quay.organizations                    # set of created organisation names
        quay.robots                           # {"org+name": token}
        quay.robot_credentials("org", "name") # ("org+name", token)   -> Basic auth for /v2/
        quay.users                            # {"init": password} once initialised
        quay.admin_tokens                     # {OAuth token: username} (Bearer for /api/v1/...)
        quay.team_members("org", "team")      # {"org+robot", ...};  quay.team_role("org", "team") -> "creator"
        quay.prototypes("org")                # default-permission prototypes, as Quay lists them
        quay.calls                            # [(method, path, status), ...] every request answered
        quay.calls_to("POST", "/api/v1/user/initialize")   # the calls whose path starts with that
        quay.expire_tokens()                  # every OAuth token now gets 401
        quay.registry                         # the RegistryServer behind /v2/ (its own data dir)

Constructor: ``QuayDouble(tls=True, cert_file=None, key_file=None, ca_file=None, registry=None,
with_registry=True, users=None)`` — give ``cert_file``/``key_file`` (and the ``ca_file`` that signed
them) to serve with your own certificate, ``users={"name": "password"}`` to start "already initialised",
``with_registry=False`` to skip the docker-registry (``/v2/`` then answers 503).

REST API answered (``Authorization: Bearer <token>`` required except where noted; missing or unknown
token → 401 ``{"error_message": "Requires authentication", "error_type": "invalid_token"}``):

- ``GET /health/instance``, ``GET /api/v1/discovery``                    (no auth) 200
- ``POST /api/v1/user/initialize`` ``{"username","password","email","access_token"}`` (no auth):
  200 ``{"username","email","encrypted_password","access_token"}``; 400 ``{"message": "Cannot initialize
  user in a non-empty database"}`` once any user exists; 400 ``"Failed to initialize user: ..."`` for a
  password under 8 characters
- ``POST /api/v1/organization/`` ``{"name"}`` → 201 ``"Created"``; 400 "A user or organization with this
  name already exists"
- ``GET /api/v1/organization/{org}`` → 200 / 404
- ``GET|PUT /api/v1/organization/{org}/robots/{name}`` → 200 / 404; PUT 201 ``{"name": "org+name",
  "token"}``, 400 "Existing robot with name" when it exists
- ``PUT /api/v1/organization/{org}/team/{team}`` ``{"role"}`` → 200; ``PUT .../team/{team}/members/{m}`` → 200
  (400 for an unknown member or a robot of another organisation)
- ``GET|POST /api/v1/organization/{org}/prototypes`` → 200
- ``GET /v2/auth?account=&service=`` with Basic → 200 ``{"token"}`` / 401 (for ``login_check``)

Registry (``/v2/...``, Basic auth with a user's password or a robot's token; 401 + ``WWW-Authenticate:
Basic`` otherwise): reads are allowed to any valid credential; writes need the organisation to exist and
the caller to be its creating user, or a robot of that organisation that is in a team with role
``creator``/``admin`` or has a ``write``/``admin`` default-permission prototype.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import secrets
import shutil
import ssl
import tempfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Tuple, Union
from urllib.parse import parse_qs, unquote, urlsplit

from . import LoopbackHTTPServer
from .certs import make_tls_files
from .registry import RegistryServer

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,254}$")
_ROBOT_RE = re.compile(r"^[a-z][a-z0-9_]{1,254}$")
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_HOP_HEADERS = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "host", "authorization", "te", "upgrade"})


@dataclass
class _Org:
    name: str
    owner: str
    teams: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # name -> {"role", "members": set}
    prototypes: List[Dict[str, Any]] = field(default_factory=list)


class QuayDouble:
    """See the module docstring."""

    def __init__(
        self,
        *,
        tls: bool = True,
        cert_file: Optional[Union[str, Path]] = None,
        key_file: Optional[Union[str, Path]] = None,
        ca_file: Optional[Union[str, Path]] = None,
        registry: Optional[RegistryServer] = None,
        with_registry: bool = True,
        users: Optional[Dict[str, str]] = None,
    ) -> None:
        self.tls = tls
        self._workdir = Path(tempfile.mkdtemp(prefix="ocpb-quay-double-"))
        self.cert_file: Optional[Path] = Path(cert_file) if cert_file else None
        self.key_file: Optional[Path] = Path(key_file) if key_file else None
        self.ca_file: Optional[Path] = Path(ca_file) if ca_file else None
        if tls and self.cert_file is None:
            files = make_tls_files(self._workdir / "tls")
            self.cert_file, self.key_file, self.ca_file = files.cert_file, files.key_file, files.ca_file
        if not tls:
            self.ca_file = None
        self.registry = registry
        self._owns_registry = registry is None and with_registry
        self.users: Dict[str, str] = dict(users or {})
        self.emails: Dict[str, str] = {}
        self.admin_tokens: Dict[str, str] = {}  # token -> username
        self._orgs: Dict[str, _Org] = {}
        self.robots: Dict[str, str] = {}  # "org+name" -> token
        self.calls: List[Tuple[str, str, int]] = []
        self.lock = threading.RLock()
        self._server: Optional[LoopbackHTTPServer] = None

    # -- public view ---------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return self._server.port

    @property
    def host(self) -> str:
        return "127.0.0.1:%d" % self.port

    @property
    def url(self) -> str:
        return "%s://%s" % ("https" if self.tls else "http", self.host)

    @property
    def organizations(self) -> Set[str]:
        with self.lock:
            return set(self._orgs)

    def robot_credentials(self, org: str, name: str) -> Tuple[str, str]:
        full = "%s+%s" % (org, name)
        with self.lock:
            return full, self.robots[full]

    def team_members(self, org: str, team: str) -> Set[str]:
        with self.lock:
            return set(self._orgs[org].teams.get(team, {}).get("members", set()))

    def team_role(self, org: str, team: str) -> Optional[str]:
        with self.lock:
            t = self._orgs[org].teams.get(team)
            return None if t is None else str(t["role"])

    def prototypes(self, org: str) -> List[Dict[str, Any]]:
        with self.lock:
            return [dict(p) for p in self._orgs[org].prototypes]

    def expire_tokens(self) -> None:
        with self.lock:
            self.admin_tokens.clear()

    def calls_to(self, method: str, path_prefix: str) -> List[Tuple[str, str, int]]:
        with self.lock:
            return [c for c in self.calls if c[0] == method and c[1].startswith(path_prefix)]

    # -- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> "QuayDouble":
        if self._server is not None:
            return self
        if self._owns_registry:
            self.registry = RegistryServer("plain", workdir=self._workdir / "registry").start()
        server = LoopbackHTTPServer(_make_handler(self))
        if self.tls:
            assert self.cert_file is not None and self.key_file is not None
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
            server.socket = ctx.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        self._server = server
        server.start_background("quay-double")
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._owns_registry and self.registry is not None:
            self.registry.close()
            self.registry = None
        shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> "QuayDouble":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- rules ---------------------------------------------------------------------------------------------

    def _bearer_user(self, header: str) -> Optional[str]:
        if not header.lower().startswith("bearer "):
            return None
        with self.lock:
            return self.admin_tokens.get(header[7:].strip())

    def _basic_identity(self, header: str) -> Optional[str]:
        if not header.lower().startswith("basic "):
            return None
        try:
            user, _, password = base64.b64decode(header[6:].strip()).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        with self.lock:
            if "+" in user:
                return user if self.robots.get(user) == password and password else None
            return user if self.users.get(user) == password and password else None

    def _may_write(self, identity: str, namespace: str) -> bool:
        with self.lock:
            org = self._orgs.get(namespace)
            if org is None:
                return "+" not in identity and identity == namespace and identity in self.users
            if "+" not in identity:
                return org.owner == identity
            if identity.split("+", 1)[0] != namespace:
                return False
            for team in org.teams.values():
                if identity in team["members"] and team["role"] in ("creator", "admin"):
                    return True
            return any(
                p["delegate"].get("name") == identity and p["role"] in ("write", "admin") for p in org.prototypes
            )


def _make_handler(double: QuayDouble) -> type:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "quay-double"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
            pass

        def setup(self) -> None:
            if isinstance(self.request, ssl.SSLSocket):
                self.request.settimeout(10)
                try:
                    self.request.do_handshake()
                except (ssl.SSLError, OSError):
                    self.request.close()
                    raise ConnectionError("TLS handshake failed") from None
                self.request.settimeout(None)
            super().setup()

        # -- helpers ---------------------------------------------------------------------------------------

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                out = bytearray()
                while True:
                    size_line = self.rfile.readline()
                    size = int(size_line.split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return bytes(out)
                    out += self.rfile.read(size)
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _json_body(self, raw: bytes) -> Dict[str, Any]:
            try:
                obj = json.loads(raw or b"{}")
            except ValueError:
                return {}
            return obj if isinstance(obj, dict) else {}

        def _send(self, status: int, body: Any = None, headers: Optional[Dict[str, str]] = None, raw: Optional[bytes] = None) -> None:
            data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
            self.send_response(status)
            if raw is None and body is not None:
                self.send_header("Content-Type", "application/json")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            with double.lock:
                double.calls.append((self.command, urlsplit(self.path).path, status))

        def _api_error(self, status: int, message: str, error_type: str = "invalid_request") -> None:
            self._send(status, {"detail": message, "error_message": message, "error_type": error_type, "status": status, "title": error_type})

        def _registry_error(self, status: int, code: str, message: str) -> None:
            headers = {"WWW-Authenticate": 'Basic realm="quay-double"'} if status == 401 else {}
            self._send(status, {"errors": [{"code": code, "message": message, "detail": None}]}, headers=headers)

        # -- dispatch --------------------------------------------------------------------------------------

        def do_GET(self) -> None:
            self._dispatch()

        def do_HEAD(self) -> None:
            self._dispatch()

        def do_POST(self) -> None:
            self._dispatch()

        def do_PUT(self) -> None:
            self._dispatch()

        def do_PATCH(self) -> None:
            self._dispatch()

        def do_DELETE(self) -> None:
            self._dispatch()

        def _dispatch(self) -> None:
            body = self._body()
            parts = urlsplit(self.path)
            path = parts.path
            if path.startswith("/v2/auth"):
                self._v2_auth(parts.query)
            elif path == "/v2" or path.startswith("/v2/"):
                self._registry(path, body)
            elif path == "/health/instance":
                self._send(200, {"data": {"services": {"auth": True, "database": True, "disk_space": True, "registry_gunicorn": True, "service_key": True, "web_gunicorn": True}}, "status_code": 200})
            elif path == "/api/v1/discovery":
                self._send(200, {"apis": {}, "swagger": "2.0", "info": {"title": "Quay Frontend"}})
            elif path.startswith("/api/v1/"):
                self._api(self.command, path[len("/api/v1") :], self._json_body(body))
            else:
                self._api_error(404, "not found", "not_found")

        # -- REST API --------------------------------------------------------------------------------------

        def _api(self, method: str, path: str, body: Dict[str, Any]) -> None:
            if path == "/user/initialize" and method == "POST":
                return self._initialize(body)
            user = double._bearer_user(self.headers.get("Authorization", ""))
            if user is None:
                return self._api_error(401, "Requires authentication", "invalid_token")
            segs = [unquote(s) for s in path.strip("/").split("/")]
            if segs == ["organization"] and method == "POST":
                return self._create_org(user, body)
            if len(segs) < 2 or segs[0] != "organization":
                return self._api_error(404, "not found", "not_found")
            org_name = segs[1]
            with double.lock:
                org = double._orgs.get(org_name)
            if org is None:
                return self._api_error(404, "Not Found", "not_found")
            rest = segs[2:]
            if not rest and method == "GET":
                return self._send(200, {"name": org.name, "is_admin": org.owner == user, "teams": {}})
            if org.owner != user:
                return self._api_error(403, "Unauthorized", "insufficient_scope")
            if len(rest) == 2 and rest[0] == "robots":
                return self._robot(method, org, rest[1])
            if len(rest) == 2 and rest[0] == "team" and method == "PUT":
                return self._team(org, rest[1], body)
            if len(rest) == 4 and rest[0] == "team" and rest[2] == "members" and method == "PUT":
                return self._member(org, rest[1], rest[3])
            if rest == ["prototypes"] and method == "GET":
                with double.lock:
                    return self._send(200, {"prototypes": [dict(p) for p in org.prototypes]})
            if rest == ["prototypes"] and method == "POST":
                return self._prototype(org, body)
            return self._api_error(405 if rest else 404, "not supported by the double", "not_found")

        def _initialize(self, body: Dict[str, Any]) -> None:
            with double.lock:
                if double.users:
                    return self._send(400, {"message": "Cannot initialize user in a non-empty database"})
                username = str(body.get("username") or "")
                password = str(body.get("password") or "")
                if not _NAME_RE.match(username):
                    return self._send(400, {"message": "Failed to initialize user: Invalid namespace %s" % username})
                if len(password) < 8 or any(c.isspace() for c in password):
                    return self._send(400, {"message": "Failed to initialize user: Invalid password, password must be at least 8 characters and contain no whitespace."})
                double.users[username] = password
                double.emails[username] = str(body.get("email") or "")
                out: Dict[str, Any] = {"username": username, "email": body.get("email"), "encrypted_password": "x" * 32}
                if body.get("access_token"):
                    token = secrets.token_urlsafe(30)
                    double.admin_tokens[token] = username
                    out["access_token"] = token
            self._send(200, out)

        def _create_org(self, user: str, body: Dict[str, Any]) -> None:
            name = str(body.get("name") or "")
            if not _NAME_RE.match(name):
                return self._api_error(400, "Invalid organization name")
            with double.lock:
                if name in double._orgs or name in double.users:
                    return self._api_error(400, "A user or organization with this name already exists")
                double._orgs[name] = _Org(name=name, owner=user)
            self._send(201, "Created")

        def _robot(self, method: str, org: _Org, short: str) -> None:
            full = "%s+%s" % (org.name, short)
            with double.lock:
                token = double.robots.get(full)
                if method == "GET":
                    if token is None:
                        return self._api_error(404, "Could not find robot with specified username", "not_found")
                    return self._send(200, {"name": full, "token": token, "description": ""})
                if method == "PUT":
                    if not _ROBOT_RE.match(short):
                        return self._api_error(400, "Invalid robot account shortname")
                    if token is not None:
                        return self._api_error(400, "Existing robot with name: %s" % full)
                    token = secrets.token_urlsafe(48)
                    double.robots[full] = token
                    return self._send(201, {"name": full, "token": token, "description": "", "unstructured_metadata": {}})
            self._api_error(405, "method not allowed", "not_found")

        def _team(self, org: _Org, team: str, body: Dict[str, Any]) -> None:
            role = str(body.get("role") or "member")
            if role not in ("member", "creator", "admin"):
                return self._api_error(400, "Invalid role")
            with double.lock:
                entry = org.teams.setdefault(team, {"role": role, "members": set()})
                entry["role"] = role
            self._send(200, {"name": team, "role": role, "can_view": True, "member_count": len(entry["members"])})

        def _member(self, org: _Org, team: str, member: str) -> None:
            with double.lock:
                entry = org.teams.get(team)
                if entry is None:
                    return self._api_error(404, "Not Found", "not_found")
                if "+" in member:
                    if member not in double.robots:
                        return self._api_error(400, "Unknown user")
                    if member.split("+", 1)[0] != org.name:
                        return self._api_error(400, "Cannot add robot of another namespace")
                elif member not in double.users:
                    return self._api_error(400, "Unknown user")
                entry["members"].add(member)
            self._send(200, {"name": member, "kind": "user", "is_robot": "+" in member})

        def _prototype(self, org: _Org, body: Dict[str, Any]) -> None:
            delegate = body.get("delegate")
            role = body.get("role")
            if not isinstance(delegate, dict) or role not in ("read", "write", "admin"):
                return self._api_error(400, "Missing delegate or role")
            name = str(delegate.get("name") or "")
            with double.lock:
                if "+" in name and name not in double.robots:
                    return self._api_error(400, "Unknown robot")
                proto = {
                    "id": secrets.token_hex(8),
                    "role": role,
                    "activating_user": body.get("activating_user"),
                    "delegate": {"name": name, "kind": "user", "is_robot": "+" in name},
                }
                org.prototypes.append(proto)
            self._send(200, proto)

        # -- registry --------------------------------------------------------------------------------------

        def _v2_auth(self, query: str) -> None:
            identity = double._basic_identity(self.headers.get("Authorization", ""))
            if identity is None:
                return self._registry_error(401, "UNAUTHORIZED", "invalid username or password")
            account = (parse_qs(query).get("account") or [identity])[0]
            if account != identity:
                return self._registry_error(403, "DENIED", "account does not match credentials")
            self._send(200, {"token": secrets.token_urlsafe(24)})

        def _registry(self, path: str, body: bytes) -> None:
            identity = double._basic_identity(self.headers.get("Authorization", ""))
            if identity is None:
                return self._registry_error(401, "UNAUTHORIZED", "access to the requested resource is not authorized")
            rest = path[len("/v2/") :] if path.startswith("/v2/") else ""
            namespace = rest.split("/", 1)[0] if "/" in rest else ""
            if self.command in _WRITE_METHODS and namespace and namespace != "_catalog":
                if not double._may_write(identity, namespace):
                    return self._registry_error(401, "UNAUTHORIZED", "access to the requested resource is not authorized")
            if double.registry is None or not double.registry.host:
                return self._registry_error(503, "UNAVAILABLE", "no registry behind the double")
            self._proxy(body)

        def _proxy(self, body: bytes) -> None:
            assert double.registry is not None
            host, port = double.registry.host.rsplit(":", 1)
            conn = http.client.HTTPConnection(host, int(port), timeout=60)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
            headers["Host"] = double.host
            headers["X-Forwarded-Proto"] = "https" if double.tls else "http"
            headers["Content-Length"] = str(len(body))
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                out_headers = {k: v for k, v in resp.getheaders() if k.lower() not in _HOP_HEADERS}
                upstream_length = resp.getheader("Content-Length")
                status = resp.status
            finally:
                conn.close()
            self.send_response(status)
            for k, v in out_headers.items():
                self.send_header(k, v)
            if self.command == "HEAD":
                self.send_header("Content-Length", upstream_length or "0")
            else:
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            with double.lock:
                double.calls.append((self.command, urlsplit(self.path).path, status))

    return Handler

"""A docker-distribution token server for tests (the "Bearer" auth flow).

Owns one threaded ``http.server`` on 127.0.0.1 (port chosen by the kernel) that answers
``GET /token?service=...&scope=...&scope=...`` with an ES256 JWT the Debian
``docker-registry`` 2.8 accepts (``x5c`` header, raw r||s signature, ``aud`` = service).
Credentials come as HTTP Basic and are checked against a ``users`` dict; anonymous
requests get ``pull`` only when ``anonymous_pull`` is set; a wrong password gets 401.

It records what it did (``tokens_issued``, ``scopes_requested``, ``issued``) so tests can
assert, e.g., that a client refreshed its token when ``expires_in`` is short.

Note: docker-registry 2.8 applies a 60 s leeway to ``exp``, so a short ``expires_in``
alone does not make the registry reject stale tokens. To catch a client that keeps
using an expired token, count ``tokens_issued`` or put a
:class:`tests.infra.faultproxy.FaultProxy` with ``strict_token_expiry=True`` in front.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union
from urllib.parse import parse_qs, urlsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from . import LoopbackHTTPServer
from .certs import SigningKey, make_token_signing_key

#: ``grant(subject, type, name, requested_actions) -> granted actions``; subject is
#: ``""`` for anonymous requests.
GrantFunc = Callable[[str, str, str, List[str]], List[str]]


def b64url(data: bytes) -> str:
    """base64url without padding (JOSE encoding)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def parse_scope(scope: str) -> Tuple[str, str, List[str]]:
    """``repository:a/b:pull,push`` -> ``("repository", "a/b", ["pull", "push"])``."""
    rtype, _, rest = scope.partition(":")
    name, _, actions = rest.rpartition(":")
    return rtype, name, [a for a in actions.split(",") if a]


def jwt_claims(token: str) -> Dict[str, Any]:
    """Decode (without verifying) the claims of a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("not a JWT")
    claims = json.loads(b64url_decode(parts[1]))
    if not isinstance(claims, dict):
        raise ValueError("JWT claims are not an object")
    return claims


@dataclass(frozen=True)
class IssuedToken:
    token: str
    subject: str
    access: List[Dict[str, Any]]
    issued_at: float
    expires_at: float


@dataclass
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    tokens_issued: int = 0
    rejected: int = 0
    scopes_requested: List[str] = field(default_factory=list)
    issued: List[IssuedToken] = field(default_factory=list)


class TokenServer:
    """Threaded token server. Use as a context manager or call start()/stop().

    Attributes after start: ``host`` ("127.0.0.1:PORT"), ``url``, ``realm`` (``url +
    "/token"``), ``service``, ``issuer``, ``cert_file`` (the registry's
    ``rootcertbundle``). ``expires_in`` may be changed at any time.
    """

    def __init__(
        self,
        users: Optional[Mapping[str, str]] = None,
        *,
        directory: Union[str, Path],
        service: str = "ocpb-test-registry",
        issuer: str = "ocpb-test-token-issuer",
        expires_in: int = 300,
        anonymous_pull: bool = False,
        grant: Optional[GrantFunc] = None,
        signing_key: Optional[SigningKey] = None,
    ) -> None:
        self.users: Dict[str, str] = dict(users or {})
        self.service = service
        self.issuer = issuer
        self.expires_in = expires_in
        self.anonymous_pull = anonymous_pull
        self.grant = grant
        self.signing_key = signing_key or make_token_signing_key(directory)
        self._x5c = [base64.b64encode(self.signing_key.cert_der).decode("ascii")]
        self._state = _State()
        self._httpd: Optional[LoopbackHTTPServer] = None
        self.host = ""

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> "TokenServer":
        if self._httpd is not None:
            return self
        server = self

        class Handler(_TokenHandler):
            token_server = server

        httpd = LoopbackHTTPServer(Handler)
        self._httpd = httpd
        self.host = "127.0.0.1:%d" % httpd.port
        httpd.start_background("token-server")
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.stop()

    def __enter__(self) -> "TokenServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- public info -------------------------------------------------------------------
    @property
    def url(self) -> str:
        return "http://" + self.host

    @property
    def realm(self) -> str:
        return self.url + "/token"

    @property
    def cert_file(self) -> Path:
        return self.signing_key.cert_file

    @property
    def tokens_issued(self) -> int:
        return self._state.tokens_issued

    @property
    def rejected(self) -> int:
        """Requests answered 401 (wrong credentials)."""
        return self._state.rejected

    @property
    def scopes_requested(self) -> List[str]:
        with self._state.lock:
            return list(self._state.scopes_requested)

    @property
    def issued(self) -> List[IssuedToken]:
        with self._state.lock:
            return list(self._state.issued)

    def reset_counters(self) -> None:
        with self._state.lock:
            self._state.tokens_issued = 0
            self._state.rejected = 0
            self._state.scopes_requested.clear()
            self._state.issued.clear()

    # -- token making -----------------------------------------------------------------
    def authenticate(self, authorization: Optional[str]) -> Optional[str]:
        """Return the subject ("" = anonymous) or None when credentials are wrong."""
        if not authorization:
            return ""
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, sep, password = base64.b64decode(value.strip()).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        if not sep or self.users.get(user) != password:
            return None
        return user

    def granted_actions(self, subject: str, rtype: str, name: str, actions: List[str]) -> List[str]:
        if self.grant is not None:
            return list(self.grant(subject, rtype, name, list(actions)))
        if subject:
            return list(actions)
        if self.anonymous_pull and rtype == "repository":
            return [a for a in actions if a == "pull"]
        return []

    def make_token(
        self, subject: str, access: List[Dict[str, Any]], *, expires_in: Optional[int] = None
    ) -> IssuedToken:
        """Sign a token (also usable directly by tests, e.g. to forge an expired one)."""
        now = time.time()
        ttl = self.expires_in if expires_in is None else expires_in
        header = {"typ": "JWT", "alg": "ES256", "x5c": self._x5c}
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": int(now + ttl),
            "nbf": int(now) - 10,
            "iat": int(now),
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        signing_input = (
            b64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + b64url(json.dumps(claims, separators=(",", ":")).encode())
        )
        der = self.signing_key.key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        token = signing_input + "." + b64url(signature)
        return IssuedToken(token, subject, access, now, now + ttl)


class _TokenHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60  # idle keep-alive connections
    disable_nagle_algorithm = True
    token_server: TokenServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence stderr
        pass

    def _send_json(self, status: int, body: Dict[str, Any], extra: Optional[Dict[str, str]] = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        ts = self.token_server
        parts = urlsplit(self.path)
        if parts.path != "/token":
            self._send_json(404, {"errors": [{"code": "NOT_FOUND", "message": parts.path}]})
            return
        query = parse_qs(parts.query)
        scopes = query.get("scope", [])
        subject = ts.authenticate(self.headers.get("Authorization"))
        with ts._state.lock:
            ts._state.scopes_requested.extend(scopes)
        if subject is None:
            with ts._state.lock:
                ts._state.rejected += 1
            self._send_json(
                401,
                {"errors": [{"code": "UNAUTHORIZED", "message": "authentication failed"}]},
                {"WWW-Authenticate": 'Basic realm="ocpb-test-token"'},
            )
            return
        access: List[Dict[str, Any]] = []
        for scope in scopes:
            for one in scope.split(" "):
                if not one:
                    continue
                rtype, name, actions = parse_scope(one)
                granted = ts.granted_actions(subject, rtype, name, actions)
                if granted:
                    access.append({"type": rtype, "name": name, "actions": granted})
        issued = ts.make_token(subject, access)
        with ts._state.lock:
            ts._state.tokens_issued += 1
            ts._state.issued.append(issued)
        self._send_json(
            200,
            {
                "token": issued.token,
                "access_token": issued.token,
                "expires_in": int(issued.expires_at - issued.issued_at),
                "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(issued.issued_at)),
            },
        )

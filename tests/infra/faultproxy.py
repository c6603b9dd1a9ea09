"""``FaultProxy``: an HTTP reverse proxy that injects faults in front of a registry.

Owns one threaded HTTP/1.1 server on 127.0.0.1 (kernel-chosen port). Each request is
forwarded faithfully to the upstream (method, path, query, headers, bodies streamed both
ways, chunked request bodies re-chunked, ``Location`` headers pointing at the upstream
rewritten to the proxy) unless a fault is chosen for it:

==============  =========================================================================
``"reset"``     close the client socket with RST, no response (request not forwarded)
``"500"``       answer 500 with a distribution error body (not forwarded)
``"429"``       answer 429 ``TOOMANYREQUESTS`` with ``Retry-After`` (not forwarded)
``"truncate"``  forward, send the upstream status and headers (full Content-Length)
                and half of the body, then close. Only for responses with a body and a
                Content-Length (blob and manifest GETs); others pass untouched and a
                scripted truncate stays pending for the next matching request.
``"stall"``     sleep ``stall_seconds`` before forwarding (a client read timeout shorter
                than that fires)
``"blob_race"`` answer 400 ``DIGEST_INVALID`` + ``MANIFEST_BLOB_UNKNOWN`` (not forwarded): what
                docker-registry answers a manifest PUT while another client rewrites a blob link
``"corrupt"``   forward, but flip one byte in the middle of the body (responses with a
                Content-Length only, like ``"truncate"``)
==============  =========================================================================

``ignore_range=True`` drops the ``Range`` header of every request it forwards, so the upstream answers
with the whole resource (200): a proxy or registry that does not serve byte ranges. ``ranges`` lists
``(target, Range header)`` of every request that carried one. A script may be limited to requests whose
``Range`` header satisfies ``when_range`` (called with the header, or ``""`` when there is none).

Faults are chosen by scripts first (``proxy.script(kind, match=..., times=N)``, in the
order added), else at random with probability ``rate`` among ``kinds`` using
``random.Random(seed)``. ``counts[kind]`` says how many were injected; ``log`` lists
``(method, target, fault or None, status or None)`` per request.

With ``strict_token_expiry=True`` a request carrying ``Authorization: Bearer <jwt>``
whose ``exp`` has passed is sent upstream *without* the Authorization header, so the
client gets the registry's own 401 Bearer challenge (counted as ``"expired_token"``);
docker-registry 2.8 itself tolerates 60 s of expiry.
"""

from __future__ import annotations

import http.client
import json
import random
import select
import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union
from urllib.parse import urlsplit

from . import LoopbackHTTPServer
from .token_server import jwt_claims

RESET = "reset"
HTTP_500 = "500"
HTTP_429 = "429"
TRUNCATE = "truncate"
STALL = "stall"
BLOB_RACE = "blob_race"
CORRUPT = "corrupt"
FAULT_KINDS: Tuple[str, ...] = (RESET, HTTP_500, HTTP_429, TRUNCATE, STALL)
"""The kinds drawn at random by default; `BLOB_RACE` is only injected when asked for."""
ALL_KINDS: Tuple[str, ...] = FAULT_KINDS + (BLOB_RACE, CORRUPT)
EXPIRED_TOKEN = "expired_token"

Matcher = Callable[[str, str], bool]  # (method, request target incl. query) -> bool

_HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
    "trailer", "trailers", "transfer-encoding", "upgrade",
}
_CHUNK = 64 * 1024


@dataclass
class _Script:
    kind: str
    match: Optional[Matcher]
    times: int
    stall_seconds: Optional[float]
    when_range: Optional[Callable[[str], bool]] = None


@dataclass
class _Decision:
    kind: str
    script: Optional[_Script] = None
    stall_seconds: float = 0.0


class FaultProxy:
    """Reverse proxy with fault injection. Context manager; or start()/stop()."""

    def __init__(
        self,
        upstream: str,
        *,
        rate: float = 0.0,
        kinds: Sequence[str] = FAULT_KINDS,
        seed: Optional[int] = 0,
        stall_seconds: float = 3.0,
        retry_after: int = 1,
        match: Optional[Matcher] = None,
        strict_token_expiry: bool = False,
        upstream_ca_file: Optional[Union[str, Path]] = None,
        upstream_timeout: float = 120.0,
        ignore_range: bool = False,
    ) -> None:
        for kind in kinds:
            if kind not in ALL_KINDS:
                raise ValueError("unknown fault kind %r" % kind)
        parts = urlsplit(upstream if "://" in upstream else "http://" + upstream)
        self.upstream = "%s://%s" % (parts.scheme, parts.netloc)
        self._up_scheme = parts.scheme
        self._up_host = parts.hostname or "127.0.0.1"
        self._up_port = parts.port or (443 if parts.scheme == "https" else 80)
        self._up_netloc = parts.netloc
        self._up_ctx: Optional[ssl.SSLContext] = None
        if parts.scheme == "https":
            self._up_ctx = ssl.create_default_context(cafile=str(upstream_ca_file) if upstream_ca_file else None)
        self.upstream_timeout = upstream_timeout
        self.rate = rate
        self.kinds = list(kinds)
        self.stall_seconds = stall_seconds
        self.retry_after = retry_after
        self.match = match
        self.strict_token_expiry = strict_token_expiry
        self.ignore_range = ignore_range
        self.ranges: List[Tuple[str, str]] = []
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._scripts: List[_Script] = []
        self.counts: Dict[str, int] = {k: 0 for k in (*ALL_KINDS, EXPIRED_TOKEN)}
        self.log: List[Tuple[str, str, Optional[str], Optional[int]]] = []
        self._httpd: Optional[LoopbackHTTPServer] = None
        self._stop_event = threading.Event()
        self.host = ""

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> "FaultProxy":
        if self._httpd is None:
            proxy = self

            class Handler(_ProxyHandler):
                fault_proxy = proxy

            self._stop_event.clear()
            self._httpd = LoopbackHTTPServer(Handler)
            self.host = "127.0.0.1:%d" % self._httpd.port
            self._httpd.start_background("fault-proxy")
        return self

    def stop(self) -> None:
        self._stop_event.set()  # wakes stalled requests, which then drop their connection instead of forwarding
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.stop()

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return "http://" + self.host

    @property
    def stopping(self) -> threading.Event:
        return self._stop_event

    # -- control --------------------------------------------------------------------
    def script(
        self,
        kind: str,
        match: Optional[Matcher] = None,
        times: int = 1,
        *,
        stall_seconds: Optional[float] = None,
        when_range: Optional[Callable[[str], bool]] = None,
    ) -> None:
        """Inject ``kind`` into the next ``times`` requests for which
        ``match(method, target)`` is true (``target`` = path + query) and, with ``when_range``, whose
        ``Range`` header satisfies it."""
        if kind not in ALL_KINDS:
            raise ValueError("unknown fault kind %r" % kind)
        with self._lock:
            self._scripts.append(_Script(kind, match, times, stall_seconds, when_range))

    def clear(self) -> None:
        """Drop pending scripts and stop random faults."""
        with self._lock:
            self._scripts.clear()
            self.rate = 0.0

    def reset_counters(self) -> None:
        with self._lock:
            for key in self.counts:
                self.counts[key] = 0
            self.log.clear()
            self.ranges.clear()

    @property
    def pending_scripts(self) -> int:
        with self._lock:
            return sum(s.times for s in self._scripts)

    @property
    def total_faults(self) -> int:
        return sum(v for k, v in self.counts.items() if k in ALL_KINDS)

    # -- internals used by the handler ----------------------------------------------
    def _decide(self, method: str, target: str, range_header: str = "") -> Optional[_Decision]:
        with self._lock:
            if range_header:
                self.ranges.append((target, range_header))
            for s in self._scripts:
                if s.when_range is not None and not s.when_range(range_header):
                    continue
                if s.times > 0 and (s.match is None or s.match(method, target)):
                    s.times -= 1
                    if s.times == 0:
                        self._scripts.remove(s)
                    stall = self.stall_seconds if s.stall_seconds is None else s.stall_seconds
                    return _Decision(s.kind, s, stall)
            if self.rate > 0 and self.kinds and (self.match is None or self.match(method, target)):
                if self._rng.random() < self.rate:
                    return _Decision(self._rng.choice(self.kinds), None, self.stall_seconds)
        return None

    def _refund(self, decision: _Decision) -> None:
        """A scripted truncate that could not apply: give it back."""
        script = decision.script
        if script is None:
            return
        with self._lock:
            script.times += 1
            if script not in self._scripts:
                self._scripts.insert(0, script)

    def _record(self, method: str, target: str, fault: Optional[str], status: Optional[int]) -> None:
        with self._lock:
            if fault is not None:
                self.counts[fault] += 1
            self.log.append((method, target, fault, status))

    def _connect(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection
        if self._up_ctx is not None:
            conn = http.client.HTTPSConnection(
                self._up_host, self._up_port, timeout=self.upstream_timeout, context=self._up_ctx
            )
        else:
            conn = http.client.HTTPConnection(self._up_host, self._up_port, timeout=self.upstream_timeout)
        conn.connect()
        assert conn.sock is not None
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def _rewrite_location(self, value: str) -> str:
        if value.startswith(self.upstream):
            return self.url + value[len(self.upstream):]
        return value


def _token_expired(authorization: Optional[str]) -> bool:
    if not authorization or not authorization.lower().startswith("bearer "):
        return False
    try:
        exp = jwt_claims(authorization.split(" ", 1)[1].strip()).get("exp")
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(exp, (int, float)) and exp <= time.time()


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """True when an idle upstream connection was closed by the peer."""
    sock = conn.sock
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 120  # idle keep-alive client connections
    disable_nagle_algorithm = True
    fault_proxy: FaultProxy
    _upstream: Optional[http.client.HTTPConnection] = None

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep stderr quiet
        pass

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self._drop_upstream()

    def _drop_upstream(self) -> None:
        if self._upstream is not None:
            self._upstream.close()
            self._upstream = None

    # every method goes through the same path
    def do_GET(self) -> None:  # noqa: N802
        self._handle()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    # -- request body ---------------------------------------------------------------
    def _request_body(self) -> Tuple[Optional[Iterator[bytes]], bool]:
        """(iterator over the request body or None, chunked?)"""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked(), True
        length = int(self.headers.get("Content-Length") or 0)
        if length <= 0:
            return None, False
        return self._read_exact(length), False

    def _read_exact(self, length: int) -> Iterator[bytes]:
        left = length
        while left > 0:
            data = self.rfile.read(min(_CHUNK, left))
            if not data:
                raise ConnectionError("client closed during request body")
            left -= len(data)
            yield data

    def _read_chunked(self) -> Iterator[bytes]:
        while True:
            line = self.rfile.readline(65537)
            if not line:
                raise ConnectionError("client closed during chunked body")
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return
            yield from self._read_exact(size)
            self.rfile.readline(65537)  # CRLF after the chunk

    def _discard_body(self) -> None:
        body, _ = self._request_body()
        for _ in body or ():
            pass

    # -- responses made here ----------------------------------------------------------
    def _reply_error(self, status: int, code: str, extra: Dict[str, str], *more_codes: str) -> None:
        self._discard_body()
        data = json.dumps({"errors": [{"code": c, "message": "injected fault", "detail": None} for c in (code, *more_codes)]}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for key, value in extra.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _reset(self) -> None:
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.rfile.close()
        self.connection.close()  # RST: linger 0

    # -- main -----------------------------------------------------------------------
    def _handle(self) -> None:
        fp = self.fault_proxy
        method, target = self.command, self.path
        decision = fp._decide(method, target, self.headers.get("Range") or "")
        kind = decision.kind if decision else None

        if kind == RESET:
            fp._record(method, target, RESET, None)
            self._reset()
            return
        if kind == HTTP_500:
            fp._record(method, target, HTTP_500, 500)
            self._reply_error(500, "UNKNOWN", {})
            return
        if kind == HTTP_429:
            fp._record(method, target, HTTP_429, 429)
            self._reply_error(429, "TOOMANYREQUESTS", {"Retry-After": str(fp.retry_after)})
            return
        if kind == BLOB_RACE:
            fp._record(method, target, BLOB_RACE, 400)
            self._reply_error(400, "DIGEST_INVALID", {}, "MANIFEST_BLOB_UNKNOWN")
            return
        if kind == STALL and decision is not None:
            fp.stopping.wait(decision.stall_seconds)
            if fp.stopping.is_set():
                self.close_connection = True
                return

        headers: List[Tuple[str, str]] = []
        expired = fp.strict_token_expiry and _token_expired(self.headers.get("Authorization"))
        for key, value in self.headers.items():
            lk = key.lower()
            if lk in _HOP_BY_HOP or lk == "host" or lk == "content-length":
                continue
            if lk == "authorization" and expired:
                continue
            if lk == "range" and fp.ignore_range:
                continue
            headers.append((key, value))
        body, chunked = self._request_body()
        if chunked:
            headers.append(("Transfer-Encoding", "chunked"))
        elif body is not None:
            headers.append(("Content-Length", self.headers["Content-Length"]))
        elif method in ("POST", "PUT", "PATCH"):
            headers.append(("Content-Length", "0"))

        try:
            resp = self._forward(method, target, headers, body, chunked)
        except (OSError, http.client.HTTPException) as exc:
            self._drop_upstream()
            fp._record(method, target, kind, 502)
            self.close_connection = True
            try:
                self._reply_error(502, "UNKNOWN", {"X-Proxy-Error": type(exc).__name__})
            except (OSError, ConnectionError):
                pass
            return

        length_header = resp.getheader("Content-Length")
        has_body = method != "HEAD" and resp.status not in (204, 304) and length_header != "0"
        truncate = kind == TRUNCATE
        corrupt = kind == CORRUPT
        if corrupt and not (has_body and length_header):
            corrupt = False
            if decision is not None:
                fp._refund(decision)
            kind = None
        if truncate and not (has_body and length_header):
            truncate = False
            if decision is not None:
                fp._refund(decision)
            kind = None
        fp._record(method, target, kind or (EXPIRED_TOKEN if expired else None), resp.status)

        self.send_response_only(resp.status, resp.reason)
        for key, value in resp.getheaders():
            lk = key.lower()
            if lk in _HOP_BY_HOP:
                continue
            if lk == "location":
                value = fp._rewrite_location(value)
            self.send_header(key, value)
        if has_body and not length_header:
            self.send_header("Transfer-Encoding", "chunked")
        if resp.will_close:
            self.close_connection = True
        self.end_headers()

        if not has_body:
            resp.read()
            return
        if truncate:
            total = int(length_header or 0)
            self.wfile.write(resp.read(total // 2))
            self.wfile.flush()
            self._drop_upstream()
            self.close_connection = True
            return
        flip_at = int(length_header or 0) // 2 if corrupt else -1
        try:
            while True:
                data = resp.read1(_CHUNK) if hasattr(resp, "read1") else resp.read(_CHUNK)
                if not data:
                    break
                if 0 <= flip_at < len(data):
                    data = data[:flip_at] + bytes([data[flip_at] ^ 0xFF]) + data[flip_at + 1:]
                flip_at -= len(data) if flip_at >= 0 else 0
                if length_header:
                    self.wfile.write(data)
                else:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            if not length_header:
                self.wfile.write(b"0\r\n\r\n")
            resp.close()  # read1() does not mark the response done; the connection is reused
        except (OSError, http.client.HTTPException):
            self._drop_upstream()
            self.close_connection = True

    def _forward(
        self,
        method: str,
        target: str,
        headers: List[Tuple[str, str]],
        body: Optional[Iterator[bytes]],
        chunked: bool,
    ) -> http.client.HTTPResponse:
        fp = self.fault_proxy
        if self._upstream is not None and _dropped(self._upstream):
            self._drop_upstream()
        if self._upstream is None:
            self._upstream = fp._connect()
        conn = self._upstream
        conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", fp._up_netloc)
        for key, value in headers:
            conn.putheader(key, value)
        conn.endheaders()
        for data in body or ():
            if chunked:
                conn.send(b"%x\r\n%s\r\n" % (len(data), data))
            else:
                conn.send(data)
        if chunked:
            conn.send(b"0\r\n\r\n")
        return conn.getresponse()

"""``ForwardProxy``: a small real HTTP forward proxy on loopback, as a corporate proxy would be.

Owns one listening socket and its threads. It speaks the two proxy forms every client uses:

- ``CONNECT host:port`` (TLS, and anything else tunnelled): answers ``200`` and relays bytes both ways;
- absolute-URI requests (``GET http://host:port/path``): forwarded one request per connection
  (``Connection: close`` upstream), the answer relayed back.

Names are resolved by the proxy alone, from ``hosts`` (``{"registry.corp.test": "127.0.0.1"}``): a name
outside the map gets ``502``, so a server reachable "only through the proxy" is one addressed by such a
name. With ``credentials=(user, password)`` every request without the matching ``Proxy-Authorization``
gets ``407``. Every request is logged in ``.requests`` (method, target, headers) for assertions.
"""

from __future__ import annotations

import base64
import select
import socket
import socketserver
import threading
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple


@dataclass(frozen=True)
class ProxiedRequest:
    method: str
    target: str
    headers: Dict[str, str]  # header names lower-cased

    @property
    def host(self) -> str:
        if self.method == "CONNECT":
            return self.target
        rest = self.target.split("://", 1)[-1]
        return rest.split("/", 1)[0]


class _Handler(socketserver.BaseRequestHandler):
    server: "_Server"

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(30)
        try:
            head, rest = _read_head(sock)
        except (OSError, ValueError):
            return
        if not head:
            return
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ", 2)
        except ValueError:
            return
        headers: Dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        owner = self.server.owner
        owner._log(ProxiedRequest(method, target, headers))
        if owner.credentials is not None:
            want = "Basic " + base64.b64encode(("%s:%s" % owner.credentials).encode()).decode()
            if headers.get("proxy-authorization") != want:
                sock.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"proxy\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
        if method == "CONNECT":
            upstream = owner._connect(target)
            if upstream is None:
                sock.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            sock.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            if rest:
                upstream.sendall(rest)
            _relay(sock, upstream)
            return
        if not target.startswith("http://"):
            sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        hostport, _, path = target[len("http://") :].partition("/")
        upstream = owner._connect(hostport if ":" in hostport else hostport + ":80")
        if upstream is None:
            sock.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        out = ["%s /%s %s" % (method, path, version)]
        for line in lines[1:]:
            name = line.split(":", 1)[0].strip().lower()
            if line and name not in ("proxy-authorization", "proxy-connection", "connection", "keep-alive"):
                out.append(line)
        out.append("Connection: close")
        upstream.sendall(("\r\n".join(out) + "\r\n\r\n").encode("latin-1") + rest)
        _relay(sock, upstream)


def _read_head(sock: socket.socket) -> Tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return b"", b""
        data += chunk
        if len(data) > 1 << 20:
            raise ValueError("header too long")
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _relay(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways until either side closes."""
    socks = [a, b]
    try:
        while True:
            readable, _, _ = select.select(socks, [], [], 60)
            if not readable:
                return
            for s in readable:
                data = s.recv(1 << 16)
                if not data:
                    return
                (b if s is a else a).sendall(data)
    except OSError:
        return
    finally:
        b.close()


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: "ForwardProxy"


class ForwardProxy:
    """A forward proxy on ``127.0.0.1:<free port>``; ``url`` is ``http://127.0.0.1:PORT``."""

    def __init__(self, hosts: Optional[Dict[str, str]] = None, *, credentials: Optional[Tuple[str, str]] = None) -> None:
        self.hosts = dict(hosts or {})
        self.credentials = credentials
        self.requests: List[ProxiedRequest] = []
        self._lock = threading.Lock()
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return "http://127.0.0.1:%d" % self.port

    def _log(self, req: ProxiedRequest) -> None:
        with self._lock:
            self.requests.append(req)

    def _connect(self, hostport: str) -> Optional[socket.socket]:
        host, _, port = hostport.rpartition(":")
        host = host.strip("[]").lower()
        address = self.hosts.get(host)
        if address is None or not port.isdigit():
            return None
        try:
            return socket.create_connection((address, int(port)), timeout=30)
        except OSError:
            return None

    def start(self) -> "ForwardProxy":
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever, name="forward-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "ForwardProxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

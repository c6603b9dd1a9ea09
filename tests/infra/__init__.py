"""Test infrastructure for ocp-bundler: an oracle independent of the ``bundler`` package.

Modules (import as ``from tests.infra.images import make_image``):

- :mod:`tests.infra.certs`        throw-away CA, server and token-signing certificates
- :mod:`tests.infra.registry`     ``RegistryServer``: the Debian ``docker-registry`` on loopback
- :mod:`tests.infra.token_server` ``TokenServer``: docker token (Bearer) auth for the registry
- :mod:`tests.infra.faultproxy`   ``FaultProxy``: reverse proxy injecting network/HTTP faults
- :mod:`tests.infra.link`        ``LinkRelay``: an internet-shaped link (delay, bandwidth caps), own process
- :mod:`tests.infra.images`       synthetic images, manifest lists, a pusher, OCI layouts

Nothing here imports ``bundler``. This file also holds :class:`LoopbackHTTPServer`, the
threaded HTTP server base used by the token server and the fault proxy: it tracks open
client connections so that ``stop()`` never hangs on an idle keep-alive connection.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, List, Optional, Set, Type


class LoopbackHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer on 127.0.0.1:0 with daemon handler threads, served from a
    background thread; ``stop()`` shuts down the loop, closes every open client
    connection, sets ``stopping`` (handlers that wait use it) and joins the handler
    threads."""

    daemon_threads = True

    def __init__(self, handler: Type[BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self._conns: Set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        self._threads_alive: List[threading.Thread] = []
        self._loop: Optional[threading.Thread] = None
        self.stopping = threading.Event()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        # Like ThreadingMixIn.process_request, but daemon handler threads are tracked
        # too (socketserver only joins non-daemon ones).
        thread = threading.Thread(
            target=self.process_request_thread, args=(request, client_address), daemon=True
        )
        with self._conns_lock:
            self._conns.add(request)
            self._threads_alive = [t for t in self._threads_alive if t.is_alive()]
            self._threads_alive.append(thread)
        thread.start()

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that goes away mid-request is normal in fault tests: stay quiet.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)) or self.stopping.is_set():
            return
        super().handle_error(request, client_address)

    def start_background(self, name: str) -> None:
        self._loop = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True, name=name
        )
        self._loop.start()

    def stop(self, join_timeout: float = 5.0) -> None:
        self.stopping.set()
        if self._loop is not None:
            self.shutdown()
            self._loop.join(timeout=5)
            self._loop = None
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.server_close()
        deadline = time.monotonic() + join_timeout
        with self._conns_lock:
            threads, self._threads_alive = self._threads_alive, []
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

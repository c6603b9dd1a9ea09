"""Helpers for the fault-injection tests (tests/test_faults.py), built without ``bundler``.

Owns:

- :class:`Throttle`: a TCP relay on 127.0.0.1 (kernel-chosen port) in front of any host:port that limits
  the bandwidth of every connection together (a token bucket shared by all of them, in both directions),
  so that a transfer of a few tens of MB lasts seconds and a ``kill -9`` lands in the middle of it.
  ``rate`` (bytes per second, ``None`` = unlimited) can be changed at any time. A reset from one side is
  passed on as a reset to the other (``SO_LINGER`` 0), a clean close as a clean close. For an
  internet-shaped link, ``latency`` delays every byte by that many seconds in each direction (a round
  trip costs twice that; bytes in flight are pipelined, not serialised) and ``per_connection`` caps each
  connection's own bandwidth, as a long-haul TCP connection is capped by its window.
- :func:`blob_map`: every blob and manifest of synthetic images (``tests.infra.images``) by digest, so a
  test can check a file on disk against the bytes it must hold.
- :func:`tree_check`: what is wrong in an OCI layout directory left by a killed process (a final blob whose
  bytes do not hash to its name, a partial file that is not a prefix of the blob it is becoming).
"""

from __future__ import annotations

import hashlib
import re
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Set, Tuple

from .images import Manifestish, iter_manifests

_CHUNK = 16 * 1024
_LINE_BYTES = 4 << 20
_LINE_CHUNK = 64 * 1024
_HEX = re.compile(r"^[0-9a-f]{64}$")


class _Bucket:
    """A token bucket shared by every pump of one Throttle."""

    def __init__(self) -> None:
        self.rate: Optional[float] = None
        self._lock = threading.Lock()
        self._next = time.monotonic()

    def take(self, n: int, stopping: threading.Event) -> None:
        with self._lock:
            rate = self.rate
            if not rate:
                self._next = time.monotonic()
                return
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + n / rate
            wait = self._next - now
        if wait > 0:
            stopping.wait(wait)


class Throttle:
    """A bandwidth-limiting TCP relay: ``Throttle("127.0.0.1:5000", rate=4e6)``; ``.host`` is where to connect."""

    def __init__(self, upstream: str, *, rate: Optional[float] = None, latency: float = 0.0, per_connection: Optional[float] = None) -> None:
        host, _, port = upstream.rpartition(":")
        self.latency = latency
        self.per_connection = per_connection
        self._upstream = (host or "127.0.0.1", int(port))
        self._bucket = _Bucket()
        self._bucket.rate = rate
        self._stopping = threading.Event()
        self._sock: Optional[socket.socket] = None
        self._loop: Optional[threading.Thread] = None
        self._lock = threading.Lock()
        self._conns: Set[socket.socket] = set()
        self._threads: List[threading.Thread] = []
        self.connections = 0
        self.bytes_down = 0
        """Bytes relayed from the upstream to clients."""
        self.bytes_up = 0
        """Bytes relayed from clients to the upstream."""
        self.cuts = 0
        """Connections cut by `cut_uploads`."""
        self._cut_after: Optional[int] = None
        self._cuts_left = 0
        self.host = ""

    @property
    def rate(self) -> Optional[float]:
        return self._bucket.rate

    @rate.setter
    def rate(self, value: Optional[float]) -> None:
        self._bucket.rate = value

    @property
    def url(self) -> str:
        return "http://" + self.host

    def cut_uploads(self, after: int, *, times: int = 1) -> None:
        """Reset the next `times` connections that send more than `after` bytes to the upstream, once
        exactly `after` bytes went through: a request body (a blob upload) cut in the middle."""
        with self._lock:
            self._cut_after, self._cuts_left = after, times

    def _cut_point(self, sent: int, n: int) -> Optional[int]:
        """How many of the next `n` bytes may pass before the cut, or None for no cut."""
        with self._lock:
            if self._cuts_left <= 0 or self._cut_after is None or sent + n <= self._cut_after:
                return None
            self._cuts_left -= 1
            self.cuts += 1
            return max(0, self._cut_after - sent)

    def start(self) -> "Throttle":
        if self._sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 0))
            sock.listen(128)
            sock.settimeout(0.1)
            self._sock = sock
            self.host = "127.0.0.1:%d" % sock.getsockname()[1]
            self._loop = threading.Thread(target=self._accept, name="throttle", daemon=True)
            self._loop.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._loop is not None:
            self._loop.join(timeout=5)
            self._loop = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        with self._lock:
            conns, self._conns = list(self._conns), set()
            threads, self._threads = list(self._threads), []
        for c in conns:
            _close(c, reset=True)
        deadline = time.monotonic() + 5
        for t in threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> "Throttle":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals --------------------------------------------------------------------------------------
    def _accept(self) -> None:
        assert self._sock is not None
        while not self._stopping.is_set():
            try:
                client, _ = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self._upstream, timeout=10)
            except OSError:
                _close(client, reset=True)
                continue
            for s in (client, upstream):
                s.settimeout(None)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pair = _Pair(client, upstream)
            with self._lock:
                self.connections += 1
                self._conns.update((client, upstream))
                self._threads = [t for t in self._threads if t.is_alive()]
                for src, dst, down in ((upstream, client, True), (client, upstream, False)):
                    t = threading.Thread(target=self._pump, args=(pair, src, dst, down), daemon=True, name="throttle-pump")
                    self._threads.append(t)
                    t.start()

    def _pump(self, pair: "_Pair", src: socket.socket, dst: socket.socket, down: bool) -> None:
        reset = False
        sent = 0
        own = _Bucket()
        own.rate = self.per_connection
        line = _DelayLine(src, self.latency, self._stopping) if self.latency > 0 else None
        try:
            while not self._stopping.is_set():
                try:
                    data = line.recv() if line is not None else src.recv(_CHUNK)
                except ConnectionResetError:
                    reset = True
                    break
                except OSError:
                    break
                if not data:
                    break
                own.take(len(data), self._stopping)
                self._bucket.take(len(data), self._stopping)
                cut = None if down else self._cut_point(sent, len(data))
                if cut is not None:
                    data = data[:cut]
                try:
                    dst.sendall(data)
                except OSError:
                    reset = True
                    break
                sent += len(data)
                if cut is not None:
                    time.sleep(0.2)  # let the upstream read what got through before the reset
                    reset = True
                    break
                with self._lock:
                    if down:
                        self.bytes_down += len(data)
                    else:
                        self.bytes_up += len(data)
        finally:
            if reset:
                pair.close(reset=True)
            else:
                try:
                    dst.shutdown(socket.SHUT_WR)  # half close: the other direction may still be talking
                except OSError:
                    pass
                if pair.done_one():
                    pair.close(reset=False)
            with self._lock:
                if pair.closed:
                    self._conns.discard(pair.a)
                    self._conns.discard(pair.b)


class _DelayLine:
    """Bytes read from a socket as they arrived `latency` seconds ago: a reader thread stamps each chunk,
    `recv` hands it out no earlier than its stamp + latency. At most `_LINE_BYTES` wait in the line (the
    reader then stops reading, and TCP flow control pushes back on the sender)."""

    def __init__(self, src: socket.socket, latency: float, stopping: threading.Event) -> None:
        self.latency = latency
        self.stopping = stopping
        self._cond = threading.Condition()
        self._queue: "deque[Tuple[float, bytes]]" = deque()
        self._bytes = 0
        self._error: Optional[BaseException] = None
        self._ended = False
        threading.Thread(target=self._read, args=(src,), daemon=True, name="throttle-delay").start()

    def _read(self, src: socket.socket) -> None:
        while not self.stopping.is_set():
            try:
                data = src.recv(_LINE_CHUNK)
            except OSError as exc:
                with self._cond:
                    self._error = exc
                    self._cond.notify_all()
                return
            with self._cond:
                if not data:
                    self._ended = True
                    self._cond.notify_all()
                    return
                while self._bytes >= _LINE_BYTES and not self.stopping.is_set():
                    self._cond.wait(0.05)
                self._queue.append((time.monotonic() + self.latency, data))
                self._bytes += len(data)
                self._cond.notify_all()

    def recv(self) -> bytes:
        with self._cond:
            while not self._queue:
                if self._error is not None:
                    raise self._error
                if self._ended or self.stopping.is_set():
                    return b""
                self._cond.wait(0.05)
            due, data = self._queue.popleft()
            self._bytes -= len(data)
            self._cond.notify_all()
        wait = due - time.monotonic()
        if wait > 0:
            self.stopping.wait(wait)
        return data


class _Pair:
    def __init__(self, a: socket.socket, b: socket.socket) -> None:
        self.a, self.b = a, b
        self._lock = threading.Lock()
        self._finished = 0
        self.closed = False

    def done_one(self) -> bool:
        with self._lock:
            self._finished += 1
            return self._finished >= 2

    def close(self, *, reset: bool) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
        _close(self.a, reset=reset)
        _close(self.b, reset=reset)


def _close(s: socket.socket, *, reset: bool) -> None:
    """Close `s`, waking any thread blocked on it: with a reset (RST), or cleanly (FIN)."""
    try:
        if reset:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.shutdown(socket.SHUT_RD)  # wakes a blocked recv() without sending anything
        else:
            s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass


# --------------------------------------------------------------------------------------------------------
# what a layout on disk must hold
# --------------------------------------------------------------------------------------------------------


def blob_map(objects: Iterable[Manifestish]) -> Dict[str, bytes]:
    """digest -> exact bytes of every manifest (lists included), config and layer under `objects`."""
    out: Dict[str, bytes] = {}
    for obj in objects:
        for m in iter_manifests(obj):
            out[m.digest] = m.raw
        for b in obj.blobs:
            out[b.digest] = b.raw
    return out


@dataclass
class TreeReport:
    """What a look at a (possibly interrupted) work layout found."""

    final_blobs: Dict[str, int] = field(default_factory=dict)
    """digest -> size of every blob under its final name."""
    partials: Dict[str, int] = field(default_factory=dict)
    """digest -> size of every `ingest/*.partial` file."""
    temp_files: List[str] = field(default_factory=list)
    """Temporary files (`.<name>.*.tmp`) an atomic write left behind."""
    problems: List[str] = field(default_factory=list)

    @property
    def partial_bytes(self) -> int:
        return sum(self.partials.values())


def tree_check(layout: Path, known: Optional[Dict[str, bytes]] = None) -> TreeReport:
    """Hash every file under `layout/blobs/sha256/` against its name and every `layout/ingest/*.partial`
    against the bytes it must be a prefix of (when `known` holds them)."""
    report = TreeReport()
    blobs = layout / "blobs" / "sha256"
    if blobs.is_dir():
        for p in sorted(blobs.iterdir()):
            if _HEX.match(p.name):
                data = p.read_bytes()
                actual = hashlib.sha256(data).hexdigest()
                if actual != p.name:
                    report.problems.append(f"blobs/sha256/{p.name}: {len(data)} bytes that hash to {actual}")
                report.final_blobs["sha256:" + p.name] = len(data)
            elif p.name.startswith(".") and p.name.endswith(".tmp"):
                report.temp_files.append(p.name)
            else:
                report.problems.append(f"blobs/sha256/{p.name}: not a digest and not a temporary file")
    ingest = layout / "ingest"
    if ingest.is_dir():
        for p in sorted(ingest.glob("*.partial")):
            m = re.match(r"^sha256-([0-9a-f]{64})\.partial$", p.name)
            if m is None:
                continue  # scratch space other features use
            digest = "sha256:" + m.group(1)
            data = p.read_bytes()
            report.partials[digest] = len(data)
            if known is not None and digest in known:
                want = known[digest]
                if len(data) > len(want) or want[: len(data)] != data:
                    report.problems.append(f"ingest/{p.name}: {len(data)} bytes that are not a prefix of the blob ({len(want)} bytes)")
    return report

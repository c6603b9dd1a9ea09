"""``LinkRelay``: an internet-shaped link in front of a host:port, in a process of its own.

The relay the benchmarks measure pack through. It runs as a child Python process (its own interpreter
lock, so neither the client being measured nor the benchmark's own threads slow it down) with one
asyncio event loop for every connection (no thread per connection or direction). Per direction of each
connection:

- every chunk read is stamped on arrival and handed on no earlier than ``latency`` seconds later (one-way
  delay; a round trip costs twice that; bytes in flight are pipelined, not serialised). At most
  ``LINE_BYTES`` wait in the line; beyond that the relay stops reading and TCP flow control pushes back;
- two token buckets are passed before a chunk is sent on: the connection's own (``per_connection``
  bytes/s, as a long-haul TCP connection is capped by its window) and one shared by every connection
  (``rate`` bytes/s, the link itself). A bucket keeps ``BURST`` seconds of credit, so a late wake-up of the
  event loop costs no bandwidth (the average holds), and a chunk larger than the credit waits its time.

Connections are set up without delay (the TCP handshake of a real link costs one more round trip).

Run directly (``python -m tests.infra.link HOST:PORT --rate R --latency L --per-connection C``) it prints
the address it listens on, then answers ``stats`` lines on stdin with one JSON line of counters
(``connections``, ``bytes_down``, ``bytes_up``) and ``reset`` by zeroing them; it ends at end of input.
:class:`LinkRelay` starts and drives that process. Nothing here imports ``bundler``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Dict, Optional

CHUNK = 256 * 1024
LINE_BYTES = 4 << 20
BURST = 0.02
"""Seconds of credit a token bucket keeps."""

_ROOT = Path(__file__).resolve().parents[2]


class _Bucket:
    """Virtual-time token bucket: `take(n)` waits until `n` bytes fit under `rate`, with `BURST` s of credit."""

    def __init__(self, rate: Optional[float]) -> None:
        self.rate = rate
        self._next = 0.0

    async def take(self, n: int) -> None:
        if not self.rate:
            return
        now = asyncio.get_running_loop().time()
        self._next = max(self._next, now - BURST) + n / self.rate
        wait = self._next - now
        if wait > 0:
            await asyncio.sleep(wait)


class _Relay:
    def __init__(self, upstream: str, rate: Optional[float], latency: float, per_connection: Optional[float]) -> None:
        host, _, port = upstream.rpartition(":")
        self.upstream = (host or "127.0.0.1", int(port))
        self.latency = latency
        self.per_connection = per_connection
        self.shared = _Bucket(rate)
        self.stats: Dict[str, int] = {"connections": 0, "bytes_down": 0, "bytes_up": 0}

    async def serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(*self.upstream, limit=CHUNK)
        except OSError:
            client_w.transport.abort()
            return
        self.stats["connections"] += 1
        for w in (client_w, up_w):
            w.transport.set_write_buffer_limits(high=CHUNK)
        try:
            await asyncio.gather(self._direction(up_r, client_w, "bytes_down"), self._direction(client_r, up_w, "bytes_up"))
        except asyncio.CancelledError:  # the relay is stopping
            for w in (client_w, up_w):
                w.transport.abort()
            return
        for w in (client_w, up_w):
            w.close()

    async def _direction(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, counter: str) -> None:
        loop = asyncio.get_running_loop()
        line: "asyncio.Queue[Any]" = asyncio.Queue(maxsize=max(1, LINE_BYTES // CHUNK))
        own = _Bucket(self.per_connection)

        async def receive() -> None:
            while True:
                try:
                    data = await src.read(CHUNK)
                except (OSError, asyncio.IncompleteReadError):
                    data = b""
                await line.put((loop.time() + self.latency, data))
                if not data:
                    return

        async def send() -> None:
            while True:
                due, data = await line.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    try:
                        if dst.can_write_eof():
                            dst.write_eof()
                    except OSError:
                        pass
                    return
                await own.take(len(data))
                await self.shared.take(len(data))
                try:
                    dst.write(data)
                    await dst.drain()
                except (OSError, ConnectionError):
                    return
                self.stats[counter] += len(data)

        receiver = asyncio.ensure_future(receive())
        try:
            await send()
        finally:
            receiver.cancel()


async def _main(args: argparse.Namespace) -> None:
    relay = _Relay(args.upstream, args.rate, args.latency, args.per_connection)
    server = await asyncio.start_server(relay.serve, "127.0.0.1", 0, limit=CHUNK, backlog=256)
    port = server.sockets[0].getsockname()[1]
    print(f"127.0.0.1:{port}", flush=True)
    loop = asyncio.get_running_loop()
    ended = asyncio.Event()

    def control() -> None:  # stdin, on a thread of its own: the loop never blocks on it
        for raw in sys.stdin:
            cmd = raw.strip()
            if cmd == "stats":
                loop.call_soon_threadsafe(lambda: print(json.dumps(relay.stats), flush=True))
            elif cmd == "reset":
                loop.call_soon_threadsafe(lambda: relay.stats.update({k: 0 for k in relay.stats}))
        loop.call_soon_threadsafe(ended.set)

    threading.Thread(target=control, daemon=True).start()
    async with server:
        await ended.wait()


class LinkRelay:
    """The relay as a child process: ``with LinkRelay("127.0.0.1:5000", rate=100e6, latency=0.03,
    per_connection=12e6) as link:`` connect to ``link.host``; ``link.stats()`` reads its counters."""

    def __init__(self, upstream: str, *, rate: Optional[float] = None, latency: float = 0.0, per_connection: Optional[float] = None) -> None:
        self.args = [upstream, "--latency", str(latency)]
        if rate:
            self.args += ["--rate", str(rate)]
        if per_connection:
            self.args += ["--per-connection", str(per_connection)]
        self._proc: Optional["subprocess.Popen[str]"] = None
        self.host = ""

    @property
    def url(self) -> str:
        return "http://" + self.host

    def start(self) -> "LinkRelay":
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(_ROOT), os.environ.get("PYTHONPATH", "")]))}
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.infra.link", *self.args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=_ROOT, env=env
        )
        assert self._proc.stdout is not None
        self.host = self._proc.stdout.readline().strip()
        if not self.host:
            self.stop()
            raise RuntimeError("the link relay did not start")
        return self

    def _ask(self, cmd: str) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(cmd + "\n")
        self._proc.stdin.flush()

    def stats(self) -> Dict[str, int]:
        self._ask("stats")
        assert self._proc is not None and self._proc.stdout is not None
        return {k: int(v) for k, v in json.loads(self._proc.stdout.readline()).items()}

    def reset(self) -> None:
        self._ask("reset")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()

    def __enter__(self) -> "LinkRelay":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description="an internet-shaped TCP relay (see the module docstring)")
    ap.add_argument("upstream", help="host:port to relay to")
    ap.add_argument("--rate", type=float, default=None, help="bytes/s shared by every connection")
    ap.add_argument("--latency", type=float, default=0.0, help="one-way delay in seconds")
    ap.add_argument("--per-connection", type=float, default=None, help="bytes/s of each connection")
    asyncio.run(_main(ap.parse_args()))


if __name__ == "__main__":
    main()

"""serve: a bundle as a read-only OCI distribution registry, blobs read in place from its volumes.

`index_bundles` works out, once, what the served registry holds: every image of the bundle at the name
unpack would give it (`<prefix>/<target repository>:<tag>`), the manifests reachable from each
repository's tags (read from the bundle and kept in memory: they are small), and which bundle (this one or
a `--base`) carries each blob. `RegistryServer` answers the pull side of the distribution API from that
index: `/v2/`, manifests by tag and digest, blobs with `Range`, tag lists, `_catalog`, and HEAD for each;
every write gets 405 with an `UNSUPPORTED` error body. Nothing is extracted or copied: a blob request
streams straight from the volume files (decompressing a zstd-stored blob on the fly).
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import ssl
import stat
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Set, Tuple

from bundler.base.errors import BundlerError, UsageError
from bundler.bundle.manifest import Part
from bundler.bundle.volumes import Bundle
from bundler.oci.digest import Digest
from bundler.oci.graph import walk_manifests
from bundler.oci.media import Descriptor, FetchedManifest, detect_media_type
from bundler.oci.reference import REPOSITORY

if TYPE_CHECKING:
    from bundler.openshift.resources import ResourcesResult

log = logging.getLogger(__name__)

__all__ = ["BundleIndex", "ServeOptions", "ServeStats", "RegistryServer", "index_bundles", "parse_listen"]

CHUNK = 1 << 20
_ROUTE = re.compile(rf"^/v2/(?P<name>{REPOSITORY})/(?P<kind>manifests|blobs|tags)/(?P<ref>[^/]+)$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass(frozen=True)
class ServeOptions:
    """`listen` is `HOST:PORT` (port 0 picks a free one); `prefix` goes before every repository, as with
    unpack; `bases` are earlier bundles an incremental bundle leaves blobs to; `tls_cert`/`tls_key` serve
    HTTPS."""

    listen: str = "127.0.0.1:5000"
    prefix: str = ""
    bases: Tuple[Path, ...] = ()
    tls_cert: Optional[Path] = None
    tls_key: Optional[Path] = None


@dataclass
class BundleIndex:
    """What the served registry holds."""

    tags: Dict[str, Dict[str, str]] = field(default_factory=dict)
    """repository -> tag -> manifest digest."""
    manifests: Dict[str, FetchedManifest] = field(default_factory=dict)
    """digest -> the manifest, as carried."""
    repo_manifests: Dict[str, Set[str]] = field(default_factory=dict)
    repo_blobs: Dict[str, Set[str]] = field(default_factory=dict)
    carriers: Dict[str, Bundle] = field(default_factory=dict)
    """blob digest -> the bundle whose volumes hold it."""
    missing: Set[str] = field(default_factory=set)
    """Blobs an image needs that neither the bundle nor a base carries."""
    _fds: Dict[Path, int] = field(default_factory=dict, repr=False)
    _fd_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def volume_fd(self, bundle: Bundle, volume: str) -> int:
        """A read-only descriptor of a volume file, opened once (positional reads and sendfile share it)."""
        path = bundle.directory / volume
        with self._fd_lock:
            fd = self._fds.get(path)
            if fd is None:
                fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    os.close(fd)
                    raise UsageError(f"{path} is not a regular file", hint="serve only bundles copied as plain files")
                self._fds[path] = fd
            return fd

    def close(self) -> None:
        with self._fd_lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()


@dataclass
class ServeStats:
    requests: int = 0
    bytes_sent: int = 0
    errors: int = 0
    started: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, sent: int, error: bool) -> None:
        with self.lock:
            self.requests += 1
            self.bytes_sent += sent
            self.errors += 1 if error else 0


def parse_listen(listen: str) -> Tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not (0 <= int(port) <= 65535):
        raise UsageError(f"--listen {listen!r} is not HOST:PORT", hint="e.g. 127.0.0.1:5000 or 0.0.0.0:5000")
    return host.strip("[]") or "0.0.0.0", int(port)


def index_bundles(bundle: Bundle, bases: Sequence[Bundle] = (), *, prefix: str = "") -> BundleIndex:
    """Index `bundle` (and the `bases` it leaves blobs to) for serving under `prefix`."""
    index = BundleIndex()
    carriers = [bundle, *bases]

    def carrier(digest: str) -> Optional[Bundle]:
        for candidate in carriers:
            if candidate.has_blob(Digest.parse(digest)):
                return candidate
        return None

    def manifest(digest: str) -> Optional[FetchedManifest]:
        known = index.manifests.get(digest)
        if known is not None:
            return known
        owner = carrier(digest)
        if owner is None:
            return None
        parsed = Digest.parse(digest)
        raw = owner.read_blob(parsed)
        fetched = FetchedManifest(raw, detect_media_type(raw, owner.blob(parsed).media_type), parsed)
        index.manifests[digest] = fetched
        return fetched

    for image in bundle.manifest.images:
        repo = f"{prefix.strip('/')}/{image.target_repository}" if prefix.strip("/") else image.target_repository
        digest = str(image.digest)
        top = manifest(digest)
        if top is None:
            index.missing.add(digest)
            continue
        index.tags.setdefault(repo, {})[image.target_tag] = digest
        manifests = index.repo_manifests.setdefault(repo, set())
        blobs = index.repo_blobs.setdefault(repo, set())

        def fetch(descriptor: Descriptor) -> Optional[FetchedManifest]:
            found = manifest(str(descriptor.digest))
            if found is None:
                index.missing.add(str(descriptor.digest))
            return found

        for node in walk_manifests(top, fetch, description=f"{repo}:{image.target_tag}"):
            manifests.add(str(node.manifest.digest))
            for blob in node.blobs:
                owner = carrier(str(blob.digest))
                if owner is None:
                    index.missing.add(str(blob.digest))
                    continue
                index.carriers[str(blob.digest)] = owner
                blobs.add(str(blob.digest))
    return index


class RegistryServer:
    """The HTTP(S) server over an index; `start()` serves in a thread, `serve_forever()` in the caller's."""

    def __init__(self, index: BundleIndex, options: ServeOptions) -> None:
        self.index = index
        self.options = options
        self.stats = ServeStats()
        host, port = parse_listen(options.listen)
        handler = _handler_class(index, self.stats)
        try:
            self.httpd = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise UsageError(f"cannot listen on {options.listen}: {exc.strerror or exc}", hint="choose another --listen address or port") from exc
        self.httpd.daemon_threads = True
        self.scheme = "http"
        if options.tls_cert is not None or options.tls_key is not None:
            if options.tls_cert is None or options.tls_key is None:
                self.httpd.server_close()
                raise UsageError("--tls-cert and --tls-key go together", hint="give both, or neither for plain HTTP")
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            try:
                context.load_cert_chain(str(options.tls_cert), str(options.tls_key))
            except (OSError, ssl.SSLError) as exc:
                self.httpd.server_close()
                raise UsageError(f"cannot use the certificate {options.tls_cert} and key {options.tls_key}: {exc}") from exc
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"
        self._thread: Optional[threading.Thread] = None

    @property
    def address(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"{host!s}:{port}" if isinstance(host, str) else f"{host.decode()}:{port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.address}"

    def start(self) -> "RegistryServer":
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="serve", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def close(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
        self.httpd.server_close()
        self.index.close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> "RegistryServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _handler_class(index: BundleIndex, stats: ServeStats) -> type:
    class Handler(_Handler):
        pass

    Handler.index = index
    Handler.stats = stats
    return Handler


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ocp-bundler-serve"
    index: BundleIndex
    stats: ServeStats

    # -- plumbing ---------------------------------------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: without this, Nagle's algorithm holds the body back
        # until the client acknowledges the headers (a delayed ACK, ~40 ms per response).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
        log.debug("%s %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes = b"", headers: Optional[Dict[str, str]] = None, *, head: bool = False) -> None:
        self.send_response(status)
        self.send_header("Docker-Distribution-API-Version", "registry/2.0")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and not head:
            self.wfile.write(body)
        self.stats.add(0 if head else len(body), status >= 400)

    def _error(self, status: int, code: str, message: str, *, head: bool = False) -> None:
        body = json.dumps({"errors": [{"code": code, "message": message}]}).encode()
        self._send(status, body, {"Content-Type": "application/json"}, head=head)

    def _refuse_write(self) -> None:
        self._error(405, "UNSUPPORTED", "this registry is a bundle served read-only by ocp-bundler serve; push into a writable registry instead")

    do_POST = do_PUT = do_PATCH = do_DELETE = _refuse_write

    def do_GET(self) -> None:
        self._route(head=False)

    def do_HEAD(self) -> None:
        self._route(head=True)

    # -- routes -----------------------------------------------------------------------------------------

    def _route(self, *, head: bool) -> None:
        path = self.path.split("?", 1)[0]
        try:
            if path in ("/v2", "/v2/"):
                self._send(200, b"{}", {"Content-Type": "application/json"}, head=head)
                return
            if path == "/v2/_catalog":
                body = json.dumps({"repositories": sorted(self.index.tags)}).encode()
                self._send(200, body, {"Content-Type": "application/json"}, head=head)
                return
            match = _ROUTE.match(path)
            if match is None:
                self._error(404, "NOT_FOUND", f"no such endpoint {path}", head=head)
                return
            name, kind, ref = match.group("name"), match.group("kind"), match.group("ref")
            if name not in self.index.tags:
                self._error(404, "NAME_UNKNOWN", f"repository {name} is not in this bundle", head=head)
            elif kind == "tags":
                if ref != "list":
                    self._error(404, "NOT_FOUND", f"no such endpoint {path}", head=head)
                else:
                    body = json.dumps({"name": name, "tags": sorted(self.index.tags[name])}).encode()
                    self._send(200, body, {"Content-Type": "application/json"}, head=head)
            elif kind == "manifests":
                self._manifest(name, ref, head=head)
            else:
                self._blob(name, ref, head=head)
        except (BrokenPipeError, ConnectionResetError):
            self.stats.add(0, True)
        except BundlerError as exc:
            log.warning("serving %s failed: %s", path, exc)
            self._error(500, "UNKNOWN", str(exc), head=head)

    def _manifest(self, name: str, ref: str, *, head: bool) -> None:
        digest = self.index.tags[name].get(ref) if not ref.startswith("sha") or ":" not in ref else ref
        if digest is None or digest not in self.index.repo_manifests.get(name, set()):
            self._error(404, "MANIFEST_UNKNOWN", f"manifest {name}:{ref} is not in this bundle", head=head)
            return
        fetched = self.index.manifests[digest]
        self._send(
            200,
            fetched.raw,
            {"Content-Type": fetched.media_type, "Docker-Content-Digest": digest, "Etag": f'"{digest}"'},
            head=head,
        )

    def _blob(self, name: str, digest: str, *, head: bool) -> None:
        if digest not in self.index.repo_blobs.get(name, set()):
            if digest in self.index.repo_manifests.get(name, set()):
                fetched = self.index.manifests[digest]
                self._send(200, fetched.raw, {"Content-Type": "application/octet-stream", "Docker-Content-Digest": digest}, head=head)
                return
            self._error(404, "BLOB_UNKNOWN", f"blob {digest} is not in {name} in this bundle", head=head)
            return
        bundle = self.index.carriers[digest]
        size = bundle.blob(Digest.parse(digest)).size
        start, end = 0, size - 1
        status = 200
        wanted = self.headers.get("Range")
        if wanted:
            parsed = _parse_range(wanted, size)
            if parsed is None:
                self._send(416, b"", {"Content-Range": f"bytes */{size}"}, head=head)
                return
            start, end = parsed
            status = 206
        headers = {
            "Content-Type": "application/octet-stream",
            "Docker-Content-Digest": digest,
            "Accept-Ranges": "bytes",
            "Content-Length": str(end - start + 1 if size else 0),
            "Etag": f'"{digest}"',
        }
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        self.send_response(status)
        self.send_header("Docker-Distribution-API-Version", "registry/2.0")
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if head or size == 0:
            self.stats.add(0, False)
            return
        blob = bundle.blob(Digest.parse(digest))
        if blob.encoding == "raw" and not isinstance(self.connection, ssl.SSLSocket) and hasattr(os, "sendfile"):
            sent = self._sendfile(bundle, blob.parts, start, end - start + 1)
            self.stats.add(sent, sent != end - start + 1)
            if sent != end - start + 1:
                self.close_connection = True
            return
        remaining = end - start + 1
        sent = 0
        with bundle.open_blob(blob.digest, start) as reader:
            while remaining > 0:
                chunk = reader.read(min(CHUNK, remaining))
                if not chunk:
                    break
                self.wfile.write(chunk)
                sent += len(chunk)
                remaining -= len(chunk)
        self.stats.add(sent, remaining > 0)
        if remaining > 0:  # the volume ended early: the client sees a short body and must not trust it
            self.close_connection = True


    def _sendfile(self, bundle: Bundle, parts: Sequence[Part], start: int, length: int) -> int:
        """Send `length` bytes of a raw-stored blob from `start`, straight from the volume files (no copy
        through Python)."""
        out = self.connection.fileno()
        sent = 0
        skip = start
        for part in parts:
            if length <= 0:
                break
            if skip >= part.length:
                skip -= part.length
                continue
            fd = self.index.volume_fd(bundle, part.volume)
            offset, count = part.offset + skip, min(part.length - skip, length)
            skip = 0
            while count > 0:
                done = os.sendfile(out, fd, offset, count)
                if done == 0:
                    return sent  # the volume is shorter than recorded
                offset += done
                count -= done
                length -= done
                sent += done
        return sent


def _parse_range(header: str, size: int) -> Optional[Tuple[int, int]]:
    """One `bytes=a-b` range (the only form registries use) within `size`; None when unsatisfiable."""
    match = _RANGE.match(header.strip())
    if match is None or size == 0:
        return None
    first, last = match.group(1), match.group(2)
    if first == "":
        if last == "":
            return None
        length = min(int(last), size)
        return (size - length, size - 1) if length > 0 else None
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start > end or start >= size:
        return None
    return start, end


def summary(stats: ServeStats) -> str:
    """One line for people: requests, bytes and errors since the start."""
    seconds = max(time.monotonic() - stats.started, 1e-9)
    return f"{stats.requests} requests, {stats.bytes_sent} bytes sent, {stats.errors} errors in {seconds:.0f}s"


def missing_note(index: BundleIndex) -> List[str]:
    """Warnings for blobs nobody carries (an incremental bundle served without its base)."""
    if not index.missing:
        return []
    return [
        f"{len(index.missing)} blob(s) the images need are carried by no bundle given (an incremental bundle "
        "without its --base?): pulls of the images that need them will fail"
    ]


def open_server(directory: Path, options: ServeOptions) -> RegistryServer:
    """Open the bundle in `directory` (and its bases), index it, and bind the server (not started yet)."""
    bundle = Bundle.open(directory)
    bases = [Bundle.open(base) for base in options.bases]
    index = index_bundles(bundle, bases, prefix=options.prefix)
    return RegistryServer(index, options)


def systemd_unit_text(serve_args: Sequence[str]) -> str:
    """A systemd service unit that runs `ocp-bundler serve` with `serve_args` (absolute paths) at boot."""
    import shlex
    import sys

    command = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "bundler.cli", "serve", *serve_args])
    return (
        "[Unit]\n"
        "Description=ocp-bundler: a bundle served as a read-only registry\n"
        "After=network-online.target local-fs.target\n"
        "Wants=network-online.target\n\n"
        "[Service]\n"
        f"ExecStart={command}\n"
        "Environment=OCPB_DEBUG_LOG=/dev/null\n"
        "Restart=on-failure\n"
        "RestartSec=5\n\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )


def write_served_resources(
    directory: Path, *, registry: str, prefix: str, out_dir: Path, icsp: bool = False, fresh: bool = False
) -> "ResourcesResult":
    """The cluster resources for images pulled from a served bundle at `registry` (`host:port`, the name
    the cluster uses): the same files unpack writes, with the same names and day-2 rules."""
    from bundler.flows.unpack.plan import make_targets
    from bundler.flows.unpack.resources import write_resources

    bundle = Bundle.open(directory)
    host = registry.strip("/")
    targets = make_targets(bundle.manifest.images, host=host, prefix=prefix.strip("/"))
    registry_path = host + (f"/{prefix.strip('/')}" if prefix.strip("/") else "")
    return write_resources(bundle, targets, registry_path=registry_path, out_dir=out_dir, icsp=icsp, fresh=fresh)

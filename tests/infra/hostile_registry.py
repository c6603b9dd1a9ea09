"""A small hostile registry: the distribution API as a malicious or broken server would speak it.

Owns two loopback servers:

- :class:`HostileRegistry` (HTTP, or HTTPS with any certificate: expired, wrong host name) answering
  ``/v2/`` and ``/v2/<repo>/{manifests,blobs}/<ref>``. What it does is chosen by the FIRST path
  component of the repository (``behaviour/name``), so one server serves every case:

  ``ok``            a real single-layer image (``put_image`` made it), nothing hostile
  ``endless``       the manifest body never ends (chunked, random bytes)
  ``bigheader``     the manifest declares ``Content-Length: 100 MB`` and then sends that much
  ``liar``          headers lie: ``Content-Length`` says 10 bytes fewer than the manifest, digest header is
                    for other content
  ``trickle``       the manifest body arrives one byte every ``trickle_seconds``
  ``slowheaders``   the status line and headers arrive one byte every ``trickle_seconds``
  ``stall``         the blob sends half its bytes, then nothing (the connection stays open)
  ``tricklblob``    the blob body arrives one byte every ``trickle_seconds``
  ``endlessblob``   every blob body never ends (chunked, random bytes)
  ``deep``          ``deep/x:latest`` is a chain of ``deep_levels`` manifest lists, each the only child of
                    the one above, ending in the ``ok`` image
  ``deepjson``      an image manifest whose annotation nests ``deepjson_levels`` arrays
  ``redirect``      blob GETs answer 307 to the :class:`ForeignServer`'s ``/blob/<digest>?X-Amz-Signature=…``
  ``tagged``        ``tagged/x:v1`` and ``tagged/x:other`` are two different images
  ``pager``         ``/v2/pager/x/tags/list`` names its next page on the :class:`ForeignServer`;
                    ``/v2/loop/x/tags/list`` names itself as its next page, forever

  Outside ``/v2/`` (``/api/v1/discovery``, ``/health/instance``: where a client asks whether this is
  Quay) every answer is an endless body.

  With ``realm`` set every ``/v2/…`` request without a ``Bearer`` header gets
  ``401 WWW-Authenticate: Bearer realm=<realm>,service="hostile"``.

- :class:`ForeignServer`: an HTTPS server with a certificate from a CA nobody trusts; it serves tokens
  (``/token``) and blobs (``/blob/<digest>``) and records every request and whether it carried an
  ``Authorization`` header (``credentials_seen``): a client that verifies TLS never gets that far.

Nothing here imports ``bundler``.
"""

from __future__ import annotations

import hashlib
import json
import os
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from . import LoopbackHTTPServer

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _descriptor(media_type: str, data: bytes) -> Dict[str, Any]:
    return {"mediaType": media_type, "digest": _digest(data), "size": len(data)}


@dataclass
class _Content:
    blobs: Dict[str, bytes] = field(default_factory=dict)
    manifests: Dict[str, Tuple[str, bytes]] = field(default_factory=dict)  # digest -> (type, raw)
    tags: Dict[Tuple[str, str], str] = field(default_factory=dict)  # (repo, tag) -> digest

    def add_manifest(self, media_type: str, raw: bytes) -> str:
        d = _digest(raw)
        self.manifests[d] = (media_type, raw)
        return d


def _image(content: _Content, seed: bytes, annotations: Optional[Dict[str, Any]] = None) -> str:
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}, "seed": seed.hex()}).encode()
    layer = hashlib.sha256(seed).digest() * 64
    content.blobs[_digest(config)] = config
    content.blobs[_digest(layer)] = layer
    doc: Dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": _descriptor(OCI_CONFIG, config),
        "layers": [_descriptor(OCI_LAYER, layer)],
    }
    if annotations:
        doc["annotations"] = annotations
    return content.add_manifest(OCI_MANIFEST, json.dumps(doc).encode())


class HostileRegistry:
    """See the module docstring. ``url``/``host`` name it; ``requests`` lists ``(method, path)`` seen."""

    def __init__(
        self,
        *,
        cert: Optional[Tuple[Path, Path]] = None,
        realm: Optional[str] = None,
        trickle_seconds: float = 5.0,
        deep_levels: int = 1500,
        deepjson_levels: int = 5000,
        foreign: Optional["ForeignServer"] = None,
    ) -> None:
        self.cert = cert
        self.realm = realm
        self.trickle_seconds = trickle_seconds
        self.foreign = foreign
        self.requests: List[Tuple[str, str]] = []
        self.content = _Content()
        self.ok_digest = _image(self.content, b"ok")
        self.other_digest = _image(self.content, b"other")
        self.content.tags[("tagged/x", "v1")] = self.ok_digest
        self.content.tags[("tagged/x", "other")] = self.other_digest
        top = self.ok_digest
        for _ in range(deep_levels):
            media_type, raw = self.content.manifests[top]
            index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [_descriptor(media_type, raw)]}
            top = self.content.add_manifest(OCI_INDEX, json.dumps(index).encode())
        self.deep_digest = top
        deep_text = "[" * deepjson_levels + '"x"' + "]" * deepjson_levels
        _, plain = self.content.manifests[_image(self.content, b"deepjson")]
        raw = plain[:-1] + b', "annotations": {"x": ' + deep_text.encode() + b"}}"
        self.deepjson_digest = self.content.add_manifest(OCI_MANIFEST, raw)
        self._server: Optional[LoopbackHTTPServer] = None

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> "HostileRegistry":
        registry = self

        class Handler(_RegistryHandler):
            owner = registry

        server = LoopbackHTTPServer(Handler)
        if self.cert is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(self.cert[0]), str(self.cert[1]))
            server.socket = ctx.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        server.start_background("hostile-registry")
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(join_timeout=2)
            self._server = None

    def __enter__(self) -> "HostileRegistry":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def stopping(self) -> threading.Event:
        assert self._server is not None
        return self._server.stopping

    @property
    def host(self) -> str:
        assert self._server is not None
        return f"127.0.0.1:{self._server.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.cert else 'http'}://{self.host}"


def _handshake(handler: BaseHTTPRequestHandler) -> None:
    """Finish the TLS handshake in the handler thread (a client that rejects the certificate ends here)."""
    conn = handler.connection
    if isinstance(conn, ssl.SSLSocket):
        conn.settimeout(10)
        try:
            conn.do_handshake()
        except (ssl.SSLError, OSError):
            raise ConnectionError("handshake failed") from None
        conn.settimeout(None)


class _RegistryHandler(BaseHTTPRequestHandler):
    owner: HostileRegistry
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep stderr quiet
        pass

    def setup(self) -> None:
        super().setup()
        _handshake(self)

    # -- helpers ---------------------------------------------------------------------------------------

    def _send(self, status: int, body: bytes = b"", headers: Optional[Dict[str, str]] = None) -> None:
        self.send_response(status)
        hdrs = {"Content-Length": str(len(body)), **(headers or {})}
        for k, v in hdrs.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _sleep(self, seconds: float) -> bool:
        """Sleep unless the server stops; False when it does."""
        return not self.owner.stopping.wait(seconds)

    def _endless(self, media_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", media_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        chunk = os.urandom(1 << 16)
        line = b"%x\r\n" % len(chunk) + chunk + b"\r\n"
        try:
            while not self.owner.stopping.is_set():
                self.wfile.write(line)
        except OSError:
            pass
        self.close_connection = True

    def _trickle(self, media_type: str, body: bytes, *, head: int = 0) -> None:
        self.send_response(200)
        self.send_header("Content-Type", media_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body[:head])
            self.wfile.flush()
            for i in range(head, len(body)):
                if not self._sleep(self.owner.trickle_seconds):
                    break
                self.wfile.write(body[i : i + 1])
                self.wfile.flush()
        except OSError:
            pass
        self.close_connection = True

    # -- API -------------------------------------------------------------------------------------------

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        owner = self.owner
        owner.requests.append((self.command, self.path))
        path = self.path.split("?", 1)[0]
        if not path.startswith("/v2"):
            self._endless("application/json")
            return
        if owner.realm and not (self.headers.get("Authorization") or "").startswith("Bearer "):
            challenge = f'Bearer realm="{owner.realm}",service="hostile"'
            self._send(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', {"WWW-Authenticate": challenge, "Content-Type": "application/json"})
            return
        if path in ("/v2/", "/v2"):
            self._send(200, b"{}", {"Content-Type": "application/json", "Docker-Distribution-API-Version": "registry/2.0"})
            return
        if path.endswith("/tags/list"):
            repo = path[len("/v2/") : -len("/tags/list")]
            nxt = f"{self.owner.foreign.url}/v2/{repo}/tags/list?n=1" if repo.startswith("pager/") and self.owner.foreign else self.path
            self._send(200, b'{"name":"%s","tags":["a"]}' % repo.encode(), {"Content-Type": "application/json", "Link": f'<{nxt}>; rel="next"'})
            return
        parts = path[len("/v2/") :].split("/") if path.startswith("/v2/") else []
        if len(parts) < 3 or parts[-2] not in ("manifests", "blobs"):
            self._send(404)
            return
        repo, kind, ref = "/".join(parts[:-2]), parts[-2], parts[-1]
        behaviour = repo.split("/", 1)[0]
        if kind == "manifests":
            self._manifest(behaviour, repo, ref)
        else:
            self._blob(behaviour, ref)

    def _manifest(self, behaviour: str, repo: str, ref: str) -> None:
        c = self.owner.content
        if behaviour == "endless":
            self._endless(OCI_MANIFEST)
            return
        if behaviour == "slowheaders":
            head = f"HTTP/1.1 200 OK\r\nContent-Type: {OCI_MANIFEST}\r\nX-Padding: {'x' * 4000}\r\n\r\n".encode()
            try:
                for i in range(len(head)):
                    if not self._sleep(self.owner.trickle_seconds):
                        break
                    self.wfile.write(head[i : i + 1])
                    self.wfile.flush()
            except OSError:
                pass
            self.close_connection = True
            return
        if behaviour == "bigheader":
            size = 100 << 20
            self.send_response(200)
            self.send_header("Content-Type", OCI_MANIFEST)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            try:
                block = b" " * (1 << 16)
                for _ in range(size // len(block)):
                    if self.owner.stopping.is_set():
                        break
                    self.wfile.write(block)
            except OSError:
                pass
            self.close_connection = True
            return
        if ref.startswith("sha256:"):
            digest: Optional[str] = ref if ref in c.manifests else None
        elif behaviour == "deep":
            digest = self.owner.deep_digest
        elif behaviour == "deepjson":
            digest = self.owner.deepjson_digest
        else:
            digest = c.tags.get((repo, ref), self.owner.ok_digest if behaviour != "tagged" else None)
        if digest is None:
            self._send(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}', {"Content-Type": "application/json"})
            return
        media_type, raw = c.manifests[digest]
        if behaviour == "trickle":
            self._trickle(media_type, raw)
            return
        headers = {"Content-Type": media_type, "Docker-Content-Digest": digest}
        if behaviour == "liar":
            headers["Docker-Content-Digest"] = self.owner.other_digest
            self.send_response(200)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(raw) - 10))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(raw)
            self.close_connection = True
            return
        self._send(200, raw, headers)

    def _blob(self, behaviour: str, digest: str) -> None:
        data = self.owner.content.blobs.get(digest)
        if data is None:
            self._send(404, b'{"errors":[{"code":"BLOB_UNKNOWN"}]}', {"Content-Type": "application/json"})
            return
        if behaviour == "redirect" and self.owner.foreign is not None:
            location = f"{self.owner.foreign.url}/blob/{digest}?X-Amz-Signature=SECRETSIGNATURE&X-Amz-Expires=300"
            self._send(307, b"", {"Location": location})
            return
        if behaviour == "endlessblob" and self.command == "GET":
            self._endless("application/octet-stream")
            return
        if behaviour == "tricklblob" and self.command == "GET":
            self._trickle("application/octet-stream", data, head=1)
            return
        if behaviour == "stall" and self.command == "GET":
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self._sleep(3600)
            except OSError:
                pass
            self.close_connection = True
            return
        self._send(200, data, {"Content-Type": "application/octet-stream", "Docker-Content-Digest": digest})


class ForeignServer:
    """An HTTPS server on another port with a certificate nobody trusts (see the module docstring)."""

    def __init__(self, cert: Tuple[Path, Path], blobs: Optional[Dict[str, bytes]] = None) -> None:
        self.cert = cert
        self.blobs: Dict[str, bytes] = blobs if blobs is not None else {}
        self.requests: List[Tuple[str, bool]] = []
        self._server: Optional[LoopbackHTTPServer] = None

    @property
    def credentials_seen(self) -> int:
        return sum(1 for _, auth in self.requests if auth)

    def start(self) -> "ForeignServer":
        foreign = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def setup(self) -> None:
                super().setup()
                _handshake(self)

            def do_GET(self) -> None:  # noqa: N802
                foreign.requests.append((self.path, bool(self.headers.get("Authorization"))))
                path = self.path.split("?", 1)[0]
                if path.startswith("/token"):
                    body = json.dumps({"token": "stolen-" + str(time.time()), "expires_in": 300}).encode()
                elif path.startswith("/blob/") and path[len("/blob/") :] in foreign.blobs:
                    body = foreign.blobs[path[len("/blob/") :]]
                else:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        server = LoopbackHTTPServer(Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(self.cert[0]), str(self.cert[1]))
        server.socket = ctx.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        server.start_background("foreign-https")
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(join_timeout=2)
            self._server = None

    def __enter__(self) -> "ForeignServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"https://127.0.0.1:{self._server.port}"

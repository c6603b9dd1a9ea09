"""Read files out of an image's layers without unpacking it to disk.

Owns the image filesystem view used by release, samples, catalog and extract: layers are streamed
(gzip / zstd / plain tar, decompressed on the fly) from newest to oldest, so the newest layer wins and
whiteouts (`.wh.<name>`, `.wh..wh..opq`) hide what older layers hold (image-spec `layer.md`). Member
paths are normalised (`./a/b` → `a/b`); links and devices are never followed or created.
"""

from __future__ import annotations

import gzip
import logging
import posixpath
import tarfile
from dataclasses import dataclass
from typing import IO, Callable, Dict, Iterator, List, Mapping, Optional, Set, Tuple, cast

import zstandard

from bundler.oci.digest import Digest, Readable
from bundler.base.errors import DigestMismatchError, IntegrityError, UsageError
from bundler.base.jsonlimits import loads_bounded
from bundler.oci.media import Descriptor, is_index, parse_manifest
from bundler.oci.platform import Platform, choose_child
from bundler.registry.client import FetchedManifest
from bundler.transfer.transports import ImageSource

log = logging.getLogger(__name__)

MAX_IN_MEMORY = 256 << 20
#: An image config is read into memory: at most this (containers/image's limit).
MAX_CONFIG_BYTES = 4 << 20


class _ReadAdapter:
    """Gives a `Readable` the file-like `read()` tarfile/gzip expect."""

    def __init__(self, src: Readable) -> None:
        self._src = src

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            chunks: List[bytes] = []
            while True:
                c = self._src.read(1 << 20)
                if not c:
                    return b"".join(chunks)
                chunks.append(c)
        return self._src.read(n)

    def readable(self) -> bool:
        return True


def _decompressed(stream: Readable) -> IO[bytes]:
    """Sniff the compression from the first bytes (media types lie more often than magic numbers)."""
    head = stream.read(4)
    rest = _Prefixed(head, stream)
    fileobj = cast(IO[bytes], rest)
    if head[:2] == b"\x1f\x8b":
        return cast(IO[bytes], gzip.GzipFile(fileobj=fileobj, mode="rb"))
    if head == b"\x28\xb5\x2f\xfd":
        return cast(IO[bytes], zstandard.ZstdDecompressor().stream_reader(fileobj))
    return fileobj


class _Prefixed:
    def __init__(self, prefix: bytes, src: Readable) -> None:
        self._prefix = prefix
        self._src = _ReadAdapter(src)

    def read(self, n: int = -1) -> bytes:
        if self._prefix:
            if n is None or n < 0:
                out, self._prefix = self._prefix + self._src.read(), b""
                return out
            out, self._prefix = self._prefix[:n], self._prefix[n:]
            if len(out) < n:
                out += self._src.read(n - len(out))
            return out
        return self._src.read(n)

    def readable(self) -> bool:
        return True


def normalise(name: str) -> str:
    name = posixpath.normpath("/" + name.lstrip("./").lstrip("/")) if name not in (".", "./") else "/"
    return name.lstrip("/")


def iter_layer(stream: Readable) -> Iterator[Tuple[tarfile.TarInfo, Optional[IO[bytes]]]]:
    """(member, file object or None) for every member of a layer stream, in order."""
    try:
        with tarfile.open(fileobj=_decompressed(stream), mode="r|") as tar:
            for member in tar:
                f = tar.extractfile(member) if member.isreg() else None
                yield member, f
    except (tarfile.TarError, OSError, EOFError, zstandard.ZstdError) as exc:
        raise IntegrityError(f"layer is not a readable tar stream: {exc}") from None


@dataclass(frozen=True)
class ImageRef:
    """A single-platform image: its manifest, parsed config and the source to read blobs from."""

    source: ImageSource
    manifest: FetchedManifest
    layers: Tuple[Descriptor, ...]
    config: Mapping[str, object]

    @property
    def labels(self) -> Mapping[str, str]:
        cfg = self.config.get("config") if isinstance(self.config, dict) else None
        labels = cfg.get("Labels") if isinstance(cfg, dict) else None
        return dict(labels) if isinstance(labels, dict) else {}


def open_image(source: ImageSource, manifest: Optional[FetchedManifest] = None, *, platform: str = "linux/amd64") -> ImageRef:
    """Resolve a source to one platform's image (picking `platform` from a list) and read its config."""
    manifest = manifest or source.resolve()
    if is_index(manifest.media_type):
        parsed = parse_manifest(manifest.raw, manifest.media_type)
        chosen = choose_child(parsed.children, Platform.parse(platform))
        if chosen is None and len(parsed.children) == 1:
            chosen = parsed.children[0]
        if chosen is None:
            have = ", ".join(str(c.platform) for c in parsed.children if c.platform)
            raise UsageError(f"{source.description} has no {platform} image (it has: {have or 'none'})", hint="choose another --platform")
        manifest = source.fetch_manifest(chosen)
    parsed = parse_manifest(manifest.raw, manifest.media_type)
    assert parsed.config is not None
    if parsed.config.size > MAX_CONFIG_BYTES:
        raise IntegrityError(f"{source.description}: image config of {parsed.config.size} bytes is larger than {MAX_CONFIG_BYTES >> 20} MiB")
    with source.open_blob(parsed.config, 0) as f:
        raw_config = f.read(parsed.config.size + 1)  # one more than expected: a longer body is caught below
    if len(raw_config) != parsed.config.size or Digest.of(raw_config) != parsed.config.digest:
        raise DigestMismatchError(f"{source.description}: image config is not {parsed.config.digest} ({parsed.config.size} bytes)")
    try:
        config = loads_bounded(raw_config)
    except ValueError:
        raise IntegrityError(f"{source.description}: image config is not JSON") from None
    return ImageRef(source, manifest, parsed.layers, config if isinstance(config, dict) else {})


class _Overlay:
    """What newer layers hide from older ones while walking layers newest first."""

    def __init__(self) -> None:
        self.shadowed: Set[str] = set()  # exact paths a newer layer defines
        self.deleted: Set[str] = set()  # whiteouts: the path and everything below it
        self.opaque: Set[str] = set()  # opaque directories: everything strictly below them
        self._layer_shadowed: Set[str] = set()
        self._layer_deleted: Set[str] = set()
        self._layer_opaque: Set[str] = set()

    def visit(self, path: str) -> Optional[str]:
        """Record a member of the current layer; returns its visible path, or None (marker or hidden)."""
        base = posixpath.basename(path)
        parent = posixpath.dirname(path)
        if base == ".wh..wh..opq":
            self._layer_opaque.add(parent)
            return None
        if base.startswith(".wh."):
            self._layer_deleted.add(posixpath.join(parent, base[4:]))
            return None
        hidden = self.hidden(path)
        self._layer_shadowed.add(path)
        return None if hidden else path

    def hidden(self, path: str) -> bool:
        if path in self.shadowed:
            return True
        p = path
        while p:
            if p in self.deleted:
                return True
            parent = posixpath.dirname(p)
            if parent in self.opaque or (not parent and "" in self.opaque):
                return True
            p = parent
        return False

    def end_layer(self) -> None:
        self.shadowed |= self._layer_shadowed
        self.deleted |= self._layer_deleted
        self.opaque |= self._layer_opaque
        self._layer_shadowed, self._layer_deleted, self._layer_opaque = set(), set(), set()


def read_files(image: ImageRef, wanted: Callable[[str], bool], *, max_bytes: int = MAX_IN_MEMORY) -> Dict[str, bytes]:
    """Contents of every regular file whose normalised path `wanted` accepts, as the image's filesystem shows it."""
    found: Dict[str, bytes] = {}
    overlay = _Overlay()
    total = 0
    for layer in reversed(image.layers):
        with image.source.open_blob(layer, 0) as stream:
            for member, f in iter_layer(stream):
                path = overlay.visit(normalise(member.name))
                if path is None or f is None or not wanted(path):
                    continue
                data = f.read()
                total += len(data)
                if total > max_bytes:
                    raise UsageError(f"files selected from {image.source.description} exceed {max_bytes} bytes")
                found[path] = data
        overlay.end_layer()
    return found


def extract_file(image: ImageRef, path: str, dest: IO[bytes]) -> Optional[tarfile.TarInfo]:
    """Stream one file (newest layer wins, whiteouts honoured) into `dest`; None when absent."""
    path = normalise(path)
    overlay = _Overlay()
    for layer in reversed(image.layers):
        with image.source.open_blob(layer, 0) as stream:
            for member, f in iter_layer(stream):
                if overlay.visit(normalise(member.name)) != path:
                    continue
                if f is None:
                    raise UsageError(f"{path} in {image.source.description} is not a regular file")
                while True:
                    chunk = f.read(1 << 20)
                    if not chunk:
                        break
                    dest.write(chunk)
                return member
        overlay.end_layer()
        if overlay.hidden(path):
            return None
    return None


def list_children(manifest: FetchedManifest) -> List[Descriptor]:
    return list(parse_manifest(manifest.raw, manifest.media_type).children)

"""Reading a bundle in place: blobs and files served by their recorded offsets straight out of the volumes.

Owns `Bundle` (parses the manifest, no hashing: `bundler.bundle.verify` does that), `read_manifest`,
`load_base_manifest` and `BundleImageSource` (one carried image as a copy-engine source). Blobs are read
across volume boundaries, decompressing zstd-stored ones, after checking the tar header in front of each
part. Nothing is ever extracted.
"""

from __future__ import annotations

import contextlib
import hashlib
import tarfile
from pathlib import Path
from typing import IO, Any, ContextManager, Dict, Iterator, List, Sequence, Tuple

import zstandard

from bundler.oci.digest import Digest, Readable
from bundler.base.errors import ImageNotFoundError, IntegrityError, UnsafeArchiveError, UsageError
from bundler.oci.media import Descriptor, detect_media_type
from bundler.registry.client import FetchedManifest
from bundler.bundle.members import CHUNK, JOURNAL_NAME, STATE_NAME, StoredItem
from bundler.bundle.manifest import (
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    SIGNATURE_NAME,
    TAR_BLOCK,
    BaseBlob,
    BundleBlob,
    BundleFile,
    BundleImage,
    BundleManifest,
    Part,
    is_volume_name,
    open_volume,
    read_bundle_file,
)

# --------------------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------------------


def load_base_manifest(path: Path) -> BundleManifest:
    """The manifest of an earlier bundle (its directory or its manifest file), for incremental packs."""
    path = Path(path)
    manifest_path = path / MANIFEST_NAME if path.is_dir() else path
    try:
        raw = manifest_path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"base bundle {path} has no {MANIFEST_NAME}", hint="pass the directory of an earlier bundle, or its manifest file") from None
    except OSError as exc:
        raise UsageError(f"cannot read the base bundle manifest {manifest_path}: {exc.strerror}") from None
    return BundleManifest.from_bytes(raw, where=str(manifest_path))




def read_part_header(f: IO[bytes], volume: str, part: Part) -> None:
    """Check the tar header in front of a part: a regular file named as recorded, of the recorded size."""
    f.seek(part.offset - TAR_BLOCK)
    buf = f.read(TAR_BLOCK)
    if len(buf) != TAR_BLOCK:
        raise IntegrityError(f"{volume} is truncated: no tar header at offset {part.offset - TAR_BLOCK}", hint=f"re-copy {volume}")
    try:
        info = tarfile.TarInfo.frombuf(buf, "utf-8", "surrogateescape")
    except tarfile.HeaderError as exc:
        raise IntegrityError(f"{volume}: damaged tar header at offset {part.offset - TAR_BLOCK} ({exc})", hint=f"re-copy {volume}") from None
    if info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
        raise UnsafeArchiveError(f"{volume}: member {info.name!r} at offset {part.offset - TAR_BLOCK} is not a regular file", hint=f"do not extract {volume}; re-copy it from a trusted source")
    if info.name != part.member or info.size != part.length:
        raise IntegrityError(
            f"{volume}: the member at offset {part.offset - TAR_BLOCK} is {info.name!r} ({info.size} bytes), the manifest says {part.member!r} ({part.length} bytes)",
            hint=f"re-copy {volume}",
        )


class _PartsReader:
    """The stored bytes of a blob or file, read in place from its parts across volumes."""

    def __init__(self, directory: Path, parts: Sequence[Part], offset: int = 0) -> None:
        self.directory = directory
        self.parts = list(parts)
        self._files: Dict[str, IO[bytes]] = {}
        self._index = 0
        self._in_part = 0
        self._checked: "set[int]" = set()
        while self._index < len(self.parts) and offset >= self.parts[self._index].length and self.parts[self._index].length > 0:
            offset -= self.parts[self._index].length
            self._index += 1
        self._in_part = offset

    def _file(self, volume: str) -> IO[bytes]:
        f = self._files.get(volume)
        if f is None:
            path = self.directory / volume
            try:
                f = open_volume(path)
            except FileNotFoundError:
                raise IntegrityError(f"{volume} is missing from {self.directory}", hint=f"copy {volume} from the source media") from None
            except OSError as exc:
                raise IntegrityError(f"{volume} in {self.directory} cannot be read ({exc.strerror or exc})", hint=f"fix its permissions, or copy {volume} from the source media") from None
            self._files[volume] = f
        return f

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = CHUNK
        while n > 0 and self._index < len(self.parts):
            part = self.parts[self._index]
            left = part.length - self._in_part
            if left <= 0:
                self._index += 1
                self._in_part = 0
                continue
            f = self._file(part.volume)
            if self._index not in self._checked:
                read_part_header(f, part.volume, part)
                self._checked.add(self._index)
            f.seek(part.offset + self._in_part)
            data = f.read(min(n, left, CHUNK))
            if not data:
                raise IntegrityError(f"{part.volume} is truncated: {part.member} ends early", hint=f"re-copy {part.volume}")
            self._in_part += len(data)
            return data  # short reads are fine: readers loop until b""
        return b""

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()


class _Limited:
    """At most `limit` bytes of a (decompressing) reader; guards against data that expands beyond its size."""

    def __init__(self, reader: Any, limit: int) -> None:
        self.reader = reader
        self.limit = limit

    def read(self, n: int = -1) -> bytes:
        if self.limit <= 0:
            return b""
        if n is None or n < 0 or n > self.limit:
            n = self.limit
        try:
            data: bytes = self.reader.read(n)
        except zstandard.ZstdError as exc:
            raise IntegrityError(f"stored data does not decompress ({exc})", hint="run ocp-bundler verify to find the damaged volume") from None
        self.limit -= len(data)
        return data


class Bundle:
    """A bundle directory, opened for reading. Nothing is hashed on open: `verify_bundle` does that."""

    def __init__(self, directory: Path, manifest: BundleManifest, raw_manifest: bytes) -> None:
        self.directory = directory
        self.manifest = manifest
        self.raw_manifest = raw_manifest
        self._blobs: Dict[Digest, BundleBlob] = {b.digest: b for b in manifest.blobs}
        self._files: Dict[str, BundleFile] = {f.name: f for f in manifest.files}
        self._base: Dict[Digest, BaseBlob] = {b.digest: b for b in manifest.base_blobs}

    @classmethod
    def open(cls, directory: Path) -> "Bundle":
        directory = Path(directory)
        if directory.is_file() and directory.name == MANIFEST_NAME:
            directory = directory.parent
        return cls(directory, *read_manifest(directory))

    @property
    def manifest_path(self) -> Path:
        return self.directory / MANIFEST_NAME

    @property
    def signature_path(self) -> Path:
        return self.directory / SIGNATURE_NAME

    @property
    def is_signed(self) -> bool:
        """Whether a signature file is present (not whether it is valid: verify checks that)."""
        return self.signature_path.exists()

    def has_blob(self, digest: Digest) -> bool:
        return digest in self._blobs

    def blob(self, digest: Digest) -> BundleBlob:
        b = self._blobs.get(digest)
        if b is None:
            if digest in self._base:
                raise ImageNotFoundError(
                    f"blob {digest} is carried by the base bundle {self.manifest.base_id}, not by {self.directory}",
                    hint="unpack the base bundle first so the registry already has it",
                )
            raise ImageNotFoundError(f"blob {digest} is not in the bundle {self.directory}")
        return b

    def _open_stored(self, item: StoredItem, offset: int) -> Iterator[Readable]:
        if offset < 0 or offset > item.size:
            raise UsageError(f"offset {offset} is outside {item.size} bytes")
        if item.encoding == "raw":
            reader = _PartsReader(self.directory, item.parts, offset)
            try:
                yield _Limited(reader, item.size - offset)
            finally:
                reader.close()
            return
        reader = _PartsReader(self.directory, item.parts, 0)
        try:
            stream = zstandard.ZstdDecompressor().stream_reader(reader, read_size=CHUNK, read_across_frames=False)  # type: ignore[arg-type]
            limited = _Limited(stream, item.size)
            skip = offset
            while skip > 0:
                got = limited.read(min(skip, CHUNK))
                if not got:
                    break
                skip -= len(got)
            yield limited
        finally:
            reader.close()

    @contextlib.contextmanager
    def open_blob(self, digest: Digest, offset: int = 0) -> Iterator[Readable]:
        """The blob's bytes from `offset`, read in place from the volumes (decompressed when stored zstd)."""
        yield from self._open_stored(self.blob(digest), offset)

    def read_blob(self, digest: Digest) -> bytes:
        """A whole blob (for manifests and configs), checked against its digest."""
        b = self.blob(digest)
        with self.open_blob(digest) as r:
            data = _read_all(r)
        d = b.digest
        h = d.new_hasher()
        h.update(data)
        if h.hexdigest() != d.encoded or len(data) != b.size:
            raise IntegrityError(f"blob {b.digest} read from {self.directory} does not match its digest", hint="run ocp-bundler verify to find the damaged volume")
        return data

    def read_file(self, name: str) -> bytes:
        f = self._files.get(name)
        if f is None:
            raise UsageError(f"the bundle {self.directory} has no file {name!r}")
        with contextlib.contextmanager(self._open_stored)(f, 0) as r:
            data = _read_all(r)
        if "sha256:" + hashlib.sha256(data).hexdigest() != str(f.digest) or len(data) != f.size:
            raise IntegrityError(f"file {name} read from {self.directory} does not match its digest", hint="run ocp-bundler verify to find the damaged volume")
        return data

    def file_names(self) -> List[str]:
        return [f.name for f in self.manifest.files]

    def blobs_needed_from_base(self) -> List[Digest]:
        """Digests the images need that this (incremental) bundle does not carry: the target registry must have them."""
        return [b.digest for b in self.manifest.base_blobs]

    def image_source(self, image: BundleImage) -> "BundleImageSource":
        return BundleImageSource(self, image)


def _read_all(r: Readable) -> bytes:
    out = []
    while True:
        chunk = r.read(CHUNK)
        if not chunk:
            break
        out.append(chunk)
    return b"".join(out)


def read_manifest(directory: Path) -> Tuple[BundleManifest, bytes]:
    """Parse `bundle-manifest.json` of a bundle directory; clear errors when there is no bundle there."""
    directory = Path(directory)
    if not directory.exists():
        raise UsageError(f"{directory} does not exist")
    if not directory.is_dir():
        raise UsageError(f"{directory} is not a directory", hint="pass the directory that holds bundle-manifest.json and the volumes")
    path = directory / MANIFEST_NAME
    try:
        raw = read_bundle_file(path, max_size=MAX_MANIFEST_BYTES)
    except FileNotFoundError:
        volumes = sorted(p.name for p in directory.glob("bundle-*.tar") if is_volume_name(p.name))
        if (directory / STATE_NAME).exists() or (directory / JOURNAL_NAME).exists() or list(directory.glob(".bundle-*.tar.partial")):
            raise UsageError(f"{directory} holds an unfinished bundle (no {MANIFEST_NAME})", hint="the write was interrupted; rerun pack to finish it") from None
        if volumes:
            raise IntegrityError(
                f"{MANIFEST_NAME} is missing from {directory} (it holds {', '.join(volumes[:3])}{'…' if len(volumes) > 3 else ''})",
                hint=f"copy {MANIFEST_NAME} and {SIGNATURE_NAME} from the source media",
            ) from None
        raise UsageError(f"{directory} is not a bundle (no {MANIFEST_NAME})", hint="pass the directory pack wrote") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    return BundleManifest.from_bytes(raw, where=MANIFEST_NAME), raw


class BundleImageSource:
    """One image of a bundle as a `bundler.transfer.transports.ImageSource` for the copy engine."""

    def __init__(self, bundle: Bundle, image: BundleImage) -> None:
        self.bundle = bundle
        self.image = image
        self.description = f"bundle:{bundle.directory}:{image.source}"

    def resolve(self) -> FetchedManifest:
        raw = self.bundle.read_blob(self.image.digest)
        media_type = detect_media_type(raw, self.image.media_type or None)
        return FetchedManifest(raw, media_type, self.image.digest)

    def fetch_manifest(self, descriptor: Descriptor) -> FetchedManifest:
        raw = self.bundle.read_blob(descriptor.digest)
        return FetchedManifest(raw, detect_media_type(raw, descriptor.media_type or None), descriptor.digest)

    def open_blob(self, descriptor: Descriptor, offset: int) -> ContextManager[Readable]:
        return self.bundle.open_blob(descriptor.digest, offset)


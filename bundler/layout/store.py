"""The OCI image layout on disk (image-spec `image-layout.md`): blobs and `index.json`.

Owns every write into a layout directory:

- blobs are stored once under `blobs/<alg>/<hex>`, written to `ingest/<alg>-<hex>.partial` while they stream,
  hashed on the way, fsync'd and renamed into place only when the digest and size match: a blob visible
  under its final name is always complete and correct;
- an interrupted download leaves its partial file; the next attempt (this process or a later run) re-hashes
  what is there and asks the source only for the rest (HTTP Range);
- two workers (threads or processes) fetching the same blob never both write it: the partial file is
  locked (`fcntl.flock`) and the second waits, then finds the blob in place;
- `index.json` lists top-level manifests with `org.opencontainers.image.ref.name` = the reference they
  are known by, and is rewritten last, atomically, under a lock.

Docker media types are stored as they are (the image-spec says unknown media types must not be an error).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import threading
from pathlib import Path
from typing import IO, Callable, ContextManager, Dict, Iterator, List, NoReturn, Optional, Sequence, Tuple

from bundler.oci.digest import Digest, Readable, check, copy_verified
from bundler.base.fsutil import atomic_write
from bundler.base.errors import DiskSpaceError, DigestMismatchError, ImageNotFoundError, RegistryError, UsageError
from bundler.oci.media import REF_NAME, Descriptor

log = logging.getLogger(__name__)

LAYOUT_VERSION = '{"imageLayoutVersion":"1.0.0"}'
MAX_RESUME_ATTEMPTS = 6

BlobOpener = Callable[[int], ContextManager[Readable]]
"""Opens the source of a blob at a byte offset (the sink resumes from where its partial file ends)."""


def _raise_disk_error(exc: OSError, where: Path) -> NoReturn:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        raise DiskSpaceError(f"no space left on the device holding {where}", hint="free space or choose another directory, then rerun") from None
    raise exc


class Layout:
    """One OCI image layout directory."""

    def __init__(self, root: Path, *, create: bool = True) -> None:
        self.root = Path(root)
        self._index_lock = threading.Lock()
        self._blob_locks: Dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        marker = self.root / "oci-layout"
        if not marker.exists():
            if not create:
                raise UsageError(f"{self.root} is not an OCI layout (no oci-layout file)")
            try:
                (self.root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
                atomic_write(marker, LAYOUT_VERSION.encode())
                if not (self.root / "index.json").exists():
                    atomic_write(self.root / "index.json", b'{"schemaVersion":2,"manifests":[]}')
            except OSError as exc:
                _raise_disk_error(exc, self.root)

    # -- blobs ---------------------------------------------------------------------------------------------

    def blob_path(self, digest: Digest) -> Path:
        return self.root / "blobs" / digest.algorithm / digest.encoded

    def has_blob(self, digest: Digest, size: Optional[int] = None) -> bool:
        try:
            st = self.blob_path(digest).stat()
        except FileNotFoundError:
            return False
        return size is None or st.st_size == size

    def open_blob(self, digest: Digest, offset: int = 0) -> IO[bytes]:
        try:
            f = open(self.blob_path(digest), "rb")
        except FileNotFoundError:
            raise ImageNotFoundError(f"blob {digest} is not in the layout {self.root}") from None
        if offset:
            f.seek(offset)
        return f

    def read_blob(self, digest: Digest) -> bytes:
        with self.open_blob(digest) as f:
            data = f.read()
        check(digest, _hex(digest, data), what="blob")
        return data

    def put_bytes(self, raw: bytes, digest: Optional[Digest] = None) -> Digest:
        """Store a small blob (a manifest or config) given as bytes. Verifies `digest` when given."""
        if digest is None:
            actual = Digest.of(raw)
        else:
            check(digest, _hex(digest, raw), what="blob")
            actual = digest
        path = self.blob_path(actual)
        if not path.exists():
            try:
                atomic_write(path, raw)
            except OSError as exc:
                _raise_disk_error(exc, self.root)
        return actual

    def _thread_lock(self, digest: Digest) -> threading.Lock:
        with self._locks_guard:
            return self._blob_locks.setdefault(str(digest), threading.Lock())

    def write_blob(
        self,
        descriptor: Descriptor,
        opener: BlobOpener,
        *,
        on_bytes: Optional[Callable[[int], None]] = None,
    ) -> int:
        """Fetch a blob through `opener` unless present; verify, then make it visible. Returns bytes fetched.

        Temporary source failures (connection reset, truncated body) resume from the current offset, up to
        MAX_RESUME_ATTEMPTS times; a digest mismatch discards the partial file and raises.
        """
        digest, size = descriptor.digest, descriptor.size
        if self.has_blob(digest, size):
            return 0
        with self._thread_lock(digest):
            if self.has_blob(digest, size):
                return 0
            ingest = self.root / "ingest"
            partial = ingest / f"{digest.algorithm}-{digest.encoded}.partial"
            try:
                ingest.mkdir(exist_ok=True)
                fd = os.open(partial, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                _raise_disk_error(exc, self.root)
            try:
                with os.fdopen(fd, "r+b") as f:
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX)  # another process may be writing it: wait for it
                    try:
                        if self.has_blob(digest, size):
                            return 0
                        return self._fill(f, partial, descriptor, opener, on_bytes)
                    finally:
                        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
            except OSError as exc:  # also the buffer flushed on close
                _raise_disk_error(exc, self.root)

    def _fill(
        self, f: IO[bytes], partial: Path, descriptor: Descriptor, opener: BlobOpener, on_bytes: Optional[Callable[[int], None]]
    ) -> int:
        digest, size = descriptor.digest, descriptor.size
        hasher = digest.new_hasher()
        # Re-hash what an earlier attempt left behind; it is resumed, not refetched.
        f.seek(0)
        offset = copy_verified(f, _NullSink(), hasher=hasher, limit=size)
        f.truncate(offset)
        f.seek(offset)
        if offset:
            log.debug("resuming %s at %d of %d bytes", digest.short, offset, size)
        fetched = 0
        attempt = 0
        while offset < size:
            try:
                with opener(offset) as src:
                    copy_verified(src, f, hasher=hasher, limit=size - offset, on_bytes=on_bytes)
            except RegistryError as exc:
                if not exc.temporary or attempt >= MAX_RESUME_ATTEMPTS:
                    raise
                log.debug("blob %s interrupted (%s); resuming", digest.short, exc)
            except OSError as exc:
                _raise_disk_error(exc, self.root)
                raise
            n = f.tell() - offset  # what arrived, even when the stream broke half way (hasher saw the same bytes)
            if n == 0:
                attempt += 1
                if attempt > MAX_RESUME_ATTEMPTS:
                    raise RegistryError(
                        f"blob {digest.short} stopped at {offset} of {size} bytes after {attempt} attempts",
                        temporary=True,
                        hint="the source keeps cutting the download; rerun to resume",
                    )
            offset += n
            fetched += n
        try:
            f.flush()
            os.fsync(f.fileno())
        except OSError as exc:
            _raise_disk_error(exc, self.root)
        if hasher.hexdigest() != digest.encoded:
            partial.unlink()
            raise DigestMismatchError(
                f"blob {digest} from the source does not match its digest", hint="the source served corrupted data; rerun to fetch it again"
            )
        final = self.blob_path(digest)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(partial, final)
        except OSError as exc:
            _raise_disk_error(exc, self.root)
        return fetched

    def iter_blobs(self) -> Iterator[Tuple[Digest, int]]:
        base = self.root / "blobs"
        if not base.is_dir():
            return
        for alg_dir in sorted(base.iterdir()):
            for p in sorted(alg_dir.iterdir()):
                if not p.name.startswith("."):
                    yield Digest(alg_dir.name, p.name), p.stat().st_size

    # -- index.json ----------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked_index(self) -> Iterator[None]:
        with self._index_lock:
            with open(self.root / ".index.lock", "a+b") as lock:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _read_index(self) -> dict:  # type: ignore[type-arg]
        path = self.root / "index.json"
        try:
            obj = json.loads(path.read_bytes())
        except FileNotFoundError:
            return {"schemaVersion": 2, "manifests": []}
        except ValueError:
            raise UsageError(f"{path} is not valid JSON", hint="the layout is damaged; remove it and rerun") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("manifests", []), list):
            raise UsageError(f"{path} is not an OCI index")
        return obj

    def entries(self) -> List[Descriptor]:
        return [Descriptor.from_json(m, where="index.json") for m in self._read_index().get("manifests", [])]

    def resolve(self, ref_name: str) -> Descriptor:
        for d in self.entries():
            if d.annotations.get(REF_NAME) == ref_name:
                return d
        raise ImageNotFoundError(f"no image named {ref_name!r} in the layout {self.root}")

    def add_refs(self, refs: Sequence[Tuple[str, Descriptor]]) -> None:
        """Add or replace top-level entries by ref name; written atomically."""
        with self._locked_index():
            obj = self._read_index()
            manifests = [m for m in obj.get("manifests", []) if isinstance(m, dict)]
            names = {name for name, _ in refs}
            manifests = [m for m in manifests if (m.get("annotations") or {}).get(REF_NAME) not in names]
            for name, d in refs:
                entry = d.to_json()
                entry.pop("platform", None)
                entry["annotations"] = {**dict(d.annotations), REF_NAME: name}
                manifests.append(entry)
            obj["schemaVersion"] = 2
            obj["manifests"] = manifests
            try:
                atomic_write(self.root / "index.json", json.dumps(obj, indent=1).encode())
            except OSError as exc:
                _raise_disk_error(exc, self.root)


class _NullSink:
    def write(self, data: bytes) -> int:
        return len(data)


def _hex(digest: Digest, data: bytes) -> str:
    h = digest.new_hasher()
    h.update(data)
    return h.hexdigest()

"""Filling a bundle straight from the sources: every blob is streamed once into its planned slot.

Owns `fill_bundle`, what pack writes with. The whole content is known before a byte is pulled (every blob's
digest, size and media type from the image manifests), so the volume layout (`bundler.bundle.members`) is
computed first: which volume, which offset, which tar header. Then:

- the volumes are created as `.bundle-NNNN.tar.partial`, preallocated to their final size, and every tar
  header is written; padding and the end-of-archive blocks are the zeros of the preallocated file;
- workers stream each blob from its source straight into its slot with positional writes (`os.pwrite`),
  hashing as the bytes go by; a blob split across volumes is written into each of its parts. Nothing is
  written twice. A stream cut half way resumes at the byte where it stopped (HTTP Range) with the same
  hasher; a digest mismatch leaves the slot unfinished;
- a blob much larger than one stream's share of the whole fill is fetched as byte ranges on several
  connections at once (bounded HTTP Range requests), each range written straight into its place. Its
  digest is still proven in order: the first range is hashed as it streams, each later range is hashed
  from the page cache (read back from the volume) as soon as the ranges before it are in. A source that
  answers a bounded range with the whole blob (200) gets the blob as one stream instead. A blob is
  journaled only when all its ranges are in and its digest matched: a partial blob is fetched again;
- streamed blobs are stored as they are (`raw`); blobs known in memory (manifests) and extra files are
  stored zstd-compressed when that saves at least 10 %;
- the volumes carry no whole-file sha256 (schemaVersion 2): the sha256 of a volume filled out of order
  would need a second read of every byte. Verify proves each member by its blob's digest and each header
  by the recorded parts, and names the volume a bad blob lies in;
- a journal (`.ocpb-fill-journal`) beside the volumes records finished items. Before an item is
  journaled, the volume files it was written to are flushed (`fdatasync`); the journal is fsynced in
  groups (at most every `COMMIT_INTERVAL` seconds). After a crash or kill -9, a rerun with the same
  content fetches only the items the journal does not list; a slot that was being written is never
  trusted, it is fetched again from its first byte;
- when every item is in, the volumes are renamed to `bundle-NNNN.tar`, then the signature and
  `bundle-manifest.json` are written (atomically, last) and the journal is removed.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Callable, ContextManager, Dict, List, Mapping, Optional, Sequence, Set, Tuple

from bundler.base.errors import BundlerError, DigestMismatchError, PartialFailureError, RangeIgnoredError, RegistryError
from bundler.base.fsutil import atomic_write, fsync_dir
from bundler.base.progress import NullProgress, Progress
from bundler.bundle.manifest import MANIFEST_NAME, SIGNATURE_NAME, TAR_BLOCK, BaseBlob, BundleImage, BundleManifest, BundleVolume
from bundler.bundle.members import (
    JOURNAL_NAME,
    _assign,
    _build_manifest,
    _check_volume_size,
    _created_mtime,
    _file_items,
    _fingerprint,
    _Item,
    _manifest_estimate,
    _member_base,
    _now,
    _Placement,
    _tar_header,
    _VolumePlan,
)
from bundler.bundle.encoding import _compressor, _pays
from bundler.bundle.writer import BundleWriteResult, _disk_error, check_space, finish_bundle
from bundler.oci.digest import Digest, Readable

if TYPE_CHECKING:
    import hashlib

log = logging.getLogger(__name__)

Opener = Callable[[int], ContextManager[Readable]]
"""Opens a blob's source at a byte offset."""
RangeOpener = Callable[[int, int], ContextManager[Readable]]
"""Opens the bytes `[start, end)` of a blob's source; raises `RangeIgnoredError` when it serves no ranges."""

COMMIT_INTERVAL = 0.5
"""Seconds between journal commits (each flushes the volumes written since the last one)."""
MAX_RESUME_ATTEMPTS = 6
"""Streams of one blob that may end without a single new byte before it counts as failed."""
MIN_PART = 8 << 20
"""The smallest byte range of one blob fetched on a connection of its own. A blob is split when it is at
least twice one stream's share of the fill (all streamed bytes / workers) and twice this."""
READ_SIZE = 512 << 10
"""Bytes asked of a source per read, and read back per `pread` when a range is hashed from the page cache."""


@dataclass(frozen=True)
class SourcedBlob:
    """One blob to carry and where its bytes come from: in memory (`data`), or streamed (`opener`)."""

    digest: Digest
    size: int
    media_type: str
    data: Optional[bytes] = None
    opener: Optional[Opener] = None
    ranged: Optional[RangeOpener] = None
    """Set when the source may serve byte ranges (a registry): a large blob is then fetched in parts."""


@dataclass(frozen=True)
class BundleContent:
    """Everything a bundle will hold, known before a byte of a layer is pulled."""

    images: Sequence[BundleImage]
    """With `total_size` filled in."""
    blobs: Sequence[SourcedBlob]
    """Each carried blob once; metadata (manifests, configs) first, then layers."""
    skipped: Sequence[BaseBlob] = ()
    """Configs and layers left to the base bundle."""
    files: Mapping[str, bytes] = field(default_factory=dict)
    base_id: Optional[str] = None
    needs: Mapping[str, Sequence[str]] = field(default_factory=dict)
    """Image source → digests of the blobs it needs, for "N of M images" progress."""


@dataclass(frozen=True)
class FillOptions:
    out_dir: Path
    volume_size: int
    sign_key: Optional[Path] = None
    workers: int = 32
    """Blob streams at once: enough to fill a high-latency link capped per connection."""
    progress: Progress = field(default_factory=NullProgress)


# --------------------------------------------------------------------------------------------------------
# the volume files, open for positional writes
# --------------------------------------------------------------------------------------------------------


def _partial(out_dir: Path, name: str) -> Path:
    return out_dir / f".{name}.partial"


class _Volumes:
    """The `.partial` volume files of one fill, preallocated, headers written, open for `os.pwrite`."""

    def __init__(self, out_dir: Path, volume_size: int) -> None:
        self.out_dir = out_dir
        self.volume_size = volume_size
        self.fds: Dict[str, int] = {}

    def open_existing(self, name: str) -> None:
        self.fds[name] = os.open(_partial(self.out_dir, name), os.O_RDWR)

    def create(self, plan: _VolumePlan, mtime: int) -> None:
        """A fresh volume: its full size reserved, every tar header in place, zeros elsewhere."""
        fd = os.open(_partial(self.out_dir, plan.name), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        self.fds[plan.name] = fd
        try:
            os.ftruncate(fd, plan.size)
            with contextlib.suppress(OSError, AttributeError):  # not every file system reserves space
                os.posix_fallocate(fd, 0, plan.size)
            for pl in plan.placements:
                os.pwrite(fd, _tar_header(pl.member, pl.length, mtime), pl.data_offset - TAR_BLOCK)
            os.fsync(fd)
        except OSError as exc:
            raise _disk_error(exc, self.out_dir, self.volume_size) from None

    def pwrite(self, name: str, data: memoryview, offset: int) -> None:
        fd = self.fds[name]
        while len(data):
            n = os.pwrite(fd, data, offset)
            data, offset = data[n:], offset + n

    def pread_into(self, name: str, buf: memoryview, offset: int) -> int:
        return os.preadv(self.fds[name], [buf], offset)

    def sync(self, names: Set[str]) -> None:
        for name in sorted(names):
            os.fdatasync(self.fds[name])

    def close(self) -> None:
        for fd in self.fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds.clear()


_Slot = List[Tuple[str, _Placement]]
"""Where an item's stored bytes go: (volume name, placement) per part, in order."""


class _SlotWriter:
    """A file-like sink for one item's stored bytes: each write lands at its planned place in the volumes."""

    def __init__(self, volumes: _Volumes, slot: _Slot, start: int = 0) -> None:
        self.volumes = volumes
        self.parts = slot
        self.pos = start
        self._index = 0

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while len(view):
            volume, pl = self.parts[self._index]
            if self.pos >= pl.stored_offset + pl.length:
                self._index += 1
                continue
            into = self.pos - pl.stored_offset
            n = min(len(view), pl.length - into)
            self.volumes.pwrite(volume, view[:n], pl.data_offset + into)
            self.pos += n
            view = view[n:]
        return len(data)


# --------------------------------------------------------------------------------------------------------
# the journal of finished items
# --------------------------------------------------------------------------------------------------------


class _Journal:
    """Append-only record of finished items: a header line (fingerprint, created), then one key per line.

    Workers only queue finished items (`finished` never blocks on the disk). A committer thread, every
    `COMMIT_INTERVAL` seconds, flushes the volume files the queued items were written to, then appends
    their keys and fsyncs the journal: a key on disk always means its bytes are on disk.
    """

    def __init__(self, path: Path, volumes: _Volumes) -> None:
        self.path = path
        self.volumes = volumes
        self._lock = threading.Lock()
        self._pending: List[str] = []
        self._touched: Set[str] = set()
        self._f: Optional[IO[bytes]] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._error: Optional[OSError] = None

    @staticmethod
    def load(path: Path, fingerprint: str) -> Tuple[Optional[str], Set[str]]:
        """(created, finished keys) a journal for this content holds, or (None, empty)."""
        try:
            lines = path.read_bytes().split(b"\n")
            head = json.loads(lines[0])
            if head.get("fingerprint") != fingerprint:
                return None, set()
            # The last line counts only when complete (it ends with a newline: the split leaves b"").
            done = {ln.decode() for ln in lines[1:-1] if ln}
            return str(head["created"]), done
        except (OSError, ValueError, KeyError, AttributeError, UnicodeDecodeError):
            return None, set()

    def start(self, fingerprint: str, created: str, done: Set[str]) -> None:
        """Rewrite the journal (atomically) with what is trusted now, then append to it: an entry of an
        earlier run whose volume had to be made again must not survive into the next one."""
        head = json.dumps({"fingerprint": fingerprint, "created": created}).encode() + b"\n"
        atomic_write(self.path, head + "".join(k + "\n" for k in sorted(done)).encode())
        self._f = open(self.path, "ab", buffering=0)
        self._thread = threading.Thread(target=self._run, name="fill-journal", daemon=True)
        self._thread.start()

    def finished(self, key: str, volumes: Set[str]) -> None:
        with self._lock:
            self._pending.append(key)
            self._touched |= volumes

    def _run(self) -> None:
        while not self._stop.wait(COMMIT_INTERVAL):
            try:
                self._commit()
            except OSError as exc:  # reported by close(); the items stay unjournaled and are fetched again
                self._error = exc
                return

    def _commit(self) -> None:
        with self._lock:
            keys, touched = self._pending, self._touched
            self._pending, self._touched = [], set()
        if not keys or self._f is None:
            return
        self.volumes.sync(touched)
        self._f.write("".join(k + "\n" for k in keys).encode())
        os.fsync(self._f.fileno())

    def close(self) -> None:
        """The last commit; raises OSError when a commit failed."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            if self._error is not None:
                raise self._error
            self._commit()
        finally:
            if self._f is not None:
                self._f.close()
                self._f = None


# --------------------------------------------------------------------------------------------------------
# what goes in, and how each item is stored
# --------------------------------------------------------------------------------------------------------


def _items(content: BundleContent) -> Tuple[List[_Item], Dict[str, SourcedBlob]]:
    """The items to store in layout order (files, then blobs as given), each with its encoding decided."""
    items = _file_items(content.files)
    sources: Dict[str, SourcedBlob] = {}
    for b in content.blobs:
        key = str(b.digest)
        if key in sources:
            continue
        sources[key] = b
        items.append(_Item("blob", key, b.digest, b.size, b.media_type, _member_base(b.digest), data=b.data))
    for item in items:
        item.encoding, item.stored_size = "raw", item.size
        if item.data is not None and item.size >= 2 * TAR_BLOCK:
            packed = _compressor().compress(item.data)
            if _pays(item.size, len(packed)):
                item.encoding, item.stored_size = "zstd", len(packed)
    return items, sources


def _stored_bytes(item: _Item) -> bytes:
    assert item.data is not None
    h = item.digest.new_hasher()
    h.update(item.data)
    if h.hexdigest() != item.digest.encoded or len(item.data) != item.size:
        raise DigestMismatchError(f"{item.kind} {item.key} does not match its digest", hint="rerun pack")
    return _compressor().compress(item.data) if item.encoding == "zstd" else item.data


def _pull(item: _Item, opener: Opener, sink: _SlotWriter, end: int, hasher: "Optional[hashlib._Hash]", progress: Progress) -> None:
    """Stream a blob's bytes from `sink.pos` up to `end` into its slot, feeding `hasher` when given; a cut
    stream resumes where it stopped. `RangeIgnoredError` from the opener is passed on."""
    attempt = 0
    while sink.pos < end:
        offset = sink.pos
        try:
            with opener(offset) as src:
                while sink.pos < end:
                    chunk = src.read(min(READ_SIZE, end - sink.pos))
                    if not chunk:
                        break
                    if hasher is not None:
                        hasher.update(chunk)
                    sink.write(chunk)
                    progress.advance(len(chunk))
        except RangeIgnoredError:
            raise
        except RegistryError as exc:
            if not exc.temporary or attempt >= MAX_RESUME_ATTEMPTS:
                raise
            log.debug("blob %s interrupted at %d bytes (%s); resuming", item.digest.short, sink.pos, exc)
        if sink.pos == offset:
            attempt += 1
            if attempt > MAX_RESUME_ATTEMPTS:
                raise RegistryError(
                    f"blob {item.digest.short} stopped at {offset} of {item.size} bytes after {attempt} attempts",
                    temporary=True,
                    hint="the source keeps cutting the download; rerun to resume",
                )


def _check_digest(item: _Item, hex_digest: str) -> None:
    if hex_digest != item.digest.encoded:
        raise DigestMismatchError(f"blob {item.digest} from the source does not match its digest", hint="the source served corrupted data; rerun to fetch it again")


def _stream(item: _Item, opener: Opener, sink: _SlotWriter, progress: Progress) -> None:
    """Stream one blob into its slot, hashing on the way; a cut stream resumes where it stopped."""
    hasher = item.digest.new_hasher()
    _pull(item, opener, sink, item.size, hasher, progress)
    _check_digest(item, hasher.hexdigest())


def _hash_back(volumes: _Volumes, slot: _Slot, start: int, end: int, hasher: "hashlib._Hash", buf: memoryview) -> None:
    """Feed `hasher` the stored bytes `[start, end)` of a slot, read back from the volumes (page cache)."""
    pos = start
    for volume, pl in slot:
        lo, hi = max(pos, pl.stored_offset), min(end, pl.stored_offset + pl.length)
        while lo < hi:
            n = volumes.pread_into(volume, buf[: min(len(buf), hi - lo)], pl.data_offset + lo - pl.stored_offset)
            if n <= 0:
                raise OSError(f"short read in {volume} at {pl.data_offset + lo - pl.stored_offset}")
            hasher.update(buf[:n])
            lo += n
        pos = max(pos, lo)


class _Split:
    """One large blob fetched as byte ranges on several connections at once, its digest proven in order.

    Part 0 streams its range and hashes it on the way; every later range is written where it belongs and,
    once all ranges before it are hashed, hashed from the page cache (by whichever part thread finds it
    next in line; one at a time). The blob is finished (journaled) when every part has ended, all ranges
    are hashed and the digest matches. A source that answers a bounded range with the whole blob
    (`RangeIgnoredError`) before part 0 is through its range gets the blob as one stream from part 0;
    after that, the part that was refused reads its range from an ordinary stream.
    """

    def __init__(self, run: "_Run", item: _Item, bounds: List[int], source: SourcedBlob) -> None:
        assert source.opener is not None and source.ranged is not None
        self.run, self.item, self.bounds = run, item, bounds
        self.opener: Opener = source.opener
        self.ranged: RangeOpener = source.ranged
        self.slot = run.slots[id(item)]
        self.hasher = item.digest.new_hasher()
        self.lock = threading.Lock()
        self.landed = [False] * (len(bounds) - 1)
        self.hashed = 0
        """Ranges hashed, in order."""
        self.hashing = False
        self.ended = 0
        self.failed = False
        self.whole = False
        """Ranges ignored by the source: part 0 fetches the whole blob as one stream."""
        self.others_wrote = False
        self.finished = False

    @property
    def parts(self) -> int:
        return len(self.bounds) - 1

    def part(self, i: int) -> None:
        """Fetch range `i` (a task of its own); the part that completes the blob journals it."""
        try:
            if i == 0:
                self._first()
            else:
                self._range(i)
        except BaseException:
            with self.lock:
                self.failed = True
                self.ended += 1
            raise
        with self.lock:
            self.ended += 1
        self._advance()

    def _first(self) -> None:
        sink = _SlotWriter(self.run.volumes, self.slot, 0)
        end = self.bounds[1]
        try:
            _pull(self.item, lambda off: self.ranged(off, end), sink, end, self.hasher, self.run.progress)
        except RangeIgnoredError as exc:
            log.debug("%s; fetching the blob as one stream", exc)
            with self.lock:
                self.whole = True
        with self.lock:
            if not self.whole:
                self.landed[0] = True
                return
        _pull(self.item, self.opener, sink, self.item.size, self.hasher, self.run.progress)

    def _range(self, i: int) -> None:
        start, end = self.bounds[i], self.bounds[i + 1]
        with self.lock:
            if self.whole or self.failed:
                return
        sink = _SlotWriter(self.run.volumes, self.slot, start)
        try:
            _pull(self.item, lambda off: self.ranged(off, end), sink, end, None, self.run.progress)
        except RangeIgnoredError as exc:
            with self.lock:
                self.others_wrote |= sink.pos > start
                if not self.landed[0]:  # part 0 has not committed to ranges: it fetches the whole blob
                    self.whole = True
                    return
            log.debug("%s; fetching that range from a plain stream", exc)
            _pull(self.item, self.opener, sink, end, None, self.run.progress)
        with self.lock:
            self.others_wrote = True
            self.landed[i] = True

    def _advance(self) -> None:
        """Hash the ranges that are next in line and in; finish the blob when everything is."""
        buf: Optional[memoryview] = None
        while True:
            with self.lock:
                if self.hashing or self.failed or self.finished:
                    return
                if self.ended == self.parts and (self.whole or self.hashed == self.parts):
                    self.finished = True
                    break
                i = self.hashed
                if self.whole or i >= self.parts or not self.landed[i]:
                    return
                self.hashing = True
            try:
                if i > 0:  # part 0 was hashed as it streamed
                    buf = buf if buf is not None else memoryview(bytearray(READ_SIZE))
                    _hash_back(self.run.volumes, self.slot, self.bounds[i], self.bounds[i + 1], self.hasher, buf)
            except BaseException:
                with self.lock:
                    self.hashing, self.failed = False, True
                raise
            with self.lock:
                self.hashing = False
                self.hashed = i + 1
        hex_digest = self.hasher.hexdigest()
        if self.whole and self.others_wrote:  # a part landed bytes of its own after all: prove what is on disk
            again = self.item.digest.new_hasher()
            _hash_back(self.run.volumes, self.slot, 0, self.item.size, again, memoryview(bytearray(READ_SIZE)))
            hex_digest = again.hexdigest()
        _check_digest(self.item, hex_digest)
        self.run.journal.finished(self.item.key, {v for v, _ in self.slot})
        self.run.done(self.item)


def _bounds(size: int, part: int) -> List[int]:
    """Byte offsets splitting `size` into ranges of at least `part` bytes (about equal)."""
    n = max(1, size // part)
    return [size * i // n for i in range(n + 1)]


# --------------------------------------------------------------------------------------------------------
# fill_bundle
# --------------------------------------------------------------------------------------------------------


@dataclass
class _Run:
    """One fill in progress: the open volumes, the journal, where each item goes, what is left."""

    out_dir: Path
    volumes: _Volumes
    journal: _Journal
    slots: Dict[int, _Slot]
    sources: Dict[str, SourcedBlob]
    progress: Progress
    needs: Dict[str, Set[str]]
    wanted_by: Dict[str, List[str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    bytes_written: int = 0

    def fill(self, item: _Item) -> None:
        slot = self.slots[id(item)]
        sink = _SlotWriter(self.volumes, slot)
        try:
            if item.data is not None or item.kind == "file":
                data = _stored_bytes(item)
                sink.write(data)
                self.progress.advance(len(data))
            else:
                opener = self.sources[item.key].opener
                assert opener is not None, item.key
                _stream(item, opener, sink, self.progress)
        except OSError as exc:
            raise _disk_error(exc, self.out_dir, self.volumes.volume_size) from None
        self.journal.finished(item.key, {v for v, _ in slot})
        self.done(item)

    def guarded(self, task: Callable[[], None]) -> None:
        try:
            task()
        except OSError as exc:
            raise _disk_error(exc, self.out_dir, self.volumes.volume_size) from None

    def done(self, item: _Item) -> None:
        finished = []
        with self.lock:
            self.bytes_written += item.stored_size
            for name in self.wanted_by.get(item.key, ()):
                left = self.needs.get(name)
                if left is not None:
                    left.discard(item.key)
                    if not left:
                        finished.append(name)
                        del self.needs[name]
        for name in finished:
            self.progress.item_done(name, "packed")


def _slots(plans: Sequence[_VolumePlan]) -> Dict[int, _Slot]:
    out: Dict[int, _Slot] = {}
    for plan in plans:
        for pl in plan.placements:
            out.setdefault(id(pl.item), []).append((plan.name, pl))
    return out


def _prepare(out_dir: Path, plans: Sequence[_VolumePlan], fingerprint: str) -> Tuple[str, Set[str], Set[str]]:
    """What an earlier, interrupted fill of the same content left: (created, finished keys, usable volumes).

    Volumes a finished-but-unsigned earlier run already renamed are taken back; anything that does not
    belong to this content is removed.
    """
    journal_path = out_dir / JOURNAL_NAME
    created, done = _Journal.load(journal_path, fingerprint)
    usable: Set[str] = set()
    if created is not None:
        for plan in plans:
            part, final = _partial(out_dir, plan.name), out_dir / plan.name
            with contextlib.suppress(OSError):
                if not part.exists() and final.exists() and final.stat().st_size == plan.size:
                    os.replace(final, part)
                if part.stat().st_size == plan.size:
                    usable.add(plan.name)
    else:
        created = _now()[0]
        with contextlib.suppress(FileNotFoundError):
            journal_path.unlink()
    for stale in out_dir.glob(".bundle-*.tar.partial"):
        if stale.name[1:-len(".partial")] not in usable:
            with contextlib.suppress(OSError):
                stale.unlink()
    return created, done, usable


def fill_bundle(content: BundleContent, options: FillOptions) -> BundleWriteResult:
    """Write `content` as a bundle in `options.out_dir`, every blob streamed once into its planned slot.

    Raises PartialFailureError (exit 4) when some blobs could not be fetched: what arrived is journaled
    and a rerun fetches only the rest. DiskSpaceError (exit 2) when the space is not there.
    """
    started = time.monotonic()
    out_dir = Path(options.out_dir)
    _check_volume_size(options.volume_size)
    if options.sign_key is not None:
        from bundler.bundle.signing import load_private_key

        load_private_key(options.sign_key)  # a bad key fails now, not after hours of pulling
    items, sources = _items(content)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _disk_error(exc, out_dir, options.volume_size) from None
    # A lower bound first (the stored bytes alone, less what earlier runs already reserved), so a plan that
    # cannot fit (or a manifest that lies about sizes) stops before its volumes are even laid out.
    reserved = sum(p.stat().st_size for p in out_dir.glob(".bundle-*.tar.partial"))
    check_space(out_dir, sum(i.stored_size for i in items) - reserved)
    plans = _assign(items, options.volume_size)
    slots = _slots(plans)
    fingerprint = _fingerprint(content.images, items, content.skipped, options.volume_size, content.base_id, fmt=2)
    bundle_id = f"ocpb-{fingerprint[:32]}"
    created = _finished_created(out_dir, bundle_id, plans)
    bytes_written, reused = 0, len(plans)
    if created is None:  # not already finished by an earlier run
        created, journaled, usable = _prepare(out_dir, plans, fingerprint)
        done = {i.key for i in items if i.key in journaled and all(v in usable for v, _ in slots[id(i)])}
        reused = sum(1 for p in plans if all(pl.item.key in done for pl in p.placements))
        needed = sum(p.size for p in plans if p.name not in usable) + _manifest_estimate(len(items), len(content.images))
        check_space(out_dir, needed)
        for name in (MANIFEST_NAME, SIGNATURE_NAME):  # from here on the directory holds no complete bundle
            with contextlib.suppress(FileNotFoundError):
                (out_dir / name).unlink()
        volumes = _Volumes(out_dir, options.volume_size)
        try:
            for plan in plans:
                if plan.name in usable:
                    volumes.open_existing(plan.name)
                else:
                    volumes.create(plan, _created_mtime(created))
            journal = _Journal(out_dir / JOURNAL_NAME, volumes)
            journal.start(fingerprint, created, done)
            run = _Run(out_dir, volumes, journal, slots, sources, options.progress, _needs(content, done), _wanted_by(content))
            bytes_written = _fill_all(run, items, done, options)
        finally:
            volumes.close()
        for plan in plans:
            os.replace(_partial(out_dir, plan.name), out_dir / plan.name)
        fsync_dir(out_dir)
    manifest = _build_manifest(
        bundle_id, created, content.base_id, content.images, content.skipped, items, plans, [BundleVolume(p.name, p.size, None) for p in plans], options.volume_size
    )
    return finish_bundle(
        out_dir, manifest, options.sign_key, volume_size=options.volume_size, bytes_written=bytes_written,
        skipped=len(content.skipped), reused=reused, started=started,
    )


def _needs(content: BundleContent, done: Set[str]) -> Dict[str, Set[str]]:
    return {name: set(keys) - done for name, keys in content.needs.items()}


def _wanted_by(content: BundleContent) -> Dict[str, List[str]]:
    out: Dict[str, List[str]] = {}
    for name, keys in content.needs.items():
        for k in keys:
            out.setdefault(k, []).append(name)
    return out


def _fill_all(run: _Run, items: Sequence[_Item], done: Set[str], options: FillOptions) -> int:
    """Fill every unfinished item, largest first, on `options.workers` threads; journal each one."""
    progress = options.progress
    progress.add_total(sum(i.stored_size for i in items))
    progress.add_items(len(run.needs))
    progress.advance(sum(i.stored_size for i in items if i.key in done))
    for name, left in list(run.needs.items()):
        if not left:
            del run.needs[name]
            progress.item_done(name, "kept")
    todo = [i for i in items if i.key not in done]
    tasks = _tasks(run, todo, max(1, options.workers))
    failures: Dict[str, str] = {}
    pool = ThreadPoolExecutor(max_workers=max(1, options.workers), thread_name_prefix="fill")
    try:
        futures = [(item, pool.submit(run.guarded, task)) for _, item, task in tasks]
        for item, fut in futures:
            try:
                fut.result()
            except BundlerError as exc:
                log.debug("%s %s failed", item.kind, item.key, exc_info=True)
                failures.setdefault(item.key, f"{item.kind} {item.key}{_needed_by(run.wanted_by, item.key)}: {exc}")
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # an interruption stops what has not started
        try:
            run.journal.close()
        except OSError as exc:
            raise _disk_error(exc, run.out_dir, options.volume_size) from None
    if failures:
        listed = list(failures.values())
        detail = "; ".join(listed[:10]) + (f"; … and {len(listed) - 10} more" if len(listed) > 10 else "")
        raise PartialFailureError(
            f"{len(listed)} of {len(todo)} blobs could not be fetched into {run.out_dir}: {detail}",
            failures=listed,
            hint="rerun to resume; finished blobs are not fetched again",
        )
    return run.bytes_written


def _tasks(run: _Run, todo: Sequence[_Item], workers: int) -> List[Tuple[int, _Item, Callable[[], None]]]:
    """What the workers run, largest first: one task per item, or one per byte range of a blob much larger
    than one stream's share of the fill (see `MIN_PART`) whose source serves ranges."""
    streamed = sum(i.stored_size for i in todo if i.data is None and i.kind != "file")
    part = max(MIN_PART, streamed // workers)
    tasks: List[Tuple[int, _Item, Callable[[], None]]] = []
    for item in todo:
        source = run.sources.get(item.key)
        if source is None or source.ranged is None or source.opener is None or item.data is not None or item.stored_size < 2 * part:
            tasks.append((item.stored_size, item, functools.partial(run.fill, item)))
            continue
        split = _Split(run, item, _bounds(item.size, part), source)
        log.debug("blob %s (%d bytes) fetched as %d ranges", item.digest.short, item.size, split.parts)
        for i in range(split.parts):
            tasks.append((split.bounds[i + 1] - split.bounds[i], item, functools.partial(split.part, i)))
    tasks.sort(key=lambda t: -t[0])
    return tasks


def _needed_by(wanted_by: Mapping[str, Sequence[str]], key: str) -> str:
    names = wanted_by.get(key, ())
    if not names:
        return ""
    return f" (needed by {', '.join(names[:3])}{' …' if len(names) > 3 else ''})"


def _finished_created(out_dir: Path, bundle_id: str, plans: Sequence[_VolumePlan]) -> Optional[str]:
    """The created time of an identical bundle an earlier run finished here (volumes in place), else None."""
    with contextlib.suppress(OSError, BundlerError):
        old = BundleManifest.from_bytes((out_dir / MANIFEST_NAME).read_bytes(), where=str(out_dir / MANIFEST_NAME))
        if old.id == bundle_id and all((out_dir / p.name).stat().st_size == p.size for p in plans):
            return old.created
    return None

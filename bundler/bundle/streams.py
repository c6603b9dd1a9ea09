"""Streaming one item into its slot: whole and resumed where a stream was cut, or in byte ranges whose
digest is still proven in order.

Owns the mechanics `bundler.bundle.fill` schedules: `stored_bytes` (an item known in memory), `stream_blob`
(a blob from its source, hashed on the way; a cut stream resumes at the byte where it stopped, with the same
hasher), and `RangedBlob` (a large blob fetched as byte ranges on several connections at once, every range
written where it belongs and hashed in order; each finished range journaled, so a rerun fetches only the
others). Every write lands through `bundler.bundle.slots.SlotWriter`; nothing here decides what to fetch.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Callable, ContextManager, Dict, List, Optional, Protocol, Sequence

from bundler.base.errors import DigestMismatchError, RangeIgnoredError, RegistryError
from bundler.base.progress import Progress
from bundler.bundle.encoding import compressor
from bundler.bundle.members import Item
from bundler.bundle.slots import FillJournal, PartialVolumes, Slot, SlotWriter, failed_entry, range_entry
from bundler.oci.digest import Readable

if TYPE_CHECKING:
    import hashlib

log = logging.getLogger(__name__)

Opener = Callable[[int], ContextManager[Readable]]
"""Opens a blob's source at a byte offset."""
RangeOpener = Callable[[int, int], ContextManager[Readable]]
"""Opens the bytes `[start, end)` of a blob's source; raises `RangeIgnoredError` when it serves no ranges."""

MAX_RESUME_ATTEMPTS = 6
"""Streams of one blob that may end without a single new byte before it counts as failed."""
READ_SIZE = 512 << 10
"""Bytes asked of a source per read, and read back per `pread` when a range is hashed from the page cache."""


class FillState(Protocol):
    """What a ranged blob needs of the fill it belongs to."""

    volumes: PartialVolumes
    journal: FillJournal
    slots: Dict[int, Slot]

    @property
    def progress(self) -> Progress: ...

    def finished(self, item: Item, *, kept: int = 0) -> None: ...


def stored_bytes(item: Item) -> bytes:
    assert item.data is not None
    h = item.digest.new_hasher()
    h.update(item.data)
    if h.hexdigest() != item.digest.encoded or len(item.data) != item.size:
        raise DigestMismatchError(f"{item.kind} {item.key} does not match its digest", hint="rerun pack")
    return compressor().compress(item.data) if item.encoding == "zstd" else item.data


def pull(item: Item, opener: Opener, sink: SlotWriter, end: int, hasher: "Optional[hashlib._Hash]", progress: Progress) -> None:
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


def check_digest(item: Item, hex_digest: str) -> None:
    if hex_digest != item.digest.encoded:
        raise DigestMismatchError(f"blob {item.digest} from the source does not match its digest", hint="the source served corrupted data; rerun to fetch it again")


def stream_blob(item: Item, opener: Opener, sink: SlotWriter, progress: Progress) -> None:
    """Stream one blob into its slot, hashing on the way; a cut stream resumes where it stopped."""
    hasher = item.digest.new_hasher()
    pull(item, opener, sink, item.size, hasher, progress)
    check_digest(item, hasher.hexdigest())


def hash_back(volumes: PartialVolumes, slot: Slot, start: int, end: int, hasher: "hashlib._Hash", buf: memoryview) -> None:
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


class RangedBlob:
    """One large blob fetched as byte ranges on several connections at once, its digest proven in order.

    Part 0 streams its range and hashes it on the way; every later range is written where it belongs and,
    once all ranges before it are hashed, hashed from the page cache (by whichever part thread finds it
    next in line; one at a time). The blob is finished (journaled) when every part has ended, all ranges
    are hashed and the digest matches. A source that answers a bounded range with the whole blob
    (`RangeIgnoredError`) before part 0 is through its range gets the blob as one stream from part 0;
    after that, the part that was refused reads its range from an ordinary stream.
    """

    def __init__(self, run: FillState, item: Item, bounds: List[int], opener: Opener, ranged: RangeOpener, done: Sequence[int] = ()) -> None:
        self.run, self.item, self.bounds = run, item, bounds
        self.opener: Opener = opener
        self.ranged: RangeOpener = ranged
        self.slot = run.slots[id(item)]
        self.hasher = item.digest.new_hasher()
        self.lock = threading.Lock()
        self.landed = [i in done for i in range(len(bounds) - 1)]
        self.done = sorted(done)
        """Ranges an earlier run journaled: not fetched again, hashed back from the volume in their turn."""
        self.hashed = 0
        """Ranges hashed, in order."""
        self.hashing = False
        self.ended = len(self.done)
        self.failed = False
        self.whole = False
        """Ranges ignored by the source: part 0 fetches the whole blob as one stream."""
        self.others_wrote = False
        self.finished = False

    @property
    def parts(self) -> int:
        return len(self.bounds) - 1

    @property
    def todo(self) -> List[int]:
        return [i for i in range(self.parts) if i not in self.done]

    @property
    def kept_bytes(self) -> int:
        return sum(self.bounds[i + 1] - self.bounds[i] for i in self.done)

    def verify(self) -> None:
        """Every range was journaled by an earlier run, but not the blob: prove its digest and finish it."""
        self._advance()

    def _landed(self, i: int) -> None:
        """Range `i` is in: journaled on its own, so a rerun after an interruption does not fetch it again."""
        with self.lock:
            self.landed[i] = True
        self.run.journal.finished(range_entry(self.item, self.slot, self.bounds[i], self.bounds[i + 1]), {v for v, _ in self.slot})

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
        sink = SlotWriter(self.run.volumes, self.slot, 0)
        end = self.bounds[1]
        try:
            pull(self.item, lambda off: self.ranged(off, end), sink, end, self.hasher, self.run.progress)
        except RangeIgnoredError as exc:
            log.debug("%s; fetching the blob as one stream", exc)
            with self.lock:
                self.whole = True
        with self.lock:
            whole = self.whole
        if not whole:
            self._landed(0)
            return
        pull(self.item, self.opener, sink, self.item.size, self.hasher, self.run.progress)

    def _range(self, i: int) -> None:
        start, end = self.bounds[i], self.bounds[i + 1]
        with self.lock:
            if self.whole or self.failed:
                return
        sink = SlotWriter(self.run.volumes, self.slot, start)
        try:
            pull(self.item, lambda off: self.ranged(off, end), sink, end, None, self.run.progress)
        except RangeIgnoredError as exc:
            with self.lock:
                self.others_wrote |= sink.pos > start
                if not self.landed[0]:  # part 0 has not committed to ranges: it fetches the whole blob
                    self.whole = True
                    return
            log.debug("%s; fetching that range from a plain stream", exc)
            pull(self.item, self.opener, sink, end, None, self.run.progress)
        with self.lock:
            self.others_wrote = True
        self._landed(i)

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
                if i > 0 or 0 in self.done:  # a part 0 fetched now was hashed as it streamed
                    buf = buf if buf is not None else memoryview(bytearray(READ_SIZE))
                    hash_back(self.run.volumes, self.slot, self.bounds[i], self.bounds[i + 1], self.hasher, buf)
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
            hash_back(self.run.volumes, self.slot, 0, self.item.size, again, memoryview(bytearray(READ_SIZE)))
            hex_digest = again.hexdigest()
        try:
            check_digest(self.item, hex_digest)
        except DigestMismatchError:  # no range of it is trusted any more
            self.run.journal.finished(failed_entry(self.item, self.slot), set())
            raise
        self.run.finished(self.item, kept=self.kept_bytes)

"""Filling a bundle straight from the sources: every blob is streamed once into its planned slot.

Owns `BundleFill` and `fill_bundle`, what pack writes with: the layout as it grows, what to fetch and how
(whole, or in byte ranges), the workers, the journal and the finish; the streaming itself is
`bundler.bundle.streams`, the on-disk state `bundler.bundle.slots`. Every blob's digest, size and media type is
known from the image manifests before a byte of it is pulled, so its place is decided first
(`bundler.bundle.members.VolumeLayout`: which volume, which offset, which tar header), and the layout
grows in steps: pack lays out the image blobs and starts fetching them while it still looks up
signatures, then lays out the signatures and the extra files after them. A placement never moves. Then:

- the volumes (`bundler.bundle.slots`) are `.bundle-NNNN.tar.partial` files reserved up to what is laid
  out, with every tar header written; padding and the end-of-archive blocks are the zeros of the file;
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
- a journal (`.ocpb-fill-journal`) beside the volumes records each finished item and exactly where it
  lies. Before an item is journaled, the volume files it was written to are flushed (`fdatasync`); the
  journal is fsynced in groups. After a crash or kill -9, a rerun fetches only the items the journal does
  not list at the place the new layout gives them; a slot that was being written is never trusted, it is
  fetched again from its first byte;
- when every item is in, the volumes are renamed to `bundle-NNNN.tar`, then the signature and
  `bundle-manifest.json` are written (atomically, last) and the journal is removed.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple

from bundler.base.errors import BundlerError, PartialFailureError
from bundler.base.fsutil import fsync_dir
from bundler.base.progress import NullProgress, Progress
from bundler.bundle.encoding import compressor, compression_pays
from bundler.bundle.manifest import MANIFEST_NAME, SIGNATURE_NAME, TAR_BLOCK, BaseBlob, BundleImage, BundleManifest, BundleVolume
from bundler.bundle.members import (
    JOURNAL_NAME,
    VolumeLayout,
    build_manifest,
    check_volume_size,
    created_mtime,
    file_items,
    content_fingerprint,
    Item,
    manifest_estimate,
    member_base,
    utc_now,
    Placement,
    VolumePlan,
)
from bundler.bundle.streams import Opener, RangedBlob, RangeOpener, stored_bytes, stream_blob
from bundler.bundle.slots import (
    FillJournal,
    HeldProgress,
    PartialVolumes,
    Slot,
    SlotWriter,
    entry_volumes,
    finished_entries,
    journal_entry,
    partial_path,
    range_entry,
)
from bundler.bundle.writer import BundleWriteResult, disk_error, check_space, finish_bundle
from bundler.oci.digest import Digest


log = logging.getLogger(__name__)

MIN_PART = 8 << 20
"""The smallest byte range of one blob fetched on a connection of its own. A blob is split when it is at
least twice one stream's share of the fill (streamed bytes laid out so far / workers) and twice this."""
MAX_PART = 64 << 20
RANGES_PER_BLOB = 8
"""A split blob is cut in ranges of about this fraction of it, `MIN_PART` to `MAX_PART` bytes each."""
SMALL_ITEM = 1 << 20
"""Items up to this size (configs, manifests, files) take a lane of their own (`SMALL_LANE` workers): each
costs a round trip and next to no bandwidth, so fetched beside the large blobs they hide behind them, where
after them (largest first) they would leave a long-haul link idle for round trips at the end."""
SMALL_LANE = 16


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
    """Each carried blob once, in layout order."""
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


def _bounds(size: int, part: int) -> List[int]:
    """Byte offsets splitting `size` into ranges of at least `part` bytes (about equal)."""
    n = max(1, size // part)
    return [size * i // n for i in range(n + 1)]


# --------------------------------------------------------------------------------------------------------
# one fill: the layout as it grows, the workers, the journal
# --------------------------------------------------------------------------------------------------------


@dataclass
class _Run:
    """What the workers share: the open volumes, the journal, where each item goes, what is left."""

    out_dir: Path
    volume_size: int
    volumes: PartialVolumes
    journal: FillJournal
    progress: HeldProgress
    slots: Dict[int, Slot] = field(default_factory=dict)
    sources: Dict[str, SourcedBlob] = field(default_factory=dict)
    needs: Dict[str, Set[str]] = field(default_factory=dict)
    """Image → keys it still waits for (images all of whose items are in are removed)."""
    wanted_by: Dict[str, List[str]] = field(default_factory=dict)
    finished_keys: Set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    bytes_written: int = 0

    def fill(self, item: Item) -> None:
        slot = self.slots[id(item)]
        sink = SlotWriter(self.volumes, slot)
        try:
            if item.data is not None or item.kind == "file":
                data = stored_bytes(item)
                sink.write(data)
                self.progress.advance(len(data))
            else:
                opener = self.sources[item.key].opener
                assert opener is not None, item.key
                stream_blob(item, opener, sink, self.progress)
        except OSError as exc:
            raise disk_error(exc, self.out_dir, self.volume_size) from None
        self.finished(item)

    def finished(self, item: Item, *, kept: int = 0) -> None:
        """`item` is in and its digest matched: journal it, count it (less the `kept` bytes an earlier run
        wrote), and report the images it completes."""
        slot = self.slots[id(item)]
        self.journal.finished(journal_entry(item, slot), {v for v, _ in slot})
        done = []
        with self.lock:
            self.bytes_written += item.stored_size - kept
            self.finished_keys.add(item.key)
            for name in self.wanted_by.get(item.key, ()):
                left = self.needs.get(name)
                if left is not None:
                    left.discard(item.key)
                    if not left:
                        done.append(name)
                        del self.needs[name]
        for name in done:
            self.progress.item_done(name, "packed")

    def guarded(self, task: Callable[[], None]) -> None:
        try:
            task()
        except OSError as exc:
            raise disk_error(exc, self.out_dir, self.volume_size) from None

    def add_needs(self, needs: Mapping[str, Sequence[str]], known: Set[str]) -> None:
        """Track the images of `needs` not tracked yet; those with nothing left to fetch are reported now."""
        kept = []
        with self.lock:
            for name, keys in needs.items():
                if name in known:
                    continue
                known.add(name)
                for k in keys:
                    self.wanted_by.setdefault(k, []).append(name)
                left = set(keys) - self.finished_keys
                if left:
                    self.needs[name] = left
                else:
                    kept.append(name)
        for name in kept:
            self.progress.item_done(name, "kept")


class BundleFill:
    """One bundle being filled; the layout may grow in steps while the first items are already fetched.

    `start` lays out what is known (pack: every image's blobs) and starts fetching it; `finish` lays out
    the rest (pack: signatures found meanwhile, and the extra files), waits for everything and writes the
    manifest. `fill_bundle` does both at once. Used as a context manager: leaving it on an error stops the
    workers (a running download ends first) and keeps what is journaled for the rerun.

    A finished bundle already in the directory is taken as the start: its items, where they lie, count as
    journaled, and the directory is left untouched unless something has to be fetched or the content
    differs (a rerun of the same pack is a no-op).
    """

    def __init__(self, options: FillOptions) -> None:
        self.started = time.monotonic()
        self.options = options
        self.out_dir = Path(options.out_dir)
        check_volume_size(options.volume_size)
        if options.sign_key is not None:
            from bundler.bundle.signing import load_private_key

            load_private_key(options.sign_key)  # a bad key fails now, not after hours of pulling
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise disk_error(exc, self.out_dir, options.volume_size) from None
        self.layout = VolumeLayout(options.volume_size)
        self.items: Dict[str, Item] = {}
        """Every item laid out, by key, in layout order."""
        self.entries: Set[str] = set()
        """Journal entries trusted from an earlier run (or the finished bundle in the directory)."""
        self.old: Optional[BundleManifest] = None
        """A finished bundle in the directory, left untouched while nothing needs fetching."""
        self.kept_keys: Set[str] = set()
        self.reported: Set[str] = set()
        self.pool = ThreadPoolExecutor(max_workers=max(1, options.workers), thread_name_prefix="fill")
        self.small_pool = ThreadPoolExecutor(max_workers=min(SMALL_LANE, max(1, options.workers)), thread_name_prefix="fill-small")
        self.futures: List[Tuple[Item, "Future[None]"]] = []
        self.todo_count = 0
        self.streamed = 0
        """Bytes of the streamed items laid out so far."""
        created = self._recover()
        volumes = PartialVolumes(self.out_dir, created_mtime(created), take_back=self.old is not None or bool(self.entries))
        self.created = created
        self.run = _Run(self.out_dir, options.volume_size, volumes, FillJournal(self.out_dir / JOURNAL_NAME, volumes), HeldProgress(options.progress))
        self.reserved = sum(p.stat().st_size for p in self.out_dir.glob(".bundle-*.tar.partial"))

    def __enter__(self) -> "BundleFill":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what an earlier run left ------------------------------------------------------------------------

    def _recover(self) -> str:
        """The created time to fill with; `entries` and `old` from what an earlier run left."""
        journal_path = self.out_dir / JOURNAL_NAME
        created, entries = FillJournal.load(journal_path, self.options.volume_size)
        if created is not None:
            # An entry counts only while every volume it lies in is there (a volume made again is empty).
            self.entries = {e for e in entries if all(self._volume_there(v, take_back=True) for v in entry_volumes(e))}
            return created
        old = self._finished_bundle()
        if old is not None:
            self.old, self.entries = old, finished_entries(old)
            return old.created
        with contextlib.suppress(FileNotFoundError):
            journal_path.unlink()
        for stale in self.out_dir.glob(".bundle-*.tar.partial"):  # not described by any journal: not trusted
            with contextlib.suppress(OSError):
                stale.unlink()
        return utc_now()[0]

    def _volume_there(self, name: str, *, take_back: bool) -> bool:
        return partial_path(self.out_dir, name).is_file() or (take_back and (self.out_dir / name).is_file())

    def _finished_bundle(self) -> Optional[BundleManifest]:
        with contextlib.suppress(OSError, BundlerError):
            old = BundleManifest.from_bytes((self.out_dir / MANIFEST_NAME).read_bytes(), where=str(self.out_dir / MANIFEST_NAME))
            if old.volume_size == self.options.volume_size and all((self.out_dir / v.name).stat().st_size == v.size for v in old.volumes):
                return old
        return None

    def _take_over(self) -> bool:
        """Writing starts (a no-op once started): from here on the directory holds no complete bundle; the
        journal is started with the entries still trusted and every item laid out so far gets its room."""
        if self.run.journal.started:
            return False
        for name in (MANIFEST_NAME, SIGNATURE_NAME):
            with contextlib.suppress(FileNotFoundError):
                (self.out_dir / name).unlink()
        self.old = None
        self.run.journal.start(self.options.volume_size, self.created, self.entries)
        self._grow(self.run.slots)
        return True

    @property
    def writing(self) -> bool:
        """Whether this fill has begun to write into the directory (what it wrote is journaled)."""
        return self.run.journal.started

    # -- laying out and fetching -------------------------------------------------------------------------

    def start(self, blobs: Sequence[SourcedBlob], needs: Mapping[str, Sequence[str]] = {}) -> None:
        """Lay out `blobs` (those not laid out yet) after what is there and start fetching them."""
        self._add(self._blob_items(blobs), needs)

    def finish(self, content: BundleContent) -> BundleWriteResult:
        """Lay out the rest of `content` (blobs not started, then the files), fetch it, wait for every item,
        then write the volumes' final names, the signature and the manifest.

        Raises PartialFailureError (exit 4) when some blobs could not be fetched: what arrived is journaled
        and a rerun fetches only the rest. DiskSpaceError (exit 2) when the space is not there."""
        keys = {str(b.digest) for b in content.blobs}
        stray = [k for k, i in self.items.items() if i.kind == "blob" and k not in keys]
        if stray:
            raise BundlerError(f"{len(stray)} blobs were laid out that the bundle's content does not hold (first {stray[0]})")
        self._add(self._blob_items(content.blobs) + _encoded(file_items(content.files)), content.needs)
        items = list(self.items.values())
        self.run.progress.release(sum(i.stored_size for i in items), len(self.reported))
        fingerprint = content_fingerprint(content.images, items, content.skipped, self.options.volume_size, content.base_id, fmt=2)
        bundle_id = f"ocpb-{fingerprint[:32]}"
        if self.old is not None and self.old.id != bundle_id:  # the same blobs in place, other content: rewritten
            self._take_over()
        self._wait()
        plans = self.layout.volumes()
        reused = sum(1 for p in plans if all(pl.item.key in self.kept_keys for pl in p.placements))
        if self.old is None:
            self._seal(plans)
        manifest = build_manifest(
            bundle_id, self.created, content.base_id, content.images, content.skipped, items, plans,
            [BundleVolume(p.name, p.size, None) for p in plans], self.options.volume_size,
        )
        return finish_bundle(
            self.out_dir, manifest, self.options.sign_key, volume_size=self.options.volume_size, bytes_written=self.run.bytes_written,
            skipped=len(content.skipped), reused=reused, started=self.started,
        )

    def _blob_items(self, blobs: Sequence[SourcedBlob]) -> List[Item]:
        out: List[Item] = []
        for b in blobs:
            key = str(b.digest)
            if key in self.run.sources:  # laid out already
                continue
            self.run.sources[key] = b
            out.append(Item("blob", key, b.digest, b.size, b.media_type, member_base(b.digest), data=b.data))
        return _encoded(out)

    def _add(self, new: List[Item], needs: Mapping[str, Sequence[str]]) -> None:
        run = self.run
        # A lower bound first (the stored bytes alone, less what earlier runs already reserved), so a plan
        # that cannot fit (or a manifest that lies about sizes) stops before its volumes are even laid out.
        check_space(self.out_dir, sum(i.stored_size for i in new) - self.reserved)
        self.reserved = max(0, self.reserved - sum(i.stored_size for i in new))
        slots: Dict[int, Slot] = {}
        for item in new:
            self.items[item.key] = item
            slots[id(item)] = [(plan.name, pl) for plan, pl in self.layout.place(item)]
        run.slots.update(slots)
        todo = [i for i in new if journal_entry(i, slots[id(i)]) not in self.entries]
        # A finished bundle in the directory stays untouched while it may be this very bundle; otherwise the
        # volumes are opened (made, or taken back) now, and an entry in a volume made new is not trusted.
        if todo or self.old is None:
            if not self._take_over():
                self._grow(slots)
            todo = [i for i in new if journal_entry(i, slots[id(i)]) not in self.entries]
        kept = [i for i in new if i not in todo]
        with run.lock:
            run.finished_keys.update(i.key for i in kept)
        self.kept_keys.update(i.key for i in kept)
        run.progress.advance(sum(i.stored_size for i in kept))
        run.add_needs(needs, self.reported)
        self.todo_count += len(todo)
        self.streamed += sum(i.stored_size for i in new if i.data is None and i.kind != "file")
        for size, item, task in _tasks(run, todo, max(1, self.options.workers), self.entries, self.streamed):
            pool = self.small_pool if size <= SMALL_ITEM else self.pool
            self.futures.append((item, pool.submit(run.guarded, task)))

    def _grow(self, slots: Mapping[int, Slot]) -> None:
        """Make room in the volumes for newly placed items and write their tar headers."""
        by_volume: Dict[str, List[Placement]] = {}
        for slot in slots.values():
            for volume, pl in slot:
                by_volume.setdefault(volume, []).append(pl)
        plans = {p.name: p for p in self.layout.volumes()}
        volumes = self.run.volumes
        needed = sum(max(0, plans[v].size - volumes.on_disk(v)) for v in by_volume)
        try:
            check_space(self.out_dir, needed + manifest_estimate(len(self.items), 0))
            for name, placements in by_volume.items():
                volumes.grow(plans[name], placements)
        except OSError as exc:
            raise disk_error(exc, self.out_dir, self.options.volume_size) from None

    def _wait(self) -> None:
        failures: Dict[str, str] = {}
        try:
            for item, fut in self.futures:
                try:
                    fut.result()
                except BundlerError as exc:
                    log.debug("%s %s failed", item.kind, item.key, exc_info=True)
                    failures.setdefault(item.key, f"{item.kind} {item.key}{_needed_by(self.run.wanted_by, item.key)}: {exc}")
        finally:
            self._stop_workers()
            try:
                self.run.journal.close()
            except OSError as exc:
                raise disk_error(exc, self.out_dir, self.options.volume_size) from None
        if failures:
            listed = list(failures.values())
            detail = "; ".join(listed[:10]) + (f"; … and {len(listed) - 10} more" if len(listed) > 10 else "")
            raise PartialFailureError(
                f"{len(listed)} of {self.todo_count} blobs could not be fetched into {self.out_dir}: {detail}",
                failures=listed,
                hint="rerun to resume; finished blobs are not fetched again",
            )

    def _seal(self, plans: Sequence[VolumePlan]) -> None:
        """Every item is in: volumes cut to size, flushed, given their final names; leftovers removed."""
        volumes = self.run.volumes
        try:
            for plan in plans:
                volumes.grow(plan, ())  # a volume with nothing left to fetch was not opened yet
            volumes.trim(plans)
            volumes.sync(set(volumes.fds))
        except OSError as exc:
            raise disk_error(exc, self.out_dir, self.options.volume_size) from None
        finally:
            volumes.close()
        names = {p.name for p in plans}
        for plan in plans:
            os.replace(partial_path(self.out_dir, plan.name), self.out_dir / plan.name)
        for stale in self.out_dir.glob(".bundle-*.tar.partial"):
            if stale.name[1:-len(".partial")] not in names:
                with contextlib.suppress(OSError):
                    stale.unlink()
        fsync_dir(self.out_dir)

    def _stop_workers(self) -> None:
        for pool in (self.pool, self.small_pool):  # an interruption stops what has not started
            pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        """Stop the workers (those running finish their item) and close the journal and volumes."""
        self._stop_workers()
        try:
            self.run.journal.close()
        except OSError as exc:
            log.debug("closing the fill journal: %s", exc)
        self.run.volumes.close()


def fill_bundle(content: BundleContent, options: FillOptions) -> BundleWriteResult:
    """Write `content` as a bundle in `options.out_dir`, every blob streamed once into its planned slot
    (`BundleFill` with everything laid out at once)."""
    with BundleFill(options) as fill:
        return fill.finish(content)


def _encoded(items: List[Item]) -> List[Item]:
    """`items` with their encoding decided: in-memory data zstd-compressed when that pays, streams raw."""
    for item in items:
        item.encoding, item.stored_size = "raw", item.size
        if item.data is not None and item.size >= 2 * TAR_BLOCK:
            packed = compressor().compress(item.data)
            if compression_pays(item.size, len(packed)):
                item.encoding, item.stored_size = "zstd", len(packed)
    return items


def _tasks(run: _Run, todo: Sequence[Item], workers: int, journaled: Set[str], streamed: int) -> List[Tuple[int, Item, Callable[[], None]]]:
    """What the workers run, largest first: one task per item, or one per byte range of a blob whose source
    serves ranges and that is at least twice one stream's share of the fill laid out so far (`streamed`
    bytes / `workers`, and twice `MIN_PART`), or had ranges journaled by an earlier run (those are not
    fetched again). Fetching a blob in ranges costs a second read of all but its first range (to hash
    them in order), so only a blob that would hold one connection long after the others is split."""
    share = max(MIN_PART, streamed // workers)
    tasks: List[Tuple[int, Item, Callable[[], None]]] = []
    for item in todo:
        source = run.sources.get(item.key)
        if source is None or source.ranged is None or source.opener is None or item.data is not None:
            tasks.append((item.stored_size, item, functools.partial(run.fill, item)))
            continue
        slot = run.slots[id(item)]
        bounds = _bounds(item.size, _part_size(item.size))
        done = [i for i in range(len(bounds) - 1) if range_entry(item, slot, bounds[i], bounds[i + 1]) in journaled]
        if item.stored_size < 2 * share and not done or len(bounds) < 3:
            tasks.append((item.stored_size, item, functools.partial(run.fill, item)))
            continue
        split = RangedBlob(run, item, bounds, source.opener, source.ranged, done)
        run.progress.advance(split.kept_bytes)
        log.debug("blob %s (%d bytes) fetched as %d ranges (%d in from an earlier run)", item.digest.short, item.size, split.parts, len(done))
        for i in split.todo:
            tasks.append((split.bounds[i + 1] - split.bounds[i], item, functools.partial(split.part, i)))
        if not split.todo:
            tasks.append((0, item, split.verify))
    tasks.sort(key=lambda t: -t[0])
    return tasks


def _part_size(size: int) -> int:
    """The byte ranges a split blob is fetched in: about an eighth of it, at least `MIN_PART`, at most
    `MAX_PART`. It depends on the blob alone, so a rerun cuts it the same way and its journaled ranges match."""
    return min(MAX_PART, max(MIN_PART, size // RANGES_PER_BLOB))


def _needed_by(wanted_by: Mapping[str, Sequence[str]], key: str) -> str:
    names = wanted_by.get(key, ())
    if not names:
        return ""
    return f" (needed by {', '.join(names[:3])}{' …' if len(names) > 3 else ''})"

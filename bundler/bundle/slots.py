"""Where a fill's bytes land: the `.partial` volume files, the writer of one item's slot, the journal.

Owns the on-disk state of a bundle being filled out of order (`bundler.bundle.fill` drives it):

- `PartialVolumes`: the `.bundle-NNNN.tar.partial` files, open for positional writes. A volume grows as
  the layout does (pack lays out the image blobs first and the signatures and files later): each growth
  reserves the space and writes the tar headers of the new members; padding and the end-of-archive blocks
  are the zeros of the reserved file. A volume an earlier run left is opened as it is (the journal says
  which of its slots hold finished items; an entry in a volume that is gone is dropped when the journal
  is read).
- `SlotWriter`: a file-like sink whose writes land at an item's planned places (`os.pwrite`).
- `FillJournal`: the record of finished items. Each entry names the item and where it lies (digest,
  encoding, stored size, every part's volume and offset), so an entry is trusted only by an item laid out
  at exactly that place: layouts may grow between runs and nothing is trusted by name alone. A blob
  fetched in byte ranges also has an entry per finished range (its digest is still proven over every byte
  when the last range is in), and a `failed` entry when its digest did not match: then none of its ranges
  is trusted.
- `HeldProgress`: progress held back until the totals are known from the whole plan, then passed on.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path
from typing import IO, Dict, List, Optional, Sequence, Set, Tuple

from bundler.base.fsutil import atomic_write
from bundler.base.progress import Progress
from bundler.bundle.manifest import TAR_BLOCK, BundleManifest
from bundler.bundle.members import Item, Placement, tar_header, VolumePlan

COMMIT_INTERVAL = 0.5
"""Seconds between journal commits (each flushes the volumes written since the last one)."""
JOURNAL_FORMAT = 3

Slot = List[Tuple[str, Placement]]
"""Where an item's stored bytes go: (volume name, placement) per part, in order."""


def partial_path(out_dir: Path, name: str) -> Path:
    return out_dir / f".{name}.partial"


def journal_entry(item: Item, slot: Slot) -> str:
    """The journal line of a finished item: its key, then what it is and exactly where it lies."""
    where = ",".join(f"{volume}@{pl.data_offset}" for volume, pl in slot)
    return f"{item.key}\t{item.digest}\t{item.encoding}\t{item.stored_size}\t{where}"


def range_entry(item: Item, slot: Slot, start: int, end: int) -> str:
    """The journal line of one finished byte range `[start, end)` of a blob fetched in ranges."""
    return f"{journal_entry(item, slot)}\t{start}-{end}"


def failed_entry(item: Item, slot: Slot) -> str:
    """The journal line saying a blob's digest did not match: none of its journaled ranges is trusted."""
    return f"{journal_entry(item, slot)}\tfailed"


def entry_volumes(entry: str) -> List[str]:
    """The volumes a journal entry's item lies in."""
    where = entry.split("\t")[4]
    return [part.rsplit("@", 1)[0] for part in where.split(",")]


def trusted_entries(entries: Set[str]) -> Set[str]:
    """`entries` less the ranges of blobs whose digest failed after them (and those markers)."""
    failed = {e.rsplit("\t", 1)[0] for e in entries if e.endswith("\tfailed")}
    return {e for e in entries if not e.endswith("\tfailed") and not (e.count("\t") == 5 and e.rsplit("\t", 1)[0] in failed)}


def finished_entries(manifest: BundleManifest) -> Set[str]:
    """The journal lines of every item a finished bundle holds (to take it back as the start of a new fill)."""
    out: Set[str] = set()
    for blob in manifest.blobs:
        where = ",".join(f"{p.volume}@{p.offset}" for p in blob.parts)
        out.add(f"{blob.digest}\t{blob.digest}\t{blob.encoding}\t{blob.stored_size}\t{where}")
    for f in manifest.files:
        where = ",".join(f"{p.volume}@{p.offset}" for p in f.parts)
        out.add(f"{f.name}\t{f.digest}\t{f.encoding}\t{f.stored_size}\t{where}")
    return out


class PartialVolumes:
    """The `.partial` volume files of one fill, grown with the layout, open for `os.pwrite`."""

    def __init__(self, out_dir: Path, mtime: int, *, take_back: bool) -> None:
        self.out_dir = out_dir
        self.mtime = mtime
        self.take_back = take_back
        """Whether a finished volume of the same name (an earlier run's) is taken back as the partial one."""
        self.fds: Dict[str, int] = {}
        self.sizes: Dict[str, int] = {}

    def grow(self, plan: VolumePlan, placements: Sequence[Placement]) -> None:
        """Open (or make) `plan`'s volume, reserve it up to `plan.size`, write the headers of `placements`."""
        name = plan.name
        fd = self.fds.get(name)
        if fd is None:
            path, final = partial_path(self.out_dir, name), self.out_dir / name
            if self.take_back and not path.exists() and final.exists():
                os.replace(final, path)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            self.fds[name] = fd
            self.sizes[name] = os.fstat(fd).st_size
        have = self.sizes[name]
        if have < plan.size:
            os.ftruncate(fd, plan.size)
            with contextlib.suppress(OSError, AttributeError):  # not every file system reserves space
                os.posix_fallocate(fd, have, plan.size - have)
            self.sizes[name] = plan.size
        for pl in placements:
            os.pwrite(fd, tar_header(pl.member, pl.length, self.mtime), pl.data_offset - TAR_BLOCK)

    def on_disk(self, name: str) -> int:
        """Bytes a volume holds now (0 when it is not there yet), counting a finished one that would be taken back."""
        if name in self.sizes:
            return self.sizes[name]
        paths: List[Path] = [partial_path(self.out_dir, name)] + ([self.out_dir / name] if self.take_back else [])
        for path in paths:
            with contextlib.suppress(OSError):
                return path.stat().st_size
        return 0

    def trim(self, plans: Sequence[VolumePlan]) -> None:
        """Cut each volume to its planned size (an earlier, larger layout may have left more)."""
        for plan in plans:
            if self.sizes.get(plan.name, plan.size) > plan.size:
                os.ftruncate(self.fds[plan.name], plan.size)
                self.sizes[plan.name] = plan.size

    def pwrite(self, name: str, data: memoryview, offset: int) -> None:
        fd = self.fds[name]
        while len(data):
            n = os.pwrite(fd, data, offset)
            data, offset = data[n:], offset + n

    def pread_into(self, name: str, buf: memoryview, offset: int) -> int:
        return int(os.preadv(self.fds[name], [buf], offset))

    def sync(self, names: Set[str]) -> None:
        for name in sorted(names):
            os.fdatasync(self.fds[name])

    def close(self) -> None:
        for fd in self.fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds.clear()


class SlotWriter:
    """A file-like sink for one item's stored bytes: each write lands at its planned place in the volumes."""

    def __init__(self, volumes: PartialVolumes, slot: Slot, start: int = 0) -> None:
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


class FillJournal:
    """Append-only record of finished items: a header line (format, volume size, created), then one
    `journal_entry` per line.

    Workers only queue finished items (`finished` never blocks on the disk). A committer thread, every
    `COMMIT_INTERVAL` seconds, flushes the volume files the queued items were written to, then appends
    their entries and fsyncs the journal: an entry on disk always means its bytes are on disk.
    """

    def __init__(self, path: Path, volumes: PartialVolumes) -> None:
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
    def header(volume_size: int, created: str) -> Dict[str, object]:
        return {"format": JOURNAL_FORMAT, "volumeSize": volume_size, "created": created}

    @staticmethod
    def load(path: Path, volume_size: int) -> Tuple[Optional[str], Set[str]]:
        """(created, entries) of a journal written for volumes of this size, or (None, empty)."""
        try:
            lines = path.read_bytes().split(b"\n")
            head = json.loads(lines[0])
            if head.get("format") != JOURNAL_FORMAT or head.get("volumeSize") != volume_size:
                return None, set()
            # The last line counts only when complete (it ends with a newline: the split leaves b"").
            done = {ln.decode() for ln in lines[1:-1] if ln.count(b"\t") in (4, 5)}
            return str(head["created"]), trusted_entries(done)
        except (OSError, ValueError, KeyError, AttributeError, UnicodeDecodeError):
            return None, set()

    def start(self, volume_size: int, created: str, entries: Set[str]) -> None:
        """Rewrite the journal (atomically) with the entries still trusted, then append to it."""
        head = json.dumps(self.header(volume_size, created)).encode() + b"\n"
        atomic_write(self.path, head + "".join(e + "\n" for e in sorted(entries)).encode())
        self._f = open(self.path, "ab", buffering=0)
        self._thread = threading.Thread(target=self._run, name="fill-journal", daemon=True)
        self._thread.start()

    @property
    def started(self) -> bool:
        return self._f is not None

    def finished(self, entry: str, volumes: Set[str]) -> None:
        with self._lock:
            self._pending.append(entry)
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
            entries, touched = self._pending, self._touched
            self._pending, self._touched = [], set()
        if not entries or self._f is None:
            return
        self.volumes.sync(touched)
        self._f.write("".join(e + "\n" for e in entries).encode())
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


class HeldProgress:
    """Progress that passes nothing on until `release` gives the totals (known once the whole layout is):
    bytes and finished items counted before are passed on then, so a total never grows."""

    def __init__(self, inner: Progress) -> None:
        self.inner = inner
        self._lock = threading.Lock()
        self._released = False
        self._bytes = 0
        self._items: List[Tuple[str, str]] = []

    def add_total(self, nbytes: int) -> None:  # pragma: no cover - totals go through release()
        raise AssertionError("HeldProgress takes its totals from release()")

    def add_items(self, count: int) -> None:  # pragma: no cover - totals go through release()
        raise AssertionError("HeldProgress takes its totals from release()")

    def advance(self, nbytes: int) -> None:
        with self._lock:
            if not self._released:
                self._bytes += nbytes
                return
        self.inner.advance(nbytes)

    def item_done(self, name: str, status: str) -> None:
        with self._lock:
            if not self._released:
                self._items.append((name, status))
                return
        self.inner.item_done(name, status)

    def release(self, total: int, items: int) -> None:
        with self._lock:
            if self._released:
                return
            self.inner.add_total(total)
            self.inner.add_items(items)
            if self._bytes:
                self.inner.advance(self._bytes)
            for name, status in self._items:
                self.inner.item_done(name, status)
            self._released = True

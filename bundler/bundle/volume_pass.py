"""Reading every volume of a bundle once, for verification: the volume's hash, its tar headers, and the
hash of every blob and file whose data goes by.

Owns the single pass (`read_volumes`): volumes in parallel threads, each read once in 4 MiB chunks; the
same buffer feeds the volume's sha256 (on a helper thread), the tar scanner (`bundle.tarscan`) and the
checks of the blobs and files whose parts lie in it (`ItemCheck`, decompressing zstd-stored ones and
checking the original digest, parts claimed in order). A blob continued from a volume that is not done yet
is finished afterwards by re-reading only its remaining parts (`finish_deferred`). Judging the outcomes
is `bundle.verify`'s job.
"""

from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import zstandard

from bundler.base.errors import IntegrityError
from bundler.base.progress import Progress
from bundler.bundle.manifest import BundleBlob, BundleFile, BundleManifest, BundleVolume, open_volume
from bundler.bundle.tarscan import TarScanner
from bundler.bundle.volumes import CHUNK, blob_role


# --------------------------------------------------------------------------------------------------------
# per-blob checking
# --------------------------------------------------------------------------------------------------------


class _TooLarge(Exception):
    pass


class _DecompressedSink:
    def __init__(self, hasher: Any, limit: int) -> None:
        self.hasher = hasher
        self.limit = limit
        self.count = 0

    def write(self, data: bytes) -> int:
        self.count += len(data)
        if self.count > self.limit:
            raise _TooLarge()
        self.hasher.update(data)
        return len(data)


class ItemCheck:
    """Hashes one blob or file as its parts stream past, in part order (parts are claimed one at a time)."""

    def __init__(self, item: Union[BundleBlob, BundleFile], label: str) -> None:
        self.item = item
        self.label = label
        self.expected = item.digest
        self.hasher = self.expected.new_hasher()
        self.count = 0
        self.next_part = 0
        self.lock = threading.Lock()
        self.error: Optional[str] = None
        self.unverifiable = False
        self._sink: Optional[_DecompressedSink] = None
        self._writer: Any = None
        if item.encoding == "zstd":
            self._sink = _DecompressedSink(self.hasher, item.size)
            self._writer = zstandard.ZstdDecompressor().stream_writer(self._sink, write_size=1 << 20, write_return_read=True)  # type: ignore[arg-type]

    def claim(self, part_index: int) -> bool:
        with self.lock:
            return self.next_part == part_index and self.error is None

    def part_done(self) -> None:
        with self.lock:
            self.next_part += 1

    def feed(self, data: memoryview) -> None:
        if self.error is not None:
            return
        if self._writer is None:
            self.hasher.update(data)
            self.count += len(data)
            return
        try:
            self._writer.write(data)
        except zstandard.ZstdError as exc:
            self.error = f"its stored zstd data is corrupt ({exc})"
        except _TooLarge:
            self.error = f"its stored zstd data expands beyond its recorded size of {self.item.size} bytes"

    def outcome(self) -> Optional[str]:
        """None when the blob is intact, else what is wrong with it."""
        if self.error is None and self._writer is not None:
            try:
                self._writer.flush()
            except zstandard.ZstdError as exc:
                self.error = f"its stored zstd data is corrupt ({exc})"
            except _TooLarge:
                self.error = f"its stored zstd data expands beyond its recorded size of {self.item.size} bytes"
        if self.error is not None:
            return self.error
        size = self._sink.count if self._sink is not None else self.count
        if size != self.item.size:
            return f"it is {size} bytes, the manifest says {self.item.size}"
        actual = self.hasher.hexdigest()
        if actual != self.expected.encoded:
            return f"its content does not match its digest (it hashes to {self.expected.algorithm}:{actual[:16]}…)"
        return None


@dataclass
class Segment:
    start: int
    length: int
    check: ItemCheck
    part_index: int
    claimed: Optional[bool] = None


@dataclass
class VolumeOutcome:
    volume: BundleVolume
    present: bool = False
    unreadable: Optional[str] = None
    """Why a volume that is there cannot be read (not a regular file, permissions)."""
    size: int = 0
    sha256: Optional[str] = None
    scanner: Optional[TarScanner] = None
    beyond_end: List[Segment] = field(default_factory=list)


def check_volume(
    directory: Path, volume: BundleVolume, segments: List[Segment], helper: ThreadPoolExecutor, progress: Progress, limit: int
) -> VolumeOutcome:
    """Read one volume once (`limit`: a file larger than every recorded volume is not read at all)."""
    out = VolumeOutcome(volume)
    path = directory / volume.name
    try:
        f = open_volume(path)
    except FileNotFoundError:
        return out
    except IntegrityError as exc:
        out.unreadable = f"{exc.message}: {exc.hint}"
        return out
    except OSError as exc:
        out.unreadable = f"{volume.name} cannot be read ({exc.strerror or exc}): fix its permissions, or copy it again from the source media"
        return out
    out.present = True
    hasher: Any = hashlib.sha256() if volume.sha256 is not None else None  # version 2: the blobs' digests prove it
    scanner = TarScanner(volume.name)
    out.scanner = scanner
    with f:
        out.size = os.fstat(f.fileno()).st_size
        if out.size > limit:
            return out  # it can be no recorded volume: judged by its size alone
        feed_blobs = out.size == volume.size
        buffers = [bytearray(CHUNK), bytearray(CHUNK)]
        pending: Optional[Future[None]] = None
        pos = 0
        si = 0
        turn = 0
        while True:
            buf = buffers[turn]
            turn ^= 1
            n = f.readinto(buf)
            if pending is not None:
                pending.result()  # the other buffer is free again
                pending = None
            if not n:
                break
            chunk = memoryview(buf)[:n]
            if hasher is not None:
                pending = helper.submit(hasher.update, chunk)  # the volume hash runs beside the blob hashes
            if not scanner.ended:
                scanner.feed(pos, chunk)
            if feed_blobs:
                si = feed_segments(segments, si, pos, chunk)
            pos += n
            progress.advance(n)
        if feed_blobs:
            for seg in segments[si:]:
                if seg.length == 0 and seg.start <= pos:
                    if seg.claimed is None:
                        seg.claimed = seg.check.claim(seg.part_index)
                    if seg.claimed:
                        seg.check.part_done()
                else:
                    out.beyond_end.append(seg)
    out.sha256 = "sha256:" + hasher.hexdigest() if hasher is not None else None
    return out


def feed_segments(segments: List[Segment], si: int, pos: int, chunk: memoryview) -> int:
    end = pos + len(chunk)
    while si < len(segments):
        seg = segments[si]
        seg_end = seg.start + seg.length
        if seg.start > end or (seg.start == end and seg.length > 0):
            break
        if seg.claimed is None:
            seg.claimed = seg.check.claim(seg.part_index)
        if seg.claimed:
            lo, hi = max(seg.start, pos), min(seg_end, end)
            if hi > lo:
                seg.check.feed(chunk[lo - pos : hi - pos])
        if seg_end > end:
            break
        if seg.claimed:
            seg.check.part_done()
        si += 1
    return si


def finish_deferred(directory: Path, check: ItemCheck) -> None:
    """Hash the parts of a split blob that went by before their predecessor was hashed (a second read)."""
    parts = check.item.parts
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    while check.next_part < len(parts) and check.error is None:
        part = parts[check.next_part]
        with open_volume(directory / part.volume) as f:
            f.seek(part.offset)
            left = part.length
            while left > 0:
                n = f.readinto(view[: min(CHUNK, left)])
                if not n:
                    check.error = f"{part.volume} ended inside {part.member}"
                    return
                check.feed(view[:n])
                left -= n
        check.next_part += 1


def item_label(item: Union[BundleBlob, BundleFile]) -> str:
    volumes = sorted({p.volume for p in item.parts})
    where = f"in {', '.join(volumes)}" if volumes else "in no volume"
    if isinstance(item, BundleFile):
        return f"file {item.name} ({item.size} bytes, {where})"
    role = blob_role(item.media_type) if item.media_type else "blob"
    return f"{role} {item.digest} ({item.media_type or 'unknown type'}, {item.size} bytes, {where})"


def read_volumes(directory: Path, manifest: BundleManifest, progress: Progress, workers: int) -> Tuple[List[ItemCheck], List[VolumeOutcome]]:
    """Step 3: every volume in one pass, volumes in parallel; blobs and files are hashed as they go by."""
    checks: List[ItemCheck] = [ItemCheck(b, item_label(b)) for b in manifest.blobs] + [ItemCheck(f, item_label(f)) for f in manifest.files]
    segments: Dict[str, List[Segment]] = {v.name: [] for v in manifest.volumes}
    for check in checks:
        for i, part in enumerate(check.item.parts):
            segments[part.volume].append(Segment(part.offset, part.length, check, i))
    for segs in segments.values():
        segs.sort(key=lambda s: (s.start, s.length))
    progress.add_total(sum(v.size for v in manifest.volumes))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="verify") as pool, ThreadPoolExecutor(
        max_workers=workers, thread_name_prefix="vhash"
    ) as helper:
        limit = max((v.size for v in manifest.volumes), default=0)
        futures = [pool.submit(check_volume, directory, v, segments[v.name], helper, progress, limit) for v in manifest.volumes]
        outcomes: List[VolumeOutcome] = []
        for v, fut in zip(manifest.volumes, futures):
            outcomes.append(fut.result())
            progress.item_done(v.name, "checked")
    return checks, outcomes

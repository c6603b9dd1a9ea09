"""Proving a bundle is intact on the far side: signature, every volume, every tar member, every blob.

Owns `verify_bundle` (spec: "Verify" in the bundle issue). In order:

1. the signature over the exact bytes of `bundle-manifest.json` (Ed25519, `bundler.bundle.signing`); an unsigned
   bundle passes with a loud warning unless a signature is required (`require_signature`, or a `key` was
   given: a stripped signature must not silently downgrade the check);
2. the manifest is parsed and checked field by field;
3. every volume is read ONCE, in 4 MiB chunks, volumes in parallel threads (hashlib and zstd release the
   GIL): the same buffer feeds the volume's sha256 (on a helper thread), the tar header scanner (regular
   files with safe names only: `../`, absolute paths, links and devices are `UnsafeArchiveError`) and the
   hashers of the blobs and files whose data lies in it (decompressing zstd-stored ones and checking the
   original digest). A blob continued from the previous volume is hashed in the same pass when that
   volume is already done, otherwise its continuation is re-read afterwards (only that part);
4. the image graphs are walked: every blob an image needs is carried or listed as left to the base.

Every problem is collected; then one `IntegrityError` (exit 3) is raised whose first line is a summary
(how many problems, which volumes to re-copy) and whose next lines name each problem precisely: a missing,
truncated, altered or swapped volume, the bad blob (its role, digest and volume), an unsafe member, a
signature that does not match.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tarfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union

import zstandard

from bundler.bundle.volumes import CHUNK, STATE_NAME, Bundle, blob_role, read_manifest
from bundler.bundle.manifest import (
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    MAX_SIGNATURE_BYTES,
    SIGNATURE_NAME,
    TAR_BLOCK,
    BundleBlob,
    BundleFile,
    BundleImage,
    BundleManifest,
    BundleVolume,
    is_volume_name,
    open_volume,
    read_bundle_file,
    unsafe_member_reason,
)
from bundler.oci.digest import Digest
from bundler.base.errors import BundlerError, IntegrityError, SignatureError, UnsafeArchiveError, UsageError
from bundler.oci.graph import walk_manifests
from bundler.oci.media import Descriptor, FetchedManifest, detect_media_type, parse_manifest
from bundler.base.progress import NullProgress, Progress

log = logging.getLogger(__name__)

UNSIGNED_WARNING = (
    "THE BUNDLE IS NOT SIGNED: nothing proves who wrote it. Checksums only catch accidental damage; "
    "sign bundles with pack --sign-key and verify with --key (or --require-signature)."
)


@dataclass(frozen=True)
class VerifyResult:
    directory: Path
    bundle_id: str
    signed: bool
    """True when the signature was checked against a key and matches."""
    key_id: Optional[str]
    warnings: Tuple[str, ...]
    volumes_checked: int
    blobs_checked: int
    files_checked: int
    bytes: int
    seconds: float

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> Dict[str, Any]:
        return {
            "ok": True,
            "directory": str(self.directory),
            "id": self.bundle_id,
            "signed": self.signed,
            "keyId": self.key_id,
            "warnings": list(self.warnings),
            "volumesChecked": self.volumes_checked,
            "blobsChecked": self.blobs_checked,
            "filesChecked": self.files_checked,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "mbPerSecond": round(self.mb_per_s, 1),
        }


@dataclass(frozen=True)
class Problem:
    category: str  # signature, manifest, volume, member, unsafe, blob, graph
    text: str
    volume: Optional[str] = None
    """A volume to re-copy, when that is the cure."""


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


class _ItemCheck:
    """Hashes one blob or file as its parts stream past, in part order (parts are claimed one at a time)."""

    def __init__(self, item: Union[BundleBlob, BundleFile], label: str) -> None:
        self.item = item
        self.label = label
        self.expected = Digest.parse(item.digest)
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
class _Segment:
    start: int
    length: int
    check: _ItemCheck
    part_index: int
    claimed: Optional[bool] = None


# --------------------------------------------------------------------------------------------------------
# tar headers, parsed from the same chunks that are hashed
# --------------------------------------------------------------------------------------------------------

_TYPE_NAMES = {
    tarfile.LNKTYPE: "hard link",
    tarfile.SYMTYPE: "symbolic link",
    tarfile.CHRTYPE: "character device",
    tarfile.BLKTYPE: "block device",
    tarfile.FIFOTYPE: "FIFO",
    tarfile.DIRTYPE: "directory",
    tarfile.CONTTYPE: "contiguous file",
    tarfile.XHDTYPE: "pax extended header",
    tarfile.XGLTYPE: "pax global header",
    tarfile.GNUTYPE_LONGNAME: "GNU long name header",
    tarfile.GNUTYPE_LONGLINK: "GNU long link header",
    tarfile.GNUTYPE_SPARSE: "GNU sparse file",
}


class TarScanner:
    """Walks the tar headers of a volume from consecutive chunks; records members and unsafe ones.

    ocp-bundler writes only plain ustar regular files with relative names, so anything else (links,
    devices, directories, extension headers, `..`, absolute names) is reported.
    """

    def __init__(self, volume: str) -> None:
        self.volume = volume
        self.members: List[Tuple[str, int, int]] = []  # (name, data offset, size)
        self.problems: List[Problem] = []
        self.ended = False
        self._want = 0  # position of the next header byte needed
        self._buf = bytearray()

    def feed(self, pos: int, chunk: memoryview) -> None:
        end = pos + len(chunk)
        while not self.ended and self._want < end:
            if self._want < pos:  # pragma: no cover - chunks are consecutive
                raise AssertionError("tar scanner fed out of order")
            take = min(TAR_BLOCK - len(self._buf), end - self._want)
            self._buf += chunk[self._want - pos : self._want - pos + take]
            self._want += take
            if len(self._buf) == TAR_BLOCK:
                header_at = self._want - TAR_BLOCK
                block = bytes(self._buf)
                self._buf.clear()
                self._header(header_at, block)

    def _header(self, at: int, block: bytes) -> None:
        if block == bytes(TAR_BLOCK):
            self.ended = True
            return
        try:
            info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        except tarfile.HeaderError as exc:
            self.problems.append(Problem("member", f"{self.volume}: damaged tar header at offset {at} ({exc}): re-copy {self.volume}", self.volume))
            self.ended = True
            return
        size = info.size if info.type in tarfile.REGULAR_TYPES or info.type in (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK) else 0
        name = info.name
        kind = _TYPE_NAMES.get(info.type) if info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE) else None
        if kind is None and info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
            kind = f"member of type {info.type!r}"
        why = unsafe_member_reason(name)
        if kind is not None:
            target = f" -> {info.linkname}" if info.linkname else ""
            self.problems.append(Problem("unsafe", f"{self.volume}: unsafe member {name!r}{target} ({kind}; ocp-bundler writes regular files only): do not extract {self.volume}; re-copy it from a trusted source", self.volume))
        elif why is not None:
            self.problems.append(Problem("unsafe", f"{self.volume}: unsafe member {name!r} ({why}): do not extract {self.volume}; re-copy it from a trusted source", self.volume))
        else:
            self.members.append((name, at + TAR_BLOCK, size))
        self._want = at + TAR_BLOCK + (size + TAR_BLOCK - 1) // TAR_BLOCK * TAR_BLOCK


def scan_volume(path: Path) -> TarScanner:
    """Scan one volume file's tar headers (the same checks verify makes, on their own)."""
    scanner = TarScanner(path.name)
    with open_volume(path) as f:
        pos = 0
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        while not scanner.ended:
            n = f.readinto(buf)
            if not n:
                break
            scanner.feed(pos, view[:n])
            pos += n
    return scanner


# --------------------------------------------------------------------------------------------------------
# one volume
# --------------------------------------------------------------------------------------------------------


@dataclass
class _VolumeOutcome:
    volume: BundleVolume
    present: bool = False
    unreadable: Optional[str] = None
    """Why a volume that is there cannot be read (not a regular file, permissions)."""
    size: int = 0
    sha256: Optional[str] = None
    scanner: Optional[TarScanner] = None
    beyond_end: List[_Segment] = field(default_factory=list)


def _check_volume(
    directory: Path, volume: BundleVolume, segments: List[_Segment], helper: ThreadPoolExecutor, progress: Progress, limit: int
) -> _VolumeOutcome:
    """Read one volume once (`limit`: a file larger than every recorded volume is not read at all)."""
    out = _VolumeOutcome(volume)
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
                si = _feed_segments(segments, si, pos, chunk)
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


def _feed_segments(segments: List[_Segment], si: int, pos: int, chunk: memoryview) -> int:
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


def _finish_deferred(directory: Path, check: _ItemCheck) -> None:
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


# --------------------------------------------------------------------------------------------------------
# verify_bundle
# --------------------------------------------------------------------------------------------------------


def _label(item: Union[BundleBlob, BundleFile]) -> str:
    volumes = sorted({p.volume for p in item.parts})
    where = f"in {', '.join(volumes)}" if volumes else "in no volume"
    if isinstance(item, BundleFile):
        return f"file {item.name} ({item.size} bytes, {where})"
    role = blob_role(item.media_type) if item.media_type else "blob"
    return f"{role} {item.digest} ({item.media_type or 'unknown type'}, {item.size} bytes, {where})"


def _raise(directory: Path, problems: Sequence[Problem], *, suppressed: int = 0) -> None:
    recopy: List[str] = []
    for p in problems:
        if p.volume and p.volume not in recopy:
            recopy.append(p.volume)
    summary = f"bundle {directory} failed verification: {len(problems)} problem{'s' if len(problems) != 1 else ''}"
    if recopy:
        summary += f"; re-copy {', '.join(sorted(recopy))} from the source media"
    lines = [summary] + [f"  - {p.text}" for p in problems]
    if suppressed:
        lines.append(f"  ({suppressed} blobs and files in those volumes could not be checked: verify again once the volumes are fixed)")
    message = "\n".join(lines)
    cats = {p.category for p in problems}
    cls = UnsafeArchiveError if "unsafe" in cats else SignatureError if cats == {"signature"} else IntegrityError
    err = cls(message)
    setattr(err, "problems", list(problems))
    raise err


def verify_bundle(
    directory: Path,
    *,
    key: Optional[Path] = None,
    require_signature: bool = False,
    progress: Progress = NullProgress(),
    workers: int = 2,
) -> VerifyResult:
    """Check a bundle completely; raise IntegrityError (exit 3) listing every problem, or return what was checked."""
    started = time.monotonic()
    directory = Path(directory)
    if directory.is_file() and directory.name == MANIFEST_NAME:
        directory = directory.parent
    if require_signature and key is None:
        raise UsageError("--require-signature needs the public key", hint="pass --key bundle.pub")
    from bundler.bundle.signing import key_id, load_public_key

    public = load_public_key(key) if key is not None else None
    head = _check_signature(directory, key, require_signature)
    manifest, problems, warnings = head.manifest, head.problems, head.warnings
    warnings.extend(_stray_files(directory, manifest))
    workers = max(1, workers)
    checks, outcomes = _read_volumes(directory, manifest, progress, workers)
    bad_volumes = _judge_volumes(directory, manifest, outcomes, problems)
    suppressed, verified = _judge_items(directory, checks, bad_volumes, workers, problems)
    if not problems:
        problems.extend(_graph_problems(directory, manifest, head.raw, verified))
    if problems:
        _raise(directory, problems, suppressed=suppressed)

    for w in warnings:
        log.warning("%s", w)
    return VerifyResult(
        directory=directory,
        bundle_id=manifest.id,
        signed=head.signed,
        key_id=key_id(public) if public is not None and head.signed else None,
        warnings=tuple(warnings),
        volumes_checked=len(manifest.volumes),
        blobs_checked=len(manifest.blobs),
        files_checked=len(manifest.files),
        bytes=sum(out.size for out in outcomes),
        seconds=time.monotonic() - started,
    )


@dataclass
class _Head:
    """The manifest as parsed, its bytes, and what the signature check found."""

    manifest: BundleManifest
    raw: bytes
    signed: bool
    problems: List[Problem]
    warnings: List[str]


def _check_signature(directory: Path, key: Optional[Path], require_signature: bool) -> _Head:
    """Step 1: the signature over the manifest's bytes as stored, then the parsed manifest (or exit 3)."""
    from bundler.bundle.signing import verify_signature

    warnings: List[str] = []
    problems: List[Problem] = []
    try:
        manifest, raw = read_manifest(directory)
        parse_error: Optional[BundlerError] = None
    except IntegrityError as exc:
        manifest, parse_error = None, exc
        try:
            raw = read_bundle_file(directory / MANIFEST_NAME, max_size=MAX_MANIFEST_BYTES)
        except (OSError, IntegrityError):
            raise exc from None
    sig_path = directory / SIGNATURE_NAME
    signed = False
    if os.path.lexists(sig_path):
        if key is not None:
            try:
                verify_signature(raw, _read_signature(sig_path), key)
                signed = True
            except SignatureError as exc:
                problems.append(Problem("signature", f"{MANIFEST_NAME} does not match its signature {SIGNATURE_NAME}: the manifest was tampered with, or {key} is not the key it was signed with ({exc})"))
        else:
            warnings.append("the bundle is signed but no --key was given: the signature was NOT checked")
    elif key is not None or require_signature:
        problems.append(Problem("signature", f"the bundle is not signed (no {SIGNATURE_NAME}), but a signed bundle is required: it was stripped of its signature, or packed without --sign-key"))
    else:
        warnings.append(UNSIGNED_WARNING)
    if parse_error is not None or manifest is None:
        problems.append(Problem("manifest", f"{parse_error}"))
        _raise(directory, problems)
    assert manifest is not None
    return _Head(manifest, raw, signed, problems, warnings)


def _read_signature(path: Path) -> bytes:
    try:
        return read_bundle_file(path, max_size=MAX_SIGNATURE_BYTES)
    except IntegrityError as exc:
        raise SignatureError(str(exc)) from None
    except OSError as exc:
        raise SignatureError(f"{path.name} cannot be read ({exc.strerror or exc})") from None


def _stray_files(directory: Path, manifest: BundleManifest) -> List[str]:
    """Step 2: warnings about what is on disk besides the listed volumes."""
    warnings: List[str] = []
    listed = {v.name for v in manifest.volumes}
    extra = sorted(p.name for p in directory.glob("bundle-*.tar") if is_volume_name(p.name) and p.name not in listed)
    if extra:
        warnings.append(f"volume files not listed in the manifest (ignored): {', '.join(extra)}")
    if (directory / STATE_NAME).exists():
        warnings.append(f"{STATE_NAME} is present: a later pack into this directory did not finish")
    return warnings


def _read_volumes(directory: Path, manifest: BundleManifest, progress: Progress, workers: int) -> Tuple[List[_ItemCheck], List[_VolumeOutcome]]:
    """Step 3: every volume in one pass, volumes in parallel; blobs and files are hashed as they go by."""
    checks: List[_ItemCheck] = [_ItemCheck(b, _label(b)) for b in manifest.blobs] + [_ItemCheck(f, _label(f)) for f in manifest.files]
    segments: Dict[str, List[_Segment]] = {v.name: [] for v in manifest.volumes}
    for check in checks:
        for i, part in enumerate(check.item.parts):
            segments[part.volume].append(_Segment(part.offset, part.length, check, i))
    for segs in segments.values():
        segs.sort(key=lambda s: (s.start, s.length))
    progress.add_total(sum(v.size for v in manifest.volumes))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="verify") as pool, ThreadPoolExecutor(
        max_workers=workers, thread_name_prefix="vhash"
    ) as helper:
        limit = max((v.size for v in manifest.volumes), default=0)
        futures = [pool.submit(_check_volume, directory, v, segments[v.name], helper, progress, limit) for v in manifest.volumes]
        outcomes: List[_VolumeOutcome] = []
        for v, fut in zip(manifest.volumes, futures):
            outcomes.append(fut.result())
            progress.item_done(v.name, "checked")
    return checks, outcomes


def _judge_volumes(directory: Path, manifest: BundleManifest, outcomes: Sequence[_VolumeOutcome], problems: List[Problem]) -> Set[str]:
    """Each volume against its record: missing, swapped, truncated, grown, altered, or its members wrong.

    Adds to `problems`; returns the volumes whose blobs cannot be judged."""
    bad_volumes: Set[str] = set()
    by_sha: Dict[str, str] = {}
    for v in manifest.volumes:
        if v.sha256 is not None:  # version 2 volumes carry none: their blobs' digests prove them
            by_sha.setdefault(v.sha256, v.name)
    for out in outcomes:
        v = out.volume
        if out.unreadable is not None:
            problems.append(Problem("volume", out.unreadable, v.name))
            bad_volumes.add(v.name)
            continue
        if not out.present:
            problems.append(Problem("volume", f"{v.name} is missing: copy it from the source media into {directory}", v.name))
            bad_volumes.add(v.name)
            continue
        if out.scanner is not None:
            problems.extend(p for p in out.scanner.problems if p.category == "unsafe")
        if v.sha256 is None and out.size != v.size:
            problems.append(Problem("volume", _size_problem(v, out.size), v.name))
            bad_volumes.add(v.name)
            continue
        if v.sha256 is not None and out.sha256 != v.sha256:
            problem, unusable = _volume_mismatch(out, by_sha)
            problems.append(problem)
            if unusable:
                bad_volumes.add(v.name)
            elif out.scanner is not None:
                problems.extend(p for p in out.scanner.problems if p.category == "member")
            continue
        if out.size != v.size:  # the content hashes right, so the record of its size is what lies
            problems.append(Problem("manifest", f"{MANIFEST_NAME} records {v.name} as {v.size} bytes, but it is {out.size} bytes with the recorded sha256: the manifest was altered"))
            bad_volumes.add(v.name)
            continue
        # intact volume: its members must be exactly what the manifest says
        problems.extend(_structure_problems(manifest, v, out))
    return bad_volumes


def _volume_mismatch(out: _VolumeOutcome, by_sha: Mapping[str, str]) -> Tuple[Problem, bool]:
    """What is wrong with a volume whose sha256 differs, and whether its blobs are beyond judging."""
    v = out.volume
    assert v.sha256 is not None
    other = by_sha.get(out.sha256 or "")
    if other is not None and other != v.name:
        return Problem("volume", f"{v.name} holds the content of {other} (volumes swapped or renamed): give each file its right name, or re-copy {v.name}", v.name), True
    if out.size != v.size:
        return Problem("volume", _size_problem(v, out.size), v.name), True
    return Problem("volume", f"{v.name} is altered (sha256 {out.sha256[7:23] if out.sha256 else '?'}…, expected {v.sha256[7:23]}…): re-copy {v.name}", v.name), False


def _judge_items(directory: Path, checks: Sequence[_ItemCheck], bad_volumes: Set[str], workers: int, problems: List[Problem]) -> Tuple[int, Set[str]]:
    """Step 4: finish split blobs, then judge each blob and file. Returns (how many could not be judged, digests verified)."""
    suppressed = 0
    live = []
    for check in checks:
        if any(p.volume in bad_volumes for p in check.item.parts):
            check.unverifiable = True
            suppressed += 1
        else:
            live.append(check)
    deferred = [c for c in live if c.next_part < len(c.item.parts) and c.error is None]
    if deferred:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="verify-split") as pool:
            list(pool.map(lambda c: _finish_deferred(directory, c), deferred))
    verified: Set[str] = set()
    for check in live:
        why = check.outcome()
        if why is None:
            if isinstance(check.item, BundleBlob):
                verified.add(check.item.digest)
            continue
        volumes = sorted({p.volume for p in check.item.parts})
        problems.append(Problem("blob", f"{check.label}: {why}", volumes[0] if len(volumes) == 1 else None))
    return suppressed, verified


def _size_problem(v: BundleVolume, size: int) -> str:
    if size < v.size:
        return f"{v.name} is truncated: {size} of {v.size} bytes: re-copy {v.name}"
    return f"{v.name} is {size} bytes, {size - v.size} more than recorded ({v.size}): re-copy {v.name}"


def _structure_problems(manifest: BundleManifest, volume: BundleVolume, out: _VolumeOutcome) -> List[Problem]:
    problems: List[Problem] = []
    scanner = out.scanner
    if scanner is None:
        return problems
    problems.extend(p for p in scanner.problems if p.category == "member")
    if not scanner.ended:
        problems.append(Problem("member", f"{volume.name} has no tar end-of-archive marker: re-copy {volume.name}", volume.name))
    expected = {}
    for item in list(manifest.blobs) + list(manifest.files):
        for part in item.parts:
            if part.volume == volume.name:
                expected[(part.member, part.offset)] = part.length
    found = {(name, offset): size for name, offset, size in scanner.members}
    for key, length in expected.items():
        if found.get(key) != length:
            problems.append(Problem("member", f"{volume.name}: member {key[0]} is not at offset {key[1]} with {length} bytes as the manifest records", volume.name))
    for key in found:
        if key not in expected:
            problems.append(Problem("member", f"{volume.name}: member {key[0]} at offset {key[1]} is not in the manifest", volume.name))
    for seg in out.beyond_end:
        problems.append(Problem("member", f"{volume.name}: {seg.check.label} lies beyond the end of the volume", volume.name))
    return problems


def _graph_problems(directory: Path, manifest: BundleManifest, raw: bytes, verified: Set[str]) -> List[Problem]:
    """Every blob each image needs is carried (or left to the base bundle)."""
    bundle = Bundle(directory, manifest, raw)
    base = {b.digest for b in manifest.base_blobs}
    problems: List[Problem] = []
    done: Set[str] = set()

    def read(image: BundleImage, digest: str, media_type: str) -> Optional[FetchedManifest]:
        """A manifest from the bundle, once across all images; None (and a problem) when it cannot be."""
        if digest in done:
            return None
        done.add(digest)
        if digest not in verified:
            where = "left to the base bundle" if digest in base else "not in the bundle"
            problems.append(Problem("graph", f"image {image.source} ({image.target}): manifest {digest} is {where}"))
            return None
        try:
            data = bundle.read_blob(digest)
            media_type = detect_media_type(data, media_type or None)
            parse_manifest(data, media_type)
        except BundlerError as exc:
            problems.append(Problem("graph", f"image {image.source}: manifest {digest} cannot be read ({exc})"))
            return None
        return FetchedManifest(data, media_type, Digest.parse(digest))

    for image in manifest.images:
        top = read(image, image.digest, image.media_type)
        if top is None:
            continue

        def fetch(d: Descriptor, image: BundleImage = image) -> Optional[FetchedManifest]:
            return read(image, str(d.digest), d.media_type)

        for node in walk_manifests(top, fetch, description=f"image {image.source}"):
            for b in node.blobs:
                d = str(b.digest)
                if d not in verified and d not in base:
                    problems.append(Problem("graph", f"image {image.source} ({image.target}): blob {d} is neither in the bundle nor in its base"))
    return problems

"""Writing a bundle from an OCI layout: volumes written in order, each hashed in the same pass.

Owns `plan_bundle` and `write_bundle` (used where the content already sits in an OCI layout on disk; pack
streams straight from the registries through `bundler.bundle.fill` instead):

- what goes in: every blob reachable from the images' manifests in the layout (lists → manifests →
  config + layers; manifests are blobs too) plus the extra files; with a `base` bundle, configs and layers
  the base (or its own base) carries are left out and listed as `baseBlobs`. Manifests are always carried,
  so an incremental bundle can still resolve every image graph on its own;
- gzip/zstd layers are stored as they are; everything else (manifests, configs, uncompressed layers,
  files) is stored zstd-compressed (level 3, streaming, memory flat) only when that saves ≥ 10 %. Sizes
  are measured first by compressing without writing (CPU only; compression is deterministic, so the
  second pass produces the same bytes) so every member's offset is known before the first byte is
  written and each volume's sha256 is computed in the same pass that writes it;
- each volume is written to `.bundle-NNNN.tar.partial`, fsync'd and renamed; `bundle-manifest.json` is
  written last (after the signature), atomically. Free space is checked first (`DiskSpaceError`, exit 2),
  and ENOSPC / EFBIG while writing become the same error, leaving no manifest behind;
- a rerun after a crash re-hashes the volumes a previous run finished (`.ocpb-bundle-state.json`) and
  keeps those that match, then writes the rest;
- each blob is read from the layout once and written once: its digest (checked against the layout), the
  volume sha256 and the write all come from the same buffer.
"""

from __future__ import annotations

import contextlib
import logging
import errno
import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union


from bundler.oci.digest import hash_file
from bundler.base.fsutil import atomic_write, free_space
from bundler.base.units import human_bytes
from bundler.base.errors import BundlerError, DiskSpaceError, ImageNotFoundError, IntegrityError, UsageError
from bundler.layout.store import Layout
from bundler.oci.media import Descriptor, detect_media_type, parse_manifest
from bundler.oci.planned import KINDS
from bundler.base.progress import NullProgress, Progress
from bundler.bundle.members import (
    DEFAULT_VOLUME_SIZE,
    END_OF_ARCHIVE,
    JOURNAL_NAME,
    STATE_NAME,
    CHUNK,
    assign_volumes,
    build_manifest,
    check_volume_size,
    created_mtime,
    file_items,
    content_fingerprint,
    Item,
    manifest_estimate,
    member_base,
    utc_now,
    pad_block,
    tar_header,
    VolumePlan,
    blob_role,
)
from bundler.bundle.encoding import Cursor, measure_stored
from bundler.bundle.reader import load_base_manifest
from bundler.bundle.manifest import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    TAR_BLOCK,
    BaseBlob,
    BundleImage,
    BundleManifest,
    BundleVolume,
    is_volume_name,
)


log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------------
# options and results
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BundleWriteOptions:
    out_dir: Path
    volume_size: int = DEFAULT_VOLUME_SIZE
    sign_key: Optional[Path] = None
    base: Optional[Path] = None
    """A base bundle (its directory or its manifest file): blobs it carries are not written again."""
    files: Mapping[str, bytes] = field(default_factory=dict)
    progress: Progress = field(default_factory=NullProgress)


@dataclass(frozen=True)
class BundlePlan:
    """What a bundle will hold, with upper bounds for the space it needs (compression can only shrink it)."""

    images: int
    blobs: int
    blob_bytes: int
    blobs_skipped_by_base: int
    bytes_skipped_by_base: int
    files: int
    file_bytes: int
    volume_size: int
    volume_count: int
    bytes_needed: int
    base_id: Optional[str] = None

    def to_json(self) -> Dict[str, Any]:
        return {
            "images": self.images,
            "blobs": self.blobs,
            "blobBytes": self.blob_bytes,
            "blobsSkippedByBase": self.blobs_skipped_by_base,
            "bytesSkippedByBase": self.bytes_skipped_by_base,
            "files": self.files,
            "fileBytes": self.file_bytes,
            "volumeSize": self.volume_size,
            "volumeCount": self.volume_count,
            "bytesNeeded": self.bytes_needed,
            "baseId": self.base_id,
        }


@dataclass(frozen=True)
class BundleWriteResult:
    directory: Path
    manifest_path: Path
    signature_path: Optional[Path]
    manifest: BundleManifest
    bytes_written: int
    """Volume bytes written by this run (less than `total_bytes` when a rerun kept finished volumes)."""
    total_bytes: int
    """Size of all volumes."""
    blobs_written: int
    blobs_skipped_by_base: int
    volumes_reused: int
    seconds: float

    @property
    def volumes(self) -> Tuple[BundleVolume, ...]:
        return self.manifest.volumes

    @property
    def bundle_id(self) -> str:
        return self.manifest.id

    def to_json(self) -> Dict[str, Any]:
        return {
            "directory": str(self.directory),
            "manifest": str(self.manifest_path),
            "signature": str(self.signature_path) if self.signature_path else None,
            "id": self.manifest.id,
            "baseId": self.manifest.base_id,
            "images": len(self.manifest.images),
            "blobs": self.blobs_written,
            "blobsSkippedByBase": self.blobs_skipped_by_base,
            "volumes": [{"name": v.name, "size": v.size, "sha256": v.sha256} for v in self.manifest.volumes],
            "volumesReused": self.volumes_reused,
            "bytesWritten": self.bytes_written,
            "totalBytes": self.total_bytes,
            "seconds": round(self.seconds, 3),
        }


# --------------------------------------------------------------------------------------------------------
# what goes in
# --------------------------------------------------------------------------------------------------------


@dataclass
class _Graph:
    metadata: List[Item]
    layers: List[Item]
    skipped: List[BaseBlob]
    totals: Dict[int, int]
    images: List[BundleImage]


def _walk(layout: Layout, images: Sequence[BundleImage], base: Optional[BundleManifest]) -> _Graph:
    """Every blob reachable from the images, metadata first; blobs the base carries are set aside."""
    in_base: Dict[str, int] = {}
    if base is not None:
        in_base = {str(b.digest): b.size for b in base.blobs}
        in_base.update({str(b.digest): b.size for b in base.base_blobs})
    metadata: Dict[str, Item] = {}
    layers: Dict[str, Item] = {}
    skipped: Dict[str, BaseBlob] = {}
    totals: Dict[int, int] = {}
    fixed: List[BundleImage] = []
    for idx, image in enumerate(images):
        if image.kind not in KINDS:
            raise UsageError(f"image {image.source}: kind {image.kind!r} is not one of {', '.join(KINDS)}")
        if not image.target_repository or not image.target_tag:
            raise UsageError(f"image {image.source}: target repository and tag must both be set")
        top_digest = image.digest
        seen: Dict[str, int] = {}
        queue: List[Descriptor] = [Descriptor(media_type=image.media_type, digest=top_digest, size=image.size)]
        top_raw_len: Optional[int] = None
        top_type = image.media_type
        while queue:
            d = queue.pop(0)
            key = str(d.digest)
            if key in seen:
                continue
            try:
                raw = layout.read_blob(d.digest)
            except ImageNotFoundError:
                raise ImageNotFoundError(
                    f"image {image.source}: manifest {d.digest} is not in the work layout {layout.root}",
                    hint="pack did not finish pulling it; rerun pack",
                ) from None
            media_type = detect_media_type(raw, d.media_type or None)
            if top_raw_len is None:
                top_raw_len, top_type = len(raw), media_type
            seen[key] = len(raw)
            if key not in metadata:
                metadata[key] = Item("blob", key, d.digest, len(raw), media_type, member_base(d.digest), path=layout.blob_path(d.digest))
            parsed = parse_manifest(raw, media_type)
            queue.extend(parsed.children)
            for b in parsed.blobs:
                bkey = str(b.digest)
                if bkey in seen:
                    continue
                seen[bkey] = b.size
                if bkey in metadata or bkey in layers or bkey in skipped:
                    continue
                if bkey in in_base:
                    skipped[bkey] = BaseBlob(b.digest, b.size, b.media_type)
                    continue
                if not layout.has_blob(b.digest, b.size):
                    raise ImageNotFoundError(
                        f"image {image.source}: blob {b.digest} ({b.size} bytes) is not in the work layout {layout.root}",
                        hint="pack did not finish pulling it; rerun pack",
                    )
                item = Item("blob", bkey, b.digest, b.size, b.media_type, member_base(b.digest), path=layout.blob_path(b.digest))
                (layers if blob_role(b.media_type) == "layer" else metadata)[bkey] = item
        totals[idx] = sum(seen.values())
        fixed.append(replace(image, size=top_raw_len or image.size, media_type=image.media_type or top_type, total_size=totals[idx]))
    return _Graph(list(metadata.values()), list(layers.values()), list(skipped.values()), totals, fixed)


# --------------------------------------------------------------------------------------------------------
# plan_bundle / write_bundle
# --------------------------------------------------------------------------------------------------------


def plan_bundle(layout: Layout, images: Sequence[BundleImage], *, options: BundleWriteOptions) -> BundlePlan:
    """Sizes, volume count and disk space a bundle needs, without compressing or writing anything.

    The numbers are upper bounds: compressible data is counted at its full size.
    """
    check_volume_size(options.volume_size)
    base = load_base_manifest(options.base) if options.base else None
    graph = _walk(layout, images, base)
    items = file_items(options.files) + graph.metadata + graph.layers
    for item in items:
        item.encoding, item.stored_size = "raw", item.size
    volumes = assign_volumes(items, options.volume_size)
    blob_items = graph.metadata + graph.layers
    return BundlePlan(
        images=len(images),
        blobs=len(blob_items),
        blob_bytes=sum(i.size for i in blob_items),
        blobs_skipped_by_base=len(graph.skipped),
        bytes_skipped_by_base=sum(b.size for b in graph.skipped),
        files=len(options.files),
        file_bytes=sum(len(v) for v in options.files.values()),
        volume_size=options.volume_size,
        volume_count=len(volumes),
        bytes_needed=sum(v.size for v in volumes) + manifest_estimate(len(items), len(images)),
        base_id=base.id if base else None,
    )


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def disk_error(exc: OSError, out_dir: Path, volume_size: int) -> BundlerError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskSpaceError(
            f"no space left in {out_dir} while writing the bundle",
            hint="free space or choose another directory, then rerun: finished volumes are kept",
        )
    if exc.errno == errno.EFBIG:
        return DiskSpaceError(
            f"the file system at {out_dir} cannot hold files of {volume_size} bytes",
            hint="use a smaller volume size (FAT32 allows at most 4 GiB - 1 per file), then rerun",
        )
    return UsageError(f"cannot write the bundle in {out_dir}: {exc.strerror or exc}")


def _reusable(out_dir: Path, fingerprint: str, bundle_id: str, volume_size: int) -> Tuple[Optional[str], Dict[str, Tuple[int, str]]]:
    """Volumes an earlier (interrupted or identical) write left that may be kept: created time, name → (size, sha256)."""
    state_path = out_dir / STATE_NAME
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError, AttributeError):
        state = json.loads(state_path.read_bytes())
        if state.get("fingerprint") == fingerprint:
            vols = {str(k): (int(v["size"]), str(v["sha256"])) for k, v in state.get("volumes", {}).items()}
            return str(state["created"]), vols
    with contextlib.suppress(OSError, BundlerError):
        old = BundleManifest.from_bytes((out_dir / MANIFEST_NAME).read_bytes(), where=str(out_dir / MANIFEST_NAME))
        if old.id == bundle_id and old.volume_size == volume_size:
            return old.created, {v.name: (v.size, v.sha256) for v in old.volumes if v.sha256 is not None}
    return None, {}


def write_bundle(layout: Layout, images: Sequence[BundleImage], *, options: BundleWriteOptions) -> BundleWriteResult:
    """Write the images (and extra files) from `layout` as a bundle in `options.out_dir`.

    Raises DiskSpaceError (exit 2) when the space is not there, before writing anything; a rerun after an
    interruption keeps the volumes that were finished and verified.
    """
    started = time.monotonic()
    progress = options.progress
    out_dir = Path(options.out_dir)
    check_volume_size(options.volume_size)
    if options.sign_key is not None:
        from bundler.bundle.signing import load_private_key

        load_private_key(options.sign_key)  # a bad key fails now, not after hours of writing
    base = load_base_manifest(options.base) if options.base else None
    graph = _walk(layout, images, base)
    items = file_items(options.files) + graph.metadata + graph.layers
    _measure_all(items, progress)
    plans = assign_volumes(items, options.volume_size)
    fingerprint = content_fingerprint(graph.images, items, graph.skipped, options.volume_size, base.id if base else None)
    bundle_id = f"ocpb-{fingerprint[:32]}"

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise disk_error(exc, out_dir, options.volume_size) from None
    for stale in out_dir.glob(".bundle-*.tar.partial"):
        with contextlib.suppress(OSError):
            stale.unlink()
    created, candidates = _reusable(out_dir, fingerprint, bundle_id, options.volume_size)
    if created is None:
        created, _ = utc_now()
        candidates = {}
    reused = _keep_finished(out_dir, plans, candidates)
    to_write = sum(p.size for p in plans if p.name not in reused)
    check_space(out_dir, to_write + manifest_estimate(len(items), len(images)))

    # From here on the directory no longer holds a complete bundle until the new manifest lands.
    for name in (MANIFEST_NAME, SIGNATURE_NAME):
        with contextlib.suppress(FileNotFoundError):
            (out_dir / name).unlink()
    state: Dict[str, Any] = {"fingerprint": fingerprint, "id": bundle_id, "created": created, "volumes": {}}
    for name, sha in reused.items():
        state["volumes"][name] = {"size": next(p.size for p in plans if p.name == name), "sha256": sha}
    _write_state(out_dir, state)
    progress.add_total(to_write)
    volumes = _write_volumes(out_dir, plans, reused, state, created_mtime(created), options)
    manifest = build_manifest(bundle_id, created, base.id if base else None, graph.images, graph.skipped, items, plans, volumes, options.volume_size)
    return finish_bundle(
        out_dir, manifest, options.sign_key, volume_size=options.volume_size, bytes_written=to_write,
        skipped=len(graph.skipped), reused=len(reused), started=started,
    )


def check_space(out_dir: Path, needed: int) -> None:
    """DiskSpaceError (exit 2) unless `out_dir` has `needed` bytes free."""
    free = free_space(out_dir)
    if free < needed:
        raise DiskSpaceError(
            f"not enough free space in {out_dir}: the bundle needs {human_bytes(needed)} ({needed} bytes) more, {human_bytes(free)} is free; nothing was pulled",
            hint="free space, choose another directory, or use a base bundle to write only what is new",
        )


def _measure_all(items: Sequence[Item], progress: Progress) -> None:
    """Decide each item's encoding and stored size (CPU only, no writes)."""
    to_measure = [i for i in items if i.compressible() and i.size >= 2 * TAR_BLOCK]
    for item in items:
        item.encoding, item.stored_size = "raw", item.size
    progress.add_total(sum(i.size for i in to_measure))
    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)), thread_name_prefix="measure") as pool:
        for item, (encoding, stored) in zip(to_measure, pool.map(measure_stored, to_measure)):
            item.encoding, item.stored_size = encoding, stored
            progress.advance(item.size)


def _keep_finished(out_dir: Path, plans: Sequence[VolumePlan], candidates: Dict[str, Tuple[int, str]]) -> Dict[str, str]:
    """Volumes an earlier run finished that may be kept, after checking them byte for byte: name → sha256."""
    reused: Dict[str, str] = {}
    for plan in plans:
        cand = candidates.get(plan.name)
        path = out_dir / plan.name
        if cand is None or cand[0] != plan.size:
            continue
        with contextlib.suppress(OSError):
            if path.stat().st_size == plan.size and "sha256:" + hash_file(path) == cand[1]:
                reused[plan.name] = cand[1]
                log.info("keeping %s from an earlier run (sha256 matches)", plan.name)
    return reused


def _write_volumes(
    out_dir: Path, plans: Sequence[VolumePlan], reused: Dict[str, str], state: Dict[str, Any], mtime: int, options: BundleWriteOptions
) -> List[BundleVolume]:
    """Write every volume not kept, in order, recording each in the resume state as it is finished."""
    progress = options.progress
    volumes: List[BundleVolume] = []
    cursors: Dict[int, Cursor] = {}
    for plan in plans:
        if plan.name in reused:
            volumes.append(BundleVolume(plan.name, plan.size, reused[plan.name]))
            for pl in plan.placements:  # an item written before this volume continues after it
                cursor = cursors.get(id(pl.item))
                if cursor is not None:
                    cursor.skip(pl.length)
                    if pl.part_index == pl.part_count - 1:
                        cursor.finish()
                        del cursors[id(pl.item)]
            progress.item_done(plan.name, "kept")
            continue
        sha = _write_volume(out_dir, plan, mtime, cursors, progress, options.volume_size)
        volumes.append(BundleVolume(plan.name, plan.size, sha))
        state["volumes"][plan.name] = {"size": plan.size, "sha256": sha}
        _write_state(out_dir, state)
        progress.item_done(plan.name, "written")
    return volumes


def finish_bundle(
    out_dir: Path,
    manifest: BundleManifest,
    sign_key: Optional[Path],
    *,
    volume_size: int,
    bytes_written: int,
    skipped: int,
    reused: int,
    started: float,
) -> BundleWriteResult:
    """The last step of every bundle write: the signature, then the manifest (atomically, last); then the
    resume state, the fill journal and volumes an earlier, larger bundle left are removed."""
    raw = manifest.to_bytes()
    manifest_path = out_dir / MANIFEST_NAME
    signature_path: Optional[Path] = None
    try:
        if sign_key is not None:
            from bundler.bundle.signing import sign

            signature_path = out_dir / SIGNATURE_NAME
            atomic_write(signature_path, sign(raw, sign_key))
        atomic_write(manifest_path, raw)
    except OSError as exc:
        raise disk_error(exc, out_dir, volume_size) from None
    _clean_after(out_dir, {v.name for v in manifest.volumes})
    log.info("bundle %s written to %s: %d volumes, %d bytes", manifest.id, out_dir, len(manifest.volumes), manifest.stored_bytes)
    return BundleWriteResult(
        directory=out_dir,
        manifest_path=manifest_path,
        signature_path=signature_path,
        manifest=manifest,
        bytes_written=bytes_written,
        total_bytes=manifest.stored_bytes,
        blobs_written=len(manifest.blobs),
        blobs_skipped_by_base=skipped,
        volumes_reused=reused,
        seconds=time.monotonic() - started,
    )


def _write_state(out_dir: Path, state: Dict[str, Any]) -> None:
    try:
        atomic_write(out_dir / STATE_NAME, json.dumps(state, indent=1).encode())
    except OSError as exc:
        raise disk_error(exc, out_dir, 0) from None


def _clean_after(out_dir: Path, keep: "set[str]") -> None:
    """Remove the resume state, the fill journal and volumes an earlier, larger bundle left in the same directory."""
    for name in (STATE_NAME, JOURNAL_NAME):
        with contextlib.suppress(OSError):
            (out_dir / name).unlink()
    for p in out_dir.glob("bundle-*.tar"):
        if is_volume_name(p.name) and p.name not in keep:
            log.info("removing %s, left by an earlier bundle", p)
            with contextlib.suppress(OSError):
                p.unlink()


def _write_volume(
    out_dir: Path, plan: VolumePlan, mtime: int, cursors: Dict[int, Cursor], progress: Progress, volume_size: int
) -> str:
    """Write one volume under a temp name, hashing it on the way; fsync and rename. Returns its sha256."""
    final = out_dir / plan.name
    tmp = out_dir / f".{plan.name}.partial"
    hasher = hashlib.sha256()
    written = 0
    try:
        with open(tmp, "wb", buffering=CHUNK) as f:

            def put(data: Union[bytes, memoryview]) -> None:
                nonlocal written
                f.write(data)
                hasher.update(data)
                written += len(data)
                progress.advance(len(data))

            for pl in plan.placements:
                if written != pl.data_offset - TAR_BLOCK:  # pragma: no cover - layout bug guard
                    raise BundlerError(f"{plan.name}: member {pl.member} at {written}, planned at {pl.data_offset - TAR_BLOCK}")
                put(tar_header(pl.member, pl.length, mtime))
                cursor = cursors.get(id(pl.item))
                if cursor is None:
                    cursor = cursors[id(pl.item)] = Cursor(pl.item)
                    cursor.skip(pl.stored_offset)  # the earlier parts are in volumes kept from a previous run
                remaining = pl.length
                while remaining > 0:
                    chunk = cursor.read(min(remaining, CHUNK))
                    if not chunk:
                        raise IntegrityError(f"{pl.item.kind} {pl.item.key} ended early while writing {pl.member}", hint="the work layout changed during the write; rerun pack")
                    put(chunk)
                    remaining -= len(chunk)
                pad = pad_block(pl.length) - pl.length
                if pad:
                    put(bytes(pad))
                if pl.part_index == pl.part_count - 1:
                    cursor.finish()
                    del cursors[id(pl.item)]
            put(bytes(END_OF_ARCHIVE))
            f.flush()
            os.fsync(f.fileno())
        if written != plan.size:  # pragma: no cover - layout bug guard
            raise BundlerError(f"{plan.name}: wrote {written} bytes, planned {plan.size}")
        os.replace(tmp, final)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise disk_error(exc, out_dir, volume_size) from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(out_dir)
    return "sha256:" + hasher.hexdigest()



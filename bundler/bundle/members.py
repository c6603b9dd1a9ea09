"""Bundle layout planning: which member goes into which volume, at which offset, under which tar header.

Owns the pure arithmetic of the volume format (spec in `bundler.bundle.manifest`): items to store
(`Item`: a blob or an extra file, its encoding and stored size), cutting them into block-aligned parts
that fill each volume (`VolumeLayout`, which can grow in steps, and `assign_volumes` for a whole list at
once), the ustar header in front of every part (`tar_header`), the content fingerprint a bundle id derives
from, and the manifest built from a finished layout. Nothing here reads
or writes a volume: the writers (`bundle.writer` from a layout, `bundle.fill` straight from the sources)
and the reader (`bundle.reader`) all rely on the same offsets computed here.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union


from bundler import __version__
from bundler.oci.digest import Digest
from bundler.base.errors import BundlerError, UsageError
from bundler.oci.media import is_compressed, is_index
from bundler.bundle.manifest import (
    TAR_BLOCK,
    BaseBlob,
    BundleBlob,
    BundleFile,
    BundleImage,
    BundleManifest,
    BundleVolume,
    Part,
    check_file_name,
    volume_name,
)

log = logging.getLogger(__name__)

DEFAULT_VOLUME_SIZE = 4 * 1024**3 - 1
MIN_VOLUME_SIZE = 32 * 1024
CHUNK = 4 << 20
ZSTD_LEVEL = 3
INLINE_LIMIT = 4 << 20
"""Blobs up to this size are compressed in one shot in memory; larger ones stream."""
MIN_SPLIT = 64 * 1024
"""A blob is not started in the last few KiB of a volume; it goes to the next one."""
END_OF_ARCHIVE = 2 * TAR_BLOCK
MEMBER_MAX = ((8**11 - 1) // TAR_BLOCK) * TAR_BLOCK
"""Largest member data a ustar header can describe (11 octal digits), block-aligned."""
STATE_NAME = ".ocpb-bundle-state.json"
JOURNAL_NAME = ".ocpb-fill-journal"
"""Beside volumes being filled out of order: which items are finished (see `bundler.bundle.fill`)."""
MANIFEST_MARGIN = 64 * 1024

StoredItem = Union[BundleBlob, BundleFile]


@dataclass
class Item:
    """One blob or extra file to store, and (once decided) how."""

    kind: str  # "blob" or "file"
    key: str  # digest for blobs, name for files
    digest: Digest
    size: int
    media_type: str
    member: str  # base member name
    path: Optional[Path] = None  # layout blob
    data: Optional[bytes] = None  # extra file content
    encoding: str = "raw"
    stored_size: int = 0

    def compressible(self) -> bool:
        return self.kind == "file" or not is_compressed(self.media_type)



def member_base(digest: Digest) -> str:
    if len(digest.encoded) > 64:  # sha512: keep both ustar name fields within their limits
        return f"blobs/{digest.algorithm}/{digest.encoded[:64]}/{digest.encoded[64:]}"
    return f"blobs/{digest.algorithm}/{digest.encoded}"


def blob_role(media_type: str) -> str:
    """index, manifest, config or layer: what a blob of this media type is, for messages and ordering."""
    if is_index(media_type):
        return "index"
    if media_type.endswith("manifest.v1+json") or media_type.endswith("manifest.v2+json"):
        return "manifest"
    if "config" in media_type or media_type.endswith("container.image.v1+json"):
        return "config"
    return "layer"



def file_items(files: Mapping[str, bytes]) -> List[Item]:
    out = []
    for name in sorted(files):
        why = check_file_name(name)
        if why:
            raise UsageError(f"bundle file name {name!r} {why}")
        data = bytes(files[name])
        out.append(Item("file", name, Digest.of(data), len(data), "", f"files/{name}", data=data))
    return out


# --------------------------------------------------------------------------------------------------------
# placing members in volumes
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    item: Item
    part_index: int
    part_count: int
    member: str
    data_offset: int
    length: int
    stored_offset: int  # where this part starts in the item's stored bytes


@dataclass
class VolumePlan:
    name: str
    placements: List[Placement] = field(default_factory=list)
    size: int = 0


def pad_block(n: int) -> int:
    return (n + TAR_BLOCK - 1) // TAR_BLOCK * TAR_BLOCK


class VolumeLayout:
    """Members laid out one item after another: each volume filled, an item that does not fit cut into
    block-aligned parts. Items can be added in several steps (pack lays out the image blobs first, and the
    signatures and files once they are known); a placement, once made, never moves."""

    def __init__(self, volume_size: int) -> None:
        self.capacity = volume_size - END_OF_ARCHIVE
        self._plans: List[VolumePlan] = [VolumePlan(volume_name(1), size=END_OF_ARCHIVE)]
        self._pos = 0

    def place(self, item: Item) -> List[Tuple[VolumePlan, Placement]]:
        """Where `item`'s parts go, in order; the volumes it touches grow to hold them."""
        raw: List[Tuple[int, int, int, int]] = []  # (volume index, data_offset, length, stored_offset)
        remaining = item.stored_size
        done = 0
        while True:
            room = self.capacity - self._pos - TAR_BLOCK
            if remaining <= min(room, MEMBER_MAX) and pad_block(remaining) <= room:
                raw.append((len(self._plans) - 1, self._pos + TAR_BLOCK, remaining, done))
                self._pos += TAR_BLOCK + pad_block(remaining)
                break
            usable = min(room // TAR_BLOCK * TAR_BLOCK, MEMBER_MAX)
            if usable < MIN_SPLIT and (self._pos > 0 or usable <= 0):
                self._plans.append(VolumePlan(volume_name(len(self._plans) + 1), size=END_OF_ARCHIVE))
                self._pos = 0
                continue
            raw.append((len(self._plans) - 1, self._pos + TAR_BLOCK, usable, done))
            self._pos += TAR_BLOCK + usable
            remaining -= usable
            done += usable
        suffix = ".zst" if item.encoding == "zstd" else ""
        out: List[Tuple[VolumePlan, Placement]] = []
        for index, (volume, offset, length, stored_offset) in enumerate(raw):
            member = item.member + suffix + (f".{index + 1:03d}" if len(raw) > 1 else "")
            plan = self._plans[volume]
            pl = Placement(item, index, len(raw), member, offset, length, stored_offset)
            plan.placements.append(pl)
            plan.size = offset + pad_block(length) + END_OF_ARCHIVE
            out.append((plan, pl))
        return out

    def volumes(self) -> List[VolumePlan]:
        """The volumes laid out so far (an empty layout is one empty volume)."""
        return [p for p in self._plans if p.placements] or self._plans[:1]


def assign_volumes(items: Sequence[Item], volume_size: int) -> List[VolumePlan]:
    """Lay members out: fill each volume, cutting an item that does not fit into parts (block-aligned)."""
    layout = VolumeLayout(volume_size)
    for item in items:
        layout.place(item)
    return layout.volumes()


def tar_header(member: str, size: int, mtime: int) -> bytes:
    info = tarfile.TarInfo(member)
    info.size = size
    info.mtime = mtime
    info.mode = 0o644
    info.type = tarfile.REGTYPE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    try:
        buf = info.tobuf(format=tarfile.USTAR_FORMAT, encoding="utf-8", errors="strict")
    except ValueError as exc:
        raise UsageError(f"{member!r} cannot be a tar member name ({exc})", hint="use a shorter file name") from None
    if len(buf) != TAR_BLOCK:  # pragma: no cover - USTAR headers are one block
        raise BundlerError(f"tar header for {member} is {len(buf)} bytes")
    return buf


def check_volume_size(volume_size: int) -> None:
    if volume_size < MIN_VOLUME_SIZE:
        raise UsageError(f"volume size {volume_size} bytes is too small", hint=f"use at least {MIN_VOLUME_SIZE // 1024} KiB")


def manifest_estimate(items: int, images: int) -> int:
    return MANIFEST_MARGIN + 1024 * (items + images)


def utc_now() -> Tuple[str, int]:
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    return now.strftime("%Y-%m-%dT%H:%M:%SZ"), int(now.timestamp())


def created_mtime(created: str) -> int:
    """The tar mtime of a bundle `created` at `YYYY-MM-DDTHH:MM:SSZ` (0 for anything else). Parsed with
    `fromisoformat`, not `strptime`, whose first use costs pack ~5 ms of start-up."""
    if len(created) != 20 or not created.endswith("Z") or created[10] != "T":
        return 0
    try:
        return int(datetime.datetime.fromisoformat(created[:-1]).replace(tzinfo=datetime.timezone.utc).timestamp())
    except ValueError:
        return 0


def content_fingerprint(
    images: Sequence[BundleImage], items: Sequence[Item], skipped: Sequence[BaseBlob], volume_size: int, base_id: Optional[str], *, fmt: int = 1
) -> str:
    """The content's hash (the bundle id derives from it); `fmt` 2 for volumes filled out of order."""
    doc = {
        "format": fmt,
        "volumeSize": volume_size,
        "baseId": base_id,
        "images": [[i.source, str(i.digest), i.media_type, i.size, i.kind, i.target_repository, i.target_tag, sorted(i.recorded_annotations().items())] for i in images],
        "items": [[i.kind, i.key, str(i.digest), i.size, i.media_type, i.encoding, i.stored_size] for i in items],
        "skipped": [str(b.digest) for b in skipped],
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def build_manifest(
    bundle_id: str,
    created: str,
    base_id: Optional[str],
    images: Sequence[BundleImage],
    skipped: Sequence[BaseBlob],
    items: Sequence[Item],
    plans: Sequence[VolumePlan],
    volumes: Sequence[BundleVolume],
    volume_size: int,
) -> BundleManifest:
    parts: Dict[int, List[Part]] = {}
    for plan in plans:
        for pl in plan.placements:
            parts.setdefault(id(pl.item), []).append(Part(plan.name, pl.member, pl.data_offset, pl.length))
    blobs: List[BundleBlob] = []
    files: List[BundleFile] = []
    for item in items:
        p = tuple(parts[id(item)])
        if item.kind == "file":
            files.append(BundleFile(item.key, item.digest, item.size, item.encoding, item.stored_size, p))
        else:
            blobs.append(BundleBlob(item.digest, item.size, item.media_type, item.encoding, item.stored_size, p))
    return BundleManifest(
        id=bundle_id,
        created=created,
        tool_version=__version__,
        base_id=base_id,
        images=tuple(images),
        blobs=tuple(blobs),
        volumes=tuple(volumes),
        files=tuple(files),
        volume_size=volume_size,
        base_blobs=tuple(skipped),
    )



"""The bundle manifest: the typed, versioned, signed table of contents of a bundle.

Owns the value types (`BundleManifest`, `BundleImage`, `BundleBlob`, `BundleFile`, `BundleVolume`, `Part`)
and their one JSON form (schema: `manifests/bundle-manifest.schema.json`, `kind: ocp-bundler/bundle`,
`schemaVersion` 1 or 2: version 2 is version 1 with volumes that carry no whole-file `sha256`, written when
the volumes are filled out of order, straight from the sources; every byte of their members is still
proven by the per-blob digests and every header by the recorded parts). `to_bytes` is deterministic; `from_bytes` checks every field (types, digest
syntax, safe volume and member names, parts that add up) so the reader and verifier can rely on it, and
raises `IntegrityError` naming the bad field. The signature covers the bytes as stored; the manifest is
never re-serialised to check it.

On-disk format in short (spec: "bundle" section of the issue):

- volumes `bundle-0001.tar`, `bundle-0002.tar`, … are plain ustar archives of regular files only;
- each blob is stored as member `blobs/<alg>/<hex>` (bytes as they are) or `blobs/<alg>/<hex>.zst` (zstd);
  a blob that continues in the next volume is cut into members `<name>.001`, `<name>.002`, … whose
  concatenation is the stored blob (`cat` them, then `zstd -d` when `.zst`);
- extra files are members `files/<name>` (same encoding and splitting rules);
- every piece ("part") is recorded as volume, member name, offset of its data in the volume, length;
- `bundle-manifest.json` (this document) and `bundle-manifest.json.sig` sit beside the volumes.
"""

from __future__ import annotations

import io
import json
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from bundler.oci.digest import Digest
from bundler.base.errors import BundlerError, IntegrityError, UnsupportedError
from bundler.base.jsonlimits import loads_bounded
from bundler.base.safefile import UnsafeFileError, open_regular, read_regular
from bundler.oci.planned import KINDS, ImageFacts
from bundler.oci.reference import is_valid_repository_path, is_valid_tag

SCHEMA_VERSION = 2
"""The newest version written and read; 1 (every volume with its sha256) is still read and written."""
SCHEMA_VERSIONS = (1, 2)
KIND = "ocp-bundler/bundle"
MANIFEST_NAME = "bundle-manifest.json"
SIGNATURE_NAME = "bundle-manifest.json.sig"
ENCODINGS = ("raw", "zstd")
TAR_BLOCK = 512

_VOLUME_NAME = re.compile(r"^bundle-[0-9]{4,6}\.tar$")
_FILE_NAME = re.compile(r"^[A-Za-z0-9._+=@:,-]+(/[A-Za-z0-9._+=@:,-]+)*$")
_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
MAX_FILE_NAME = 200
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
"""Largest bundle-manifest.json read (about 200,000 blobs); a bigger one is refused before reading it."""
MAX_SIGNATURE_BYTES = 64 * 1024
MAX_SIZE = 1 << 48
"""Largest size or offset accepted in a manifest (256 TiB): anything beyond is damage or a lie."""
MAX_TEXT = 4096
"""Longest free text (source reference, annotation value) accepted in a manifest."""

_MEDIA_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$")
_FIELDS = {
    "document": ({"schemaVersion", "kind", "id", "created", "toolVersion", "baseId", "volumeSize", "images", "volumes", "files", "blobs"}, {"baseBlobs"}),
    "image": ({"source", "digest", "mediaType", "size", "kind", "targetRepository", "targetTag"}, {"annotations", "totalSize"}),
    "volume": ({"name", "size"}, {"sha256"}),  # sha256 required in schemaVersion 1 (checked by `volume`)
    "part": ({"volume", "member", "offset", "length"}, set()),
    "blob": ({"digest", "size", "mediaType", "encoding", "storedSize", "parts"}, set()),
    "file": ({"name", "digest", "size", "encoding", "storedSize", "parts"}, set()),
    "baseBlob": ({"digest", "size", "mediaType"}, set()),
}
"""Per object of the manifest: (required, optional) keys; any other key is refused (the schema's
`additionalProperties: false`). `baseBlobs`, `annotations` and `totalSize` were optional in early files."""


def read_bundle_file(path: Path, *, max_size: int) -> bytes:
    """The bytes of a small file of a bundle directory (the manifest, its signature).

    A bundle holds regular files only: a link, FIFO or device in its place, or a file over `max_size`,
    is an `IntegrityError` (exit 3) naming it, raised before anything is read. `OSError` (missing,
    unreadable) passes through for the caller to word."""
    try:
        return read_regular(path, max_size=max_size, what=path.name)
    except UnsafeFileError as exc:
        raise _unsafe(path, exc) from None


def open_volume(path: Path) -> io.FileIO:
    """Open a volume of a bundle for reading (unbuffered): a regular file, never a link, FIFO or device.

    Raises `IntegrityError` (exit 3) naming what is there instead; `OSError` as it comes."""
    try:
        return open_regular(path, what=path.name)
    except UnsafeFileError as exc:
        raise _unsafe(path, exc) from None


def _unsafe(path: Path, exc: UnsafeFileError) -> IntegrityError:
    what = exc.reason if exc.reason.startswith("larger") else f"{exc.reason}, not a regular file"
    return IntegrityError(
        f"{path.name} in {path.parent} is {what}",
        hint=f"a bundle holds regular files only: copy {path.name} from the source media",
    )


def volume_name(index: int) -> str:
    """Name of the volume numbered `index` (1-based)."""
    return f"bundle-{index:04d}.tar"


def is_volume_name(name: str) -> bool:
    return bool(_VOLUME_NAME.match(name))


def check_file_name(name: str) -> Optional[str]:
    """Why `name` cannot be an extra file's name (relative, no `..`, plain characters), or None."""
    if not name or len(name) > MAX_FILE_NAME:
        return f"must be 1 to {MAX_FILE_NAME} characters"
    if not _FILE_NAME.match(name):
        return "must be a relative path of letters, digits and ._+=@:,- separated by /"
    if any(part in (".", "..") for part in name.split("/")):
        return "must not contain . or .. components"
    return None


def unsafe_member_reason(name: str) -> Optional[str]:
    """Why a tar member name is unsafe to extract (absolute, `..`, empty), or None."""
    if not name:
        return "empty name"
    if name.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", name) or name.startswith("\\"):
        return "absolute path"
    parts = re.split(r"[\\/]+", name)
    if ".." in parts:
        return "path with .. (escapes the extraction directory)"
    if posixpath.normpath(name).startswith("../"):
        return "path escapes the extraction directory"
    return None


@dataclass(frozen=True)
class Part:
    """One stretch of a stored blob or file: the data of tar member `member` at `offset` in `volume`."""

    volume: str
    member: str
    offset: int
    length: int


@dataclass(frozen=True)
class BundleImage:
    source: str
    """Full upstream reference as resolved (tag and/or digest)."""
    digest: Digest
    """`sha256:…` of the top manifest as packed."""
    media_type: str
    size: int
    """Bytes of the top manifest."""
    kind: str
    """One of `bundler.oci.planned.KINDS`."""
    target_repository: str
    """Path on the mirror without host, e.g. `ocp4/openshift4`."""
    target_tag: str
    annotations: Mapping[str, str] = field(default_factory=dict)
    """Free-form: version, arch, component, recovered, original-digest…"""
    total_size: Optional[int] = None
    """Bytes of every distinct blob and manifest the image needs (filled in by the bundle writer)."""
    facts: ImageFacts = ImageFacts()
    """What unpack acts on (catalog, CatalogSource names …); stored among the annotations in the file."""

    def recorded_annotations(self) -> Dict[str, str]:
        """The `annotations` map of the file: the facts, then the free-form annotations."""
        return self.facts.recorded_with(self.annotations)

    @property
    def target(self) -> str:
        return f"{self.target_repository}:{self.target_tag}"


@dataclass(frozen=True)
class BundleBlob:
    """A blob (manifest, config or layer) carried in the volumes."""

    digest: Digest
    size: int
    """Size of the blob itself (what its digest covers)."""
    media_type: str
    encoding: str
    """`raw` (stored as it is) or `zstd` (stored compressed; decompress to get the blob)."""
    stored_size: int
    parts: Tuple[Part, ...]

    @property
    def name(self) -> str:
        return str(self.digest)


@dataclass(frozen=True)
class BundleFile:
    """An extra named file (release signatures, pack report…) carried in the volumes."""

    name: str
    digest: Digest
    size: int
    encoding: str
    stored_size: int
    parts: Tuple[Part, ...]


@dataclass(frozen=True)
class BundleVolume:
    name: str
    size: int
    sha256: Optional[str] = None
    """`sha256:<hex>` of the whole volume file; None in a version 2 bundle whose volumes were filled out of
    order (their blobs' digests prove their content instead)."""


@dataclass(frozen=True)
class BaseBlob:
    """A blob the images need that an incremental bundle leaves to its base bundle."""

    digest: Digest
    size: int
    media_type: str


@dataclass(frozen=True)
class BundleManifest:
    id: str
    created: str
    tool_version: str
    base_id: Optional[str]
    images: Tuple[BundleImage, ...]
    blobs: Tuple[BundleBlob, ...]
    volumes: Tuple[BundleVolume, ...]
    files: Tuple[BundleFile, ...]
    volume_size: int = 0
    base_blobs: Tuple[BaseBlob, ...] = ()

    # -- derived ------------------------------------------------------------------------------------------

    @property
    def schema_version(self) -> int:
        """1 when every volume has its sha256, else 2."""
        return 1 if all(v.sha256 is not None for v in self.volumes) else 2

    @property
    def stored_bytes(self) -> int:
        return sum(v.size for v in self.volumes)

    @property
    def blob_bytes(self) -> int:
        return sum(b.size for b in self.blobs)

    # -- JSON ----------------------------------------------------------------------------------------------

    def to_json(self) -> Dict[str, Any]:
        return {
            "schemaVersion": self.schema_version,
            "kind": KIND,
            "id": self.id,
            "created": self.created,
            "toolVersion": self.tool_version,
            "baseId": self.base_id,
            "volumeSize": self.volume_size,
            "images": [_image_json(i) for i in self.images],
            "volumes": [_volume_json(v) for v in self.volumes],
            "files": [
                {"name": f.name, "digest": str(f.digest), "size": f.size, "encoding": f.encoding, "storedSize": f.stored_size, "parts": _parts_json(f.parts)}
                for f in self.files
            ],
            "blobs": [
                {
                    "digest": str(b.digest),
                    "size": b.size,
                    "mediaType": b.media_type,
                    "encoding": b.encoding,
                    "storedSize": b.stored_size,
                    "parts": _parts_json(b.parts),
                }
                for b in self.blobs
            ],
            "baseBlobs": [{"digest": str(b.digest), "size": b.size, "mediaType": b.media_type} for b in self.base_blobs],
        }

    def to_bytes(self) -> bytes:
        return (json.dumps(self.to_json(), indent=1, ensure_ascii=False) + "\n").encode("utf-8")

    @classmethod
    def from_bytes(cls, raw: bytes, *, where: str) -> "BundleManifest":
        try:
            doc = loads_bounded(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise IntegrityError(f"{where} is not valid JSON ({exc})", hint="the bundle manifest was damaged or tampered with; copy it again") from None
        return _Reader(where).manifest(doc)


def _image_json(i: BundleImage) -> Dict[str, Any]:
    out: Dict[str, Any] = {
        "source": i.source,
        "digest": str(i.digest),
        "mediaType": i.media_type,
        "size": i.size,
        "kind": i.kind,
        "targetRepository": i.target_repository,
        "targetTag": i.target_tag,
        "annotations": i.recorded_annotations(),
    }
    if i.total_size is not None:
        out["totalSize"] = i.total_size
    return out


def _volume_json(v: BundleVolume) -> Dict[str, Any]:
    out: Dict[str, Any] = {"name": v.name, "size": v.size}
    if v.sha256 is not None:
        out["sha256"] = v.sha256
    return out


def _parts_json(parts: Sequence[Part]) -> List[Dict[str, Any]]:
    return [{"volume": p.volume, "member": p.member, "offset": p.offset, "length": p.length} for p in parts]


class _Reader:
    """Typed reading of the manifest JSON; every error names the field."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, path: str, what: str) -> BundlerError:
        return IntegrityError(
            f"{self.where}: {path} {what}", hint="the bundle manifest is damaged, tampered with, or not written by ocp-bundler"
        )

    def obj(self, v: Any, path: str, shape: Optional[str] = None) -> Dict[str, Any]:
        if not isinstance(v, dict):
            raise self.fail(path, "must be an object")
        if shape is not None:
            required, optional = _FIELDS[shape]
            missing = sorted(required - v.keys())
            if missing:
                raise self.fail(path, f"lacks {', '.join(missing)}")
            unknown = sorted(str(k)[:40] for k in v.keys() - required - optional)
            if unknown:
                raise self.fail(path, f"has unknown fields {', '.join(unknown[:5])}")
        return v

    def lst(self, v: Any, path: str) -> List[Any]:
        if not isinstance(v, list):
            raise self.fail(path, "must be a list")
        return v

    def s(self, d: Dict[str, Any], key: str, path: str, *, empty: bool = False, limit: int = MAX_TEXT) -> str:
        v = d.get(key)
        if not isinstance(v, str) or (not empty and not v):
            raise self.fail(f"{path}.{key}", "must be a non-empty string" if not empty else "must be a string")
        if len(v) > limit:
            raise self.fail(f"{path}.{key}", f"is longer than {limit} characters")
        return v

    def n(self, d: Dict[str, Any], key: str, path: str) -> int:
        v = d.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0 or v > MAX_SIZE:
            raise self.fail(f"{path}.{key}", f"must be a whole number from 0 to {MAX_SIZE}")
        return v

    def media_type(self, d: Dict[str, Any], key: str, path: str, *, empty: bool) -> str:
        v = self.s(d, key, path, empty=empty, limit=255)
        if v and not _MEDIA_TYPE.match(v):
            raise self.fail(f"{path}.{key}", f"is not a media type ({v[:80]!r})")
        return v

    def digest(self, d: Dict[str, Any], key: str, path: str) -> Digest:
        v = self.s(d, key, path)
        try:
            return Digest.parse(v)
        except BundlerError:
            raise self.fail(f"{path}.{key}", f"is not a digest ({v[:80]!r})") from None

    def manifest(self, v: Any) -> BundleManifest:
        doc = self.obj(v, "document")
        version = doc.get("schemaVersion")
        if doc.get("kind") != KIND:
            raise self.fail("kind", f"must be {KIND!r} (this is not an ocp-bundler bundle manifest)")
        exact_int = isinstance(version, int) and not isinstance(version, bool)
        if isinstance(version, int) and exact_int and version > SCHEMA_VERSION:
            raise UnsupportedError(
                f"{self.where} has schemaVersion {version}; this ocp-bundler reads versions {' and '.join(map(str, SCHEMA_VERSIONS))}",
                hint="use the ocp-bundler version that wrote the bundle (or newer)",
            )
        if not exact_int or version not in SCHEMA_VERSIONS:
            raise self.fail("schemaVersion", f"must be the number {' or '.join(map(str, SCHEMA_VERSIONS))}")
        self.obj(doc, "document", "document")
        bundle_id = self.s(doc, "id", "document")
        if not _ID.match(bundle_id):
            raise self.fail("id", "has characters outside A-Za-z0-9._:-")
        base_id = doc.get("baseId")
        if base_id is not None and (not isinstance(base_id, str) or not _ID.match(base_id)):
            raise self.fail("baseId", "must be null or a bundle id")
        volumes = tuple(self.volume(x, f"volumes[{i}]", version == 1) for i, x in enumerate(self.lst(doc.get("volumes"), "volumes")))
        names = [vol.name for vol in volumes]
        if len(set(names)) != len(names):
            raise self.fail("volumes", "lists a volume twice")
        known = {vol.name: vol.size for vol in volumes}
        blobs = tuple(self.stored_blob(x, f"blobs[{i}]", known) for i, x in enumerate(self.lst(doc.get("blobs"), "blobs")))
        if len({b.digest for b in blobs}) != len(blobs):
            raise self.fail("blobs", "lists a blob twice")
        files = tuple(self.stored_file(x, f"files[{i}]", known) for i, x in enumerate(self.lst(doc.get("files"), "files")))
        if len({f.name for f in files}) != len(files):
            raise self.fail("files", "lists a file twice")
        base_blobs = tuple(self.base_blob(x, f"baseBlobs[{i}]") for i, x in enumerate(self.lst(doc.get("baseBlobs", []), "baseBlobs")))
        images = tuple(self.image(x, f"images[{i}]") for i, x in enumerate(self.lst(doc.get("images"), "images")))
        return BundleManifest(
            id=bundle_id,
            created=self.s(doc, "created", "document", limit=64),
            tool_version=self.s(doc, "toolVersion", "document", limit=128),
            base_id=base_id,
            images=images,
            blobs=blobs,
            volumes=volumes,
            files=files,
            volume_size=self.n(doc, "volumeSize", "document"),
            base_blobs=base_blobs,
        )

    def volume(self, v: Any, path: str, hashed: bool) -> BundleVolume:
        """A volume entry; `hashed` (version 1) requires its sha256, version 2 makes it optional."""
        d = self.obj(v, path, "volume")
        name = self.s(d, "name", path)
        if not is_volume_name(name):
            raise self.fail(f"{path}.name", f"is not a volume name like bundle-0001.tar ({name[:80]!r})")
        if not hashed and d.get("sha256") is None:
            return BundleVolume(name, self.n(d, "size", path), None)
        sha = str(self.digest(d, "sha256", path))
        if not sha.startswith("sha256:"):
            raise self.fail(f"{path}.sha256", "must be a sha256 digest")
        return BundleVolume(name, self.n(d, "size", path), sha)

    def parts(self, d: Dict[str, Any], path: str, volumes: Mapping[str, int], stored_size: int) -> Tuple[Part, ...]:
        out = []
        for i, x in enumerate(self.lst(d.get("parts"), f"{path}.parts")):
            pp = f"{path}.parts[{i}]"
            p = self.obj(x, pp, "part")
            vol = self.s(p, "volume", pp)
            if vol not in volumes:
                raise self.fail(f"{pp}.volume", f"names {vol[:80]!r}, which is not in volumes")
            member = self.s(p, "member", pp)
            if unsafe_member_reason(member) or len(member) > 255:
                raise self.fail(f"{pp}.member", f"is not a safe member name ({member[:80]!r})")
            offset = self.n(p, "offset", pp)
            if offset < TAR_BLOCK or offset % TAR_BLOCK:
                raise self.fail(f"{pp}.offset", "must be a multiple of 512 after a tar header")
            length = self.n(p, "length", pp)
            if offset + length > volumes[vol]:
                raise self.fail(pp, f"ends at byte {offset + length}, beyond the end of {vol} ({volumes[vol]} bytes)")
            out.append(Part(vol, member, offset, length))
        if sum(p.length for p in out) != stored_size:
            raise self.fail(f"{path}.parts", f"add up to {sum(p.length for p in out)} bytes, but storedSize is {stored_size}")
        return tuple(out)

    def encoding(self, d: Dict[str, Any], path: str) -> str:
        enc = self.s(d, "encoding", path)
        if enc not in ENCODINGS:
            raise self.fail(f"{path}.encoding", f"must be one of {', '.join(ENCODINGS)}")
        return enc

    def stored_size(self, d: Dict[str, Any], path: str, size: int, encoding: str) -> int:
        stored = self.n(d, "storedSize", path)
        if encoding == "raw" and stored != size:
            raise self.fail(f"{path}.storedSize", f"is {stored}, but a raw-stored item's must equal its size {size}")
        return stored

    def stored_blob(self, v: Any, path: str, volumes: Mapping[str, int]) -> BundleBlob:
        d = self.obj(v, path, "blob")
        size = self.n(d, "size", path)
        encoding = self.encoding(d, path)
        stored = self.stored_size(d, path, size, encoding)
        return BundleBlob(
            digest=self.digest(d, "digest", path),
            size=size,
            media_type=self.media_type(d, "mediaType", path, empty=True),
            encoding=encoding,
            stored_size=stored,
            parts=self.parts(d, path, volumes, stored),
        )

    def stored_file(self, v: Any, path: str, volumes: Mapping[str, int]) -> BundleFile:
        d = self.obj(v, path, "file")
        name = self.s(d, "name", path)
        why = check_file_name(name)
        if why:
            raise self.fail(f"{path}.name", f"{why} ({name[:80]!r})")
        size = self.n(d, "size", path)
        encoding = self.encoding(d, path)
        stored = self.stored_size(d, path, size, encoding)
        digest = self.digest(d, "digest", path)
        if digest.algorithm != "sha256":
            raise self.fail(f"{path}.digest", "must be a sha256 digest")
        return BundleFile(
            name=name,
            digest=digest,
            size=size,
            encoding=encoding,
            stored_size=stored,
            parts=self.parts(d, path, volumes, stored),
        )

    def base_blob(self, v: Any, path: str) -> BaseBlob:
        d = self.obj(v, path, "baseBlob")
        return BaseBlob(self.digest(d, "digest", path), self.n(d, "size", path), self.media_type(d, "mediaType", path, empty=True))

    def image(self, v: Any, path: str) -> BundleImage:
        d = self.obj(v, path, "image")
        kind = self.s(d, "kind", path)
        if kind not in KINDS:
            raise self.fail(f"{path}.kind", f"must be one of {', '.join(KINDS)}")
        ann = self.obj(d.get("annotations", {}), f"{path}.annotations")
        if not all(isinstance(k, str) and isinstance(x, str) and len(k) <= 255 and len(x) <= MAX_TEXT for k, x in ann.items()):
            raise self.fail(f"{path}.annotations", f"must map names (up to 255 characters) to strings (up to {MAX_TEXT})")
        repository = self.s(d, "targetRepository", path)
        if not is_valid_repository_path(repository):
            raise self.fail(f"{path}.targetRepository", f"is not a repository path like ocp4/openshift4 ({repository[:80]!r})")
        tag = self.s(d, "targetTag", path)
        if not is_valid_tag(tag):
            raise self.fail(f"{path}.targetTag", f"is not a valid tag ({tag[:80]!r})")
        total = d.get("totalSize")
        if total is not None:
            total = self.n(d, "totalSize", path)
        facts, free = ImageFacts.split(ann)
        return BundleImage(
            source=self.s(d, "source", path),
            digest=self.digest(d, "digest", path),
            media_type=self.media_type(d, "mediaType", path, empty=False),
            size=self.n(d, "size", path),
            kind=kind,
            target_repository=repository,
            target_tag=tag,
            annotations=free,
            total_size=total,
            facts=facts,
        )

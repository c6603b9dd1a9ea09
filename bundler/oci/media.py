"""Media types (OCI image-spec and Docker distribution) and descriptors read from raw manifest bytes.

A manifest is always kept as `raw` bytes plus its media type; this module only *reads* it to find the
descriptors it points at (config, layers, child manifests). Nothing here re-serialises a manifest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple

from bundler.oci.digest import Digest
from bundler.oci.platform import Platform
from bundler.base.errors import IntegrityError, UnsupportedError
from bundler.base.jsonlimits import JsonTooDeepError, loads_bounded

#: Deepest nesting of manifest lists accepted (a list inside a list …). Real images use one or two levels.
MAX_INDEX_NESTING = 16

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
IMAGE_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
MANIFEST_TYPES = INDEX_TYPES | IMAGE_TYPES

#: Sent on every manifest GET/HEAD so registries hand out lists instead of one platform's child.
ACCEPT = ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST])

COMPRESSED_LAYER_SUFFIXES = ("gzip", "zstd", "+gzip", "+zstd")

REF_NAME = "org.opencontainers.image.ref.name"


def is_index(media_type: str) -> bool:
    return media_type in INDEX_TYPES


def is_compressed(media_type: str) -> bool:
    """Whether a blob of this media type is already compressed (so storing it again compressed gains nothing)."""
    return media_type.endswith(("gzip", "zstd")) or media_type.endswith(".gz")


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    platform: Optional[Platform] = None
    annotations: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], *, where: str = "manifest") -> "Descriptor":
        try:
            platform = None
            p = obj.get("platform")
            if isinstance(p, dict):
                platform = Platform(str(p.get("os", "")), str(p.get("architecture", "")), p.get("variant"))
            size = obj["size"]
            if not isinstance(size, int) or size < 0:
                raise ValueError("size")
            return cls(
                media_type=str(obj.get("mediaType", "")),
                digest=Digest.parse(str(obj["digest"])),
                size=size,
                platform=platform,
                annotations=dict(obj.get("annotations") or {}),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise IntegrityError(f"{where}: malformed descriptor ({exc})") from None

    def to_json(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"mediaType": self.media_type, "digest": str(self.digest), "size": self.size}
        if self.platform is not None:
            p: Dict[str, Any] = {"architecture": self.platform.architecture, "os": self.platform.os}
            if self.platform.variant:
                p["variant"] = self.platform.variant
            out["platform"] = p
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


@dataclass(frozen=True)
class FetchedManifest:
    """A manifest exactly as fetched or stored: its raw bytes (the truth), its media type and its digest."""

    raw: bytes
    media_type: str
    digest: Digest


@dataclass(frozen=True)
class ParsedManifest:
    """What a manifest points at. `children` for indexes; `config` + `layers` for images."""

    media_type: str
    config: Optional[Descriptor]
    layers: Tuple[Descriptor, ...]
    children: Tuple[Descriptor, ...]
    labels_hint: Mapping[str, str] = field(default_factory=dict)

    @property
    def blobs(self) -> Tuple[Descriptor, ...]:
        return ((self.config,) if self.config else ()) + self.layers


def detect_media_type(raw: bytes, declared: Optional[str] = None) -> str:
    """The media type of a manifest: the declared one (Content-Type, descriptor) or its `mediaType` field.

    An OCI manifest may omit `mediaType`; then its structure decides (`manifests` → index).
    """
    declared = (declared or "").split(";")[0].strip()
    if declared in MANIFEST_TYPES:
        return declared
    if declared in (DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED):
        raise UnsupportedError(
            "Docker schema 1 manifests are not supported", hint="the image must be re-pushed with schema 2 or OCI"
        )
    try:
        obj = loads_bounded(raw)
    except JsonTooDeepError as exc:
        raise IntegrityError(f"manifest JSON {exc}") from None
    except ValueError:
        raise IntegrityError("manifest is not valid JSON") from None
    if not isinstance(obj, dict):
        raise IntegrityError("manifest is not a JSON object")
    mt = obj.get("mediaType")
    if isinstance(mt, str) and mt in MANIFEST_TYPES:
        return mt
    if obj.get("schemaVersion") == 1:
        raise UnsupportedError(
            "Docker schema 1 manifests are not supported", hint="the image must be re-pushed with schema 2 or OCI"
        )
    if "manifests" in obj:
        return OCI_INDEX
    if "layers" in obj and "config" in obj:
        return OCI_MANIFEST
    raise UnsupportedError(f"unsupported manifest media type {declared or mt!r}")


def check_nesting(level: int, where: str) -> None:
    """Refuse a manifest list `level` lists deep (the top is level 1) beyond `MAX_INDEX_NESTING`."""
    if level > MAX_INDEX_NESTING:
        raise UnsupportedError(
            f"{where}: manifest lists nested deeper than {MAX_INDEX_NESTING} levels",
            hint="this is not an image an OCI runtime can use; check the source",
        )


def parse_manifest(raw: bytes, media_type: str) -> ParsedManifest:
    try:
        obj = loads_bounded(raw)
    except JsonTooDeepError as exc:
        raise IntegrityError(f"manifest JSON {exc}") from None
    except ValueError:
        raise IntegrityError("manifest is not valid JSON") from None
    if not isinstance(obj, dict):
        raise IntegrityError("manifest is not a JSON object")
    if is_index(media_type):
        children = tuple(Descriptor.from_json(m, where="manifest list") for m in obj.get("manifests") or [])
        return ParsedManifest(media_type, None, (), children)
    if media_type in IMAGE_TYPES:
        config = Descriptor.from_json(obj.get("config") or {}, where="manifest config")
        layers = tuple(Descriptor.from_json(layer, where="manifest layer") for layer in obj.get("layers") or [])
        return ParsedManifest(media_type, config, layers, ())
    raise UnsupportedError(f"unsupported manifest media type {media_type!r}")

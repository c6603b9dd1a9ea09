"""The operator-catalog model: one in-memory `DeclarativeConfig`, whatever the catalog was stored as.

Owns the model's types (packages, channels and their entries, `OperatorBundle` with its related images,
provided and required APIs), the operator-registry names (`olm.*` schemas and properties), the catalog
formats, and the two rules every reader and the selection share: a bundle's version and a channel's
head. File-based catalogs are read into it by `fbc`, sqlite ones by `sqlite`; `select` filters it,
`render` writes the selected part back out.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Dict, FrozenSet, Iterable, List, Optional, Set, Tuple

from bundler.base.errors import UsageError
from bundler.openshift.image_set import Version

log = logging.getLogger(__name__)

SCHEMA_PACKAGE = "olm.package"
SCHEMA_CHANNEL = "olm.channel"
SCHEMA_BUNDLE = "olm.bundle"
SCHEMA_DEPRECATIONS = "olm.deprecations"

PROP_PACKAGE = "olm.package"
PROP_PACKAGE_PROVIDED = "olm.package.provided"
PROP_PACKAGE_REQUIRED = "olm.package.required"
PROP_GVK = "olm.gvk"
PROP_GVK_PROVIDED = "olm.gvk.provided"
PROP_GVK_REQUIRED = "olm.gvk.required"
PROP_CHANNEL = "olm.channel"
PROP_SKIPS = "olm.skips"
PROP_SKIP_RANGE = "olm.skipRange"
PROP_BUNDLE_OBJECT = "olm.bundle.object"

INDEX_IGNORE = ".indexignore"

FORMAT_FBC = "fbc"
FORMAT_FBC_ALPHA = "fbc-alpha"
FORMAT_SQLITE = "sqlite"

GVK = Tuple[str, str, str]
"""(group, version, kind)"""

class InvalidCatalogError(UsageError):
    """A catalog whose content cannot be used (broken stream, entry without bundle, two channel heads…)."""





@dataclass(frozen=True)
class RelatedImage:
    name: str
    image: str


@dataclass(frozen=True)
class ChannelEntry:
    name: str
    replaces: Optional[str] = None
    skips: Tuple[str, ...] = ()
    skip_range: Optional[str] = None


@dataclass
class Channel:
    package: str
    name: str
    entries: Dict[str, ChannelEntry] = field(default_factory=dict)
    raw: Optional[Dict[str, Any]] = None
    """The original `olm.channel` object (modern FBC only)."""
    declared_head: Optional[str] = None
    """The head a sqlite catalog records in its `channel` table."""

    def head(self) -> str:
        """The entry no other entry of the channel replaces or skips (operator-registry `Channel.Head`)."""
        return head_of(self.entries.values(), where=f"package {self.package!r} channel {self.name!r}")


@dataclass
class Package:
    name: str
    default_channel: Optional[str]
    channels: Dict[str, Channel] = field(default_factory=dict)
    raw: Optional[Dict[str, Any]] = None


@dataclass
class OperatorBundle:
    """One operator bundle of a catalog (`olm.bundle`): its image, version, what it provides and needs."""

    package: str
    name: str
    image: str
    """The bundle image ("" when the catalog has none: sqlite catalogs built from manifests)."""
    version_text: str = ""
    related_images: Tuple[RelatedImage, ...] = ()
    provided_gvks: FrozenSet[GVK] = frozenset()
    required_gvks: FrozenSet[GVK] = frozenset()
    required_packages: Tuple[Tuple[str, str], ...] = ()
    """(package, semver range) pairs; "" is any version."""
    bundle_objects: Tuple[str, ...] = ()
    """base64 `olm.bundle.object` data (the CSV is one of them)."""
    csv_json: Optional[str] = None
    """The CSV as JSON text (sqlite `operatorbundle.csv`)."""
    raw: Optional[Dict[str, Any]] = None
    version: Optional[Version] = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.version = parse_version(self.version_text)

    def csv(self) -> Optional[Dict[str, Any]]:
        """The ClusterServiceVersion the catalog carries for this bundle, when it carries one."""
        if self.csv_json:
            try:
                obj = json.loads(self.csv_json)
            except ValueError:
                log.debug("bundle %s: csv column is not JSON", self.name)
            else:
                if isinstance(obj, dict):
                    return obj
        for data in self.bundle_objects:
            try:
                obj = json.loads(base64.b64decode(data, validate=False))
            except (ValueError, binascii.Error):
                continue
            if isinstance(obj, dict) and obj.get("kind") == "ClusterServiceVersion":
                return obj
        return None


@dataclass
class DeclarativeConfig:
    packages: Dict[str, Package] = field(default_factory=dict)
    bundles: Dict[Tuple[str, str], OperatorBundle] = field(default_factory=dict)
    """By (package, bundle name), in catalog order."""
    others: List[Dict[str, Any]] = field(default_factory=list)
    """Objects of other schemas (`olm.deprecations`, unknown ones), kept as they are."""
    source_format: str = FORMAT_FBC

    def bundle(self, package: str, name: str) -> OperatorBundle:
        return self.bundles[(package, name)]

    def channel_count(self) -> int:
        return sum(len(p.channels) for p in self.packages.values())


def parse_version(text: str) -> Optional[Version]:
    text = (text or "").strip()
    if text.startswith("v"):
        text = text[1:]
    try:
        return Version.parse(text)
    except ValueError:
        return None


def head_of(entries: Iterable[ChannelEntry], *, where: str) -> str:
    entries = list(entries)
    incoming: Set[str] = set()
    for e in entries:
        if e.replaces:
            incoming.add(e.replaces)
        incoming.update(e.skips)
    heads = [e.name for e in entries if e.name not in incoming]
    if not heads:
        raise InvalidCatalogError(f"{where}: no channel head (every entry is replaced or skipped by another)")
    if len(heads) > 1:
        raise InvalidCatalogError(f"{where}: several channel heads ({', '.join(sorted(heads))})", hint="the catalog is invalid; ask its publisher")
    return heads[0]

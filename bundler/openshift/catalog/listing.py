"""What an operator catalog offers (`ocp-bundler list operators`): packages, default channels, channel heads
and the versions in each channel, read with the catalog planner's own reader (`read_catalog_model`).

Owns `list_operators` and its result types; a catalog is named as in an image-set config (a registry
reference or `oci://DIR`).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from bundler.base.errors import ConfigError, UsageError
from bundler.layout.store import Layout
from bundler.openshift.catalog.model import DeclarativeConfig, Package
from bundler.openshift.catalog.plan import read_catalog_model
from bundler.openshift.image_set import CatalogSpec
from bundler.oci.reference import Reference
from bundler.registry.client import Registries
from bundler.transfer.copy import Copier, CopyOptions
from bundler.transfer.transports import parse_layout_source

__all__ = ["CatalogListing", "ChannelListing", "PackageListing", "catalog_spec", "list_operators"]


@dataclass(frozen=True)
class ChannelListing:
    name: str
    head: str
    head_version: str
    versions: Tuple[str, ...]
    """Bundle versions in the channel, oldest first (bundles without a semver version by name)."""

    def to_json(self) -> Dict[str, Any]:
        return {"name": self.name, "head": self.head, "headVersion": self.head_version, "versions": list(self.versions)}


@dataclass(frozen=True)
class PackageListing:
    name: str
    default_channel: Optional[str]
    channels: Tuple[ChannelListing, ...]

    def to_json(self) -> Dict[str, Any]:
        return {"name": self.name, "defaultChannel": self.default_channel, "channels": [c.to_json() for c in self.channels]}


@dataclass(frozen=True)
class CatalogListing:
    catalog: str
    digest: str
    format: str
    packages: Tuple[PackageListing, ...]

    def to_json(self) -> Dict[str, Any]:
        return {"catalog": self.catalog, "digest": self.digest, "format": self.format, "packages": [p.to_json() for p in self.packages]}


def catalog_spec(catalog: str) -> CatalogSpec:
    """The catalog as an image-set config names it: `oci://DIR` (a local OCI layout) or a registry reference."""
    if catalog.startswith("oci:"):
        try:
            where = parse_layout_source(catalog)
        except UsageError:
            raise ConfigError(f"catalog {catalog!r}: expected oci:///path/to/layout[:REF|@sha256:DIGEST]") from None
        assert where.directory is not None
        path = where.directory.expanduser().resolve()
        selector = f":{where.ref_name}" if where.ref_name else f"@{where.digest}" if where.digest else ""
        return CatalogSpec(catalog=f"oci://{path}{selector}", layout=path)
    ref = Reference.parse(catalog[len("docker://"):] if catalog.startswith("docker://") else catalog)
    return CatalogSpec(catalog=str(ref))


def list_operators(
    catalog: str, *, registries: Registries, package: Optional[str] = None, platform: str = "linux/amd64"
) -> CatalogListing:
    """Read `catalog` and list its packages (only `package` when given; ConfigError when it has none such)."""
    spec = catalog_spec(catalog)
    with tempfile.TemporaryDirectory(prefix="ocpb-list-") as tmp, Copier(CopyOptions()) as copier:
        digest, fmt, model = read_catalog_model(spec, registries=registries, layout=Layout(Path(tmp)), copier=copier, platform=platform)
    names = sorted(model.packages)
    if package is not None:
        if package not in model.packages:
            raise ConfigError(f"catalog {catalog}: no package {package!r}", hint="run without --package to list them")
        names = [package]
    return CatalogListing(spec.catalog, digest, fmt, tuple(_package(model, model.packages[n]) for n in names))


def _package(model: DeclarativeConfig, package: Package) -> PackageListing:
    channels: List[ChannelListing] = []
    for name in sorted(package.channels):
        channel = package.channels[name]
        versions = _versions(model, package.name, list(channel.entries))
        head = channel.head()
        head_bundle = model.bundles.get((package.name, head))
        channels.append(ChannelListing(name, head, head_bundle.version_text if head_bundle is not None else "", versions))
    return PackageListing(package.name, package.default_channel, tuple(channels))


def _versions(model: DeclarativeConfig, package: str, entries: List[str]) -> Tuple[str, ...]:
    known = []
    unknown = []
    for entry in entries:
        bundle = model.bundles.get((package, entry))
        if bundle is not None and bundle.version is not None:
            known.append((bundle.version, bundle.version_text))
        else:
            unknown.append(entry)
    return tuple([text for _, text in sorted(known, key=lambda item: item[0])] + sorted(unknown))

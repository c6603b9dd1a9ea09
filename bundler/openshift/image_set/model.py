"""The values an image-set config becomes: `ImageSet` and its sections, `Version`, the defaults.

Both formats (ours and oc-mirror's) build these frozen values; the planners read them. Nothing here
parses YAML or reports errors: that is `schema` and the format modules.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Tuple

from bundler.base.compat import frozen_keyword_only
from bundler.oci.platform import GO_ARCHITECTURES, MULTI, release_arch

API_VERSION = "ocp-bundler.io/v1alpha1"
KIND = "ImageSet"
OC_MIRROR_V1ALPHA2 = "mirror.openshift.io/v1alpha2"
OC_MIRROR_V2ALPHA1 = "mirror.openshift.io/v2alpha1"
OC_MIRROR_KIND = "ImageSetConfiguration"

DEFAULT_RELEASE_REPOSITORY = "ocp4/openshift4"
DEFAULT_QUAY_IMAGE = "registry.redhat.io/quay/quay-rhel8:v3.12.1"
DEFAULT_POSTGRES_IMAGE = "registry.redhat.io/rhel9/postgresql-15:latest"
DEFAULT_REDIS_IMAGE = "registry.redhat.io/rhel9/redis-7:latest"

#: Go architecture names, as oc-mirror and the release payloads use them.
ARCHITECTURES: Tuple[str, ...] = (*GO_ARCHITECTURES, MULTI)
#: Accepted spellings (Go's and the release/kernel spelling) -> the Go name.
ARCHITECTURE_ALIASES: Mapping[str, str] = {
    **{arch: arch for arch in ARCHITECTURES},
    **{release_arch(arch): arch for arch in GO_ARCHITECTURES},
}
PLATFORM_TYPES: Mapping[str, str] = {"ocp": "ocp", "okd": "okd"}
GIB = 1024**3

_VERSION_RE = re.compile(
    r"(\d+)\.(\d+)\.(\d+)"
    r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
    r"(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
)


@functools.total_ordering
@dataclass(frozen=True, eq=False)
class Version:
    """A semver-ish version (``4.8.0``, ``4.14.0-rc.1``, ``5.3.2-20``) ordered by semver precedence.

    Build metadata (``+...``) is kept but does not take part in comparisons, as in semver.
    """

    major: int
    minor: int
    patch: int
    prerelease: Tuple[str, ...] = ()
    build: str = ""

    @classmethod
    def parse(cls, text: str) -> Version:
        """Parse ``MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD]``; raise `ValueError` otherwise."""
        match = _VERSION_RE.fullmatch(text)
        if match is None:
            raise ValueError(f"not a version like 4.8.0 or 4.14.0-rc.1: {text!r}")
        major, minor, patch, prerelease, build = match.groups()
        return cls(
            int(major),
            int(minor),
            int(patch),
            tuple(prerelease.split(".")) if prerelease else (),
            build or "",
        )

    def _key(self) -> Tuple[Any, ...]:
        identifiers = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in self.prerelease)
        # A release sorts after all of its pre-releases.
        return (self.major, self.minor, self.patch, 0 if self.prerelease else 1, identifiers)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() == other._key()

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() < other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.prerelease:
            text += "-" + ".".join(self.prerelease)
        if self.build:
            text += "+" + self.build
        return text


@frozen_keyword_only
class ChannelSpec:
    """A release channel to resolve through the update graph (Cincinnati).

    Neither ``full`` nor a version bound means "the channel head only", as in oc-mirror.
    """

    name: str
    type: str = "ocp"  # "ocp" or "okd"
    min_version: Optional[str] = None
    max_version: Optional[str] = None
    shortest_path: bool = False
    full: bool = False


@frozen_keyword_only
class ReleaseSpec:
    """The OpenShift/OKD release payloads to carry."""

    images: Tuple[str, ...] = ()  # explicit release pull specs
    channels: Tuple[ChannelSpec, ...] = ()
    architectures: Tuple[str, ...] = ("amd64",)  # Go names; used to resolve channels
    graph_url: Optional[str] = None  # update-graph endpoint; None: the resolver's default
    graph_data: bool = False  # oc-mirror's `platform.graph`: the graph-data image was asked for
    signatures: bool = True  # carry the release signatures (ConfigMaps on the far side)
    repository: str = DEFAULT_RELEASE_REPOSITORY  # target repository for the payload
    kubevirt_container: bool = False  # oc-mirror's `platform.kubeVirtContainer`: the KubeVirt container disk

    def is_empty(self) -> bool:
        return not self.images and not self.channels


@frozen_keyword_only
class SamplesSpec:
    """Sample imagestream images (the ones the cluster-samples-operator imports)."""

    from_release: bool = False  # read the imagestreams from the release's samples-operator image
    directory: Optional[Path] = None  # a directory of imagestream JSON/YAML files
    images: Tuple[str, ...] = ()  # extra sample image references
    exclude: Tuple[str, ...] = ()  # imagestream names, or `name:tag`, to leave out

    def is_empty(self) -> bool:
        return not self.from_release and self.directory is None and not self.images


@frozen_keyword_only
class ChannelFilter:
    """One channel of an operator package, optionally limited to a version range."""

    name: str
    min_version: Optional[str] = None
    max_version: Optional[str] = None


@frozen_keyword_only
class PackageSpec:
    """One operator package of a catalog (oc-mirror's ``IncludePackage``)."""

    name: str
    channels: Tuple[ChannelFilter, ...] = ()
    min_version: Optional[str] = None
    max_version: Optional[str] = None
    default_channel: Optional[str] = None


@frozen_keyword_only
class CatalogSpec:
    """An operator catalog (index image) and the packages to keep from it.

    No packages: the whole catalog (heads of every channel unless ``full``), as in oc-mirror.
    ``layout`` is set for a catalog image in a local OCI layout (oc-mirror's ``oci://DIR``); ``catalog`` then
    reads ``oci://<absolute DIR>``.
    """

    catalog: str
    full: bool = False
    skip_dependencies: bool = False
    target_catalog: Optional[str] = None  # repository path in the mirror, e.g. `olm/redhat-operators`
    target_tag: Optional[str] = None
    packages: Tuple[PackageSpec, ...] = ()
    layout: Optional[Path] = None


@frozen_keyword_only
class RegistryImagesSpec:
    """The images needed to run Quay on the far side; off by default (they need Red Hat credentials)."""

    enabled: bool = False
    quay: str = DEFAULT_QUAY_IMAGE
    postgres: str = DEFAULT_POSTGRES_IMAGE
    redis: str = DEFAULT_REDIS_IMAGE

    def images(self) -> Tuple[str, ...]:
        """The references to carry: all three when enabled, none otherwise."""
        return (self.quay, self.postgres, self.redis) if self.enabled else ()


@frozen_keyword_only
class TargetSpec:
    """Hints about the mirror registry; the unpack command's flags take precedence."""

    registry: Optional[str] = None  # host[:port], used for dry runs and generated resources
    release_repository: str = DEFAULT_RELEASE_REPOSITORY
    prefix: Optional[str] = None  # repository prefix for everything that is not the release


@frozen_keyword_only
class AdditionalImage:
    """One additional image, and how it is named on the mirror (oc-mirror's `targetRepo` / `targetTag`)."""

    name: str  # the source reference
    target_repository: Optional[str] = None  # repository path on the mirror; None: the source's path
    target_tag: Optional[str] = None  # tag on the mirror; None: the source's tag (or a digest tag)
    platforms: Tuple[str, ...] = ()  # `os/architecture` (Go names); empty: whatever the image is


@frozen_keyword_only
class HelmChart:
    """One Helm chart (oc-mirror's `Chart`): from a repository (name, version) or local (name, path)."""

    name: str
    version: Optional[str] = None  # exact version or a semver constraint; None: the newest stable one
    path: Optional[Path] = None  # a local chart: a directory or a .tgz archive
    image_paths: Tuple[str, ...] = ()  # extra JSONPath-like image paths, beside the default ones
    platforms: Tuple[str, ...] = ()  # `os/architecture` (Go names) the chart's images must run on; empty: any


@frozen_keyword_only
class HelmRepository:
    """A classic (HTTP) chart repository and the charts to take from it (none listed: every chart)."""

    name: str
    url: str
    charts: Tuple[HelmChart, ...] = ()


@frozen_keyword_only
class HelmSpec:
    """oc-mirror's `mirror.helm`: charts from repositories and local charts."""

    repositories: Tuple[HelmRepository, ...] = ()
    local: Tuple[HelmChart, ...] = ()

    def is_empty(self) -> bool:
        return not self.repositories and not self.local


@frozen_keyword_only
class ImageSet:
    """A parsed, validated image-set config."""

    source_format: str = API_VERSION
    source_name: str = ""
    releases: ReleaseSpec = field(default_factory=ReleaseSpec)
    samples: SamplesSpec = field(default_factory=SamplesSpec)
    operators: Tuple[CatalogSpec, ...] = ()
    additional: Tuple[AdditionalImage, ...] = ()
    blocked_images: Tuple[str, ...] = ()  # exact references or regular expressions, never carried
    registry_images: RegistryImagesSpec = field(default_factory=RegistryImagesSpec)
    target: TargetSpec = field(default_factory=TargetSpec)
    volume_size_hint: Optional[int] = None  # bytes
    helm: HelmSpec = field(default_factory=HelmSpec)
    warnings: Tuple[str, ...] = ()

    @property
    def additional_images(self) -> Tuple[str, ...]:
        """The additional images' source references."""
        return tuple(a.name for a in self.additional)

    def is_empty(self) -> bool:
        """True when the config selects nothing at all to carry (registry images count as content)."""
        return (
            self.releases.is_empty()
            and self.samples.is_empty()
            and not self.operators
            and not self.additional_images
            and not self.registry_images.images()
            and self.helm.is_empty()
        )



"""The values of the cluster resources: what unpack hands over (mirrored images, catalogs, release
signatures, options), what comes back (result, changes), the file names and kinds, the reference
grammar the files must satisfy, and the one YAML emitter every file goes through."""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bundler.base.compat import frozen_keyword_only
from bundler.base.errors import InvalidReferenceError
from bundler.oci.reference import DIGEST, HOST, REPOSITORY, TAG

log = logging.getLogger(__name__)


IMAGE_KINDS = frozenset({"release", "release-component", "sample", "operator", "catalog", "additional", "registry", "signature", "graph", "helm-chart"})
#: A Helm chart pushed as an OCI artifact: no upstream registry to mirror; listed in mapping.txt only.
HELM_CHART_KIND = "helm-chart"
#: The update-graph data image: built by pack, no upstream to mirror; it is named by the UpdateService.
GRAPH_KIND = "graph"
RELEASE_KINDS = frozenset({"release", "release-component"})
# Kinds that are always pulled by digest in a cluster (or, for catalogs, through a CatalogSource that
# names the mirror directly): they never get tag mirrors, whatever their source reference looks like.
_DIGEST_ONLY_KINDS = RELEASE_KINDS | {"catalog", "signature"}

MIRROR_SOURCE_POLICIES = frozenset({"NeverContactSource", "AllowContactingSource"})
DEFAULT_MAX_BYTES = 250_000
CATALOG_NAMESPACE = "openshift-marketplace"
SIGNATURE_NAMESPACE = "openshift-config-managed"
SIGNATURE_LABEL = "release.openshift.io/verification-signatures"

MAPPING_FILE = "mapping.txt"
README_FILE = "README.txt"
INSTALL_CONFIG_FILE = "install-config-snippet.yaml"
INSTALL_CONFIG_LEGACY_FILE = "install-config-snippet-legacy.yaml"
SAMPLES_PATCH_FILE = "samples-operator-patch.yaml"
UPDATE_SERVICE_FILE = "updateService.yaml"
UPDATE_SERVICE_NAME = "update-service"
UPDATE_SERVICE_NAMESPACE = "openshift-update-service"
# Everything this module may write; stale files matching these (from an earlier run) are removed.
_OWNED_PATTERNS = (
    "imageDigestMirrorSet-*.yaml",
    "imageTagMirrorSet-*.yaml",
    "imageContentSourcePolicy-*.yaml",
    "catalogSource-*.yaml",
    "clusterCatalog-*.yaml",
    "release-signatures-*.yaml",
    INSTALL_CONFIG_FILE,
    INSTALL_CONFIG_LEGACY_FILE,
    SAMPLES_PATCH_FILE,
    UPDATE_SERVICE_FILE,
)

# Mirror-set files: in a cumulative run only these are ever stale (the other flavour, or surplus chunks).
_MIRROR_SET_PATTERNS = _OWNED_PATTERNS[:3]
# Earlier resources larger than this are not ours: refuse rather than read them.
_PREVIOUS_FILE_LIMIT = 64 * 1024 * 1024

# Built from the one reference grammar (the same one the IDMS/ITMS CRD patterns use): a repository with its
# host, and a registry optionally followed by a path prefix.
_REPOSITORY_RE = re.compile(rf"^{HOST}/{REPOSITORY}\Z")
_REGISTRY_RE = re.compile(rf"^{HOST}(?:/{REPOSITORY})?\Z")
_TAG_RE = re.compile(rf"^{TAG}\Z")
_DIGEST_RE = re.compile(rf"^{DIGEST}\Z")
_DNS1123_LABEL_RE = re.compile(r"^[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?$")

@frozen_keyword_only
class MirroredImage:
    """One image as it now is in the mirror.

    `source` is the upstream reference as packed (`host/path@sha256:...` or `host/path:tag`), `target` the
    reference in the mirror with its tag (`mirror:8443/ocp4/openshift4:4.8.0-x86_64-etcd`), `digest` the
    manifest digest (copies are digest-preserving, so it is the same on both sides), and `tag` the upstream
    tag the image was selected by (None when it was selected by digest). An image counts as mirrored by tag
    when `tag` is set or `source` carries no digest; release, release-component and catalog images never do.
    """

    source: str
    target: str
    kind: str
    digest: str
    tag: str | None = None


@frozen_keyword_only
class CatalogInfo:
    """A mirrored catalog (index) image; `target` is pinned by tag or digest in the mirror.

    `digest` is the catalog image's manifest digest (the same in the mirror as upstream); when it is known,
    or `target` is itself by digest, an OLM v1 `ClusterCatalog` naming the catalog by digest is written
    beside the CatalogSource.
    """

    name: str
    source: str
    target: str
    display_name: str
    digest: str | None = None


@frozen_keyword_only
class ReleaseSignature:
    """One detached release signature (`signature-<index>` upstream) for the release manifest `digest`."""

    digest: str
    index: int
    data: bytes


@frozen_keyword_only
class ResourcesOptions:
    """How to write the cluster resources.

    `registry` is the mirror actually used, `host[:port]` optionally followed by a path prefix; every
    target must live under it. `icsp=True` writes ImageContentSourcePolicy (OCP <= 4.12) instead of
    ImageDigestMirrorSet/ImageTagMirrorSet (4.13+). `max_bytes` bounds each written YAML file.
    `name_prefix` names the mirror-set objects (`<prefix>-0`, `<prefix>-1`, ...).
    `digest_mirrors_for_tagged` also puts the repositories of images mirrored by tag into the digest
    mirrors (copies are digest-preserving, so digest pulls of them work too, e.g. via image streams).
    `mirror_source_policy` (IDMS/ITMS only) sets `mirrorSourcePolicy` on every entry.
    `remove_stale` deletes files of our names left in `out_dir` by an earlier run and not written again.
    `fresh=False` (the default) merges what an earlier run left in `out_dir` into this run's resources (a
    cumulative set, see the module docstring); `fresh=True` writes only this run's content.
    """

    registry: str
    out_dir: Path
    icsp: bool = False
    max_bytes: int = DEFAULT_MAX_BYTES
    name_prefix: str = "ocp-bundler"
    catalog_publisher: str = "ocp-bundler"
    digest_mirrors_for_tagged: bool = True
    mirror_source_policy: str | None = None
    remove_stale: bool = True
    fresh: bool = False


@frozen_keyword_only
class ResourcesChanges:
    """What this run changed against the resources already in the directory.

    Mirrors are counted as (kind, source repository, mirror repository) pairs, kind being `digest`, `tag`
    or `release`; catalogs by CatalogSource name (`updated`: same name, another image).
    """

    mirrors_added: int = 0
    mirrors_unchanged: int = 0
    mirrors_removed: int = 0
    catalogs_added: tuple[str, ...] = ()
    catalogs_updated: tuple[str, ...] = ()
    catalogs_unchanged: tuple[str, ...] = ()
    catalogs_removed: tuple[str, ...] = ()
    def summary(self) -> str:
        """One line for people: `mirrors: 3 added, 28 unchanged, 0 removed; catalogs: ...`."""
        line = (
            f"mirrors: {self.mirrors_added} added, {self.mirrors_unchanged} unchanged, "
            f"{self.mirrors_removed} removed"
        )
        parts = [
            f"{len(names)} {what}"
            for what, names in (
                ("added", self.catalogs_added),
                ("updated", self.catalogs_updated),
                ("unchanged", self.catalogs_unchanged),
                ("removed", self.catalogs_removed),
            )
            if names
        ]
        return line + ("; catalogs: " + ", ".join(parts) if parts else "")


@frozen_keyword_only
class ResourcesResult:
    """What `write_cluster_resources` did: files written (sorted), stale files removed, warnings."""

    files: tuple[Path, ...]
    removed: tuple[Path, ...] = ()
    warnings: tuple[str, ...] = ()
    digest_mirror_sources: int = 0
    tag_mirror_sources: int = 0
    changes: ResourcesChanges = ResourcesChanges()


@dataclass(frozen=True)
class _Reference:
    repository: str  # host/path, normalised the docker way
    tag: str | None
    digest: str | None

    @property
    def path(self) -> str:
        """The repository without its host."""
        return self.repository.split("/", 1)[1]


@dataclass
class _Plan:
    digest_mirrors: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    tag_mirrors: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    release_mirrors: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    mapping: set[str] = field(default_factory=set)
    samples: list[tuple[_Reference, _Reference, str]] = field(default_factory=list)
    samples_carried: bool = False  # an earlier run in the directory mirrored samples
    warnings: set[str] = field(default_factory=set)
    graph_images: list[str] = field(default_factory=list)  # `<mirror repository>@<digest>` of graph-data images
    release_targets: set[str] = field(default_factory=set)  # mirror repositories holding release images



def _parse_reference(reference: str, *, what: str) -> _Reference:
    """Split `host/path[:tag][@digest]`; docker.io defaults as `docker pull` applies them."""
    name, at, digest = reference.partition("@")
    if at and not _DIGEST_RE.match(digest):
        raise InvalidReferenceError(f"{what} {reference!r} has an invalid digest")
    tag: str | None = None
    slash, colon = name.rfind("/"), name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
        if not _TAG_RE.match(tag):
            raise InvalidReferenceError(f"{what} {reference!r} has an invalid tag")
    first, sep, _ = name.partition("/")
    if not sep or not ("." in first or ":" in first or first == "localhost"):
        name = f"docker.io/{name}" if sep else f"docker.io/library/{name}"
    elif first == "index.docker.io":
        name = "docker.io/" + name.split("/", 1)[1]
    if name.startswith("docker.io/") and name.count("/") == 1:
        name = "docker.io/library/" + name.split("/", 1)[1]
    if not _REPOSITORY_RE.match(name):
        raise InvalidReferenceError(
            f"{what} {reference!r} is not a valid image reference",
            hint="expected host[:port]/path[:tag][@sha256:...] with a lower-case path",
        )
    return _Reference(repository=name, tag=tag, digest=digest or None)


def _under_registry(repository: str, registry: str) -> bool:
    return repository == registry or repository.startswith(registry + "/")


#: libyaml's emitter when PyYAML has it (same output as the pure-Python one, several times faster).
_SAFE_DUMPER: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_SAFE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _dump(obj: Any) -> bytes:
    text: str = yaml.dump(obj, Dumper=_SAFE_DUMPER, sort_keys=True, default_flow_style=False, allow_unicode=True, width=1 << 20)
    return text.encode("utf-8")

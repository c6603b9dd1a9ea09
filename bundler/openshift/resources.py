"""Cluster resources for the mirror registry actually used (PROTOCOL-NOTES §5 "Cluster resources").

Owns everything `unpack` leaves in its cluster-resources directory once the images are in the mirror:

* `imageDigestMirrorSet-N.yaml` + `imageTagMirrorSet-N.yaml` (config.openshift.io/v1, OCP 4.13+), or with
  `icsp=True` `imageContentSourcePolicy-N.yaml` (operator.openshift.io/v1alpha1, OCP 4.4-4.12), never both;
  scoped by repository exactly as `oc adm release mirror` and oc-mirror print them, deduplicated, sorted,
  and split so that no file exceeds `max_bytes`;
* `catalogSource-<name>.yaml` per mirrored catalog;
* `install-config-snippet.yaml` (`imageDigestSources`) and `install-config-snippet-legacy.yaml`
  (`imageContentSources`) for the release repositories;
* `samples-operator-patch.yaml` (only when sample images were mirrored);
* `release-signatures-<algo>-<hex>.yaml`, one ConfigMap per release digest;
* `updateService.yaml` (the OpenShift Update Service's `UpdateService`) when the update-graph data image
  was mirrored;
* `mapping.txt` (`source=target`, one line per image) and `README.txt` (what to apply on which cluster).

All files are rendered deterministically and written atomically.

Day 2 (several bundles unpacked into one mirror over time): the directory is cumulative. The resources an
earlier run left in it are read back (mirror sets, CatalogSources, install-config snippet, mapping) and
merged with this run's, so the objects keep their names (`<prefix>-0`, ...) and every later set is a
superset of the earlier one: `oc apply` of a later bundle's resources adds and updates mirrors and never
drops one a running cluster still needs. Release signature files of earlier runs stay. Nothing is removed
unless `fresh=True` (then only this run's content is written and the summary lists what was dropped).
Mirror-set files of the other flavour are always removed, so `oc apply -f <dir>` can never apply an
ImageContentSourcePolicy next to an ImageDigestMirrorSet.
"""

from __future__ import annotations

import base64
import errno
import json
import logging
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bundler.base.compat import frozen_keyword_only
from bundler.base.errors import DiskSpaceError, InvalidReferenceError, UsageError
from bundler.base.fsutil import atomic_write
from bundler.oci.reference import DIGEST, HOST, REPOSITORY, TAG

log = logging.getLogger(__name__)

__all__ = [
    "IMAGE_KINDS",
    "CatalogInfo",
    "MirroredImage",
    "ReleaseSignature",
    "ResourcesChanges",
    "ResourcesOptions",
    "ResourcesResult",
    "write_cluster_resources",
]

IMAGE_KINDS = frozenset({"release", "release-component", "sample", "operator", "catalog", "additional", "registry", "signature", "graph"})
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
    """A mirrored catalog (index) image; `target` is pinned by tag or digest in the mirror."""

    name: str
    source: str
    target: str
    display_name: str


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


def write_cluster_resources(
    images: Sequence[MirroredImage],
    catalogs: Sequence[CatalogInfo],
    signatures: Sequence[ReleaseSignature],
    options: ResourcesOptions,
) -> ResourcesResult:
    """Write every cluster resource for `images` mirrored into `options.registry` into `options.out_dir`.

    Raises `UsageError` (or a subclass) for inputs that cannot be turned into valid resources, naming the
    offending image, catalog or signature; nothing is written in that case.
    """
    registry = _check_options(options)
    plan = _plan(images, registry=registry, options=options)
    previous = _read_previous(options.out_dir, registry=registry)
    catalogs = list(catalogs)
    changes = _changes(previous, plan, catalogs, fresh=options.fresh)
    if not options.fresh:
        catalogs = _merge_previous(plan, catalogs, previous)

    documents: dict[str, bytes] = {}
    if options.icsp:
        documents.update(
            _mirror_set_files(
                file_stem="imageContentSourcePolicy",
                api_version="operator.openshift.io/v1alpha1",
                kind="ImageContentSourcePolicy",
                list_key="repositoryDigestMirrors",
                entries=_entries(plan.digest_mirrors, policy=None),
                options=options,
            )
        )
    else:
        documents.update(
            _mirror_set_files(
                file_stem="imageDigestMirrorSet",
                api_version="config.openshift.io/v1",
                kind="ImageDigestMirrorSet",
                list_key="imageDigestMirrors",
                entries=_entries(plan.digest_mirrors, policy=options.mirror_source_policy),
                options=options,
            )
        )
        documents.update(
            _mirror_set_files(
                file_stem="imageTagMirrorSet",
                api_version="config.openshift.io/v1",
                kind="ImageTagMirrorSet",
                list_key="imageTagMirrors",
                entries=_entries(plan.tag_mirrors, policy=options.mirror_source_policy),
                options=options,
            )
        )
    documents.update(_catalog_files(catalogs, registry=registry, options=options))
    documents.update(_install_config_files(plan.release_mirrors))
    if plan.samples or plan.samples_carried:
        documents[SAMPLES_PATCH_FILE] = _samples_patch(plan, registry=registry)
    documents.update(_signature_files(signatures))
    documents.update(_update_service_files(plan))
    documents[MAPPING_FILE] = "".join(f"{line}\n" for line in sorted(plan.mapping)).encode("utf-8")
    for name, data in documents.items():
        if name.endswith(".yaml") and len(data) > options.max_bytes:
            raise UsageError(
                f"{name} would be {len(data)} bytes, more than max_bytes={options.max_bytes}",
                hint="raise max_bytes",
            )
    documents[README_FILE] = _readme(documents, options=options, registry=registry)

    out_dir = options.out_dir
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in sorted(documents):
            atomic_write(out_dir / name, documents[name])
        removed = (
            _remove_stale(out_dir, keep=set(documents), patterns=_OWNED_PATTERNS if options.fresh else _MIRROR_SET_PATTERNS)
            if options.remove_stale
            else []
        )
    except OSError as error:
        raise _os_error(error, out_dir) from error

    warnings = tuple(sorted(plan.warnings))
    for warning in warnings:
        log.warning("%s", warning)
    log.info("wrote %d cluster resource files to %s", len(documents), out_dir)
    return ResourcesResult(
        files=tuple(out_dir / name for name in sorted(documents)),
        removed=tuple(removed),
        warnings=warnings,
        digest_mirror_sources=len(plan.digest_mirrors),
        tag_mirror_sources=0 if options.icsp else len(plan.tag_mirrors),
        changes=changes,
    )


# --- inputs -------------------------------------------------------------------------------------------


def _check_options(options: ResourcesOptions) -> str:
    registry = options.registry.rstrip("/")
    if "://" in registry or not _REGISTRY_RE.match(registry):
        raise UsageError(
            f"mirror registry {options.registry!r} is not host[:port][/path]",
            hint="give it without scheme, tag or digest, e.g. mirror.example.com:8443",
        )
    if options.max_bytes <= 0:
        raise UsageError(f"max_bytes must be positive, got {options.max_bytes}")
    if not _is_dns1123_subdomain(f"{options.name_prefix}-0") or len(options.name_prefix) > 200:
        raise UsageError(
            f"name prefix {options.name_prefix!r} does not make DNS-1123 object names",
            hint="use lower-case letters, digits, '-' and '.'",
        )
    if options.mirror_source_policy is not None:
        if options.mirror_source_policy not in MIRROR_SOURCE_POLICIES:
            raise UsageError(
                f"mirror source policy {options.mirror_source_policy!r} is not one of "
                f"{', '.join(sorted(MIRROR_SOURCE_POLICIES))}"
            )
        if options.icsp:
            raise UsageError(
                "mirror source policy needs ImageDigestMirrorSet/ImageTagMirrorSet (OCP 4.13+)",
                hint="drop the policy or do not ask for ImageContentSourcePolicy",
            )
    return registry


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


def _plan(images: Sequence[MirroredImage], *, registry: str, options: ResourcesOptions) -> _Plan:
    plan = _Plan()
    for image in images:
        label = f"{image.kind} image {image.source!r}"
        if image.kind not in IMAGE_KINDS:
            raise UsageError(
                f"{label}: unknown kind {image.kind!r}", hint=f"use one of {', '.join(sorted(IMAGE_KINDS))}"
            )
        if not _DIGEST_RE.match(image.digest):
            raise UsageError(f"{label}: digest {image.digest!r} is not sha256:<64 hex> or sha512:<128 hex>")
        source = _parse_reference(image.source, what=f"{image.kind} source")
        target = _parse_reference(image.target, what=f"{image.kind} target")
        if source.digest is not None and source.digest != image.digest:
            raise UsageError(f"{label}: source digest differs from the mirrored digest {image.digest}")
        if target.digest is not None and target.digest != image.digest:
            raise UsageError(f"{label}: target {image.target!r} names a digest other than {image.digest}")
        if target.tag is None and target.digest is None:
            raise UsageError(f"{label}: target {image.target!r} has neither tag nor digest")
        if not _under_registry(target.repository, registry):
            raise UsageError(
                f"{label}: target {image.target!r} is not in the mirror registry {registry}",
                hint="write the resources for the registry the images were pushed to",
            )
        if source.tag is not None and image.tag is not None and source.tag != image.tag:
            raise UsageError(f"{label}: tag {image.tag!r} differs from the source's tag {source.tag!r}")

        if image.kind == GRAPH_KIND:
            plan.graph_images.append(f"{target.repository}@{image.digest}")
            continue
        if image.kind == "release":
            plan.release_targets.add(target.repository)
        by_tag = image.kind not in _DIGEST_ONLY_KINDS and (image.tag is not None or source.digest is None)
        if not by_tag or options.digest_mirrors_for_tagged:
            plan.digest_mirrors[source.repository].add(target.repository)
        if by_tag:
            source_tag = image.tag or source.tag or "latest"
            if target.tag == source_tag:
                plan.tag_mirrors[source.repository].add(target.repository)
            else:
                plan.warnings.add(
                    f"{image.source} is mirrored by tag as {image.target}: the tags differ, so a tag mirror "
                    f"cannot redirect pulls of {source.repository}:{source_tag}"
                )
        if image.kind in RELEASE_KINDS:
            plan.release_mirrors[source.repository].add(target.repository)
        if image.kind == "sample":
            plan.samples.append((source, target, image.tag or source.tag or "latest"))
        plan.mapping.add(f"{image.source}={image.target}")
    return plan


# --- mirror sets --------------------------------------------------------------------------------------


def _entries(mirrors: dict[str, set[str]], *, policy: str | None) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    for source in sorted(mirrors):
        entry: dict[str, Any] = {"source": source, "mirrors": sorted(mirrors[source])}
        if policy is not None:
            entry["mirrorSourcePolicy"] = policy
        entries.append(entry)
    return entries


def _mirror_set_files(
    *,
    file_stem: str,
    api_version: str,
    kind: str,
    list_key: str,
    entries: list[dict[str, Any]],
    options: ResourcesOptions,
) -> dict[str, bytes]:
    """Split `entries` into objects `<prefix>-N` in files `<file_stem>-N.yaml`, each at most max_bytes."""

    def render(chunk: list[dict[str, Any]], index: int) -> bytes:
        return _dump(
            {
                "apiVersion": api_version,
                "kind": kind,
                "metadata": {"name": f"{options.name_prefix}-{index}"},
                "spec": {list_key: chunk},
            }
        )

    # Exact size of one entry inside the object: dumped as a one-item list, each line indented 2 more.
    sizes = []
    for entry in entries:
        text = _dump([entry])
        sizes.append(len(text) + 2 * text.count(b"\n"))

    files: dict[str, bytes] = {}
    start, index = 0, 0
    while start < len(entries):
        overhead = len(render(entries[start : start + 1], index)) - sizes[start]
        end, total = start + 1, overhead + sizes[start]
        while end < len(entries) and total + sizes[end] <= options.max_bytes:
            total += sizes[end]
            end += 1
        data = render(entries[start:end], index)
        while len(data) > options.max_bytes:  # the estimate is exact; this only guards against surprises
            if end - start == 1:
                raise UsageError(
                    f"the {kind} entry for {entries[start]['source']} alone is {len(data)} bytes, "
                    f"more than max_bytes={options.max_bytes}",
                    hint="raise max_bytes",
                )
            end -= 1
            data = render(entries[start:end], index)
        files[f"{file_stem}-{index}.yaml"] = data
        start, index = end, index + 1
    return files


# --- catalogs, install-config, samples, signatures ----------------------------------------------------


def _catalog_files(catalogs: Sequence[CatalogInfo], *, registry: str, options: ResourcesOptions) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for catalog in catalogs:
        if not _DNS1123_LABEL_RE.match(catalog.name):
            raise UsageError(
                f"catalog name {catalog.name!r} is not a DNS-1123 label",
                hint="use at most 63 lower-case letters, digits and '-', starting and ending alphanumeric",
            )
        target = _parse_reference(catalog.target, what=f"catalog {catalog.name} target")
        if target.tag is None and target.digest is None:
            raise UsageError(f"catalog {catalog.name}: target {catalog.target!r} has neither tag nor digest")
        if not _under_registry(target.repository, registry):
            raise UsageError(
                f"catalog {catalog.name}: target {catalog.target!r} is not in the mirror registry {registry}"
            )
        name = f"catalogSource-{catalog.name}.yaml"
        if name in files:
            raise UsageError(f"two catalogs are named {catalog.name!r}", hint="give each catalog its own name")
        files[name] = _dump(
            {
                "apiVersion": "operators.coreos.com/v1alpha1",
                "kind": "CatalogSource",
                "metadata": {"name": catalog.name, "namespace": CATALOG_NAMESPACE},
                "spec": {
                    "sourceType": "grpc",
                    "image": catalog.target,
                    "displayName": catalog.display_name,
                    "publisher": options.catalog_publisher,
                },
            }
        )
    return files


def _install_config_files(release_mirrors: dict[str, set[str]]) -> dict[str, bytes]:
    if not release_mirrors:
        return {}
    entries = _entries(release_mirrors, policy=None)
    note = (
        "# If the mirror uses a private CA, also set additionalTrustBundle; add the mirror's credentials\n"
        "# to pullSecret (ocp-bundler can do that for you).\n"
    )
    new = (
        "# Add to install-config.yaml for openshift-install 4.14 and newer (imageDigestSources).\n"
        "# Never set imageContentSources next to it.\n" + note
    ).encode("utf-8") + _dump({"imageDigestSources": entries})
    legacy = (
        "# Add to install-config.yaml for openshift-install 4.4 to 4.13 (imageContentSources).\n"
        "# Never set imageDigestSources next to it.\n" + note
    ).encode("utf-8") + _dump({"imageContentSources": entries})
    return {INSTALL_CONFIG_FILE: new, INSTALL_CONFIG_LEGACY_FILE: legacy}


def _samples_patch(plan: _Plan, *, registry: str) -> bytes:
    """The samples operator swaps only the registry host, so `<registry>/<org>/<repo>:<tag>` must hold."""
    for source, target, tag in plan.samples:
        expected = f"{registry}/{source.path}"
        if target.repository != expected or target.tag != tag:
            plan.warnings.add(
                f"sample image {source.repository}:{tag} is mirrored as {target.repository}:{target.tag}, "
                f"not {expected}:{tag}; the samples operator will not find it through samplesRegistry"
            )
    patch = {"spec": {"samplesRegistry": registry}}
    inline = json.dumps(patch, separators=(",", ":"), sort_keys=True)
    header = (
        "# Point the cluster samples operator at the mirror (only when sample images were mirrored):\n"
        f"#   oc patch configs.samples.operator.openshift.io cluster --type merge --patch '{inline}'\n"
        "# Newer oc releases also take this file: --type merge --patch-file samples-operator-patch.yaml\n"
    )
    return header.encode("utf-8") + _dump(patch)


def _update_service_files(plan: _Plan) -> dict[str, bytes]:
    """The OpenShift Update Service's `UpdateService` (updateservice.operator.openshift.io/v1), when a
    graph-data image was mirrored: the releases repository and the graph-data image by digest."""
    if not plan.graph_images:
        return {}
    if len(plan.release_targets) != 1:
        plan.warnings.add(
            f"{UPDATE_SERVICE_FILE} not written: the UpdateService needs exactly one release repository, "
            f"this bundle has {len(plan.release_targets)}; write it by hand with graphDataImage {plan.graph_images[-1]}"
        )
        return {}
    header = (
        "# For the OpenShift Update Service operator (install it from the mirrored catalog first), then point\n"
        "# the cluster at it: oc patch clusterversion version --type merge -p '{\"spec\":{\"upstream\":\"<policy engine URI>\"}}'\n"
    )
    return {
        UPDATE_SERVICE_FILE: header.encode("utf-8")
        + _dump(
            {
                "apiVersion": "updateservice.operator.openshift.io/v1",
                "kind": "UpdateService",
                "metadata": {"name": UPDATE_SERVICE_NAME, "namespace": UPDATE_SERVICE_NAMESPACE},
                "spec": {"replicas": 2, "releases": next(iter(plan.release_targets)), "graphDataImage": plan.graph_images[-1]},
            }
        )
    }


def _signature_files(signatures: Sequence[ReleaseSignature]) -> dict[str, bytes]:
    by_digest: defaultdict[str, dict[int, bytes]] = defaultdict(dict)
    for signature in signatures:
        if not _DIGEST_RE.match(signature.digest):
            raise UsageError(f"release signature digest {signature.digest!r} is not sha256:<64 hex>")
        if isinstance(signature.index, bool) or not isinstance(signature.index, int) or signature.index < 1:
            raise UsageError(f"release signature {signature.digest} has index {signature.index!r}; expected >= 1")
        if not signature.data:
            raise UsageError(f"release signature {signature.digest} #{signature.index} is empty")
        known = by_digest[signature.digest].get(signature.index)
        if known is not None and known != signature.data:
            raise UsageError(
                f"two different release signatures {signature.digest} #{signature.index}",
                hint="number each signature of a digest uniquely (signature-1, signature-2, ...)",
            )
        by_digest[signature.digest][signature.index] = signature.data

    files: dict[str, bytes] = {}
    for digest in sorted(by_digest):
        name = digest.replace(":", "-")
        files[f"release-signatures-{name}.yaml"] = _dump(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": name,
                    "namespace": SIGNATURE_NAMESPACE,
                    "labels": {SIGNATURE_LABEL: ""},
                },
                "binaryData": {
                    f"{name}-{index}": base64.b64encode(data).decode("ascii")
                    for index, data in sorted(by_digest[digest].items())
                },
            }
        )
    return files


# --- README -------------------------------------------------------------------------------------------


def _readme(documents: dict[str, bytes], *, options: ResourcesOptions, registry: str) -> bytes:
    names = sorted(documents)

    def having(prefix: str) -> list[str]:
        return [name for name in names if name.startswith(prefix)]

    lines = [
        f"Cluster resources for the mirror registry {registry}, written by ocp-bundler.",
        "Apply them with a cluster-admin login (oc login ...). Files not listed here were not needed.",
        "",
    ]
    idms, itms, icsp = (
        having("imageDigestMirrorSet-"),
        having("imageTagMirrorSet-"),
        having("imageContentSourcePolicy-"),
    )
    if idms or itms:
        lines += [
            "OpenShift 4.13 and newer: image mirror sets (digest and tag mirrors):",
            *(f"  oc apply -f {name}" for name in idms + itms),
            "  Do not also apply ImageContentSourcePolicy objects for the same repositories; if the cluster",
            "  still has some, convert or delete them first (oc adm migrate icsp, oc delete imagecontentsourcepolicy).",
            "",
        ]
    if icsp:
        lines += [
            "OpenShift 4.4 to 4.12: image content source policies (digest pulls only):",
            *(f"  oc apply -f {name}" for name in icsp),
            "  They redirect digest pulls only; images pulled by tag still go to their source registry.",
            "  For 4.13 and newer run again without the ImageContentSourcePolicy option instead.",
            "",
        ]
    if idms or itms or icsp:
        lines += [
            f"  The objects are named {options.name_prefix}-0, -1, ... and hold every mirror written into this",
            "  directory so far (each bundle unpacked here adds to them), so applying the newest set never",
            "  drops a mirror an earlier bundle needs. Nodes then roll out the new registries.conf (machine",
            "  config pools update). A set started again with --resources-fresh holds only its bundle's",
            "  mirrors: apply it only when the cluster no longer needs the others.",
            "",
        ]
    catalogs = having("catalogSource-")
    if catalogs:
        lines += [
            "OpenShift 4.4 and newer: operator catalogs (namespace openshift-marketplace):",
            "  oc patch OperatorHub cluster --type json \\",
            '    -p \'[{"op": "add", "path": "/spec/disableAllDefaultSources", "value": true}]\'',
            *(f"  oc apply -f {name}" for name in catalogs),
            "",
        ]
    signatures = having("release-signatures-")
    if signatures:
        lines += [
            "All versions: release signatures, so the cluster-version operator can verify the release:",
            *(f"  oc apply -f {name}" for name in signatures),
            "",
        ]
    if UPDATE_SERVICE_FILE in documents:
        lines += [
            "OpenShift Update Service (after installing its operator): the update graph from the mirror:",
            f"  oc apply -f {UPDATE_SERVICE_FILE}",
            "",
        ]
    if SAMPLES_PATCH_FILE in documents:
        lines += [
            "All versions: point the samples operator at the mirror (see the command inside):",
            f"  {SAMPLES_PATCH_FILE}",
            "",
        ]
    if INSTALL_CONFIG_FILE in documents:
        lines += [
            "New installations (not oc apply; paste into install-config.yaml, one of them only):",
            f"  {INSTALL_CONFIG_FILE}         openshift-install 4.14 and newer (imageDigestSources)",
            f"  {INSTALL_CONFIG_LEGACY_FILE}  openshift-install 4.4 to 4.13 (imageContentSources)",
            "",
        ]
    lines += [
        f"{MAPPING_FILE}: every mirrored image as source=target (the format of oc image mirror -f).",
        "",
    ]
    return "\n".join(lines).encode("utf-8")


# --- day 2: the resources an earlier run left in the directory ----------------------------------------


@dataclass
class _Previous:
    """What the directory already holds, read back from the files this module writes."""

    digest_mirrors: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    tag_mirrors: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    release_mirrors: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    catalogs: dict[str, CatalogInfo] = field(default_factory=dict)
    mapping: set[str] = field(default_factory=set)
    samples: bool = False


def _read_previous(out_dir: Path, *, registry: str) -> _Previous:
    """Read back the cluster resources of earlier runs in `out_dir` (nothing when it does not exist)."""
    previous = _Previous()
    if not out_dir.is_dir():
        return previous
    lists = (
        ("imageDigestMirrorSet-*.yaml", "imageDigestMirrors", previous.digest_mirrors),
        ("imageContentSourcePolicy-*.yaml", "repositoryDigestMirrors", previous.digest_mirrors),
        ("imageTagMirrorSet-*.yaml", "imageTagMirrors", previous.tag_mirrors),
    )
    for pattern, key, target in lists:
        for path in sorted(out_dir.glob(pattern)):
            for document in _load_previous(path):
                spec = document.get("spec") if isinstance(document, dict) else None
                _collect_entries(spec.get(key) if isinstance(spec, dict) else None, target, path=path)
    install_config = out_dir / INSTALL_CONFIG_FILE
    if install_config.is_file():
        for document in _load_previous(install_config):
            sources = document.get("imageDigestSources") if isinstance(document, dict) else None
            _collect_entries(sources, previous.release_mirrors, path=install_config)
    for path in sorted(out_dir.glob("catalogSource-*.yaml")):
        for document in _load_previous(path):
            catalog = _catalog_from(document)
            if catalog is None:
                raise _not_ours(path)
            previous.catalogs[catalog.name] = catalog
    mapping = out_dir / MAPPING_FILE
    if mapping.is_file():
        text = _read_bounded(mapping).decode("utf-8", "replace")
        previous.mapping.update(line for line in text.splitlines() if "=" in line)
    previous.samples = (out_dir / SAMPLES_PATCH_FILE).is_file()
    for mirrors in (previous.digest_mirrors, previous.tag_mirrors, previous.release_mirrors):
        for source, targets in mirrors.items():
            for mirror in targets:
                if not _under_registry(mirror, registry):
                    raise UsageError(
                        f"{out_dir} holds cluster resources for another mirror ({source} -> {mirror})",
                        hint="write into another --resources-dir, or start a new set there with --resources-fresh",
                    )
    for catalog in previous.catalogs.values():
        try:
            repository = _parse_reference(catalog.target, what=f"catalog {catalog.name} image").repository
        except UsageError as error:
            raise _not_ours(out_dir / f"catalogSource-{catalog.name}.yaml") from error
        if not _under_registry(repository, registry):
            raise UsageError(
                f"{out_dir} holds a CatalogSource for another mirror ({catalog.name}: {catalog.target})",
                hint="write into another --resources-dir, or start a new set there with --resources-fresh",
            )
    return previous


def _read_bounded(path: Path) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read(_PREVIOUS_FILE_LIMIT + 1)
    except OSError as error:
        raise UsageError(f"cannot read the earlier cluster resource {path}: {error.strerror or error}") from error
    if len(data) > _PREVIOUS_FILE_LIMIT:
        raise _not_ours(path)
    return data


def _load_previous(path: Path) -> list[Any]:
    try:
        return [doc for doc in yaml.load_all(_read_bounded(path), Loader=_SAFE_LOADER) if doc is not None]
    except yaml.YAMLError as error:
        raise _not_ours(path) from error


def _collect_entries(entries: Any, into: defaultdict[str, set[str]], *, path: Path) -> None:
    if not isinstance(entries, list):
        raise _not_ours(path)
    for entry in entries:
        source = entry.get("source") if isinstance(entry, dict) else None
        mirrors = entry.get("mirrors") if isinstance(entry, dict) else None
        if not isinstance(source, str) or not isinstance(mirrors, list) or not all(isinstance(m, str) for m in mirrors):
            raise _not_ours(path)
        into[source].update(mirrors)


def _catalog_from(document: Any) -> CatalogInfo | None:
    if not isinstance(document, dict) or document.get("kind") != "CatalogSource":
        return None
    metadata, spec = document.get("metadata"), document.get("spec")
    if not isinstance(metadata, dict) or not isinstance(spec, dict):
        return None
    name, image, display = metadata.get("name"), spec.get("image"), spec.get("displayName", "")
    if not isinstance(name, str) or not isinstance(image, str) or not isinstance(display, str):
        return None
    return CatalogInfo(name=name, source=image, target=image, display_name=display)


def _not_ours(path: Path) -> UsageError:
    return UsageError(
        f"{path} is not a cluster resource file as ocp-bundler writes it, so the earlier set cannot be carried on",
        hint="move it out of the directory, or start a new set with --resources-fresh",
    )


def _pairs(digest: dict[str, set[str]], tag: dict[str, set[str]], release: dict[str, set[str]]) -> set[tuple[str, str, str]]:
    return {
        (kind, source, mirror)
        for kind, mirrors in (("digest", digest), ("tag", tag), ("release", release))
        for source, targets in mirrors.items()
        for mirror in targets
    }


def _changes(previous: _Previous, plan: _Plan, catalogs: Sequence[CatalogInfo], *, fresh: bool) -> ResourcesChanges:
    old = _pairs(previous.digest_mirrors, previous.tag_mirrors, previous.release_mirrors)
    new = _pairs(plan.digest_mirrors, plan.tag_mirrors, plan.release_mirrors)
    names = {catalog.name: catalog for catalog in catalogs}
    added = tuple(sorted(n for n in names if n not in previous.catalogs))
    updated = tuple(sorted(n for n in names if n in previous.catalogs and previous.catalogs[n].target != names[n].target))
    kept = [n for n in previous.catalogs if n not in names]
    unchanged = sorted(n for n in names if n in previous.catalogs and n not in updated)
    if not fresh:
        unchanged = sorted(unchanged + kept)
    return ResourcesChanges(
        mirrors_added=len(new - old),
        mirrors_unchanged=len(old) if not fresh else len(new & old),
        mirrors_removed=len(old - new) if fresh else 0,
        catalogs_added=added,
        catalogs_updated=updated,
        catalogs_unchanged=tuple(unchanged),
        catalogs_removed=tuple(sorted(kept)) if fresh else (),
    )


def _merge_previous(plan: _Plan, catalogs: list[CatalogInfo], previous: _Previous) -> list[CatalogInfo]:
    """Fold the earlier set into this run's plan; returns every catalog (this run's win on a name)."""
    for mine, theirs in (
        (plan.digest_mirrors, previous.digest_mirrors),
        (plan.tag_mirrors, previous.tag_mirrors),
        (plan.release_mirrors, previous.release_mirrors),
    ):
        for source, targets in theirs.items():
            mine[source].update(targets)
    plan.mapping.update(previous.mapping)
    plan.samples_carried = plan.samples_carried or previous.samples
    names = {catalog.name for catalog in catalogs}
    return catalogs + [catalog for name, catalog in sorted(previous.catalogs.items()) if name not in names]


# --- writing ------------------------------------------------------------------------------------------


#: libyaml's emitter when PyYAML has it (same output as the pure-Python one, several times faster).
_SAFE_DUMPER: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_SAFE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _dump(obj: Any) -> bytes:
    text: str = yaml.dump(obj, Dumper=_SAFE_DUMPER, sort_keys=True, default_flow_style=False, allow_unicode=True, width=1 << 20)
    return text.encode("utf-8")


def _remove_stale(out_dir: Path, *, keep: set[str], patterns: Sequence[str]) -> list[Path]:
    removed: list[Path] = []
    for pattern in patterns:
        for path in sorted(out_dir.glob(pattern)):
            if path.name not in keep and path.is_file():
                path.unlink()
                removed.append(path)
                log.info("removed %s left by an earlier run", path)
    return sorted(removed)


def _os_error(error: OSError, out_dir: Path) -> UsageError:
    where = error.filename if error.filename else out_dir
    if error.errno == errno.ENOSPC:
        return DiskSpaceError(f"no space left writing cluster resources to {where}", hint="free some space")
    return UsageError(f"cannot write cluster resources to {where}: {error.strerror or error}")


def _is_dns1123_subdomain(name: str) -> bool:
    if len(name) > 253:
        return False
    return all(_DNS1123_LABEL_RE.match(part) for part in name.split("."))

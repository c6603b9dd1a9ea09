"""Cluster resources for the mirror registry actually used (PROTOCOL-NOTES §5 "Cluster resources").

Owns everything `unpack` leaves in its cluster-resources directory once the images are in the mirror:

* `imageDigestMirrorSet-N.yaml` + `imageTagMirrorSet-N.yaml` (config.openshift.io/v1, OCP 4.13+), or with
  `icsp=True` `imageContentSourcePolicy-N.yaml` (operator.openshift.io/v1alpha1, OCP 4.4-4.12), never both;
  scoped by repository exactly as `oc adm release mirror` and oc-mirror print them, deduplicated, sorted,
  and split so that no file exceeds `max_bytes`;
* `catalogSource-<name>.yaml` per mirrored catalog (OLM v0), and beside it `clusterCatalog-<name>.yaml`
  (OLM v1 `ClusterCatalog`, the catalog by digest) whenever the catalog's digest is known;
* `install-config-snippet.yaml` (`imageDigestSources`) and `install-config-snippet-legacy.yaml`
  (`imageContentSources`) for the release repositories;
* `samples-operator-patch.yaml` (only when sample images were mirrored);
* `release-signatures-<algo>-<hex>.yaml`, one ConfigMap per release digest;
* `updateService.yaml` (the OpenShift Update Service's `UpdateService`) when the update-graph data image
  was mirrored;
* `mapping.txt` (`source=target`, one line per image) and `README.txt` (what to apply on which cluster).

All files are rendered deterministically and written atomically.

Day 2 (several bundles unpacked into one mirror over time): the directory is cumulative. The resources an
earlier run left in it are read back (mirror sets, CatalogSources and ClusterCatalogs, install-config
snippet, mapping) and
merged with this run's, so the objects keep their names (`<prefix>-0`, ...) and every later set is a
superset of the earlier one: `oc apply` of a later bundle's resources adds and updates mirrors and never
drops one a running cluster still needs. Release signature files of earlier runs stay. Nothing is removed
unless `fresh=True` (then only this run's content is written and the summary lists what was dropped).
Mirror-set files of the other flavour are always removed, so `oc apply -f <dir>` can never apply an
ImageContentSourcePolicy next to an ImageDigestMirrorSet.

The package: `model` (inputs, options, results, names, grammar, the YAML emitter), `render` (each file),
`previous` (day 2: reading back and merging the earlier set); this module plans and writes.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Sequence
from pathlib import Path

from bundler.base.errors import DiskSpaceError, UsageError
from bundler.base.fsutil import atomic_write
from bundler.oci.planned import LOCAL_LAYOUT_HOST
from bundler.openshift.resources.model import (
    CatalogInfo, ResourcesChanges, GRAPH_KIND, HELM_CHART_KIND, IMAGE_KINDS, MAPPING_FILE, MIRROR_SOURCE_POLICIES,
    MirroredImage, README_FILE, RELEASE_KINDS, ReleaseSignature, ResourcesOptions, ResourcesResult,
    SAMPLES_PATCH_FILE, _DIGEST_ONLY_KINDS, _DIGEST_RE, _DNS1123_LABEL_RE, _MIRROR_SET_PATTERNS,
    _OWNED_PATTERNS, _Plan, _REGISTRY_RE, _parse_reference, _under_registry,
)
from bundler.openshift.resources.render import (
    _catalog_files, _entries, _install_config_files, _mirror_set_files, _readme, _samples_patch,
    _signature_files, _update_service_files,
)
from bundler.openshift.resources.previous import _changes, _merge_previous, _read_previous


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

    documents = _documents(plan, catalogs, signatures, registry=registry, options=options)
    removed = _write_documents(documents, options)

    warnings = tuple(sorted(plan.warnings))
    for warning in warnings:
        log.warning("%s", warning)
    log.info("wrote %d cluster resource files to %s", len(documents), options.out_dir)
    return ResourcesResult(
        files=tuple(options.out_dir / name for name in sorted(documents)),
        removed=tuple(removed),
        warnings=warnings,
        digest_mirror_sources=len(plan.digest_mirrors),
        tag_mirror_sources=0 if options.icsp else len(plan.tag_mirrors),
        changes=changes,
    )


def _documents(
    plan: _Plan, catalogs: Sequence[CatalogInfo], signatures: Sequence[ReleaseSignature], *, registry: str, options: ResourcesOptions
) -> dict[str, bytes]:
    """Every file by name, rendered; `UsageError` when a YAML file would exceed `max_bytes`."""
    documents = _mirror_set_documents(plan, options)
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
    return documents


def _mirror_set_documents(plan: _Plan, options: ResourcesOptions) -> dict[str, bytes]:
    """The ImageContentSourcePolicy files (`icsp`), else the ImageDigestMirrorSet and ImageTagMirrorSet files."""
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
    return documents


def _write_documents(documents: dict[str, bytes], options: ResourcesOptions) -> list[Path]:
    """Write every file atomically; returns the stale files removed (`remove_stale`)."""
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
    return removed


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
        if image.kind == HELM_CHART_KIND or source.repository.split("/", 1)[0] == LOCAL_LAYOUT_HOST:
            plan.mapping.add(f"{image.source}={image.target}")  # read from a local OCI layout: nothing pulls the source
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


# --- writing ------------------------------------------------------------------------------------------


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

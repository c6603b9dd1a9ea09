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
* `mapping.txt` (`source=target`, one line per image) and `README.txt` (what to apply on which cluster).

All files are rendered deterministically and written atomically. Files of these names left by an earlier
run into the same directory and not written again are removed, so `oc apply -f <dir>` can never apply an
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

log = logging.getLogger(__name__)

__all__ = [
    "IMAGE_KINDS",
    "CatalogInfo",
    "MirroredImage",
    "ReleaseSignature",
    "ResourcesOptions",
    "ResourcesResult",
    "write_cluster_resources",
]

IMAGE_KINDS = frozenset({"release", "release-component", "sample", "operator", "catalog", "additional", "registry", "signature"})
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
)

# Grammar of distribution/reference (the same one the IDMS/ITMS CRD patterns use).
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*"
_REPOSITORY_RE = re.compile(rf"^{_DOMAIN}(?:/{_PATH_COMPONENT})+$")
_REGISTRY_RE = re.compile(rf"^{_DOMAIN}(?:/{_PATH_COMPONENT})*$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST_RE = re.compile(r"^(?:sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$")
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
    `remove_stale` deletes files of our names left in `out_dir` by an earlier run.
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


@frozen_keyword_only
class ResourcesResult:
    """What `write_cluster_resources` did: files written (sorted), stale files removed, warnings."""

    files: tuple[Path, ...]
    removed: tuple[Path, ...] = ()
    warnings: tuple[str, ...] = ()
    digest_mirror_sources: int = 0
    tag_mirror_sources: int = 0


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
    warnings: set[str] = field(default_factory=set)


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
    if plan.samples:
        documents[SAMPLES_PATCH_FILE] = _samples_patch(plan, registry=registry)
    documents.update(_signature_files(signatures))
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
        removed = _remove_stale(out_dir, keep=set(documents)) if options.remove_stale else []
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
            f"  The objects are named {options.name_prefix}-0, -1, ...; if an earlier run made more of them,",
            "  delete the extra ones. Nodes then roll out the new registries.conf (machine config pools update).",
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


# --- writing ------------------------------------------------------------------------------------------


#: libyaml's emitter when PyYAML has it (same output as the pure-Python one, several times faster).
_SAFE_DUMPER: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def _dump(obj: Any) -> bytes:
    text: str = yaml.dump(obj, Dumper=_SAFE_DUMPER, sort_keys=True, default_flow_style=False, allow_unicode=True, width=1 << 20)
    return text.encode("utf-8")


def _remove_stale(out_dir: Path, *, keep: set[str]) -> list[Path]:
    removed: list[Path] = []
    for pattern in _OWNED_PATTERNS:
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

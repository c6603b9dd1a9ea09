"""Each cluster resource file rendered from the plan: mirror sets split by size, CatalogSources and
ClusterCatalogs, install-config snippets, the samples patch, the UpdateService, release signature
ConfigMaps, and the README that says what to apply where."""

from __future__ import annotations

import base64
import json
import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any


from bundler.base.errors import UsageError
from bundler.openshift.resources.model import (
    CATALOG_NAMESPACE, CatalogInfo, INSTALL_CONFIG_FILE, INSTALL_CONFIG_LEGACY_FILE, MAPPING_FILE,
    ReleaseSignature, ResourcesOptions, SAMPLES_PATCH_FILE, SIGNATURE_LABEL, SIGNATURE_NAMESPACE,
    UPDATE_SERVICE_FILE, UPDATE_SERVICE_NAME, UPDATE_SERVICE_NAMESPACE, _DIGEST_RE, _DNS1123_LABEL_RE, _Plan,
    _dump, _parse_reference, _under_registry,
)

log = logging.getLogger(__name__)


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
        digest = catalog.digest or target.digest
        if digest is not None:
            if not _DIGEST_RE.match(digest) or (target.digest is not None and target.digest != digest):
                raise UsageError(f"catalog {catalog.name}: digest {digest!r} is not the digest of {catalog.target!r}")
            files[f"clusterCatalog-{catalog.name}.yaml"] = _dump(_cluster_catalog(catalog.name, f"{target.repository}@{digest}"))
    return files


def _cluster_catalog(name: str, ref: str) -> dict[str, Any]:
    """OLM v1 (olm.operatorframework.io/v1) ClusterCatalog `name` serving the catalog image `ref` (by digest,
    so the catalog never changes under the cluster; no polling, which a digest reference forbids)."""
    return {
        "apiVersion": "olm.operatorframework.io/v1",
        "kind": "ClusterCatalog",
        "metadata": {"name": name},
        "spec": {"source": {"type": "Image", "image": {"ref": ref}}},
    }


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
    """README.txt: what to apply on which cluster version, for the files this set holds."""
    names = sorted(documents)
    lines = [
        f"Cluster resources for the mirror registry {registry}, written by ocp-bundler.",
        "Apply them with a cluster-admin login (oc login ...). Files not listed here were not needed.",
        "",
    ]
    lines += _readme_mirror_sets(names, options=options)
    lines += _readme_catalogs(names)
    lines += _readme_other_files(names, documents)
    lines += [
        f"{MAPPING_FILE}: every mirrored image as source=target (the format of oc image mirror -f).",
        "",
    ]
    return "\n".join(lines).encode("utf-8")


def _having(names: list[str], prefix: str) -> list[str]:
    return [name for name in names if name.startswith(prefix)]


def _readme_mirror_sets(names: list[str], *, options: ResourcesOptions) -> list[str]:
    """How to apply the mirror sets (or ImageContentSourcePolicies), and how the cumulative set behaves."""
    lines: list[str] = []
    idms, itms, icsp = (
        _having(names, "imageDigestMirrorSet-"),
        _having(names, "imageTagMirrorSet-"),
        _having(names, "imageContentSourcePolicy-"),
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
    return lines


def _readme_catalogs(names: list[str]) -> list[str]:
    """How to apply the CatalogSources and ClusterCatalogs."""
    lines: list[str] = []
    catalogs = _having(names, "catalogSource-")
    if catalogs:
        lines += [
            "OpenShift 4.4 and newer: operator catalogs (namespace openshift-marketplace):",
            "  oc patch OperatorHub cluster --type json \\",
            '    -p \'[{"op": "add", "path": "/spec/disableAllDefaultSources", "value": true}]\'',
            *(f"  oc apply -f {name}" for name in catalogs),
            "",
        ]
    cluster_catalogs = _having(names, "clusterCatalog-")
    if cluster_catalogs:
        lines += [
            "OpenShift 4.18 and newer with OLM v1 (operator-controller): the same catalogs by digest:",
            *(f"  oc apply -f {name}" for name in cluster_catalogs),
            "",
        ]
    return lines


def _readme_other_files(names: list[str], documents: dict[str, bytes]) -> list[str]:
    """Release signatures, the UpdateService, the samples patch, the install-config snippets."""
    lines: list[str] = []
    signatures = _having(names, "release-signatures-")
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
    return lines

"""The cluster resources unpack writes for the registry actually used: the inputs of
`bundler.openshift.resources` (mirrored images, catalogs with unique DNS-1123 names, the bundle's release
signatures) and the writing itself, with the Helm chart archives in ``helm/``; on Quay, the read-only robots' credentials beside them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Mapping, Sequence, Tuple

from bundler.base.errors import UsageError
from bundler.base.fsutil import atomic_write
from bundler.base.lock import exclusive_lock, lock_path_for
from bundler.flows.unpack.model import OpenBundle, Target
from bundler.oci.reference import Reference
from bundler.registry.auth import Credentials

if TYPE_CHECKING:
    from bundler.openshift.resources import CatalogInfo, MirroredImage, ReleaseSignature, ResourcesResult

_HELM_FILE = re.compile(r"^helm/([A-Za-z0-9][A-Za-z0-9._+-]*\.tgz)$")
_SIGNATURE_FILE = re.compile(r"^signatures/(sha256|sha512)-([0-9a-f]{64}|[0-9a-f]{128})-([1-9][0-9]*)$")


def write_resources(bundle: OpenBundle, targets: Sequence[Target], *, registry_path: str, out_dir: Path, icsp: bool, fresh: bool = False) -> "ResourcesResult":
    """Write the cluster resources into `out_dir` for images mirrored at `registry_path`."""
    from bundler.openshift.resources import ResourcesOptions, write_cluster_resources

    images, catalogs = resource_inputs(targets)
    try:
        with contextlib.suppress(OSError):
            out_dir.parent.mkdir(parents=True, exist_ok=True)
        # two unpacks at once: the resources are cumulative (read, merged, written), so one at a time
        with exclusive_lock(lock_path_for(out_dir), what=f"the resources directory {out_dir}", wait=120.0):
            result = write_cluster_resources(images, catalogs, signatures(bundle), ResourcesOptions(registry=registry_path, out_dir=out_dir, icsp=icsp, fresh=fresh))
            charts = write_helm_charts(bundle, out_dir)
            return dataclasses.replace(result, files=tuple(sorted(result.files + charts))) if charts else result
    except UsageError as exc:
        raise type(exc)(f"every image is in {registry_path}, but the cluster resources could not be written: {exc.message}", hint=exc.hint) from exc


def write_helm_charts(bundle: OpenBundle, out_dir: Path) -> Tuple[Path, ...]:
    """The chart archives the bundle carries (`helm/<name>-<version>.tgz`), written to `<out_dir>/helm/`."""
    written: List[Path] = []
    for entry in bundle.manifest.files:
        match = _HELM_FILE.match(entry.name)
        if match is None:
            continue
        path = out_dir / "helm" / match.group(1)
        atomic_write(path, bundle.read_file(entry.name))
        written.append(path)
    return tuple(written)


def write_pull_secret(path: Path, host: str, targets: Sequence[Target], readers: Mapping[str, Credentials]) -> Tuple[Path, List[str]]:
    """On Quay: the read-only robots' credentials (auth file, 0600) for the cluster's pull secret; the release's
    organisation first, so a node that reads only the `host:port` entry gets its robot. Returns the file and
    the organisations that have no read-only robot."""
    from bundler.quay.accounts import write_auth_file

    def release_first(org: str) -> Tuple[bool, str]:
        return (not any(t.org == org and t.image.kind == "release" for t in targets), org)

    orgs = sorted({t.org for t in targets}, key=release_first)
    write_auth_file(path, host, [(org, readers[org].username, readers[org].password) for org in orgs if org in readers])
    return path, [org for org in orgs if org not in readers]


def signatures(bundle: OpenBundle) -> List["ReleaseSignature"]:
    """Release signatures the bundle carries (`signatures/<alg>-<hex>-<N>`)."""
    from bundler.openshift.resources import ReleaseSignature

    out: List[ReleaseSignature] = []
    for entry in bundle.manifest.files:
        name = entry.name
        match = _SIGNATURE_FILE.match(name)
        if match is None:
            continue
        algorithm, encoded, index = match.groups()
        out.append(ReleaseSignature(digest=f"{algorithm}:{encoded}", index=int(index), data=bundle.read_file(name)))
    return out


def resource_inputs(targets: Sequence[Target]) -> Tuple[List["MirroredImage"], List["CatalogInfo"]]:
    """`MirroredImage`s for every target, `CatalogInfo`s for catalogs (DNS-1123 names, unique)."""
    from bundler.openshift.resources import CatalogInfo, MirroredImage

    images: List[MirroredImage] = []
    catalogs: List[CatalogInfo] = []
    names: Dict[str, int] = {}
    for target in targets:
        image = target.image
        images.append(MirroredImage(source=image.source, target=target.text, kind=image.kind, digest=str(target.digest), tag=Reference.parse(image.source).tag))  # the source's own tag (an imagestream tag name is not it)
        if image.kind != "catalog":
            continue
        last = target.repo.rsplit("/", 1)[-1]
        name = dns1123_label(image.facts.catalog_name or last)
        if name in names:
            name = dns1123_label(f"{name[:50]}-{target.tag}")
        while name in names:
            names[name] += 1
            name = dns1123_label(f"{name[:58]}-{names[name]}")
        names[name] = 1
        display = image.facts.display_name or f"{last}:{target.tag}"
        catalogs.append(CatalogInfo(name=name, source=image.source, target=target.text, display_name=display, digest=str(target.digest)))
    return images, catalogs


def dns1123_label(text: str) -> str:
    """A Kubernetes object name (DNS-1123 label) made from `text`."""
    label = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:63].strip("-")
    return label or "catalog"

"""The images a catalog selection needs, each pinned by digest.

Owns steps 4 and 5 of the catalog planner (`bundler.openshift.catalog.plan`): `collect_images` lists every
image the selected bundles need — the bundle image, `relatedImages`, and what the CSV names — recovering
an empty or unreadable related image (bugzilla 1821515, `value:` instead of `image:`) from the CSV in the
catalog or, failing that, from the bundle image's `manifests/*.clusterserviceversion.yaml`, and listing
anything still unreadable as unresolved (nothing is dropped silently); `resolve_digests` pins tags (manifest
HEAD, GET when HEAD gives no digest); `planned_images` turns the uses into one `PlannedImage` per image.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Set, Tuple

from bundler.base.errors import BundlerError, ImageNotFoundError, InvalidReferenceError, RegistryError
from bundler.oci.digest import Digest
from bundler.oci.planned import ImageFacts, PlannedImage, digest_tag
from bundler.oci.reference import Reference
from bundler.openshift.catalog.fbc import csv_images, parse_csv_document
from bundler.openshift.catalog.model import OperatorBundle, RelatedImage
from bundler.openshift.catalog.select import Selection
from bundler.registry.client import Registries
from bundler.transfer.image_files import open_image, read_files
from bundler.transfer.transports import registry_head, registry_source

log = logging.getLogger(__name__)

MAX_BUNDLE_MANIFEST_BYTES = 64 << 20
RESOLVE_WORKERS = 8

CsvLoader = Callable[[OperatorBundle], Optional[Mapping[str, Any]]]


@dataclass(frozen=True)
class RecoveredImage:
    package: str
    bundle: str
    image: str
    source: str
    """"catalog-csv" (the CSV the catalog carries) or "bundle-image" (the CSV in the bundle image)."""
    reason: str

    def to_json(self) -> Dict[str, str]:
        return {"package": self.package, "bundle": self.bundle, "image": self.image, "from": self.source, "reason": self.reason}


@dataclass(frozen=True)
class UnresolvedImage:
    package: str
    bundle: str
    name: str
    reference: str
    reason: str

    def to_json(self) -> Dict[str, str]:
        return {"package": self.package, "bundle": self.bundle, "name": self.name, "reference": self.reference, "reason": self.reason}


@dataclass(frozen=True)
class ImageUse:
    reference: Reference
    package: str
    bundle: str
    role: str
    """"bundle" or "related"."""
    name: str = ""
    recovered: str = ""


@dataclass
class CollectedImages:
    uses: List[ImageUse] = field(default_factory=list)
    recovered: List[RecoveredImage] = field(default_factory=list)
    unresolved: List[UnresolvedImage] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------
# Images of a selection (pure, apart from the optional bundle-image CSV loader)
# --------------------------------------------------------------------------------------------------


def _parse(text: str) -> Optional[Reference]:
    try:
        return Reference.parse(text.strip())
    except InvalidReferenceError:
        return None


def collect_images(selection: Selection, *, bundle_csv: Optional[CsvLoader] = None) -> CollectedImages:
    """Every image the selected bundles need, with recoveries and what could not be read.

    The CSV the catalog carries is always read (the `value:` bug can leave no trace in `relatedImages`:
    newer sqlite schemas delete empty rows); the bundle image is only opened (`bundle_csv`) for a bundle
    whose related images are empty or unreadable and whose catalog CSV does not account for them.
    """
    out = CollectedImages()
    for b in selection.bundles():
        _collect_bundle(b, out, bundle_csv)
    for u in out.unresolved:
        log.warning("catalog bundle %s (%s): image %r (%s) cannot be carried: %s", u.bundle, u.package, u.reference, u.name or "no name", u.reason)
    return out


def _collect_bundle(b: OperatorBundle, out: CollectedImages, bundle_csv: Optional[CsvLoader]) -> None:
    known: Set[str] = set()

    def add(ref: Reference, role: str, name: str, recovered: str = "") -> bool:
        key = str(ref)
        if key in known:
            return False
        known.add(key)
        out.uses.append(ImageUse(ref, b.package, b.name, role, name, recovered))
        return True

    if b.image:
        ref = _parse(b.image)
        if ref is None:
            out.unresolved.append(UnresolvedImage(b.package, b.name, "(bundle image)", b.image, "not a readable image reference"))
        else:
            add(ref, "bundle", "")
    bad: List[RelatedImage] = []
    for ri in b.related_images:
        ref = _parse(ri.image) if ri.image else None
        if ref is None:
            bad.append(ri)
        else:
            add(ref, "related", ri.name)

    def absorb(csv: Optional[Mapping[str, Any]], source: str) -> Optional[Set[str]]:
        if csv is None:
            return None
        names: Set[str] = set()
        for ri in csv_images(csv):
            ref = _parse(ri.image)
            if ref is None:
                out.unresolved.append(UnresolvedImage(b.package, b.name, ri.name, ri.image, f"the CSV ({source}) names an unreadable image reference"))
                continue
            names.add(ri.name)
            if add(ref, "related", ri.name, source):
                why = "related image entry is empty or unreadable (bugzilla 1821515)" if bad else "named by the CSV but missing from the catalog's relatedImages"
                out.recovered.append(RecoveredImage(b.package, b.name, str(ref), source, why))
        return names

    def pending(names: Optional[Set[str]], remaining: List[RelatedImage]) -> List[RelatedImage]:
        if names is None:
            return remaining
        return [ri for ri in remaining if ri.name and ri.name not in names]

    left = pending(absorb(b.csv(), "catalog-csv"), bad)
    if left and bundle_csv is not None and b.image and _parse(b.image) is not None:
        try:
            left = pending(absorb(bundle_csv(b), "bundle-image"), left)
        except BundlerError as exc:
            for ri in left:
                out.unresolved.append(UnresolvedImage(b.package, b.name, ri.name, ri.image, f"empty or unreadable, and the bundle image's CSV could not be read: {exc}"))
            left = []
    for ri in left:
        out.unresolved.append(UnresolvedImage(b.package, b.name, ri.name, ri.image, "empty or unreadable, and no CSV names an image for it"))


# --------------------------------------------------------------------------------------------------
# Registry work
# --------------------------------------------------------------------------------------------------


def bundle_image_csv(registries: Registries, platform: str) -> CsvLoader:
    def load(bundle: OperatorBundle) -> Optional[Mapping[str, Any]]:
        ref = Reference.parse(bundle.image)
        src = registry_source(registries, ref)
        image = open_image(src, platform=platform)
        files = read_files(
            image,
            lambda p: p.startswith("manifests/") and p.endswith((".yaml", ".yml", ".json")),
            max_bytes=MAX_BUNDLE_MANIFEST_BYTES,
        )
        for name in sorted(files, key=lambda n: (".clusterserviceversion." not in n, n)):
            csv = parse_csv_document(name, files[name])
            if csv is not None:
                log.info("bundle %s: read the CSV from %s in %s", bundle.name, name, bundle.image)
                return csv
        return None

    return load


def resolve_digests(refs: List[Reference], registries: Registries, *, workers: int = RESOLVE_WORKERS) -> Dict[str, Digest]:
    """Digest of every tag reference (manifest HEAD with the full Accept header; GET when HEAD names none)."""

    def one(ref: Reference) -> Tuple[str, Optional[Digest], Optional[BundlerError]]:
        try:
            head = registry_head(registries, ref)
            if head is None:
                raise ImageNotFoundError(f"image {ref} not found")
            digest = head.digest or registry_source(registries, ref).resolve().digest
            return str(ref), digest, None
        except BundlerError as exc:
            return str(ref), None, exc

    out: Dict[str, Digest] = {}
    failures: List[Tuple[str, BundlerError]] = []
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="catalog-resolve") as pool:
        for key, digest, exc in pool.map(one, refs):
            if digest is not None:
                out[key] = digest
            else:
                assert exc is not None
                failures.append((key, exc))
    if failures:
        listing = "; ".join(f"{k} ({e})" for k, e in failures[:10]) + (f"; … {len(failures)} in all" if len(failures) > 10 else "")
        if all(isinstance(e, ImageNotFoundError) for _, e in failures):
            raise ImageNotFoundError(
                f"{len(failures)} image(s) named by the catalog do not exist: {listing}",
                hint="the catalog references images its publisher removed; narrow the selection or ask the publisher",
            )
        first = next(e for _, e in failures if not isinstance(e, ImageNotFoundError))
        if isinstance(first, RegistryError):
            raise RegistryError(
                f"cannot resolve {len(failures)} image tag(s) named by the catalog: {listing}",
                status=first.status,
                codes=first.codes,
                url=first.url,
                temporary=first.temporary,
                hint=first.hint,
            )
        raise first
    return out


def planned_images(uses: List[ImageUse], digests: Mapping[str, Digest], catalog: str) -> List[PlannedImage]:
    grouped: Dict[Tuple[str, str], List[ImageUse]] = {}
    pinned: Dict[Tuple[str, str], Tuple[Reference, Digest]] = {}
    for u in uses:
        ref = u.reference
        digest = ref.digest if ref.digest is not None else digests[str(ref)]
        tag = ref.tag or digest_tag(str(digest))
        key = (f"{ref.name}@{digest}", tag)
        grouped.setdefault(key, []).append(u)
        pinned[key] = (ref, digest)
    out = []
    for key, us in grouped.items():
        ref, digest = pinned[key]
        first = us[0]
        ann = {"package": first.package, "bundle": first.bundle, "role": first.role, "uses": str(len(us))}
        if ref.tag and ref.digest is None:
            ann["resolved-from"] = str(ref)
        rec = next((x.recovered for x in us if x.recovered), "")
        if rec and all(x.recovered for x in us):
            ann["recovered"] = rec
        out.append(
            PlannedImage(
                source=key[0],
                kind="operator",
                target_repository=ref.repository,
                target_tag=key[1],
                digest=str(digest),
                annotations=ann,
                facts=ImageFacts(catalog=catalog),
            )
        )
    return out

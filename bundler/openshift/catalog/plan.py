"""Operator catalogs: one image-set catalog entry → the index image, bundles and related images to carry.

Owns the catalog planner (`plan_catalog`, PROTOCOL-NOTES §5 "Catalogs" and "The `value:` bug"):

1. resolve the index image and copy it digest-exact into the work layout (pack would copy it anyway; the
   plan reads the catalog from there, so nothing is downloaded twice);
2. recognise the catalog by its labels — `operators.operatorframework.io.index.configs.v1` (file-based
   catalog directory) or `…index.database.v1` (sqlite) — and read it into one model
   (`fbc.load_fbc`, `sqlite.load_sqlite`);
3. `select` what the config asks for (heads only, `full`, packages / channels / version ranges,
   `defaultChannel`, dependencies) — unknown names are `ConfigError`s with close matches;
4. collect every image the selected bundles need: the bundle image, `relatedImages`, and what the CSV names
   (`collect_images`, in `bundler.openshift.catalog.images` with step 5). An empty or unreadable related image (bugzilla 1821515, `value:` instead of
   `image:`) is recovered from the CSV in the catalog (`olm.bundle.object`, sqlite `operatorbundle.csv`) or,
   failing that, from the bundle image's `manifests/*.clusterserviceversion.yaml`; each recovery is listed
   in the report, and anything still unreadable is listed as unresolved — nothing is dropped silently;
5. pin every image by digest (tags resolved with a manifest HEAD, GET when HEAD gives no digest);
6. the catalog image: copied digest-exact when unfiltered (`full`, or no packages), else a pruned image
   built in the layout (`build`) whose `/configs` (or `index.db`) holds exactly the selection.

A catalog in a local OCI layout (oc-mirror's `oci://DIR`, `CatalogSpec.layout`: an opm-built or locally
filtered catalog) is copied from there into the work layout instead, and carried from the work layout like
a pruned catalog; its bundles and related images come from registries as for any catalog. Its target
repository is the layout directory's last component (made a valid repository path component), its tag
`targetTag` or `digest_tag(digest)`, and its `source` names the reserved host `LOCAL_LAYOUT_HOST`.

Kinds: `operator` for bundles and related images (target repository = source path without host,
tag = the source tag, or `digest_tag(digest)` for digest-only references), `catalog` for the index image.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from bundler.openshift.catalog.build import build_pruned_image
from bundler.openshift.catalog.fbc import load_fbc
from bundler.openshift.catalog.images import (
    CollectedImages,
    ImageUse,
    RecoveredImage,
    UnresolvedImage,
    bundle_image_csv,
    collect_images,
    planned_images,
    resolve_digests,
)
from bundler.openshift.catalog.model import (
    FORMAT_SQLITE,
    DeclarativeConfig,
    InvalidCatalogError,
)
from bundler.openshift.catalog.render import render_fbc, render_fbc_files
from bundler.openshift.catalog.select import Selection, select
from bundler.openshift.catalog.sqlite import load_sqlite, prune_sqlite
from bundler.transfer.copy import Copier
from bundler.base.errors import UsageError
from bundler.transfer.image_files import ImageRef, extract_file, normalise, open_image, read_files
from bundler.openshift.image_set import CatalogSpec
from bundler.layout.store import Layout
from bundler.oci.graph import graph_sizes
from bundler.oci.media import Descriptor
from bundler.oci.planned import LOCAL_LAYOUT_HOST, ImageFacts, PlannedImage, digest_tag, local_repository
from bundler.oci.reference import Reference
from bundler.registry.client import FetchedManifest, Registries
from bundler.transfer.transports import LayoutImage, parse_layout_source, registry_source, select_layout_image

__all__ = [
    "CatalogPlan",
    "CatalogReport",
    "CollectedImages",
    "DeclarativeConfig",
    "ImageUse",
    "InvalidCatalogError",
    "RecoveredImage",
    "Selection",
    "UnresolvedImage",
    "collect_images",
    "load_fbc",
    "load_sqlite",
    "plan_catalog",
    "read_catalog_model",
    "render_fbc",
    "select",
]

log = logging.getLogger(__name__)

LABEL_FBC = "operators.operatorframework.io.index.configs.v1"
LABEL_SQLITE = "operators.operatorframework.io.index.database.v1"
PRUNED_REF_PREFIX = "ocpb-pruned/"
"""Layout ref names of pruned catalogs (never a pullable reference, so never confused with a copied image)."""
LOCAL_REF_PREFIX = "ocpb-oci/"
"""Layout ref names of catalogs copied in from a local OCI layout (likewise never a pullable reference)."""

MAX_CATALOG_BYTES = 4 << 30


# --------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------


@dataclass
class CatalogReport:
    catalog: str
    digest: str
    format: str
    platform: str
    mode: str
    """"heads-only", "full" or "filtered"."""
    target: str
    pruned: bool
    pruned_digest: Optional[str] = None
    packages: int = 0
    channels: int = 0
    bundles: int = 0
    images: int = 0
    bytes: Optional[int] = None
    """Bytes of the operator images; None until pack has measured them."""
    catalog_bytes: Optional[int] = None
    """Bytes of a pruned catalog image built in the layout (all its blobs)."""
    catalog_bundles: int = 0
    """Bundles in the whole catalog (what an unpruned catalog still offers)."""
    selection: Dict[str, Any] = field(default_factory=dict)
    dependencies: List[Tuple[str, str]] = field(default_factory=list)
    recovered: List[RecoveredImage] = field(default_factory=list)
    unresolved: List[UnresolvedImage] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    def to_json(self) -> Dict[str, Any]:
        return {
            "catalog": self.catalog,
            "digest": self.digest,
            "format": self.format,
            "platform": self.platform,
            "mode": self.mode,
            "target": self.target,
            "pruned": self.pruned,
            "prunedDigest": self.pruned_digest,
            "packages": self.packages,
            "channels": self.channels,
            "bundles": self.bundles,
            "images": self.images,
            "bytes": self.bytes,
            "catalogBytes": self.catalog_bytes,
            "catalogBundles": self.catalog_bundles,
            "selection": self.selection,
            "dependencies": [{"package": p, "bundle": b} for p, b in self.dependencies],
            "recovered": [r.to_json() for r in self.recovered],
            "unresolved": [u.to_json() for u in self.unresolved],
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class CatalogPlan:
    catalog_image: PlannedImage
    images: Tuple[PlannedImage, ...]
    report: CatalogReport


# --------------------------------------------------------------------------------------------------
# Reading the catalog out of the index image
# --------------------------------------------------------------------------------------------------


@dataclass
class _Content:
    model: DeclarativeConfig
    format: str
    root: str
    """FBC directory (`configs`) or database path (`database/index.db`), normalised."""
    db_file: Optional[Path] = None


def _read_catalog(image: ImageRef, workdir: Path, where: str) -> _Content:
    labels = image.labels
    if labels.get(LABEL_FBC):
        root = normalise(labels[LABEL_FBC]).rstrip("/")
        prefix = root + "/" if root else ""
        files = read_files(image, lambda p: p.startswith(prefix), max_bytes=MAX_CATALOG_BYTES)
        if not files:
            raise InvalidCatalogError(f"{where}: the label {LABEL_FBC} names /{root}, but the image has no files there")
        rel = {p[len(prefix) :]: data for p, data in files.items()}
        return _Content(load_fbc(rel), "fbc", root)
    if labels.get(LABEL_SQLITE):
        db = normalise(labels[LABEL_SQLITE])
        dest = workdir / "index.db"
        with open(dest, "wb") as f:
            member = extract_file(image, db, f)
        if member is None:
            raise InvalidCatalogError(f"{where}: the label {LABEL_SQLITE} names /{db}, but the image has no such file")
        return _Content(load_sqlite(dest), FORMAT_SQLITE, db, dest)
    raise UsageError(
        f"{where} is not an operator catalog: it has neither the {LABEL_FBC} nor the {LABEL_SQLITE} label",
        hint="name an index image (e.g. registry.redhat.io/redhat/redhat-operator-index:v4.14) in operators[].catalog",
    )


def _layout_bytes(layout: Layout, top: Descriptor) -> int:
    """Bytes of every manifest and blob of an image in the layout, each counted once."""
    source = LayoutImage(layout, None)
    return sum(graph_sizes(source.fetch_manifest(top), source.fetch_manifest, description=f"image {top.digest} in the work layout").values())


# --------------------------------------------------------------------------------------------------
# The planner
# --------------------------------------------------------------------------------------------------


def plan_catalog(
    spec: CatalogSpec,
    *,
    registries: Registries,
    layout: Layout,
    copier: Copier,
    platform: str = "linux/amd64",
) -> CatalogPlan:
    """Plan one catalog entry of an image-set config (see the module docstring)."""
    ref, top, image, copied_ref = _copy_catalog_image(spec, registries=registries, layout=layout, copier=copier, platform=platform)
    with tempfile.TemporaryDirectory(prefix="ocpb-catalog-") as tmp:
        workdir = Path(tmp)
        content = _read_catalog(image, workdir, spec.catalog)
        selection = select(content.model, spec)
        collected = collect_images(selection, bundle_csv=bundle_image_csv(registries, platform))
        tags = {str(u.reference): u.reference for u in collected.uses if u.reference.digest is None}
        digests = resolve_digests(list(tags.values()), registries) if tags else {}
        images = planned_images(collected.uses, digests, spec.catalog)
        report = _catalog_report(spec, top, content, selection, collected, images, platform)
        if not selection.pruned:
            catalog_image = _carried_unchanged(spec, ref, top, content, report, layout_ref=copied_ref)
        else:
            catalog_image = _pruned_catalog(spec, ref, top, content, selection, report, layout=layout, workdir=workdir)
        report.target = f"{catalog_image.target_repository}:{catalog_image.target_tag}"
    log.info(
        "catalog %s: %d packages, %d channels, %d bundles, %d images%s",
        spec.catalog, report.packages, report.channels, report.bundles, report.images, f", {len(report.recovered)} recovered" if report.recovered else "",
    )
    return CatalogPlan(catalog_image=catalog_image, images=tuple(images), report=report)


def _copy_catalog_image(
    spec: CatalogSpec, *, registries: Registries, layout: Layout, copier: Copier, platform: str
) -> Tuple[Reference, FetchedManifest, ImageRef, Optional[str]]:
    """Resolve the index image and copy it digest-exact into the work layout, where the plan reads it.

    Returns the reference it is planned as, its manifest, the image, and for a catalog from a local OCI
    layout the ref name it now has in the work layout (None for a registry catalog)."""
    if spec.layout is not None:
        local_layout = Layout(spec.layout, create=False)
        where = parse_layout_source(spec.catalog)
        chosen = select_layout_image(local_layout, ref_name=where.ref_name, digest=where.digest, what=f"catalog {spec.catalog}")
        source = LayoutImage(local_layout, None, digest=chosen.digest)
        local = source.resolve()
        name = local_repository(spec.layout, fallback="catalog")
        ref_name = f"{LOCAL_REF_PREFIX}{name}:{digest_tag(str(local.digest))}"
        log.info("catalog %s is %s; copying it into the work layout", spec.catalog, local.digest)
        copier.copy(source, LayoutImage(layout, ref_name), expected=local.digest)
        image = open_image(LayoutImage(layout, ref_name), local, platform=platform)
        return Reference(LOCAL_LAYOUT_HOST, name), local, image, ref_name
    ref = Reference.parse(spec.catalog)
    top: FetchedManifest = registry_source(registries, ref).resolve()
    pinned = Reference(ref.registry, ref.repository, digest=top.digest)
    log.info("catalog %s is %s; copying it into the work layout", spec.catalog, top.digest)
    copier.copy(registry_source(registries, pinned), LayoutImage(layout, None), expected=top.digest)
    return ref, top, open_image(LayoutImage(layout, None), top, platform=platform), None


def read_catalog_model(
    spec: CatalogSpec, *, registries: Registries, layout: Layout, copier: Copier, platform: str = "linux/amd64"
) -> Tuple[str, str, DeclarativeConfig]:
    """(digest, format, model) of the catalog `spec` names, read as the planner reads it (copied into `layout`)."""
    _, top, image, _ = _copy_catalog_image(spec, registries=registries, layout=layout, copier=copier, platform=platform)
    with tempfile.TemporaryDirectory(prefix="ocpb-catalog-") as tmp:
        content = _read_catalog(image, Path(tmp), spec.catalog)
    return str(top.digest), content.format, content.model


def _mode(spec: CatalogSpec) -> str:
    return "filtered" if spec.packages else ("full" if spec.full else "heads-only")


def _catalog_report(
    spec: CatalogSpec,
    top: FetchedManifest,
    content: _Content,
    selection: Selection,
    collected: CollectedImages,
    images: List[PlannedImage],
    platform: str,
) -> CatalogReport:
    """The report of one catalog, without its target (known once the catalog image is planned)."""
    return CatalogReport(
        catalog=spec.catalog,
        digest=str(top.digest),
        format=content.format,
        platform=platform,
        mode=_mode(spec),
        target="",
        pruned=selection.pruned,
        packages=len(selection.channels),
        channels=selection.channel_count(),
        bundles=len(selection.bundle_keys()),
        images=len(images),
        catalog_bundles=len(content.model.bundles),
        selection=selection.to_json(),
        dependencies=list(selection.dependencies),
        recovered=list(collected.recovered),
        unresolved=list(collected.unresolved),
        notes=list(selection.notes),
    )


def _carried_unchanged(
    spec: CatalogSpec, ref: Reference, top: FetchedManifest, content: _Content, report: CatalogReport,
    *, layout_ref: Optional[str] = None,
) -> PlannedImage:
    """An unfiltered catalog (`full`, or no packages): the index image as it is, digest-exact."""
    mode = _mode(spec)
    if mode == "heads-only":
        report.notes.append(
            f"the catalog is carried unchanged (digest-exact): it lists {len(content.model.bundles)} bundles, "
            f"of which the {report.bundles} channel heads (and their dependencies) are carried"
        )
    return PlannedImage(
        source=f"{ref.name}@{top.digest}",
        kind="catalog",
        target_repository=spec.target_catalog or ref.repository,
        target_tag=spec.target_tag or ref.tag or digest_tag(str(top.digest)),
        digest=str(top.digest),
        in_layout=layout_ref is not None,
        annotations={"format": content.format, "mode": mode},
        facts=ImageFacts(catalog=spec.catalog, pruned=False, layout_ref=layout_ref),
    )


def _pruned_catalog(
    spec: CatalogSpec,
    ref: Reference,
    top: FetchedManifest,
    content: _Content,
    selection: Selection,
    report: CatalogReport,
    *,
    layout: Layout,
    workdir: Path,
) -> PlannedImage:
    """A filtered catalog: a new image built in the layout whose catalog holds exactly the selection."""
    target_repo = spec.target_catalog or ref.repository
    explicit_tag = spec.target_tag or ref.tag
    ref_name = f"{PRUNED_REF_PREFIX}{target_repo}:{explicit_tag or digest_tag(str(top.digest), prefix='from')}"
    files: Dict[str, Any]
    if content.format == FORMAT_SQLITE:
        assert content.db_file is not None
        pruned_db = workdir / "pruned.db"
        prune_sqlite(content.db_file, pruned_db, selection)
        files = {content.root: pruned_db}
        opaque: List[str] = []
    else:
        prefix = content.root + "/" if content.root else ""
        files = {prefix + name: data for name, data in render_fbc_files(selection).items()}
        opaque = [content.root] if content.root else []
    original = Descriptor(media_type=top.media_type, digest=top.digest, size=len(top.raw))
    built = build_pruned_image(
        layout,
        original,
        files=files,
        opaque_dirs=opaque,
        ref_name=ref_name,
        drop_cache=content.format != FORMAT_SQLITE,
        notes=report.notes,
    )
    new_digest = str(built.descriptor.digest)
    report.pruned_digest = new_digest
    report.catalog_bytes = _layout_bytes(layout, built.descriptor)
    return PlannedImage(
        # what it stands in for; the bytes are in the work layout under `facts.layout_ref`
        source=spec.catalog if spec.layout is None else f"{ref.name}:{explicit_tag or digest_tag(new_digest)}",
        kind="catalog",
        target_repository=target_repo,
        target_tag=explicit_tag or digest_tag(new_digest),
        digest=new_digest,
        in_layout=True,
        annotations={"format": content.format, "original-digest": str(top.digest), "mode": _mode(spec)},
        facts=ImageFacts(catalog=spec.catalog, layout_ref=ref_name, pruned=True),
    )

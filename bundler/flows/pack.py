"""The pack use-case: image-set config → pull into a work layout → bundle (volumes + signed manifest).

The work layout survives interruption: blobs land under their final name only when verified, so a rerun
fetches nothing twice. The bundle is written only when every image arrived; otherwise the failures are
listed (exit 4, or exit 2 when images do not exist upstream) and a rerun resumes.
"""

from __future__ import annotations

import json
import logging
import os
import time
from contextlib import ExitStack
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Set, Tuple

from bundler import __version__
from bundler.transfer.copy import Copier, CopyOptions, CopyResult
from bundler.oci.digest import Digest
from bundler.base.errors import BundlerError, DiskSpaceError, ImageNotFoundError, PartialFailureError, UsageError
from bundler.base.fsutil import atomic_write, free_space
from bundler.base.lock import exclusive_lock
from bundler.base.units import human_bytes
from bundler.openshift.image_set import load_image_set
from bundler.layout.store import Layout
from bundler.oci.media import Descriptor, check_nesting, is_index, parse_manifest
from bundler.flows.plan import Plan, build_plan
from bundler.oci.planned import PlannedImage
from bundler.base.progress import NullProgress, Progress
from bundler.bundle.volumes import DEFAULT_VOLUME_SIZE
from bundler.oci.reference import Reference
from bundler.registry.client import Registries
from bundler.transfer.transports import ImageSource, LayoutImage, RegistryRepository

if TYPE_CHECKING:
    from bundler.bundle.volumes import BundleWriteResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PackOptions:
    config: Path
    out_dir: Path
    work_dir: Optional[Path] = None
    volume_size: int = DEFAULT_VOLUME_SIZE
    sign_key: Optional[Path] = None
    base: Optional[Path] = None
    dry_run: bool = False
    workers: int = 8
    graph_url: Optional[str] = None
    signature_store: Optional[str] = None
    graph_data_url: Optional[str] = None
    """Where the update-graph data tarball is fetched from for `graph: true`."""
    graph_base_image: Optional[str] = None
    """The image the update-graph data image is built on (it needs bash and cp)."""
    remove_signatures: bool = False
    """Leave sigstore signatures (cosign `.sig` tags, OCI 1.1 referrers) out."""
    release_keys: Tuple[Path, ...] = ()
    """Public keys (cosign PEM or OpenPGP) every release's signatures are checked against."""
    target_kind: str = "any"
    """The registry the bundle is meant for: "quay" names the images Quay cannot store digest-exact."""
    progress: Progress = field(default_factory=NullProgress)


@dataclass
class PackedImage:
    planned: PlannedImage
    status: str
    digest: Optional[str] = None
    media_type: str = ""
    manifest_size: int = 0
    bytes_needed: int = 0
    error: Optional[str] = None
    blob_sizes: Dict[str, int] = field(default_factory=dict)
    refused: Optional[str] = None
    """Why the declared target registry cannot store this image digest-exact (`PackOptions.target_kind`)."""
    error_object: Optional[BundlerError] = None

    def to_json(self) -> Dict[str, Any]:
        p = self.planned
        out: Dict[str, Any] = {
            "source": p.source,
            "kind": p.kind,
            "target": f"{p.target_repository}:{p.target_tag}",
            "digest": self.digest,
            "status": self.status,
            "bytes": self.bytes_needed,
        }
        recorded = p.recorded_annotations()
        if recorded:
            out["annotations"] = recorded
        if self.error:
            out["error"] = self.error
        if self.refused:
            out["refusedByTarget"] = self.refused
        return out


@dataclass
class PackResult:
    dry_run: bool
    images: List[PackedImage]
    plan: Plan
    total_bytes: int = 0
    bundle: Optional[BundleWriteResult] = None
    seconds: float = 0.0
    work_dir: Optional[Path] = None

    def to_json(self) -> Dict[str, Any]:
        by_kind: Dict[str, int] = {}
        for img in self.images:
            by_kind[img.planned.kind] = by_kind.get(img.planned.kind, 0) + 1
        out: Dict[str, Any] = {
            "dryRun": self.dry_run,
            "images": [i.to_json() for i in self.images],
            "imagesByKind": by_kind,
            "totalBytes": self.total_bytes,
            "reports": self.plan.reports.to_json(),
            "warnings": self.plan.warnings,
            "seconds": round(self.seconds, 2),
            "workDir": str(self.work_dir) if self.work_dir else None,
        }
        if self.bundle is not None:
            out["bundle"] = self.bundle.to_json()
        return out


def default_work_dir(out_dir: Path) -> Path:
    return out_dir.parent / f".{out_dir.name}.ocp-bundler-work"


LOCK_NAME = ".ocp-bundler.lock"


def pack(options: PackOptions, *, registries: Registries) -> PackResult:
    """Plan, pull and write the bundle. Two runs never write one `--out` (or work directory) at once: the
    second stops with exit 2 naming the lock and the run holding it."""
    _check_not_base(options)
    if options.dry_run:
        return _pack(options, registries=registries)
    work_dir = options.work_dir or default_work_dir(options.out_dir)
    with ExitStack() as stack:
        for directory, what in ((options.out_dir, "the bundle directory"), (work_dir, "the work directory")):
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UsageError(f"cannot create {what} {directory}: {exc.strerror or exc}") from None
            stack.enter_context(exclusive_lock(directory / LOCK_NAME, what=f"{what} {directory}", hint="wait for the other pack to finish, or choose another --out"))
        return _pack(options, registries=registries)


def _check_not_base(options: PackOptions) -> None:
    """An incremental bundle written over its own base would destroy what it depends on."""
    if options.base is None:
        return
    base_dir = options.base if options.base.is_dir() or not options.base.exists() else options.base.parent
    if _same_directory(base_dir, options.out_dir):
        raise UsageError(
            f"--out {options.out_dir} is the --base bundle's own directory: writing there would overwrite the base the new bundle depends on",
            hint="write the incremental bundle to another directory",
        )


def _same_directory(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def _pack(options: PackOptions, *, registries: Registries) -> PackResult:
    started = time.monotonic()
    image_set = load_image_set(options.config)
    if options.sign_key is not None and not options.dry_run:
        from bundler.bundle.signing import load_private_key

        load_private_key(options.sign_key)  # a bad key fails now, not after hours of pulling
    work_dir = options.work_dir or default_work_dir(options.out_dir)
    layout = Layout(work_dir / "layout")
    in_base: Set[str] = set()
    if options.base is not None:
        from bundler.bundle.volumes import load_base_manifest

        base = load_base_manifest(options.base)  # a bad --base fails now, not after the pull
        in_base = {b.digest for b in base.blobs} | {b.digest for b in base.base_blobs}
    progress = options.progress
    with Copier(CopyOptions(workers=options.workers, image_workers=2 * options.workers, progress=progress)) as copier:
        plan = build_plan(image_set, registries=registries, layout=layout, copier=copier, graph_url=options.graph_url, signature_store=options.signature_store,
                          graph_data_url=options.graph_data_url, graph_base_image=options.graph_base_image)
        planned = plan.deduplicated()
        if options.dry_run:
            images = _measure(planned, registries=registries, layout=layout, workers=options.workers)
            images += _signatures(options, plan, images, registries=registries, open_image=lambda i: _source_for(i, registries, layout),
                                  carry=lambda found: _measure(found, registries=registries, layout=layout, workers=options.workers))
            _check_target(options, plan, images, lambda i: _source_for(i, registries, layout))
            total = _unique_bytes(images)
            _check_space(options.out_dir, total, what="the bundle")
            return PackResult(True, images, plan, total_bytes=total, seconds=time.monotonic() - started, work_dir=work_dir)
        _check_space_for_plan(planned, registries=registries, layout=layout, in_base=in_base, work_dir=work_dir, out_dir=options.out_dir, workers=options.workers)
        images = _pull(planned, registries=registries, layout=layout, copier=copier, in_base=in_base)
        images += _signatures(options, plan, images, registries=registries, open_image=lambda i: LayoutImage(layout, layout_ref(i)),
                              carry=lambda found: _pull(found, registries=registries, layout=layout, copier=copier, in_base=in_base))
        _check_target(options, plan, images, lambda i: LayoutImage(layout, layout_ref(i)))
    failed = [i for i in images if i.status == "failed"]
    full = next((i.error_object for i in failed if isinstance(i.error_object, DiskSpaceError)), None)
    if full is not None:  # a full disk is not "rerun to resume": nothing changes until space is made
        raise DiskSpaceError(full.message, hint=full.hint or "free space or choose another --work-dir, then rerun: what arrived is kept")
    if failed:
        lines = [f"{i.planned.source}: {i.error}" for i in failed]
        missing = [i for i in failed if i.error and "not found" in i.error]
        cls = ImageNotFoundError if len(missing) == len(failed) else PartialFailureError
        summary = f"{len(failed)} of {len(images)} images could not be pulled; nothing was written to {options.out_dir}"
        detail = "; ".join(lines[:10]) + (f"; … and {len(lines) - 10} more" if len(lines) > 10 else "")
        if cls is ImageNotFoundError:
            raise ImageNotFoundError(f"{summary}: {detail}", hint="fix the config (or the credentials) and rerun")
        raise PartialFailureError(f"{summary}: {detail}", failures=lines, hint="rerun to resume; finished images are not fetched again")

    _fill_catalog_bytes(plan, images, layout)

    from bundler.bundle.volumes import BundleWriteOptions, write_bundle
    from bundler.bundle.manifest import BundleImage

    bundle_images = [
        BundleImage(
            source=i.planned.source,
            digest=str(i.digest),
            media_type=i.media_type,
            size=i.manifest_size,
            kind=i.planned.kind,
            target_repository=i.planned.target_repository,
            target_tag=i.planned.target_tag,
            annotations=dict(i.planned.annotations),
            facts=i.planned.facts,
        )
        for i in images
    ]
    result = PackResult(False, images, plan, seconds=0.0, work_dir=work_dir)
    files = dict(plan.files)
    # What the bundle carries is what was planned, never what this run happened to do (statuses, bytes,
    # times): the same content must give the same volumes, so a rerun after an interrupted write keeps them.
    files["reports/plan.json"] = json.dumps(
        {
            "toolVersion": __version__,
            "config": Path(image_set.source_name).name,
            "images": [{k: v for k, v in i.to_json().items() if k not in ("status", "bytes")} for i in images],
            "reports": plan.reports.to_json(),
            "warnings": plan.warnings,
        },
        indent=1,
        sort_keys=True,
        default=str,
    ).encode()
    bundle = write_bundle(
        layout,
        bundle_images,
        options=BundleWriteOptions(
            out_dir=options.out_dir,
            volume_size=options.volume_size,
            sign_key=options.sign_key,
            base=options.base,
            files=files,
            progress=progress,
        ),
    )
    result.bundle = bundle
    result.total_bytes = bundle.total_bytes or _unique_bytes(images)
    result.seconds = time.monotonic() - started
    try:
        atomic_write(work_dir / "pack-report.json", json.dumps(result.to_json(), indent=1, default=str).encode())
    except OSError as exc:  # the bundle is complete; only the run's own report is lost
        log.warning("WARNING: the bundle is complete, but %s could not be written: %s", work_dir / "pack-report.json", exc.strerror or exc)
    return result


def _signatures(
    options: PackOptions,
    plan: Plan,
    images: List[PackedImage],
    *,
    registries: Registries,
    open_image: Callable[[PlannedImage], ImageSource],
    carry: Callable[[List[PlannedImage]], List[PackedImage]],
) -> List[PackedImage]:
    """Look up the signatures of every image carried, carry them, check the releases' (`flows.signatures`)."""
    from bundler.flows import signatures
    from bundler.openshift.sigstore import SignatureReport, find_signatures

    if options.remove_signatures:
        plan.reports.signatures = SignatureReport(removed=True)
        carried: List[PackedImage] = []
        found_images: List[PlannedImage] = []
    else:
        done = [(i.planned, i.digest) for i in images if i.digest and i.status != "failed"]
        found = find_signatures(signatures.subjects(done, open_image=open_image), registries=registries, workers=options.workers)
        plan.reports.signatures = found.report
        found_images = list(found.images)
        carried = carry(found_images)
    report = plan.reports.signatures
    if options.release_keys:
        releases = [(f"{r.version}-{r.arch}", r.digest) for r in plan.reports.releases or []]
        ok = {str(p.planned.digest) for p in carried if p.status != "failed"}
        report.verification = signatures.verify_releases(
            releases, keys=options.release_keys, signature_images=[i for i in found_images if i.digest in ok],
            open_image=open_image, release_signatures=signatures.release_signatures_in(plan.files),
        )
        report.verified = bool(releases)
    return carried


def _source_for(img: PlannedImage, registries: Registries, layout: Layout) -> ImageSource:
    if img.in_layout:
        return LayoutImage(layout, layout_ref(img))
    ref = Reference.parse(img.source)
    return RegistryRepository(registries.client(ref.registry), ref, tag_must_agree=img.kind in ("additional", "registry"))


def layout_ref(img: PlannedImage) -> str:
    """The ref name an image built into the work layout is stored under."""
    return img.facts.layout_ref or img.source


class _LayoutSkippingBase(LayoutImage):
    """A layout sink for incremental packs: configs and layers the base bundle carries count as present.

    Manifests are still stored (the bundle needs them to describe every image); the blobs themselves are
    neither fetched nor written, because the far side already has them from the base bundle.
    """

    def __init__(self, layout: Layout, ref_name: Optional[str], in_base: Set[str]) -> None:
        super().__init__(layout, ref_name)
        self._in_base = in_base

    def has_blob(self, descriptor: Descriptor) -> bool:
        return str(descriptor.digest) in self._in_base or super().has_blob(descriptor)


def _pull(planned: List[PlannedImage], *, registries: Registries, layout: Layout, copier: Copier, in_base: Optional[Set[str]] = None) -> List[PackedImage]:
    jobs = []
    out: List[PackedImage] = []
    to_copy: List[Tuple[int, PlannedImage]] = []
    for idx, img in enumerate(planned):
        out.append(PackedImage(img, "pending"))
        if img.in_layout:
            d = layout.resolve(layout_ref(img))
            out[idx] = PackedImage(img, "built", str(d.digest), d.media_type, d.size, 0)
            continue
        to_copy.append((idx, img))
        src = _source_for(img, registries, layout)
        sink = _LayoutSkippingBase(layout, img.source, in_base) if in_base else LayoutImage(layout, img.source)
        jobs.append((src, sink, Digest.parse(img.digest) if img.digest else None))
    results: List[CopyResult] = copier.copy_many(jobs)
    for (idx, img), r in zip(to_copy, results):
        if r.status == "failed":
            out[idx] = PackedImage(img, "failed", error=str(r.error), error_object=r.error)
        else:
            assert r.digest is not None
            out[idx] = PackedImage(img, r.status, str(r.digest), r.media_type, layout.blob_path(r.digest).stat().st_size, r.stats.bytes_copied)
    return out


TARGET_KINDS = ("any", "quay")


def _check_target(options: PackOptions, plan: Plan, images: List[PackedImage], open_image: Callable[[PlannedImage], ImageSource]) -> None:
    """With a declared target kind (Quay), name every image it cannot store digest-exact, with the reason, in
    the plan's warnings and on the image (`refused`): the far side's `unpack` refuses them before pushing."""
    if options.target_kind == "any":
        return
    if options.target_kind not in TARGET_KINDS:
        raise UsageError(f"target kind {options.target_kind!r} is not one of {', '.join(TARGET_KINDS)}")
    from bundler.oci.graph import walk_manifests
    from bundler.quay.compat import quay_refusals

    for image in images:
        if image.status == "failed" or image.digest is None:
            continue
        source = open_image(image.planned)
        top = source.fetch_manifest(Descriptor(image.media_type, Digest.parse(image.digest), image.manifest_size))
        reasons = [
            f"manifest {node.manifest.digest} ({node.manifest.media_type}): {reason}"
            for node in walk_manifests(top, source.fetch_manifest, description=image.planned.source)
            for reason in quay_refusals(node.manifest.raw, node.manifest.media_type)
        ]
        if reasons:
            image.refused = "Quay cannot store it digest-exact: " + "; ".join(reasons)
            plan.warnings.append(
                f"{image.planned.source} -> {image.planned.target_repository}:{image.planned.target_tag}: {image.refused}; "
                "unpack into Quay will refuse it (mirror it into another registry, or have it rebuilt with gzip layers or as OCI)"
            )


def _measure(planned: List[PlannedImage], *, registries: Registries, layout: Layout, workers: int) -> List[PackedImage]:
    """For --dry-run: fetch manifests (no layers) and add up the unique blobs each image needs."""

    def one(img: PlannedImage) -> PackedImage:
        try:
            src = _source_for(img, registries, layout)
            top = src.resolve()
            blobs: Dict[str, int] = {}
            stack = [(top, 1)]
            while stack:
                m, level = stack.pop()
                parsed = parse_manifest(m.raw, m.media_type)
                if is_index(m.media_type):
                    check_nesting(level, src.description)
                    stack.extend((src.fetch_manifest(c), level + 1) for c in parsed.children)
                for b in parsed.blobs:
                    blobs[str(b.digest)] = b.size
            return PackedImage(img, "planned", str(top.digest), top.media_type, len(top.raw), sum(blobs.values()), blob_sizes=blobs)
        except BundlerError as exc:  # reported per image in the plan, never hidden
            return PackedImage(img, "failed", error=str(exc))

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(one, planned))


def _unique_bytes(images: List[PackedImage]) -> int:
    seen: Dict[str, int] = {}
    for i in images:
        for d, s in i.blob_sizes.items():
            seen[d] = s
    if seen:
        return sum(seen.values())
    return sum(i.bytes_needed for i in images)


def _blob_sizes(layout: Layout, digest: str, media_type: str) -> Dict[str, int]:
    """Every blob (manifests included) an image in the layout is made of, with its size."""
    out: Dict[str, int] = {}
    stack = [(Digest.parse(digest), media_type)]
    while stack:
        d, mt = stack.pop()
        raw = layout.read_blob(d)
        out[str(d)] = len(raw)
        parsed = parse_manifest(raw, mt)
        stack.extend((c.digest, c.media_type) for c in parsed.children)
        out.update({str(b.digest): b.size for b in parsed.blobs})
    return out


def _fill_catalog_bytes(plan: Plan, images: List[PackedImage], layout: Layout) -> None:
    """Each catalog report's `bytes`: the unique blobs of the catalog image and every image it brought."""
    for report in plan.reports.catalogs or []:
        name = report.catalog
        blobs: Dict[str, int] = {}
        for img in images:
            if img.digest and (img.planned.facts.catalog == name or (img.planned.kind == "catalog" and img.planned.source == name)):
                blobs.update(_blob_sizes(layout, img.digest, img.media_type))
        report.bytes = sum(blobs.values())


def _check_space_for_plan(
    planned: List[PlannedImage], *, registries: Registries, layout: Layout, in_base: Set[str], work_dir: Path, out_dir: Path, workers: int
) -> None:
    """Before pulling: the blobs still to fetch must fit in the work directory, and the bundle in --out
    (both together when they share a file system). Sizes come from the manifests (the layout's own copy
    where it has one, else the registry's); an image that cannot be measured is left to the pull to report."""
    sizes: Dict[str, int] = {}
    to_ask: List[PlannedImage] = []
    for img in planned:
        try:
            if img.digest and layout.has_blob(Digest.parse(img.digest)):
                sizes.update(_blob_sizes(layout, img.digest, _layout_media_type(layout, img.digest)))
                continue
        except (BundlerError, OSError, ValueError):
            pass  # an interrupted earlier pull left part of it: measure from the source
        to_ask.append(img)
    for measured in _measure(to_ask, registries=registries, layout=layout, workers=workers):
        sizes.update(measured.blob_sizes)
    carried = {d: n for d, n in sizes.items() if d not in in_base}
    to_fetch = sum(n for d, n in carried.items() if not _in_layout(layout, d, n))
    bundle = sum(carried.values())
    if _same_file_system(work_dir, out_dir):
        _check_space(work_dir, to_fetch + bundle, what=f"pulling ({to_fetch} bytes) and writing the bundle ({bundle} bytes)", where="--work-dir and --out")
    else:
        _check_space(work_dir, to_fetch, what=f"pulling the images ({to_fetch} bytes)", where="--work-dir")
        _check_space(out_dir, bundle, what=f"the bundle ({bundle} bytes)", where="--out")


def _layout_media_type(layout: Layout, digest: str) -> str:
    from bundler.oci.media import detect_media_type

    return detect_media_type(layout.read_blob(Digest.parse(digest)), None)


def _in_layout(layout: Layout, digest: str, size: int) -> bool:
    try:
        return layout.has_blob(Digest.parse(digest), size)
    except BundlerError:
        return False


def _same_file_system(a: Path, b: Path) -> bool:
    def device(p: Path) -> int:
        while not p.exists() and p != p.parent:
            p = p.parent
        return os.stat(p).st_dev

    return device(a) == device(b)


def _check_space(directory: Path, needed: int, *, what: str, where: str = "--out") -> None:
    free = free_space(directory)
    if free < needed:
        raise DiskSpaceError(
            f"{what} needs {needed} bytes ({human_bytes(needed)}) but {directory} has {free} bytes ({human_bytes(free)}) free",
            hint=f"free space or choose another {where} directory; nothing was pulled",
        )

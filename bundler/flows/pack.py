"""The pack use-case: image-set config → plan → every blob streamed once into its slot in the bundle.

Planning resolves the config to digests and reads what it must (release payloads, catalogs, samples) into a
small work layout (`--work-dir`), which also holds rebuilt catalogs. Then every image's manifests are
fetched (in memory) so the whole bundle layout is known before a layer is pulled: `bundler.bundle.fill`
streams each blob straight from the registry (or the work layout) into its place in the volumes. Nothing
is pulled into a work layout first, so the disk holds the data once.

An image that cannot be resolved stops pack before any volume is written (exit 2 when images do not exist
upstream, else 4). A blob that cannot be fetched leaves the bundle unfinished (exit 4); what arrived is
journaled beside the volumes, so a rerun fetches only the rest.
"""

from __future__ import annotations

import json
import logging
import os
import time
from contextlib import ExitStack
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Dict, List, Mapping, Optional, Set, Tuple

from bundler import __version__
from bundler.transfer.copy import Copier, CopyOptions
from bundler.base.errors import BundlerError, DigestMismatchError, DiskSpaceError, ImageNotFoundError, PartialFailureError, UsageError
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
from bundler.oci.digest import Digest, Readable
from bundler.oci.reference import Reference
from bundler.registry.client import FetchedManifest, Registries
from bundler.transfer.transports import ImageSource, LayoutImage, MirroredRepository, RegistryRepository, registry_source

from bundler.bundle.manifest import BundleImage, BundleManifest

if TYPE_CHECKING:
    from bundler.bundle.fill import BundleContent
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
class ImageGraph:
    """One image as resolved at plan time: where it comes from, its manifests (raw, top first), its blobs."""

    source: ImageSource
    manifests: List[FetchedManifest]
    blobs: Dict[str, Descriptor]

    def sizes(self) -> Dict[str, int]:
        out = {str(m.digest): len(m.raw) for m in self.manifests}
        out.update({k: d.size for k, d in self.blobs.items()})
        return out

    def size(self) -> int:
        return sum(self.sizes().values())


class _Resolved:
    """An image already resolved at plan time, as an `ImageSource`: manifests from memory, blobs from its source."""

    def __init__(self, graph: ImageGraph) -> None:
        self.graph = graph
        self.description = graph.source.description
        self._manifests = {m.digest: m for m in graph.manifests}

    def resolve(self) -> FetchedManifest:
        return self.graph.manifests[0]

    def fetch_manifest(self, descriptor: Descriptor) -> FetchedManifest:
        found = self._manifests.get(descriptor.digest)
        return found if found is not None else self.graph.source.fetch_manifest(descriptor)

    def open_blob(self, descriptor: Descriptor, offset: int) -> ContextManager[Readable]:
        return self.graph.source.open_blob(descriptor, offset)


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
    graph: Optional[ImageGraph] = None
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
    _check_target_kind(options)
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
    base: Optional[BundleManifest] = None
    if options.base is not None:
        from bundler.bundle.volumes import load_base_manifest

        base = load_base_manifest(options.base)  # a bad --base fails now, not after planning
    # Planning's own reads are not counted: the progress totals come from the plan, so they never grow.
    with Copier(CopyOptions(workers=options.workers, image_workers=2 * options.workers)) as copier:
        plan = build_plan(image_set, registries=registries, layout=layout, copier=copier, graph_url=options.graph_url, signature_store=options.signature_store,
                          graph_data_url=options.graph_data_url, graph_base_image=options.graph_base_image)
    planned_at = time.monotonic()
    carry = _carrier(options, registries=registries, layout=layout)
    if options.dry_run:
        images = _resolve(plan.deduplicated(), registries=registries, layout=layout, workers=resolve_workers(options.workers))
        resolved_at = time.monotonic()
        open_image = _image_opener(images, registries=registries, layout=layout)
        images += _signatures(options, plan, images, registries=registries, open_image=open_image, carry=carry)
        _check_target(options, plan, images, open_image)
        _log_planning(images, started, planned_at, resolved_at, overlapped=False)
        total = _unique_bytes(images)
        _check_space(options.out_dir, total, what="the bundle")
        return PackResult(True, images, plan, total_bytes=total, seconds=time.monotonic() - started, work_dir=work_dir)
    bundle, images = _fill(options, plan, registries=registries, layout=layout, base=base, carry=carry, config_name=image_set.source_name, timing=(started, planned_at))
    for img in images:
        img.status = "packed" if img.status == "planned" else img.status
    result = PackResult(False, images, plan, total_bytes=bundle.total_bytes, bundle=bundle, seconds=time.monotonic() - started, work_dir=work_dir)
    try:
        atomic_write(work_dir / "pack-report.json", json.dumps(result.to_json(), indent=1, default=str).encode())
    except OSError as exc:  # the bundle is complete; only the run's own report is lost
        log.warning("WARNING: the bundle is complete, but %s could not be written: %s", work_dir / "pack-report.json", exc.strerror or exc)
    return result


def _fill(
    options: PackOptions,
    plan: Plan,
    *,
    registries: Registries,
    layout: Layout,
    base: Optional[BundleManifest],
    carry: Callable[[List[PlannedImage]], List[PackedImage]],
    config_name: str,
    timing: Tuple[float, float],
) -> "Tuple[BundleWriteResult, List[PackedImage]]":
    """Resolve every image and pull every blob into the bundle: (the bundle, every image carried).

    The fill starts with the first manifests: as soon as an image and all images before it (in plan order)
    are resolved, their blobs are laid out and start streaming while later manifests are still fetched;
    the signatures are looked up meanwhile and laid out after them, with the extra files (a high-latency
    link is busy from the start instead of idle for the hundreds of small look-ups). With `--release-key`
    everything is resolved and the signatures checked first: a release that fails its check stops the pack
    before a byte is written."""
    from bundler.bundle.fill import BundleFill, FillOptions

    fill_options = FillOptions(
        out_dir=options.out_dir, volume_size=options.volume_size, sign_key=options.sign_key, workers=fill_workers(options.workers), progress=options.progress,
    )
    planned = plan.deduplicated()
    workers = resolve_workers(options.workers)
    overlapped = not options.release_keys
    if not overlapped:
        images = _resolve(planned, registries=registries, layout=layout, workers=workers)
        resolved_at = time.monotonic()
        _raise_failures(images, options.out_dir)
        open_image = _image_opener(images, registries=registries, layout=layout)
        images.extend(_signatures(options, plan, images, registries=registries, open_image=open_image, carry=carry))
    with BundleFill(fill_options) as fill:
        if overlapped:

            def start(ready: List[PackedImage]) -> None:
                first = bundle_content(ready, layout=layout, base=base, files={})
                fill.start(first.blobs, first.needs)

            images = _resolve(planned, registries=registries, layout=layout, workers=workers, on_ready=start)
            resolved_at = time.monotonic()
            _raise_failures(images, options.out_dir, started=fill.writing)
            open_image = _image_opener(images, registries=registries, layout=layout)
            images.extend(_signatures(options, plan, images, registries=registries, open_image=open_image, carry=carry))
        _check_target(options, plan, images, open_image)
        _log_planning(images, *timing, resolved_at, overlapped=overlapped)
        _raise_failures(images, options.out_dir, started=fill.writing)
        _fill_catalog_bytes(plan, images)
        return fill.finish(bundle_content(images, layout=layout, base=base, files=_files(plan, images, config_name))), images


def _image_opener(images: List[PackedImage], *, registries: Registries, layout: Layout) -> Callable[[PlannedImage], ImageSource]:
    """Opens a planned image: from the manifests resolution fetched into memory when it has them."""
    resolved = {id(i.planned): i.graph for i in images if i.graph is not None}

    def open_image(img: PlannedImage) -> ImageSource:
        graph = resolved.get(id(img))
        return _Resolved(graph) if graph is not None else _source_for(img, registries, layout)

    return open_image


def _carrier(options: PackOptions, *, registries: Registries, layout: Layout) -> Callable[[List[PlannedImage]], List[PackedImage]]:
    """How signatures found upstream are carried: resolved like every other image."""
    return lambda found: _resolve(found, registries=registries, layout=layout, workers=resolve_workers(options.workers))


def _log_planning(images: List[PackedImage], started: float, planned_at: float, resolved_at: float, *, overlapped: bool) -> None:
    log.info(
        "planned %d images in %.2fs, resolved their manifests in %.2fs, looked up signatures in %.2fs%s",
        len(images), planned_at - started, resolved_at - planned_at, time.monotonic() - resolved_at,
        " (while the blobs were fetched)" if overlapped else "",
    )


def fill_workers(workers: int) -> int:
    """Blob streams at once: 4 per --workers, at least 32. A long-haul link gives each connection ~12 MB/s
    and costs a round trip (~60 ms) before each blob's first byte, so filling 100 MB/s with blobs of a few MB
    takes 20 to 30 streams in flight. Memory stays flat: each stream holds one 1 MiB buffer."""
    return min(64, max(32, 4 * workers))


def resolve_workers(workers: int) -> int:
    """Manifests fetched at once while planning: twice the blob streams. Each is a small read that costs a
    round trip and next to no bandwidth, so on a long-haul link the planning of a release (hundreds of
    manifests) takes as many round trips as there are rounds of this many requests."""
    return 2 * fill_workers(workers)


def _raise_failures(images: List[PackedImage], out_dir: Path, *, started: bool = False) -> None:
    """Stop when an image could not be resolved; `started`: the fill had begun (what it fetched is kept)."""
    failed = [i for i in images if i.status == "failed"]
    if not failed:
        return
    lines = [f"{i.planned.source}: {i.error}" for i in failed]
    missing = [i for i in failed if i.error and "not found" in i.error]
    written = f"the blobs fetched so far are kept in {out_dir} for the rerun" if started else f"nothing was written to {out_dir}"
    summary = f"{len(failed)} of {len(images)} images could not be resolved; {written}"
    detail = "; ".join(lines[:10]) + (f"; … and {len(lines) - 10} more" if len(lines) > 10 else "")
    if len(missing) == len(failed):
        raise ImageNotFoundError(f"{summary}: {detail}", hint="fix the config (or the credentials) and rerun")
    raise PartialFailureError(f"{summary}: {detail}", failures=lines, hint="rerun to resume")


def _files(plan: Plan, images: List[PackedImage], config_name: str) -> Dict[str, bytes]:
    files = dict(plan.files)
    # What the bundle carries is what was planned, never what this run happened to do (statuses, bytes,
    # times): the same content must give the same volumes, so a rerun after an interruption keeps them.
    files["reports/plan.json"] = json.dumps(
        {
            "toolVersion": __version__,
            "config": Path(config_name).name,
            "images": [{k: v for k, v in i.to_json().items() if k not in ("status", "bytes")} for i in images],
            "reports": plan.reports.to_json(),
            "warnings": plan.warnings,
        },
        indent=1,
        sort_keys=True,
        default=str,
    ).encode()
    return files


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
        found = find_signatures(signatures.subjects(done, open_image=open_image), registries=registries, workers=fill_workers(options.workers))
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
    if img.local_layout is not None:
        assert img.digest is not None
        return LayoutImage(Layout(img.local_layout, create=False), None, digest=Digest.parse(img.digest))
    ref = Reference.parse(img.source)
    return registry_source(registries, ref, tag_must_agree=img.kind in ("additional", "registry"))


def layout_ref(img: PlannedImage) -> str:
    """The ref name an image built into the work layout is stored under."""
    return img.facts.layout_ref or img.source


TARGET_KINDS = ("any", "quay")


def _check_target_kind(options: PackOptions) -> None:
    if options.target_kind not in TARGET_KINDS:
        raise UsageError(f"target kind {options.target_kind!r} is not one of {', '.join(TARGET_KINDS)}")


def _check_target(options: PackOptions, plan: Plan, images: List[PackedImage], open_image: Callable[[PlannedImage], ImageSource]) -> None:
    """With a declared target kind (Quay), name every image it cannot store digest-exact, with the reason, in
    the plan's warnings and on the image (`refused`): the far side's `unpack` refuses them before pushing."""
    _check_target_kind(options)
    if options.target_kind == "any":
        return
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


def _resolve(
    planned: List[PlannedImage], *, registries: Registries, layout: Layout, workers: int, on_ready: Optional[Callable[[List[PackedImage]], None]] = None,
) -> List[PackedImage]:
    """Every image's manifests (fetched into memory, digest-checked) and the blobs they name; no layers.

    `on_ready` (called in this thread) gets each run of resolved images in plan order, as soon as every
    image before them is resolved too; never again once an image failed (the pack stops after resolving)."""

    def one(img: PlannedImage) -> PackedImage:
        try:
            src = _source_for(img, registries, layout)
            top = src.resolve()
            if img.digest and str(top.digest) != img.digest:
                raise DigestMismatchError(f"{src.description} is {top.digest}, expected {img.digest}")
            graph = ImageGraph(src, [top], {})
            stack = [(top, 1)]
            while stack:
                m, level = stack.pop()
                parsed = parse_manifest(m.raw, m.media_type)
                if is_index(m.media_type):
                    check_nesting(level, src.description)
                for c in parsed.children if is_index(m.media_type) else ():
                    child = src.fetch_manifest(c)
                    if child.digest != c.digest:
                        raise DigestMismatchError(f"{src.description}: child {c.digest} arrived as {child.digest}")
                    graph.manifests.append(child)
                    stack.append((child, level + 1))
                graph.blobs.update({str(b.digest): b for b in parsed.blobs})
            status = "built" if img.in_layout else "planned"
            return PackedImage(img, status, str(top.digest), top.media_type, len(top.raw), graph.size(), blob_sizes=graph.sizes(), graph=graph)
        except BundlerError as exc:  # reported per image, never hidden
            log.debug("resolving %s failed", img.source, exc_info=True)
            return PackedImage(img, "failed", error=str(exc), error_object=exc)

    results: List[Optional[PackedImage]] = [None] * len(planned)
    fed, failed = 0, False
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="resolve") as pool:
        futures = {pool.submit(one, img): i for i, img in enumerate(planned)}
        for fut in as_completed(futures):
            results[futures[fut]] = fut.result()
            ready: List[PackedImage] = []
            while fed < len(results):
                done = results[fed]
                if done is None:
                    break
                ready.append(done)
                fed += 1
            failed = failed or any(r.status == "failed" for r in ready)
            if on_ready is not None and ready and not failed:
                on_ready(ready)
    return [r for r in results if r is not None]


def bundle_content(images: List[PackedImage], *, layout: Layout, base: Optional[BundleManifest], files: Mapping[str, bytes]) -> BundleContent:
    """What the bundle holds, image by image in plan order: each image's manifests (always, so each image
    graph resolves on its own), then its config and layers the base bundle does not carry, each blob once
    (where an earlier image brought it). Image by image, the content of the first images is the start of the
    content of all of them: pack lays those out and fetches them while later images are still resolved.
    Each blob is streamed from the work layout when it is there (planning read it, or a catalog was built),
    else from the registry of the first image that needs it."""
    from bundler.bundle.fill import BundleContent, SourcedBlob
    from bundler.bundle.members import blob_role
    from bundler.bundle.manifest import BaseBlob

    in_base: Set[str] = set()
    if base is not None:
        in_base = {str(b.digest) for b in base.blobs} | {str(b.digest) for b in base.base_blobs}
    blobs: Dict[str, SourcedBlob] = {}
    skipped: Dict[str, BaseBlob] = {}
    needs: Dict[str, List[str]] = {}
    bundle_images = []
    for img in images:
        graph = img.graph
        assert graph is not None and img.digest is not None
        for m in graph.manifests:
            blobs.setdefault(str(m.digest), SourcedBlob(m.digest, len(m.raw), m.media_type, data=m.raw))
        own = sorted(graph.blobs.items(), key=lambda kv: blob_role(kv[1].media_type) == "layer")  # config first (a stable sort)
        for key, d in own:
            if key in in_base:
                skipped.setdefault(key, BaseBlob(d.digest, d.size, d.media_type))
            elif key not in blobs:
                blobs[key] = SourcedBlob(d.digest, d.size, d.media_type, opener=_opener(graph.source, d, layout), ranged=_ranged(graph.source, d, layout))
        needs[img.planned.source] = [str(m.digest) for m in graph.manifests] + [k for k in graph.blobs if k not in in_base]
        bundle_images.append(_bundle_image(img))
    return BundleContent(
        images=bundle_images,
        blobs=list(blobs.values()),
        skipped=list(skipped.values()),
        files=files,
        base_id=base.id if base is not None else None,
        needs=needs,
    )


def _opener(source: ImageSource, d: Descriptor, layout: Layout) -> Callable[[int], ContextManager[Readable]]:
    if layout.has_blob(d.digest, d.size):
        cached = LayoutImage(layout, None)
        return lambda offset: cached.open_blob(d, offset)
    return lambda offset: source.open_blob(d, offset)


def _ranged(source: ImageSource, d: Descriptor, layout: Layout) -> Optional[Callable[[int, int], ContextManager[Readable]]]:
    """Byte ranges of a blob pulled from a registry (a large one is fetched in parts); None for the work layout."""
    if layout.has_blob(d.digest, d.size) or not isinstance(source, (RegistryRepository, MirroredRepository)):
        return None
    registry = source
    return lambda start, end: registry.open_blob_range(d, start, end)


def _bundle_image(i: PackedImage) -> BundleImage:
    assert i.digest is not None
    p = i.planned
    return BundleImage(
        source=p.source,
        digest=Digest.parse(i.digest),
        media_type=i.media_type,
        size=i.manifest_size,
        kind=p.kind,
        target_repository=p.target_repository,
        target_tag=p.target_tag,
        annotations=dict(p.annotations),
        total_size=i.bytes_needed,
        facts=p.facts,
    )


def _unique_bytes(images: List[PackedImage]) -> int:
    seen: Dict[str, int] = {}
    for i in images:
        seen.update(i.blob_sizes)
    return sum(seen.values())


def _fill_catalog_bytes(plan: Plan, images: List[PackedImage]) -> None:
    """Each catalog report's `bytes`: the unique blobs of the catalog image and every image it brought."""
    for report in plan.reports.catalogs or []:
        name = report.catalog
        blobs: Dict[str, int] = {}
        for img in images:
            if img.digest and (img.planned.facts.catalog == name or (img.planned.kind == "catalog" and img.planned.source == name)):
                blobs.update(img.blob_sizes)
        report.bytes = sum(blobs.values())


def _check_space(directory: Path, needed: int, *, what: str, where: str = "--out") -> None:
    free = free_space(directory)
    if free < needed:
        raise DiskSpaceError(
            f"{what} needs {needed} bytes ({human_bytes(needed)}) but {directory} has {free} bytes ({human_bytes(free)}) free",
            hint=f"free space or choose another {where} directory; nothing was pulled",
        )

"""Image-set config → the list of images to carry (`PlannedImage`s), all pinned by digest where known.

Owns the orchestration of the planners: release payload and signatures (`release`), the update-graph
data image (`graph_image`, for `graph: true`), sample imagestreams
(`samples`), operator catalogs (`catalog`), Helm charts (`helm.plan`: archives, images, OCI artifacts),
additional images (from registries, or from local OCI layouts: `plan_layout_image`) and the images that
run Quay on the far side (here). It de-duplicates by target and keeps each planner's report for the pack summary.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from bundler.transfer.copy import Copier
from bundler.base.errors import ConfigError, ImageNotFoundError
from bundler.openshift.image_set import ImageSet
from bundler.layout.store import Layout
from bundler.oci.digest import Digest
from bundler.oci.graph import graph_sizes
from bundler.oci.media import REF_NAME
from bundler.oci.planned import LOCAL_LAYOUT_HOST, PlannedImage, digest_tag, local_repository
from bundler.oci.reference import TAG, Reference
from bundler.registry.client import Registries
from bundler.transfer.transports import ImageSource, LayoutImage, parse_layout_source, registry_source, select_layout_image

if TYPE_CHECKING:
    from bundler.openshift.catalog.plan import CatalogReport
    from bundler.openshift.image_set.model import ReleaseSpec, SamplesSpec
    from bundler.openshift.release import ReleaseInfo, ReleasePlan
    from bundler.openshift.samples import SamplesReport
    from bundler.openshift.graph_image import GraphImageReport
    from bundler.openshift.helm.plan import ChartReport
    from bundler.openshift.sigstore import SignatureReport

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplesSummary:
    """The samples part of the pack report."""

    images: int
    organisations: List[str]
    report: SamplesReport

    def to_json(self) -> Dict[str, Any]:
        r = self.report
        details = {
            "sources": list(r.sources),
            "imagestreams": list(r.imagestreams),
            "excluded": list(r.excluded),
            "conflicts": list(r.conflicts),
            "skipped": list(r.skipped),
            "warnings": list(r.warnings),
        }
        return {"images": self.images, "organisations": list(self.organisations), "details": details}


@dataclass
class PlanReports:
    """What each planner read and decided (None: that part of the config is empty), for the pack summary,
    `--json` and the bundle's `reports/plan.json`. Pack fills in each catalog's `bytes` once it has pulled."""

    releases: Optional[List[ReleaseInfo]] = None
    samples: Optional[SamplesSummary] = None
    catalogs: Optional[List[CatalogReport]] = None
    signatures: Optional[SignatureReport] = None
    graph: Optional[GraphImageReport] = None
    helm: Optional[List[ChartReport]] = None

    def to_json(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        if self.releases is not None:
            out["releases"] = [r.to_json() for r in self.releases]
        if self.samples is not None:
            out["samples"] = self.samples.to_json()
        if self.catalogs is not None:
            out["catalogs"] = [c.to_json() for c in self.catalogs]
        if self.signatures is not None:
            out["signatures"] = self.signatures.to_json()
        if self.graph is not None:
            out["graph"] = self.graph.to_json()
        if self.helm is not None:
            out["helm"] = [c.to_json() for c in self.helm]
        return out


@dataclass
class Plan:
    images: List[PlannedImage] = field(default_factory=list)
    files: Dict[str, bytes] = field(default_factory=dict)
    """Extra files to carry in the bundle (release signatures …)."""
    reports: PlanReports = field(default_factory=PlanReports)
    warnings: List[str] = field(default_factory=list)

    def add(self, images: Sequence[PlannedImage]) -> None:
        self.images.extend(images)

    def deduplicated(self) -> List[PlannedImage]:
        """One image per (target repository, tag); a conflict (two digests for one target) is a config error."""
        seen: Dict[Tuple[str, str], PlannedImage] = {}
        for img in self.images:
            key = (img.target_repository, img.target_tag)
            prev = seen.get(key)
            if prev is None:
                seen[key] = img
            elif prev.digest and img.digest and prev.digest != img.digest:
                raise ConfigError(
                    f"two images want the same target {key[0]}:{key[1]}: {prev.source} and {img.source}",
                    hint="remove one of them from the config",
                )
        return list(seen.values())


def plan_plain_image(
    reference: str,
    *,
    kind: str,
    annotations: Optional[Mapping[str, str]] = None,
    target_repository: Optional[str] = None,
    target_tag: Optional[str] = None,
) -> PlannedImage:
    """An image carried as it is: same repository path on the mirror, its tag (or a digest tag), unless
    `target_repository` / `target_tag` (oc-mirror's `targetRepo` / `targetTag`) say otherwise."""
    ref = Reference.parse(reference)
    if target_tag:
        tag = target_tag
    elif ref.tag:
        tag = ref.tag
    elif ref.digest is not None:
        tag = digest_tag(str(ref.digest))
    else:
        tag = "latest"
    return PlannedImage(
        source=str(ref) if (ref.tag or ref.digest) else f"{ref}:latest",
        kind=kind,
        target_repository=target_repository or ref.repository,
        target_tag=tag,
        digest=str(ref.digest) if ref.digest else None,
        annotations=dict(annotations or {}),
    )


def plan_layout_image(
    text: str, *, kind: str, target_repository: Optional[str] = None, target_tag: Optional[str] = None
) -> PlannedImage:
    """An image from a local OCI layout (`oci://DIR[:REF|@DIGEST]`), carried digest-exact like a registry image.

    On the mirror it goes to `target_repository`, else the directory's last component (`local_repository`),
    tagged `target_tag`, else the tag its ref name ends with (`v1` for `v1` or `quay.io/org/app:v1`), else a
    digest tag. Its `source` names the reserved host `LOCAL_LAYOUT_HOST`, so no cluster is told to pull it
    from anywhere (no mirror-set entry). Every blob it names must be in the layout: a missing one is an error
    now, not in the middle of filling the bundle."""
    where = parse_layout_source(text)
    assert where.directory is not None
    layout = Layout(where.directory, create=False)
    chosen = select_layout_image(layout, ref_name=where.ref_name, digest=where.digest, what=f"{kind} image {text}")
    source = LayoutImage(layout, None, digest=chosen.digest)
    try:
        top = source.resolve()
        missing = [d for d, size in graph_sizes(top, source.fetch_manifest, description=text).items() if not layout.has_blob(Digest.parse(d), size)]
    except ImageNotFoundError as exc:  # a manifest of the image is missing: nothing below it can be read
        missing = [exc.message]
    if missing:
        raise ImageNotFoundError(
            f"{kind} image {text}: the OCI layout is incomplete: {len(missing)} blob(s) the image needs are missing or cut short, e.g. {missing[0]}",
            hint="copy the image into the layout again (skopeo copy … oci:DIR:TAG)",
        )
    repository = target_repository or local_repository(where.directory)
    tag = target_tag or _tag_of(where.ref_name or chosen.annotations.get(REF_NAME)) or digest_tag(str(top.digest))
    return PlannedImage(
        source=f"{LOCAL_LAYOUT_HOST}/{repository}:{tag}",
        kind=kind,
        target_repository=repository,
        target_tag=tag,
        digest=str(top.digest),
        local_layout=where.directory,
        annotations={"layout": text},
    )


def _tag_of(ref_name: Optional[str]) -> Optional[str]:
    """The tag a layout ref name gives: the name itself (`v1`), or what follows the last `:` of a full
    reference (`quay.io/org/app:v1`); None when that is no valid tag."""
    if not ref_name:
        return None
    tail = ref_name.rsplit(":", 1)[1] if ":" in ref_name.rsplit("/", 1)[-1] else ref_name
    return tail if re.fullmatch(TAG, tail) else None


def is_blocked(image: PlannedImage, patterns: Sequence[str]) -> Optional[str]:
    """The `blockedImages` entry that blocks `image`, if any: an entry equal to its source (or the source's
    repository), or a regular expression found in its source or its target (`repository:tag`), as oc-mirror
    matches them."""
    source = image.source
    target = f"{image.target_repository}:{image.target_tag}"
    repository = Reference.parse(source).name
    for pattern in patterns:
        if pattern in (source, repository):
            return pattern
        try:
            if re.search(pattern, source) or re.search(pattern, target):
                return pattern
        except re.error:  # checked when the config was read; an exact name then
            continue
    return None


def drop_blocked(images: Sequence[PlannedImage], patterns: Sequence[str]) -> Tuple[List[PlannedImage], List[str]]:
    """(images still carried, one line per image left out by `blockedImages`)."""
    kept: List[PlannedImage] = []
    dropped: List[str] = []
    for image in images:
        pattern = is_blocked(image, patterns) if patterns else None
        if pattern is None:
            kept.append(image)
        else:
            dropped.append(f"{image.kind} image {image.source} is blocked by blockedImages entry {pattern!r}: not carried")
    return kept, dropped


def platform_choice(
    reference: str, platforms: Sequence[Tuple[str, str]], *, registries: Registries, source: Optional[ImageSource] = None
) -> Tuple[bool, Optional[str]]:
    """Whether the image at `reference` runs on one of `platforms` ((os, Go architecture) pairs), and a note.

    A manifest list with at least one matching child is carried whole, every child, so its digest (the one
    clusters and catalogs pull by) stays the same; the note says how many children came along anyway. A
    single image is judged by its config's os/architecture."""
    from bundler.oci.media import is_index, parse_manifest
    from bundler.oci.platform import go_arch
    from bundler.transfer.image_files import open_image

    wanted = {(o, go_arch(a)) for o, a in platforms}
    if source is None:
        source = registry_source(registries, Reference.parse(reference))
    top = source.resolve()
    parsed = parse_manifest(top.raw, top.media_type)
    if is_index(top.media_type):
        have = [(c.platform.os, go_arch(c.platform.architecture)) for c in parsed.children if c.platform is not None]
        matching = [p for p in have if p in wanted]
        if not matching:
            return False, f"{reference}: none of its platforms ({', '.join(sorted({f'{o}/{a}' for o, a in have}))}) is listed in platforms: not carried"
        extra = len(have) - len(matching)
        note = f"{reference}: a manifest list carried whole (digest-exact), including {extra} child(ren) outside platforms" if extra else None
        return True, note
    config = open_image(source, top).config
    have_one = (str(config.get("os", "")), go_arch(str(config.get("architecture", ""))))
    if have_one in wanted:
        return True, None
    return False, f"{reference}: a {have_one[0]}/{have_one[1]} image, not listed in platforms: not carried"


def build_plan(
    image_set: ImageSet,
    *,
    registries: Registries,
    layout: Layout,
    copier: Copier,
    graph_url: Optional[str] = None,
    signature_store: Optional[str] = None,
    graph_data_url: Optional[str] = None,
    graph_base_image: Optional[str] = None,
) -> Plan:
    """Resolve everything the config names. Network access: manifests and small files only, no layers."""
    plan = Plan(warnings=list(image_set.warnings))

    def stage(reference: str) -> ImageSource:
        """Copy an image planning must read into the work layout (once; a rerun finds it there) and read it from there."""
        ref = Reference.parse(reference)
        copier.copy(registry_source(registries, ref), LayoutImage(layout, reference))
        return LayoutImage(layout, reference)

    release_plan = _plan_releases(
        plan, image_set.releases, registries=registries, layout=layout, stage=stage, graph_url=graph_url,
        signature_store=signature_store, graph_data_url=graph_data_url, graph_base_image=graph_base_image,
    )
    _plan_samples(plan, image_set.samples, registries=registries, release_plan=release_plan, stage=stage)
    if image_set.operators:
        from bundler.openshift.catalog import plan as catalog

        plan.reports.catalogs = []
        for spec in image_set.operators:
            cplan = catalog.plan_catalog(spec, registries=registries, layout=layout, copier=copier)
            plan.add([cplan.catalog_image, *cplan.images])
            plan.reports.catalogs.append(cplan.report)
    blocked = image_set.blocked_images
    for extra in image_set.additional:
        if extra.name.startswith("oci:"):
            image = plan_layout_image(extra.name, kind="additional", target_repository=extra.target_repository, target_tag=extra.target_tag)
        else:
            image = plan_plain_image(extra.name, kind="additional", target_repository=extra.target_repository, target_tag=extra.target_tag)
        if extra.platforms and is_blocked(image, blocked) is None:
            wanted = [(p.partition("/")[0], p.partition("/")[2]) for p in extra.platforms]
            local = None
            if image.local_layout is not None:
                assert image.digest is not None
                local = LayoutImage(Layout(image.local_layout, create=False), None, digest=Digest.parse(image.digest))
            keep, note = platform_choice(extra.name, wanted, registries=registries, source=local)
            if note:
                plan.warnings.append(note)
            if not keep:
                continue
        plan.add([image])
    if not image_set.helm.is_empty():
        from bundler.openshift.helm.plan import plan_helm

        helm = plan_helm(image_set.helm, layout=layout, options=registries.options)
        plan.files.update(helm.files)
        plan.warnings.extend(helm.warnings)
        plan.add(helm.artifacts)
        for found in helm.images:
            image = plan_plain_image(found.reference, kind="additional", annotations={"helm-chart": found.chart})
            if found.platforms and is_blocked(image, blocked) is None:
                keep, note = platform_choice(found.reference, [(p.partition("/")[0], p.partition("/")[2]) for p in found.platforms], registries=registries)
                if note:
                    plan.warnings.append(f"helm chart {found.chart}: {note}")
                if not keep:
                    continue
            plan.add([image])
        plan.reports.helm = list(helm.charts)
    for ref in image_set.registry_images.images():
        plan.add([plan_plain_image(ref, kind="registry")])
    if blocked:
        plan.images, dropped = drop_blocked(plan.images, blocked)
        plan.warnings.extend(dropped)
    return plan


def _plan_samples(
    plan: Plan, sam: "SamplesSpec", *, registries: Registries, release_plan: Optional["ReleasePlan"], stage: Callable[[str], ImageSource]
) -> None:
    """The sample imagestreams' images, added to `plan` (nothing when the config names no samples)."""
    if sam.from_release or sam.directory or sam.images:
        from bundler.openshift import samples

        operators = [r.samples_operator for r in (release_plan.releases if release_plan and sam.from_release else ()) if r.samples_operator]
        samples_plan = samples.plan_samples(
            sam, registries=registries, release_plan=release_plan, operator_sources={ref: stage(ref) for ref in operators}
        )
        plan.add(samples_plan.images)
        plan.reports.samples = SamplesSummary(
            images=len(samples_plan.images), organisations=sorted(samples_plan.organisations), report=samples_plan.report
        )
        plan.warnings.extend(samples_plan.report.warnings)


def _plan_releases(
    plan: Plan,
    rel: "ReleaseSpec",
    *,
    registries: Registries,
    layout: Layout,
    stage: Callable[[str], ImageSource],
    graph_url: Optional[str],
    signature_store: Optional[str],
    graph_data_url: Optional[str],
    graph_base_image: Optional[str],
) -> Optional["ReleasePlan"]:
    """The release payloads, their signatures and the update-graph image, added to `plan`; the release plan (None without releases)."""
    if not (rel.images or rel.channels):
        if rel.graph_data:
            plan.warnings.append("graph: true needs a release (platform.release or channels): no update-graph image is built")
        return None
    from bundler.openshift import release

    kwargs: Dict[str, Any] = {"registries": registries, "graph_url": graph_url, "stage": stage, "kubevirt": rel.kubevirt_container}
    if signature_store:
        kwargs["signature_store"] = signature_store
    release_plan = release.plan_releases(rel, **kwargs)
    plan.add(release_plan.images)
    for digest, sigs in release_plan.signatures.items():
        for i, data in enumerate(sigs, start=1):
            plan.files[f"signatures/{digest.replace(':', '-')}-{i}"] = data
    plan.reports.releases = list(release_plan.releases)
    plan.warnings.extend(release_plan.warnings)
    if rel.graph_data:
        from bundler.openshift import graph_image

        graph, plan.reports.graph = graph_image.plan_graph_image(
            layout=layout, stage=stage, options=registries.options, data_url=graph_data_url, base_image=graph_base_image
        )
        plan.add([graph])
    return release_plan


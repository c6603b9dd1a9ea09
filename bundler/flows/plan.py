"""Image-set config → the list of images to carry (`PlannedImage`s), all pinned by digest where known.

Owns the orchestration of the planners: release payload and signatures (`release`), sample imagestreams
(`samples`), operator catalogs (`catalog`), additional images and the images that run Quay on the far side
(here). It de-duplicates by target and keeps each planner's report for the pack summary.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple

from bundler.transfer.copy import Copier
from bundler.base.errors import ConfigError
from bundler.openshift.image_set import ImageSet
from bundler.layout.store import Layout
from bundler.oci.planned import PlannedImage, digest_tag
from bundler.oci.reference import Reference
from bundler.registry.client import Registries
from bundler.transfer.transports import ImageSource, LayoutImage, RegistryRepository

if TYPE_CHECKING:
    from bundler.openshift.catalog.plan import CatalogReport
    from bundler.openshift.release import ReleaseInfo
    from bundler.openshift.samples import SamplesReport
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


def plan_plain_image(reference: str, *, kind: str, annotations: Optional[Mapping[str, str]] = None) -> PlannedImage:
    """An image carried as it is: same repository path on the mirror, its tag (or a digest tag)."""
    ref = Reference.parse(reference)
    if ref.tag:
        tag = ref.tag
    elif ref.digest is not None:
        tag = digest_tag(str(ref.digest))
    else:
        tag = "latest"
    return PlannedImage(
        source=str(ref) if (ref.tag or ref.digest) else f"{ref}:latest",
        kind=kind,
        target_repository=ref.repository,
        target_tag=tag,
        digest=str(ref.digest) if ref.digest else None,
        annotations=dict(annotations or {}),
    )


def build_plan(
    image_set: ImageSet,
    *,
    registries: Registries,
    layout: Layout,
    copier: Copier,
    graph_url: Optional[str] = None,
    signature_store: Optional[str] = None,
) -> Plan:
    """Resolve everything the config names. Network access: manifests and small files only, no layers."""
    plan = Plan(warnings=list(image_set.warnings))

    def stage(reference: str) -> ImageSource:
        """Copy an image planning must read into the work layout (once; a rerun finds it there) and read it from there."""
        ref = Reference.parse(reference)
        copier.copy(RegistryRepository(registries.client(ref.registry), ref), LayoutImage(layout, reference))
        return LayoutImage(layout, reference)

    release_plan = None
    rel = image_set.releases
    if rel.images or rel.channels:
        from bundler.openshift import release

        kwargs: Dict[str, Any] = {"registries": registries, "graph_url": graph_url, "stage": stage}
        if signature_store:
            kwargs["signature_store"] = signature_store
        release_plan = release.plan_releases(rel, **kwargs)
        plan.add(release_plan.images)
        for digest, sigs in release_plan.signatures.items():
            for i, data in enumerate(sigs, start=1):
                plan.files[f"signatures/{digest.replace(':', '-')}-{i}"] = data
        plan.reports.releases = list(release_plan.releases)
        plan.warnings.extend(release_plan.warnings)
    sam = image_set.samples
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
    if image_set.operators:
        from bundler.openshift.catalog import plan as catalog

        plan.reports.catalogs = []
        for spec in image_set.operators:
            cplan = catalog.plan_catalog(spec, registries=registries, layout=layout, copier=copier)
            plan.add([cplan.catalog_image, *cplan.images])
            plan.reports.catalogs.append(cplan.report)
    for ref in image_set.additional_images:
        plan.add([plan_plain_image(ref, kind="additional")])
    for ref in image_set.registry_images.images():
        plan.add([plan_plain_image(ref, kind="registry")])
    return plan


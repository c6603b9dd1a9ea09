"""The unit of planning: one image to carry, where it comes from and where it goes on the mirror.

Release, samples, catalog and additional-image planners all return `PlannedImage`s; pack pulls them into
the work layout and records them in the bundle manifest; unpack pushes them to
`<registry>/<prefix>/<target_repository>:<target_tag>`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Mapping, Optional, Tuple

from bundler.oci.reference import PATH_COMPONENT

#: Image kinds as recorded in the bundle manifest.
KINDS = ("release", "release-component", "sample", "operator", "catalog", "additional", "registry", "signature", "graph", "helm-chart")

#: Registry host of the `source` of an image read from a local OCI layout (oc-mirror's `oci://` catalogs):
#: a reserved name (RFC 2606 `.invalid`) that no cluster pulls from, so such images get no mirror-set entries.
LOCAL_LAYOUT_HOST = "oci-layout.invalid"



def local_repository(directory: Path, *, fallback: str = "image") -> str:
    """The target repository of an image read from the OCI layout `directory` (an `oci://` catalog or
    additional image without `targetRepo`/`targetCatalog`): the directory's last component, made a valid
    repository path component (`/data/My Catalog` -> `my-catalog`; nothing usable -> `fallback`)."""
    text = re.sub(r"[^a-z0-9]+", "-", directory.resolve().name.lower()).strip("-")
    return text if re.fullmatch(PATH_COMPONENT, text) else fallback


#: The bundle manifest records `ImageFacts` as these annotation keys, beside the free-form annotations.
LAYOUT_REF = "layout-ref"
CATALOG = "catalog"
PRUNED = "pruned"
CATALOG_NAME = "catalog-name"
DISPLAY_NAME = "display-name"


@dataclass(frozen=True)
class ImageFacts:
    """What code acts on about an image, beyond where it comes from and where it goes.

    Pack and unpack read these fields; the bundle manifest stores them as annotations (`to_annotations`,
    `split`), so its on-disk form is a plain string map.
    """

    layout_ref: Optional[str] = None
    """For an image built into the work layout (`in_layout`): the ref name the layout holds it under."""
    catalog: Optional[str] = None
    """The operator catalog (as named in the config) this image is (kind `catalog`) or belongs to (`operator`)."""
    pruned: Optional[bool] = None
    """For a catalog image: rebuilt with only the selected content (True) or carried as it is (False)."""
    catalog_name: Optional[str] = None
    """For a catalog image: the CatalogSource name to write (default: from the target repository)."""
    display_name: Optional[str] = None
    """For a catalog image: the CatalogSource display name (default: `<repository>:<tag>`)."""

    def to_annotations(self) -> Dict[str, str]:
        out: Dict[str, str] = {}
        if self.catalog is not None:
            out[CATALOG] = self.catalog
        if self.layout_ref is not None:
            out[LAYOUT_REF] = self.layout_ref
        if self.pruned is not None:
            out[PRUNED] = "true" if self.pruned else "false"
        if self.catalog_name is not None:
            out[CATALOG_NAME] = self.catalog_name
        if self.display_name is not None:
            out[DISPLAY_NAME] = self.display_name
        return out

    def recorded_with(self, annotations: Mapping[str, str]) -> Dict[str, str]:
        """The annotation map an image is recorded with: these facts, then its free-form `annotations`."""
        return {**self.to_annotations(), **annotations}

    @classmethod
    def split(cls, annotations: Mapping[str, str]) -> Tuple["ImageFacts", Dict[str, str]]:
        """The facts recorded in `annotations`, and the free-form annotations left over."""
        rest = dict(annotations)
        pruned_text = rest.get(PRUNED)
        pruned = {"true": True, "false": False}.get(pruned_text) if pruned_text is not None else None
        if pruned is not None:
            del rest[PRUNED]
        facts = cls(
            layout_ref=rest.pop(LAYOUT_REF, None),
            catalog=rest.pop(CATALOG, None),
            pruned=pruned,
            catalog_name=rest.pop(CATALOG_NAME, None),
            display_name=rest.pop(DISPLAY_NAME, None),
        )
        return facts, rest


@dataclass(frozen=True)
class PlannedImage:
    source: str
    """Full reference to pull, digest-pinned where known (e.g. quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:…)."""
    kind: str
    target_repository: str
    """Repository path on the mirror without host (e.g. ocp4/openshift4, rhscl/ruby-25-rhel7)."""
    target_tag: str
    """Every image is pushed with a tag (Quay garbage-collects untagged manifests)."""
    digest: Optional[str] = None
    """The digest when already known (pinned sources, images built into the work layout)."""
    in_layout: bool = False
    """True for images built locally into the work layout (pruned catalogs): nothing to pull; the layout
    holds them under `facts.layout_ref`."""
    local_layout: Optional[Path] = None
    """For an image read from a local OCI layout (an `oci://` source): that layout's directory; pack streams
    the image (`digest`) from there. Not recorded in the bundle: the far side never needs it."""
    annotations: Mapping[str, str] = field(default_factory=dict)
    """Free-form notes for reports and resources: version, arch, component, recovered, original-digest…"""
    facts: ImageFacts = ImageFacts()
    """What pack and unpack act on: layout ref, catalog, pruned, CatalogSource names."""

    def recorded_annotations(self) -> Dict[str, str]:
        return self.facts.recorded_with(self.annotations)


def digest_tag(digest: str, *, prefix: str = "ocpb") -> str:
    """A tag for a digest-only image that cannot collide with cosign's `sha256-<hex>[.sig|.att]` scheme."""
    algorithm, _, encoded = digest.partition(":")
    return f"{prefix}-{algorithm}-{encoded[:40]}"

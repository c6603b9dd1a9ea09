"""The unit of planning: one image to carry, where it comes from and where it goes on the mirror.

Release, samples, catalog and additional-image planners all return `PlannedImage`s; pack pulls them into
the work layout and records them in the bundle manifest; unpack pushes them to
`<registry>/<prefix>/<target_repository>:<target_tag>`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional

#: Image kinds as recorded in the bundle manifest.
KINDS = ("release", "release-component", "sample", "operator", "catalog", "additional", "registry")


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
    holds them under the ref name in the `layout-ref` annotation."""
    annotations: Mapping[str, str] = field(default_factory=dict)
    """Free-form facts for reports and resources: version, arch, component, catalog, recovered, original-digest…"""


def digest_tag(digest: str, *, prefix: str = "ocpb") -> str:
    """A tag for a digest-only image that cannot collide with cosign's `sha256-<hex>[.sig|.att]` scheme."""
    algorithm, _, encoded = digest.partition(":")
    return f"{prefix}-{algorithm}-{encoded[:40]}"

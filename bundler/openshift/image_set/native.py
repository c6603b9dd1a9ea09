"""Our own image-set format: ``apiVersion: ocp-bundler.io/v1alpha1``, ``kind: ImageSet``.

It owns the table of our top-level fields (target, releases, samples, operators, additionalImages,
blockedImages, registryImages, volumeSizeGiB) and how they become an `ImageSet`.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Mapping, Optional

from bundler.oci.reference import REPOSITORY, TAG
from bundler.openshift.image_set.model import (
    API_VERSION,
    GIB,
    ImageSet,
    RegistryImagesSpec,
    ReleaseSpec,
    SamplesSpec,
    TargetSpec,
)
from bundler.openshift.image_set.schema import (
    Ctx,
    Field,
    Record,
    boolean,
    dedupe,
    directory_path,
    http_url,
    image_reference,
    release_reference,
    list_of,
    mapping_of,
    positive_int,
    registry_host,
    text_value,
    values_of,
)
from bundler.openshift.image_set.sections import (
    RELEASE_CHANNEL,
    architecture_list,
    additional_image,
    blocked_image,
    finish,
    operator_catalogs,
    unique_images,
)

def _build_samples(ctx: Ctx, record: Record) -> SamplesSpec:
    return SamplesSpec(**record.values)


_EXCLUDE_NAME = text_value(
    "an imagestream name like jenkins, or name:tag", re.compile(rf"[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?(?::{TAG})?")
)

OWN_TOP: Mapping[str, Field] = {
    "apiVersion": Field("api_version", text_value("an apiVersion")),
    "kind": Field("kind", text_value("a kind")),
    "target": Field(
        "target",
        mapping_of(
            {
                "registry": Field("registry", registry_host),
                "releaseRepository": Field(
                    "release_repository", text_value("a repository path like ocp4/openshift4", re.compile(REPOSITORY))
                ),
                "prefix": Field("prefix", text_value("a repository path prefix like mirror/ocp", re.compile(REPOSITORY))),
            },
            lambda ctx, r: TargetSpec(**r.values),
        ),
    ),
    "releases": Field(
        "releases",
        mapping_of(
            {
                "images": Field("images", list_of(release_reference("a release image reference"), "release images")),
                "channels": Field("channels", list_of(RELEASE_CHANNEL, "release channels")),
                "architectures": Field("architectures", architecture_list),
                "graphURL": Field("graph_url", http_url),
                "graphData": Field("graph_data", boolean),
                "signatures": Field("signatures", boolean),
                "kubeVirtContainer": Field("kubevirt_container", boolean),
            },
            values_of,
        ),
    ),
    "samples": Field(
        "samples",
        mapping_of(
            {
                "fromRelease": Field("from_release", boolean),
                "directory": Field("directory", directory_path),
                "images": Field("images", list_of(image_reference("a sample image reference"), "image references")),
                "exclude": Field("exclude", list_of(_EXCLUDE_NAME, "imagestream names")),
            },
            _build_samples,
        ),
    ),
    "operators": Field("operators", operator_catalogs()),
    "additionalImages": Field("additional", list_of(additional_image, "image references")),
    "blockedImages": Field("blocked_images", list_of(blocked_image, "image names or regular expressions")),
    "registryImages": Field(
        "registry_images",
        mapping_of(
            {
                "enabled": Field("enabled", boolean),
                "quay": Field("quay", image_reference("a Quay image reference")),
                "postgres": Field("postgres", image_reference("a PostgreSQL image reference")),
                "redis": Field("redis", image_reference("a Redis image reference")),
            },
            lambda ctx, r: RegistryImagesSpec(**r.values),
        ),
    ),
    "volumeSizeGiB": Field("volume_size_gib", positive_int("a volume size in GiB")),
}


def build_own(ctx: Ctx, record: Record) -> ImageSet:
    values = record.values
    target: TargetSpec = values.get("target", TargetSpec())
    release_values: Dict[str, Any] = dict(values.get("releases", {}))
    if "images" in release_values:
        release_values["images"] = dedupe(
            ctx, release_values["images"], record.at("releases").key("images", None), "release image"
        )
    if not release_values.get("architectures"):
        release_values.pop("architectures", None)
    releases = ReleaseSpec(**release_values, repository=target.release_repository)
    samples: SamplesSpec = values.get("samples", SamplesSpec())
    if samples.from_release and releases.is_empty():
        ctx.fail(
            record.at("samples").key("fromRelease", None),
            "needs a release to read the imagestreams from: add releases.images or releases.channels",
        )
    gib: Optional[int] = values.get("volume_size_gib")
    return finish(
        ctx,
        record,
        ImageSet(
            source_format=API_VERSION,
            source_name=ctx.source_name,
            releases=releases,
            samples=samples,
            operators=values.get("operators", ()),
            additional=unique_images(ctx, values.get("additional", ()), record.at("additionalImages")),
            blocked_images=values.get("blocked_images", ()),
            registry_images=values.get("registry_images", RegistryImagesSpec()),
            target=target,
            volume_size_hint=gib * GIB if gib is not None else None,
        ),
    )



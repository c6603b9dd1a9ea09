"""oc-mirror's ``ImageSetConfiguration`` (``mirror.openshift.io/v1alpha2`` and ``v2alpha1``), read unchanged.

It owns the tables of both versions and how they become an `ImageSet`. What we do not support yet
(Helm, blocked images, ...) is an error naming the field, never dropped.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Mapping, Optional

from bundler.oci.reference import PATH_COMPONENT
from bundler.openshift.image_set.model import GIB, ImageSet, ReleaseSpec
from bundler.openshift.image_set.schema import (
    Converter,
    Ctx,
    Field,
    Record,
    boolean,
    dedupe,
    image_reference,
    list_of,
    mapping_of,
    positive_int,
    text_value,
    values_of,
)
from bundler.openshift.image_set.sections import (
    MIN_BUNDLE,
    RELEASE_CHANNEL,
    architecture_list,
    finish,
    named_image,
    operator_catalogs,
)

_UNSUPPORTED_MIRROR: Mapping[str, str] = {
    "helm": "Helm charts are not carried yet; list the chart's images under additionalImages instead",
    "blockedImages": "images cannot be filtered out yet; remove the field and the images from the other sections",
    "samples": "oc-mirror does not implement it either; use the ocp-bundler format's samples section",
}

_PLATFORM_FIELDS_V1ALPHA2: Mapping[str, Field] = {
    "channels": Field("channels", list_of(RELEASE_CHANNEL, "release channels")),
    "architectures": Field("architectures", architecture_list),
    "graph": Field("graph", boolean),
}


def _oc_mirror_fields(
    *,
    platform_fields: Mapping[str, Field],
    platform_unsupported: Mapping[str, str],
    operators: Converter,
) -> Mapping[str, Field]:
    """The top-level table of an oc-mirror ImageSetConfiguration; versions differ in the tables passed in."""
    mirror = mapping_of(
        {
            "platform": Field("platform", mapping_of(platform_fields, values_of, unsupported=platform_unsupported)),
            "operators": Field("operators", operators),
            "additionalImages": Field(
                "additional_images", list_of(named_image("an image reference"), "images ({name: <reference>})")
            ),
        },
        values_of,
        unsupported=_UNSUPPORTED_MIRROR,
    )
    return {
        "apiVersion": Field("api_version", text_value("an apiVersion")),
        "kind": Field("kind", text_value("a kind")),
        "mirror": Field("mirror", mirror),
        "archiveSize": Field("archive_size", positive_int("an archive size in GiB")),
    }


OC_MIRROR_V1ALPHA2_FIELDS = _oc_mirror_fields(
    platform_fields=_PLATFORM_FIELDS_V1ALPHA2,
    platform_unsupported={},
    operators=operator_catalogs(
        package_unsupported={"minBundle": MIN_BUNDLE},
        channel_unsupported={"minBundle": MIN_BUNDLE},
        catalog_extra={
            "targetName": Field(
                "target_name", text_value("a repository name like redhat-operator-index", re.compile(PATH_COMPONENT))
            )
        },
        catalog_ignored={"originalRef": "ignored: deprecated by oc-mirror 4.13 and only used for oci: catalogs"},
    ),
)
STORAGE_CONFIG_IGNORED: Mapping[str, str] = {
    "storageConfig": "ignored: oc-mirror keeps its metadata there; ocp-bundler keeps its own state in the bundle"
}

OC_MIRROR_V2ALPHA1_FIELDS = _oc_mirror_fields(
    platform_fields={
        **_PLATFORM_FIELDS_V1ALPHA2,
        "release": Field("release", image_reference("a release image reference")),
    },
    platform_unsupported={
        "kubeVirtContainer": (
            "not extracted from the release yet; list the KubeVirt container image under additionalImages instead"
        ),
    },
    operators=operator_catalogs(
        package_unsupported={
            "bundles": "selecting bundles by name is not supported yet; use minVersion/maxVersion",
            "selectors": "label selectors on related images are not supported yet",
        },
        catalog_unsupported={
            "targetCatalogSourceTemplate": (
                "CatalogSource templates are not supported yet; ocp-bundler writes the CatalogSource itself"
            ),
        },
    ),
)


def build_oc_mirror(ctx: Ctx, record: Record) -> ImageSet:
    mirror: Dict[str, Any] = record.values.get("mirror", {})
    platform: Dict[str, Any] = mirror.get("platform", {})
    release = platform.get("release")
    releases = ReleaseSpec(
        images=(release,) if release else (),
        channels=platform.get("channels", ()),
        architectures=platform.get("architectures") or ("amd64",),
        graph_data=platform.get("graph", False),
    )
    archive_size: Optional[int] = record.values.get("archive_size")
    mirror_loc = record.at("mirror")
    return finish(
        ctx,
        record,
        ImageSet(
            source_format=str(record.values["api_version"]),
            source_name=ctx.source_name,
            releases=releases,
            operators=mirror.get("operators", ()),
            additional_images=dedupe(
                ctx, mirror.get("additional_images", ()), mirror_loc.key("additionalImages", None), "additional image"
            ),
            volume_size_hint=archive_size * GIB if archive_size is not None else None,
        ),
    )



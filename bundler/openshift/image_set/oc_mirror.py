"""oc-mirror's ``ImageSetConfiguration`` (``mirror.openshift.io/v1alpha2`` and ``v2alpha1``), read unchanged.

It owns the tables of both versions and how they become an `ImageSet`. What we do not support yet
(``mirror.samples``, ...) is an error naming the field and saying what to do instead, never dropped. Field names are
matched case-insensitively, as oc-mirror's decoder does, with a warning.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Mapping, Optional, Tuple
from urllib.parse import urlsplit

from bundler.oci.reference import PATH_COMPONENT
from bundler.openshift.image_set.model import GIB, HelmChart, HelmRepository, HelmSpec, ImageSet, ReleaseSpec
from bundler.openshift.image_set.schema import (
    Converter,
    Ctx,
    Field,
    Loc,
    Record,
    directory_path,
    boolean,
    expect_str,
    release_reference,
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
    ADDITIONAL_IMAGE,
    blocked_image,
    finish,
    operator_catalogs,
    platform_list,
    unique_images,
)

_UNSUPPORTED_MIRROR: Mapping[str, str] = {
    "samples": "oc-mirror does not implement it either; use the ocp-bundler format's samples section",
}
#: Fields of mirror.openshift.io/v2alpha1 met in a v1alpha2 document.
_V2_ONLY = "a mirror.openshift.io/v2alpha1 field: set apiVersion: mirror.openshift.io/v2alpha1 to use it"

_PLATFORM_FIELDS_V1ALPHA2: Mapping[str, Field] = {
    "channels": Field("channels", list_of(RELEASE_CHANNEL, "release channels")),
    "architectures": Field("architectures", architecture_list),
    "graph": Field("graph", boolean),
}
def _image_path(ctx: Ctx, value: Any, loc: Loc) -> str:
    from bundler.openshift.helm.images import parse_path

    text = expect_str(ctx, value, loc, "an image path like {.spec.template.spec.containers[*].image}")
    try:
        parse_path(text)
    except ValueError as exc:
        ctx.fail(loc, f"not a supported image path: {exc}")
    return text


def _chart_repository_url(ctx: Ctx, value: Any, loc: Loc) -> str:
    text = expect_str(ctx, value, loc, "a chart repository URL like https://charts.example.com/stable")
    if text.startswith("oci://"):
        ctx.fail(loc, f"{text!r}: oci:// chart repositories are not supported yet by ocp-bundler; pull the chart (helm pull) and list it under mirror.helm.local")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc or any(c.isspace() for c in text):
        ctx.fail(loc, f"expected a chart repository http(s) URL like https://charts.example.com/stable, got {text!r}")
    return text


_CHART_NAME = text_value("a chart name like podinfo", re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*"))
_CHART_FIELDS: Mapping[str, Field] = {
    "name": Field("name", _CHART_NAME, required=True),
    "version": Field("version", text_value("a chart version like 6.5.0 (or a constraint like >=6.5 <7)")),
    "imagePaths": Field("image_paths", list_of(_image_path, "image paths")),
    "platforms": Field("platforms", platform_list),
}
_REPOSITORY_CHART = mapping_of(_CHART_FIELDS, lambda ctx, record: HelmChart(**record.values), ignored={"path": "ignored for a repository chart"})


_LOCAL_CHART = mapping_of(
    {**_CHART_FIELDS, "path": Field("path", directory_path, required=True)}, lambda ctx, record: HelmChart(**record.values)
)
_HELM_REPOSITORY = mapping_of(
    {
        "name": Field("name", _CHART_NAME, required=True),
        "url": Field("url", _chart_repository_url, required=True),
        "charts": Field("charts", list_of(_REPOSITORY_CHART, "charts ({name, version})")),
    },
    lambda ctx, record: HelmRepository(**record.values),
)
_HELM = mapping_of(
    {
        "repositories": Field("repositories", list_of(_HELM_REPOSITORY, "helm repositories ({name, url, charts})")),
        "local": Field("local", list_of(_LOCAL_CHART, "local charts ({name, path})")),
    },
    lambda ctx, record: HelmSpec(**record.values),
)

_MIRROR_FIELDS: Mapping[str, Field] = {
    "helm": Field("helm", _HELM),
    "additionalImages": Field("additional", list_of(ADDITIONAL_IMAGE, "images ({name: <reference>})")),
    "blockedImages": Field("blocked_images", list_of(blocked_image, "images ({name: <reference or regular expression>})")),
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
            **_MIRROR_FIELDS,
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
    platform_unsupported={"release": _V2_ONLY, "platforms": _V2_ONLY, "kubeVirtContainer": _V2_ONLY},
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
        "release": Field("release", release_reference("a release image reference")),
        "platforms": Field("platforms", platform_list),
        "kubeVirtContainer": Field("kubevirt_container", boolean),
    },
    platform_unsupported={},
    operators=operator_catalogs(
        package_unsupported={
            "bundles": "select bundles by minVersion/maxVersion instead of by name",
            "selectors": "label selectors on related images are not read; select packages and channels instead",
        },
        catalog_unsupported={
            "targetCatalogSourceTemplate": (
                "ocp-bundler writes the CatalogSource itself; edit the catalogSource-<name>.yaml unpack writes"
            ),
        },
        catalog_ignored={
            "platforms": "accepted; operator images are carried with every platform (manifest lists stay digest-exact)",
        },
    ),
)


def build_oc_mirror(ctx: Ctx, record: Record) -> ImageSet:
    mirror: Dict[str, Any] = record.values.get("mirror", {})
    platform: Dict[str, Any] = mirror.get("platform", {})
    release = platform.get("release")
    architectures: Tuple[str, ...] = platform.get("architectures") or ("amd64",)
    platforms: Tuple[str, ...] = platform.get("platforms", ())
    if platforms:
        platform_loc = record.at("mirror").key("platform", None)
        if platform.get("architectures"):
            ctx.fail(platform_loc, "platforms and architectures cannot be used together (as in oc-mirror): keep one")
        wanted = tuple(dict.fromkeys(p.partition("/")[2] for p in platforms))
        architectures = wanted if len(wanted) == 1 else ("multi",)
        if len(wanted) > 1:
            ctx.warn(
                platform_loc.key("platforms", None),
                f"the multi-architecture release payload is carried whole, every architecture, digest-exact "
                f"(oc-mirror would push a sparse list of {', '.join(wanted)}, which most registries refuse)",
            )
    releases = ReleaseSpec(
        images=(release,) if release else (),
        channels=platform.get("channels", ()),
        architectures=architectures,
        graph_data=platform.get("graph", False),
        kubevirt_container=platform.get("kubevirt_container", False),
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
            additional=unique_images(ctx, mirror.get("additional", ()), mirror_loc.key("additionalImages", None)),
            blocked_images=mirror.get("blocked_images", ()),
            helm=mirror.get("helm", HelmSpec()),
            volume_size_hint=archive_size * GIB if archive_size is not None else None,
        ),
    )



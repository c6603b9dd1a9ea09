"""The tables both image-set formats share: release channels, architectures, operator catalogs.

Our format and oc-mirror's describe release channels and operator catalogs alike; they differ only in
the extra, unsupported and ignored fields passed to `operator_catalogs`.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Dict, Mapping, Optional, Tuple

from bundler.oci.reference import REPOSITORY, TAG
from bundler.openshift.image_set.model import (
    ARCHITECTURE_ALIASES,
    PLATFORM_TYPES,
    AdditionalImage,
    CatalogSpec,
    ChannelFilter,
    ChannelSpec,
    ImageSet,
    PackageSpec,
)
from bundler.transfer.transports import OCI_SCHEME, parse_layout_source
from bundler.openshift.image_set.schema import (
    Converter,
    Ctx,
    Field,
    Loc,
    Record,
    boolean,
    catalog_reference,
    check_range,
    check_unique,
    choice,
    image_reference,
    list_of,
    mapping_of,
    repository_of,
    text_value,
    version_text,
)

_CHANNEL_NAME = text_value("a channel name without spaces", re.compile(r"\S+"))
_PACKAGE_NAME = text_value("an operator package name like local-storage-operator", re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*"))


def _build_release_channel(ctx: Ctx, record: Record) -> ChannelSpec:
    check_range(ctx, record)
    return ChannelSpec(**record.values)


_RELEASE_CHANNEL_FIELDS: Mapping[str, Field] = {
    "name": Field("name", _CHANNEL_NAME, required=True),
    "type": Field("type", choice(PLATFORM_TYPES, "platform type")),
    "minVersion": Field("min_version", version_text),
    "maxVersion": Field("max_version", version_text),
    "shortestPath": Field("shortest_path", boolean),
    "full": Field("full", boolean),
}
RELEASE_CHANNEL = mapping_of(_RELEASE_CHANNEL_FIELDS, _build_release_channel)


def architecture_list(ctx: Ctx, value: Any, loc: Loc) -> Tuple[str, ...]:
    names = list_of(choice(ARCHITECTURE_ALIASES, "architecture"), "architectures")(ctx, value, loc)
    return tuple(dict.fromkeys(names))


def _build_channel_filter(ctx: Ctx, record: Record) -> ChannelFilter:
    check_range(ctx, record)
    return ChannelFilter(**record.values)


def _build_package(ctx: Ctx, record: Record) -> PackageSpec:
    check_range(ctx, record)
    check_unique(ctx, record, "channels", lambda c: str(c.name), "channel")
    return PackageSpec(**record.values)


def _build_catalog(ctx: Ctx, record: Record) -> CatalogSpec:
    values = dict(record.values)
    target_name: Optional[str] = values.pop("target_name", None)
    if target_name is not None:
        if "target_catalog" in values:
            ctx.warn(record.at("targetName"), "ignored: targetCatalog is set and takes precedence (as in oc-mirror)")
        else:
            namespace = _catalog_namespace(values["catalog"])
            values["target_catalog"] = f"{namespace}/{target_name}" if namespace else target_name
            ctx.warn(
                record.at("targetName"),
                f"deprecated by oc-mirror; read as targetCatalog: {values['target_catalog']}",
            )
    check_unique(ctx, record, "packages", lambda p: str(p.name), "package")
    if values["catalog"].startswith(OCI_SCHEME):
        values["layout"] = parse_layout_source(values["catalog"]).directory
    return CatalogSpec(**values)


def _catalog_namespace(reference: str) -> str:
    """The path between host and name: `registry.redhat.io/redhat/x:v4` -> `redhat` (none for a layout)."""
    if reference.startswith(OCI_SCHEME):
        return ""
    return repository_of(reference).rpartition("/")[0]


_CHANNEL_FILTER_FIELDS: Mapping[str, Field] = {
    "name": Field("name", _CHANNEL_NAME, required=True),
    "minVersion": Field("min_version", version_text),
    "maxVersion": Field("max_version", version_text),
}
_PACKAGE_FIELDS_BASE: Mapping[str, Field] = {
    "name": Field("name", _PACKAGE_NAME, required=True),
    "minVersion": Field("min_version", version_text),
    "maxVersion": Field("max_version", version_text),
    "defaultChannel": Field("default_channel", _CHANNEL_NAME),
}
_CATALOG_FIELDS_BASE: Mapping[str, Field] = {
    "catalog": Field("catalog", catalog_reference("a catalog (index) image reference"), required=True),
    "full": Field("full", boolean),
    "skipDependencies": Field("skip_dependencies", boolean),
    "targetCatalog": Field(
        "target_catalog", text_value("a repository path like olm/redhat-operator-index", re.compile(REPOSITORY))
    ),
    "targetTag": Field("target_tag", text_value("an image tag like v4.14", re.compile(TAG))),
}

MIN_BUNDLE = "select bundles by minVersion/maxVersion instead"


def operator_catalogs(
    *,
    package_unsupported: Optional[Mapping[str, str]] = None,
    channel_unsupported: Optional[Mapping[str, str]] = None,
    catalog_extra: Optional[Mapping[str, Field]] = None,
    catalog_unsupported: Optional[Mapping[str, str]] = None,
    catalog_ignored: Optional[Mapping[str, str]] = None,
) -> Converter:
    """The operator-catalog list converter; the formats differ only in the extra/unsupported tables."""
    channel = mapping_of(_CHANNEL_FILTER_FIELDS, _build_channel_filter, unsupported=channel_unsupported)
    package = mapping_of(
        {**_PACKAGE_FIELDS_BASE, "channels": Field("channels", list_of(channel, "channels"))},
        _build_package,
        unsupported=package_unsupported,
    )
    catalog = mapping_of(
        {
            **_CATALOG_FIELDS_BASE,
            **(catalog_extra or {}),
            "packages": Field("packages", list_of(package, "packages")),
        },
        _build_catalog,
        unsupported=catalog_unsupported,
        ignored=catalog_ignored,
    )
    return list_of(catalog, "operator catalogs")


def named_image(what: str) -> Converter:
    """oc-mirror's `{name: <reference>}` entry."""
    return mapping_of({"name": Field("name", image_reference(what), required=True)}, lambda ctx, r: r.values["name"])


_OS_RE = re.compile(r"[a-z0-9]+")


def platform_entry(ctx: Ctx, value: Any, loc: Loc) -> str:
    """One platform: oc-mirror's `{os, architecture}` or `os/architecture` text; `os/<Go architecture>`."""
    what = "a platform like {os: linux, architecture: amd64} or linux/amd64 (os/architecture)"
    if isinstance(value, dict):
        record = mapping_of(
            {
                "os": Field("os", text_value("an operating system like linux", _OS_RE), required=True),
                "architecture": Field("architecture", choice(ARCHITECTURE_ALIASES, "architecture"), required=True),
            },
            lambda c, r: f"{r.values['os']}/{r.values['architecture']}",
        )
        result: str = record(ctx, value, loc)
        return result
    text = text_value(what)(ctx, value, loc)
    os_name, slash, arch = text.partition("/")
    if not slash or not _OS_RE.fullmatch(os_name):
        ctx.fail(loc, f"expected {what}, got {text!r}")
    return f"{os_name}/{choice(ARCHITECTURE_ALIASES, 'architecture')(ctx, arch, loc)}"


def platform_list(ctx: Ctx, value: Any, loc: Loc) -> Tuple[str, ...]:
    return tuple(dict.fromkeys(list_of(platform_entry, "platforms")(ctx, value, loc)))


def _additional_image(ctx: Ctx, record: Record) -> AdditionalImage:
    return AdditionalImage(**record.values)


ADDITIONAL_IMAGE = mapping_of(
    {
        "name": Field("name", catalog_reference("an image reference"), required=True),
        "targetRepo": Field(
            "target_repository", text_value("a repository path like mirror/ubi (no host, tag or digest)", re.compile(REPOSITORY))
        ),
        "targetTag": Field("target_tag", text_value("an image tag like v1", re.compile(TAG))),
        "platforms": Field("platforms", platform_list),
    },
    _additional_image,
)


def additional_image(ctx: Ctx, value: Any, loc: Loc) -> AdditionalImage:
    """An additional image: `{name, targetRepo, targetTag, platforms}` (oc-mirror), or a bare reference."""
    if isinstance(value, dict):
        result: AdditionalImage = ADDITIONAL_IMAGE(ctx, value, loc)
        return result
    return AdditionalImage(name=str(catalog_reference("an image reference")(ctx, value, loc)))


def unique_images(ctx: Ctx, images: Tuple[AdditionalImage, ...], loc: Loc) -> Tuple[AdditionalImage, ...]:
    """The additional images with exact repeats dropped (with a warning)."""
    result: Dict[AdditionalImage, None] = {}  # a dict keeps the order and finds repeats in constant time
    for image in images:
        if image in result:
            ctx.warn(loc, f"additional image {image.name!r} is listed more than once; carrying it once")
        else:
            result[image] = None
    return tuple(result)


def blocked_image(ctx: Ctx, value: Any, loc: Loc) -> str:
    """A `blockedImages` entry: `{name: …}` or text; an exact reference or a regular expression."""
    if isinstance(value, dict):
        name: str = mapping_of({"name": Field("name", text_value("an image name or regular expression"), required=True)}, lambda c, r: r.values["name"])(ctx, value, loc)
        loc = loc.key("name", loc.line)
    else:
        name = text_value("an image name or regular expression")(ctx, value, loc)
    try:
        re.compile(name)
    except re.error as exc:
        ctx.fail(loc, f"{name!r} is not a valid regular expression ({exc}); escape it, or give the exact image reference")
    return name


def finish(ctx: Ctx, record: Record, image_set: ImageSet) -> ImageSet:
    if image_set.is_empty():
        ctx.warn(record.loc, "selects no content: nothing would be carried")
    return dataclasses.replace(image_set, warnings=tuple(ctx.warnings))


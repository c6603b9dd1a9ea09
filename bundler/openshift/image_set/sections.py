"""The tables both image-set formats share: release channels, architectures, operator catalogs.

Our format and oc-mirror's describe release channels and operator catalogs alike; they differ only in
the extra, unsupported and ignored fields passed to `operator_catalogs`.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping, Optional, Tuple

from bundler.oci.reference import REPOSITORY, TAG
from bundler.openshift.image_set.model import (
    ARCHITECTURE_ALIASES,
    PLATFORM_TYPES,
    CatalogSpec,
    ChannelFilter,
    ChannelSpec,
    ImageSet,
    PackageSpec,
)
from bundler.openshift.image_set.schema import (
    Converter,
    Ctx,
    Field,
    Loc,
    Record,
    boolean,
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
    return CatalogSpec(**values)


def _catalog_namespace(reference: str) -> str:
    """The path between host and name: `registry.redhat.io/redhat/x:v4` -> `redhat`."""
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
    "catalog": Field("catalog", image_reference("a catalog (index) image reference"), required=True),
    "full": Field("full", boolean),
    "skipDependencies": Field("skip_dependencies", boolean),
    "targetCatalog": Field(
        "target_catalog", text_value("a repository path like olm/redhat-operator-index", re.compile(REPOSITORY))
    ),
    "targetTag": Field("target_tag", text_value("an image tag like v4.14", re.compile(TAG))),
}

MIN_BUNDLE = "not supported yet; select bundles by minVersion/maxVersion instead"


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


def finish(ctx: Ctx, record: Record, image_set: ImageSet) -> ImageSet:
    if image_set.is_empty():
        ctx.warn(record.loc, "selects no content: nothing would be carried")
    return dataclasses.replace(image_set, warnings=tuple(ctx.warnings))


"""Image-set configs: what to mirror, parsed and validated into typed, frozen values.

This package owns the image-set config file and nothing else: reading it, checking it, and turning it
into an `ImageSet`. It does not resolve channels, read catalogs or touch a registry; `plan` does that
with what this package returns.

Two inputs are accepted (field reference: `manifests/image-set.schema.md`):

* our own format, ``apiVersion: ocp-bundler.io/v1alpha1``, ``kind: ImageSet``;
* oc-mirror's ``ImageSetConfiguration`` (``mirror.openshift.io/v1alpha2`` and ``v2alpha1``), unchanged.
  What we do not support yet is an error naming the field, never dropped; field names are
  matched case-insensitively there, as oc-mirror does, with a warning.

Image references are checked against the one grammar of `bundler.oci.reference`.

Every problem is a `ConfigError` whose message names the file, the path in the document
(``mirror.operators[0].packages[2].channels[0].minVersion``), what was expected and, for unknown
fields, the closest known one.

The package's rooms: `model` (the values an `ImageSet` is made of), `schema` (the table-driven
validation framework: YAML with line numbers, locations, converters, field tables), `sections` (the
tables both formats share: release channels, operator catalogs), `native` (our format), `oc_mirror`
(oc-mirror's). This module picks the format by apiVersion and holds the entry points.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional

from bundler.base.errors import ConfigError
from bundler.base.safefile import UnsafeFileError, read_regular
from bundler.openshift.image_set.model import (
    API_VERSION,
    ARCHITECTURES,
    DEFAULT_POSTGRES_IMAGE,
    DEFAULT_QUAY_IMAGE,
    DEFAULT_REDIS_IMAGE,
    DEFAULT_RELEASE_REPOSITORY,
    KIND,
    OC_MIRROR_KIND,
    OC_MIRROR_V1ALPHA2,
    OC_MIRROR_V2ALPHA1,
    AdditionalImage,
    CatalogSpec,
    ChannelFilter,
    ChannelSpec,
    ImageSet,
    PackageSpec,
    RegistryImagesSpec,
    ReleaseSpec,
    SamplesSpec,
    TargetSpec,
    Version,
)
from bundler.openshift.image_set.native import OWN_TOP, build_own
from bundler.openshift.image_set.oc_mirror import (
    OC_MIRROR_V1ALPHA2_FIELDS,
    OC_MIRROR_V2ALPHA1_FIELDS,
    STORAGE_CONFIG_IGNORED,
    build_oc_mirror,
)
from bundler.openshift.image_set.schema import (
    Ctx,
    Field,
    Loc,
    Record,
    YamlMap,
    YamlSeq,
    describe,
    load_document,
    mapping_of,
    suggestion,
)

MAX_CONFIG_BYTES = 8 * 1024 * 1024
"""Largest image-set config read (a config listing 100,000 images is about 6 MiB)."""

__all__ = [
    "API_VERSION",
    "ARCHITECTURES",
    "DEFAULT_POSTGRES_IMAGE",
    "DEFAULT_QUAY_IMAGE",
    "DEFAULT_REDIS_IMAGE",
    "MAX_CONFIG_BYTES",
    "DEFAULT_RELEASE_REPOSITORY",
    "KIND",
    "OC_MIRROR_KIND",
    "OC_MIRROR_V1ALPHA2",
    "OC_MIRROR_V2ALPHA1",
    "AdditionalImage",
    "CatalogSpec",
    "ChannelFilter",
    "ChannelSpec",
    "ImageSet",
    "PackageSpec",
    "RegistryImagesSpec",
    "ReleaseSpec",
    "SamplesSpec",
    "TargetSpec",
    "Version",
    "load_image_set",
    "parse_image_set",
]


@dataclass(frozen=True)
class _Format:
    kind: str
    fields: Mapping[str, Field]
    build: Callable[[Ctx, Record], ImageSet]
    ignored: Mapping[str, str] = dataclasses.field(default_factory=dict)
    unsupported: Mapping[str, str] = dataclasses.field(default_factory=dict)


_FORMATS: Mapping[str, _Format] = {
    API_VERSION: _Format(KIND, OWN_TOP, build_own),
    OC_MIRROR_V1ALPHA2: _Format(OC_MIRROR_KIND, OC_MIRROR_V1ALPHA2_FIELDS, build_oc_mirror, STORAGE_CONFIG_IGNORED),
    OC_MIRROR_V2ALPHA1: _Format(
        OC_MIRROR_KIND,
        OC_MIRROR_V2ALPHA1_FIELDS,
        build_oc_mirror,
        unsupported={"storageConfig": "it belongs to mirror.openshift.io/v1alpha2 (oc-mirror v1); remove it"},
    ),
}

_OTHER_KINDS: Mapping[str, str] = {
    "DeleteImageSetConfiguration": "ocp-bundler does not delete images from mirrors",
}


def parse_image_set(text: str, *, source_name: str, base_dir: Optional[Path] = None) -> ImageSet:
    """Parse and validate an image-set config given as text.

    `source_name` prefixes every error and warning (normally the file name). Relative paths in the
    config (`samples.directory`) are resolved against `base_dir` when given. Raises `ConfigError`.
    """
    document = load_document(text, source_name)
    ctx = Ctx(source_name, base_dir)
    root = Loc("", document.line if isinstance(document, (YamlMap, YamlSeq)) else None)
    if not isinstance(document, YamlMap):  # the loader builds every YAML mapping as a YamlMap
        ctx.fail(
            root,
            f"expected a mapping with apiVersion and kind at the top of the document, got {describe(document)}",
        )
    accepted = ", ".join(_FORMATS)
    api_version = document.get("apiVersion")
    api_loc = root.key("apiVersion", document.key_lines.get("apiVersion"))
    if api_version is None:
        ctx.fail(root, f"missing required field 'apiVersion': expected one of {accepted}")
    if not isinstance(api_version, str) or api_version not in _FORMATS:
        shown = api_version if isinstance(api_version, str) else describe(api_version)
        ctx.fail(
            api_loc,
            f"unsupported apiVersion {shown!r}{suggestion(str(api_version), _FORMATS)}: expected one of {accepted}",
        )
    fmt = _FORMATS[api_version]
    ctx.case_insensitive = fmt.kind == OC_MIRROR_KIND
    kind = document.get("kind")
    kind_loc = root.key("kind", document.key_lines.get("kind"))
    if kind is None:
        ctx.fail(root, f"missing required field 'kind': expected {fmt.kind}")
    if kind != fmt.kind:
        why = _OTHER_KINDS.get(str(kind))
        ctx.fail(
            kind_loc,
            f"kind {kind!r} is not supported: {why}"
            if why
            else f"expected kind {fmt.kind} for {api_version}, got {kind!r}",
        )
    image_set: ImageSet = mapping_of(fmt.fields, fmt.build, ignored=fmt.ignored, unsupported=fmt.unsupported)(
        ctx, document, root
    )
    return image_set


def load_image_set(path: Path) -> ImageSet:
    """Read, parse and validate the image-set config at `path`. Raises `ConfigError`."""
    path = Path(path)
    try:
        raw = read_regular(path, max_size=MAX_CONFIG_BYTES, what="image-set config", follow_links=True)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file", hint="check the path of the image-set config") from None
    except UnsafeFileError as exc:
        if exc.reason == "a directory":
            raise ConfigError(f"{path}: is a directory, expected an image-set config file") from None
        raise ConfigError(exc.message, hint=exc.hint) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}): expected a YAML image-set config") from exc
    return parse_image_set(text, source_name=str(path), base_dir=path.parent)

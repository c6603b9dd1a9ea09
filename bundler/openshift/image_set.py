"""Image-set configs: what to mirror, parsed and validated into typed, frozen values.

This module owns the image-set config file and nothing else: reading it, checking it, and turning it
into an `ImageSet`. It does not resolve channels, read catalogs or touch a registry; `plan` does that
with what this module returns.

Two inputs are accepted (field reference: `manifests/image-set.schema.md`):

* our own format, ``apiVersion: ocp-bundler.io/v1alpha1``, ``kind: ImageSet``;
* oc-mirror's ``ImageSetConfiguration`` (``mirror.openshift.io/v1alpha2`` and ``v2alpha1``), unchanged.
  What we do not support yet (Helm, blocked images, ...) is an error naming the field, never dropped.

Every problem is a `ConfigError` whose message names the file, the path in the document
(``mirror.operators[0].packages[2].channels[0].minVersion``), what was expected and, for unknown
fields, the closest known one. The validation is table-driven: each mapping in the document is
described by a table of `_Field`s (YAML key -> attribute name + converter) plus tables of fields we
know but do not support, and of fields we accept and ignore with a recorded warning.

Image references get a light syntactic check only (``host/path`` with a tag or a digest); the full
parser is `bundler.oci.reference`, which this module deliberately does not import.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, NoReturn, Optional, Sequence, Tuple, TypeVar
from urllib.parse import urlsplit

import yaml

from bundler.base.compat import frozen_keyword_only

from bundler.base.errors import ConfigError
from bundler.base.safefile import UnsafeFileError, read_regular

__all__ = [
    "API_VERSION",
    "ARCHITECTURES",
    "DEFAULT_POSTGRES_IMAGE",
    "DEFAULT_QUAY_IMAGE",
    "DEFAULT_REDIS_IMAGE",
    "DEFAULT_RELEASE_REPOSITORY",
    "KIND",
    "OC_MIRROR_KIND",
    "OC_MIRROR_V1ALPHA2",
    "OC_MIRROR_V2ALPHA1",
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

log = logging.getLogger(__name__)

API_VERSION = "ocp-bundler.io/v1alpha1"
KIND = "ImageSet"
OC_MIRROR_V1ALPHA2 = "mirror.openshift.io/v1alpha2"
OC_MIRROR_V2ALPHA1 = "mirror.openshift.io/v2alpha1"
OC_MIRROR_KIND = "ImageSetConfiguration"

DEFAULT_RELEASE_REPOSITORY = "ocp4/openshift4"
DEFAULT_QUAY_IMAGE = "registry.redhat.io/quay/quay-rhel8:v3.12.1"
DEFAULT_POSTGRES_IMAGE = "registry.redhat.io/rhel9/postgresql-15:latest"
DEFAULT_REDIS_IMAGE = "registry.redhat.io/rhel9/redis-7:latest"
MAX_CONFIG_BYTES = 8 * 1024 * 1024
"""Largest image-set config read (a config listing 100,000 images is about 6 MiB)."""

#: Go architecture names, as oc-mirror and the release payloads use them.
ARCHITECTURES: Tuple[str, ...] = ("amd64", "arm64", "ppc64le", "s390x", "multi")
_ARCHITECTURE_ALIASES: Mapping[str, str] = {
    **{arch: arch for arch in ARCHITECTURES},
    "x86_64": "amd64",
    "aarch64": "arm64",
}
_PLATFORM_TYPES: Mapping[str, str] = {"ocp": "ocp", "okd": "okd"}
_GIB = 1024**3

_T = TypeVar("_T")


# --------------------------------------------------------------------------------------------------
# Public values
# --------------------------------------------------------------------------------------------------

_VERSION_RE = re.compile(
    r"(\d+)\.(\d+)\.(\d+)"
    r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
    r"(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
)


@functools.total_ordering
@dataclass(frozen=True, eq=False)
class Version:
    """A semver-ish version (``4.8.0``, ``4.14.0-rc.1``, ``5.3.2-20``) ordered by semver precedence.

    Build metadata (``+...``) is kept but does not take part in comparisons, as in semver.
    """

    major: int
    minor: int
    patch: int
    prerelease: Tuple[str, ...] = ()
    build: str = ""

    @classmethod
    def parse(cls, text: str) -> Version:
        """Parse ``MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD]``; raise `ValueError` otherwise."""
        match = _VERSION_RE.fullmatch(text)
        if match is None:
            raise ValueError(f"not a version like 4.8.0 or 4.14.0-rc.1: {text!r}")
        major, minor, patch, prerelease, build = match.groups()
        return cls(
            int(major),
            int(minor),
            int(patch),
            tuple(prerelease.split(".")) if prerelease else (),
            build or "",
        )

    def _key(self) -> Tuple[Any, ...]:
        identifiers = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in self.prerelease)
        # A release sorts after all of its pre-releases.
        return (self.major, self.minor, self.patch, 0 if self.prerelease else 1, identifiers)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() == other._key()

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() < other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.prerelease:
            text += "-" + ".".join(self.prerelease)
        if self.build:
            text += "+" + self.build
        return text


@frozen_keyword_only
class ChannelSpec:
    """A release channel to resolve through the update graph (Cincinnati).

    Neither ``full`` nor a version bound means "the channel head only", as in oc-mirror.
    """

    name: str
    type: str = "ocp"  # "ocp" or "okd"
    min_version: Optional[str] = None
    max_version: Optional[str] = None
    shortest_path: bool = False
    full: bool = False


@frozen_keyword_only
class ReleaseSpec:
    """The OpenShift/OKD release payloads to carry."""

    images: Tuple[str, ...] = ()  # explicit release pull specs
    channels: Tuple[ChannelSpec, ...] = ()
    architectures: Tuple[str, ...] = ("amd64",)  # Go names; used to resolve channels
    graph_url: Optional[str] = None  # update-graph endpoint; None: the resolver's default
    graph_data: bool = False  # oc-mirror's `platform.graph`: the graph-data image was asked for
    signatures: bool = True  # carry the release signatures (ConfigMaps on the far side)
    repository: str = DEFAULT_RELEASE_REPOSITORY  # target repository for the payload

    def is_empty(self) -> bool:
        return not self.images and not self.channels


@frozen_keyword_only
class SamplesSpec:
    """Sample imagestream images (the ones the cluster-samples-operator imports)."""

    from_release: bool = False  # read the imagestreams from the release's samples-operator image
    directory: Optional[Path] = None  # a directory of imagestream JSON/YAML files
    images: Tuple[str, ...] = ()  # extra sample image references
    exclude: Tuple[str, ...] = ()  # imagestream names, or `name:tag`, to leave out

    def is_empty(self) -> bool:
        return not self.from_release and self.directory is None and not self.images


@frozen_keyword_only
class ChannelFilter:
    """One channel of an operator package, optionally limited to a version range."""

    name: str
    min_version: Optional[str] = None
    max_version: Optional[str] = None


@frozen_keyword_only
class PackageSpec:
    """One operator package of a catalog (oc-mirror's ``IncludePackage``)."""

    name: str
    channels: Tuple[ChannelFilter, ...] = ()
    min_version: Optional[str] = None
    max_version: Optional[str] = None
    default_channel: Optional[str] = None


@frozen_keyword_only
class CatalogSpec:
    """An operator catalog (index image) and the packages to keep from it.

    No packages: the whole catalog (heads of every channel unless ``full``), as in oc-mirror.
    """

    catalog: str
    full: bool = False
    skip_dependencies: bool = False
    target_catalog: Optional[str] = None  # repository path in the mirror, e.g. `olm/redhat-operators`
    target_tag: Optional[str] = None
    packages: Tuple[PackageSpec, ...] = ()


@frozen_keyword_only
class RegistryImagesSpec:
    """The images needed to run Quay on the far side; off by default (they need Red Hat credentials)."""

    enabled: bool = False
    quay: str = DEFAULT_QUAY_IMAGE
    postgres: str = DEFAULT_POSTGRES_IMAGE
    redis: str = DEFAULT_REDIS_IMAGE

    def images(self) -> Tuple[str, ...]:
        """The references to carry: all three when enabled, none otherwise."""
        return (self.quay, self.postgres, self.redis) if self.enabled else ()


@frozen_keyword_only
class TargetSpec:
    """Hints about the mirror registry; the unpack command's flags take precedence."""

    registry: Optional[str] = None  # host[:port], used for dry runs and generated resources
    release_repository: str = DEFAULT_RELEASE_REPOSITORY
    prefix: Optional[str] = None  # repository prefix for everything that is not the release


@frozen_keyword_only
class ImageSet:
    """A parsed, validated image-set config."""

    source_format: str = API_VERSION
    source_name: str = ""
    releases: ReleaseSpec = field(default_factory=ReleaseSpec)
    samples: SamplesSpec = field(default_factory=SamplesSpec)
    operators: Tuple[CatalogSpec, ...] = ()
    additional_images: Tuple[str, ...] = ()
    registry_images: RegistryImagesSpec = field(default_factory=RegistryImagesSpec)
    target: TargetSpec = field(default_factory=TargetSpec)
    volume_size_hint: Optional[int] = None  # bytes
    warnings: Tuple[str, ...] = ()

    def is_empty(self) -> bool:
        """True when the config selects nothing at all to carry (registry images count as content)."""
        return (
            self.releases.is_empty()
            and self.samples.is_empty()
            and not self.operators
            and not self.additional_images
            and not self.registry_images.images()
        )


# --------------------------------------------------------------------------------------------------
# YAML loading with line numbers and duplicate-key detection
# --------------------------------------------------------------------------------------------------


class _Map(Dict[Any, Any]):
    """A YAML mapping that remembers the line of each key."""

    def __init__(self, line: Optional[int]) -> None:
        super().__init__()
        self.line = line
        self.key_lines: Dict[Any, int] = {}


class _Seq(List[Any]):
    """A YAML sequence that remembers the line of each item."""

    def __init__(self, line: Optional[int]) -> None:
        super().__init__()
        self.line = line
        self.item_lines: List[int] = []


MAX_CONFIG_DEPTH = 64
"""Deepest nesting of mappings and lists accepted in a config (real ones nest fewer than ten levels)."""


class _Loader(yaml.SafeLoader):  # type: ignore[misc]
    """The safe loader, keeping line numbers, and refusing nesting deeper than `MAX_CONFIG_DEPTH` (the
    composer and constructor recurse once per level)."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_CONFIG_DEPTH:
                mark = self.peek_event().start_mark
                raise yaml.MarkedYAMLError(problem=f"nested deeper than {MAX_CONFIG_DEPTH} levels", problem_mark=mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _construct_map(loader: Any, node: Any) -> _Map:
    explicit = {id(key) for key, _ in node.value if key.tag != "tag:yaml.org,2002:merge"}
    loader.flatten_mapping(node)
    result = _Map(node.start_mark.line + 1)
    explicit_keys: set[Any] = set()
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark, "found an unhashable key", key_node.start_mark
            ) from None
        is_explicit = id(key_node) in explicit
        if is_explicit and key in explicit_keys:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"found duplicate key {key!r} (first at line {result.key_lines[key]})",
                key_node.start_mark,
            )
        if is_explicit:
            explicit_keys.add(key)
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = key_node.start_mark.line + 1
    return result


def _construct_seq(loader: Any, node: Any) -> _Seq:
    result = _Seq(node.start_mark.line + 1)
    for child in node.value:
        result.append(loader.construct_object(child, deep=True))
        result.item_lines.append(child.start_mark.line + 1)
    return result


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


def _load_document(text: str, source_name: str) -> Any:
    try:
        documents = [doc for doc in yaml.load_all(text, Loader=_Loader) if doc is not None]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = exc.problem or exc.context or "cannot parse"
        context = f" ({exc.context})" if exc.context and exc.problem else ""
        raise ConfigError(f"{source_name}: {where}invalid YAML: {problem}{context}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source_name}: invalid YAML: {exc}") from exc
    if not documents:
        raise ConfigError(
            f"{source_name}: the file is empty: expected an image-set config "
            f"(apiVersion: {API_VERSION}, kind: {KIND}) or an oc-mirror {OC_MIRROR_KIND}"
        )
    if len(documents) > 1:
        raise ConfigError(f"{source_name}: holds {len(documents)} YAML documents: expected exactly one")
    return documents[0]


# --------------------------------------------------------------------------------------------------
# Validation machinery: locations, context, converters, record tables
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Loc:
    """Where a value sits in the document: a path like `mirror.operators[0].catalog` and a line."""

    path: str
    line: Optional[int]

    def key(self, key: str, line: Optional[int]) -> _Loc:
        return _Loc(f"{self.path}.{key}" if self.path else key, line if line is not None else self.line)

    def index(self, index: int, line: Optional[int]) -> _Loc:
        return _Loc(f"{self.path}[{index}]", line if line is not None else self.line)

    def __str__(self) -> str:
        return self.path or "top level"


class _Ctx:
    def __init__(self, source_name: str, base_dir: Optional[Path]) -> None:
        self.source_name = source_name
        self.base_dir = base_dir
        self.warnings: List[str] = []

    def fail(self, loc: _Loc, message: str) -> NoReturn:
        line = f" [line {loc.line}]" if loc.line is not None else ""
        raise ConfigError(f"{self.source_name}: {loc}: {message}{line}")

    def warn(self, loc: _Loc, message: str) -> None:
        text = f"{self.source_name}: {loc}: {message}"
        log.debug("image-set warning: %s", text)
        self.warnings.append(text)


_Converter = Callable[[_Ctx, Any, _Loc], Any]


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({'true' if value else 'false'})"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({value!r})" if value else "an empty string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__} ({value})"


def _expect_str(ctx: _Ctx, value: Any, loc: _Loc, what: str) -> str:
    if isinstance(value, str):
        if not value.strip():
            ctx.fail(loc, f"expected {what}, got an empty string")
        return value
    hint = ""
    if isinstance(value, (bool, int, float)):
        hint = "; quote it so YAML keeps it as text (write '4.10', not 4.10)"
    ctx.fail(loc, f"expected {what}, got {_describe(value)}{hint}")


def _text(what: str, pattern: Optional[re.Pattern[str]] = None) -> _Converter:
    def convert(ctx: _Ctx, value: Any, loc: _Loc) -> str:
        text = _expect_str(ctx, value, loc, what)
        if pattern is not None and not pattern.fullmatch(text):
            ctx.fail(loc, f"expected {what}, got {text!r}")
        return text

    return convert


def _flag(ctx: _Ctx, value: Any, loc: _Loc) -> bool:
    if not isinstance(value, bool):
        ctx.fail(loc, f"expected true or false, got {_describe(value)}")
    return value


def _positive_int(what: str) -> _Converter:
    def convert(ctx: _Ctx, value: Any, loc: _Loc) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            ctx.fail(loc, f"expected {what} (a whole number greater than 0), got {_describe(value)}")
        return value

    return convert


def _version(ctx: _Ctx, value: Any, loc: _Loc) -> str:
    text = _expect_str(ctx, value, loc, "a version like 4.8.0 or 4.14.0-rc.1")
    try:
        Version.parse(text)
    except ValueError:
        ctx.fail(loc, f"expected a version like 4.8.0 or 4.14.0-rc.1 (major.minor.patch), got {text!r}")
    return text


def _choice(choices: Mapping[str, str], what: str) -> _Converter:
    """A string from `choices` (accepted spelling -> canonical value), case-insensitive."""

    def convert(ctx: _Ctx, value: Any, loc: _Loc) -> str:
        canonical = sorted(set(choices.values()))
        text = _expect_str(ctx, value, loc, f"{what}: one of {', '.join(canonical)}")
        if text.lower() in choices:
            return choices[text.lower()]
        ctx.fail(loc, f"unknown {what} {text!r}{_suggestion(text, choices)}: expected one of {', '.join(canonical)}")

    return convert


_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_HOST = (
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
    r"|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?"
)
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128}"
_REPOSITORY_RE = re.compile(_REPOSITORY)
_HOST_RE = re.compile(_HOST)
_TAG_RE = re.compile(_TAG)
_REFERENCE_RE = re.compile(
    rf"(?P<host>{_HOST})/(?P<repository>{_REPOSITORY})(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?"
)
_REFERENCE_EXAMPLE = "registry.example.com/org/repo:tag or registry.example.com/org/repo@sha256:<64 hex>"


def _is_registry_host(host: str) -> bool:
    return "." in host or ":" in host or host == "localhost" or host.startswith("[")


def _reference(what: str) -> _Converter:
    """A light syntactic check of an image reference: `host/path` with a tag and/or a digest."""

    def convert(ctx: _Ctx, value: Any, loc: _Loc) -> str:
        text = _expect_str(ctx, value, loc, f"{what} ({_REFERENCE_EXAMPLE})")
        if text.startswith("docker://"):
            text = text[len("docker://") :]
        if re.match(r"(oci|file|dir|oci-archive|docker-archive):", text):
            ctx.fail(
                loc, f"{text!r}: images on disk are not supported yet: give a registry reference ({_REFERENCE_EXAMPLE})"
            )
        first, slash, _ = text.partition("/")
        if not slash or not _is_registry_host(first):
            full = f"docker.io/{text}" if slash else f"docker.io/library/{text}"
            ctx.fail(loc, f"{text!r} names no registry host: write it in full, e.g. {full}")
        match = _REFERENCE_RE.fullmatch(text)
        if match is None:
            repository = _repository_of(text)
            detail = ""
            if text != text.strip():
                detail = ": remove the surrounding spaces"
            elif repository != repository.lower():
                detail = ": repository paths must be lowercase"
            elif "@" in text:
                detail = ": a digest is sha256: followed by 64 lowercase hex digits"
            ctx.fail(loc, f"expected {what} like {_REFERENCE_EXAMPLE}, got {text!r}{detail}")
        if match.group("tag") is None and match.group("digest") is None:
            ctx.fail(
                loc, f"{text!r} has neither a tag nor a digest: add one, e.g. {text}:latest or {text}@sha256:<64 hex>"
            )
        return text

    return convert


def _repository_of(reference: str) -> str:
    """The repository path of `host/path[:tag][@digest]`, without host, tag and digest."""
    path = reference.split("@", 1)[0].partition("/")[2]
    head, slash, last = path.rpartition("/")
    return head + slash + last.split(":", 1)[0]


def _registry_host(ctx: _Ctx, value: Any, loc: _Loc) -> str:
    what = "a registry host[:port] like registry.example.com:8443"
    text = _expect_str(ctx, value, loc, what)
    if "://" in text:
        ctx.fail(loc, f"expected {what} without a scheme, got {text!r}")
    if "/" in text:
        ctx.fail(loc, f"expected {what} without a path, got {text!r}: put repository paths in target.prefix")
    if not _HOST_RE.fullmatch(text):
        ctx.fail(loc, f"expected {what}, got {text!r}")
    return text


def _url(ctx: _Ctx, value: Any, loc: _Loc) -> str:
    what = "an http(s) URL like https://api.openshift.com/api/upgrades_info/v1/graph"
    text = _expect_str(ctx, value, loc, what)
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc or any(c.isspace() for c in text):
        ctx.fail(loc, f"expected {what}, got {text!r}")
    return text


def _path(ctx: _Ctx, value: Any, loc: _Loc) -> Path:
    path = Path(_expect_str(ctx, value, loc, "a directory path")).expanduser()
    if not path.is_absolute() and ctx.base_dir is not None:
        path = ctx.base_dir / path
    return path


def _list_of(item: _Converter, what: str) -> _Converter:
    def convert(ctx: _Ctx, value: Any, loc: _Loc) -> Tuple[Any, ...]:
        if not isinstance(value, list):
            ctx.fail(loc, f"expected a list of {what}, got {_describe(value)}")
        lines = value.item_lines if isinstance(value, _Seq) else []
        return tuple(
            item(ctx, element, loc.index(i, lines[i] if i < len(lines) else None)) for i, element in enumerate(value)
        )

    return convert


@dataclass(frozen=True)
class _Field:
    """One key of a YAML mapping: the attribute it becomes and how its value is converted."""

    attribute: str
    convert: _Converter
    required: bool = False


@dataclass(frozen=True)
class _Record:
    """A validated mapping: converted values keyed by attribute, and where each key was."""

    values: Dict[str, Any]
    loc: _Loc
    mapping: _Map

    def at(self, key: str) -> _Loc:
        return self.loc.key(key, self.mapping.key_lines.get(key))


# Spellings from older oc-mirror documents and common slips, pointed at what replaced them.
_RENAMED: Mapping[str, str] = {
    "startingVersion": "minVersion",
    "headsOnly": "full",
    "skipDeps": "skipDependencies",
    "ocp": "platform",
    "repos": "repositories",
}


def _suggestion(key: str, candidates: Iterable[str]) -> str:
    names = list(candidates)
    if key in _RENAMED and _RENAMED[key] in names:
        note = " (headsOnly: true is full: false)" if key == "headsOnly" else ""
        return f" (did you mean '{_RENAMED[key]}'?{note})"
    lowered = {name.lower(): name for name in names}
    if key.lower() in lowered:
        return f" (did you mean '{lowered[key.lower()]}'?)"
    close = difflib.get_close_matches(key.lower(), list(lowered), n=1, cutoff=0.6)
    if close:
        return f" (did you mean '{lowered[close[0]]}'?)"
    return ""


def _is_unset(value: Any) -> bool:
    """An explicitly empty value that requests nothing (`helm: {}`, `kubeVirtContainer: false`)."""
    return value is None or value is False or value == {} or value == []


def _record(
    fields: Mapping[str, _Field],
    build: Callable[[_Ctx, _Record], Any],
    *,
    unsupported: Optional[Mapping[str, str]] = None,
    ignored: Optional[Mapping[str, str]] = None,
) -> _Converter:
    """A converter for a YAML mapping described by tables.

    `fields`: YAML key -> `_Field`. `unsupported`: keys we know but cannot honour yet -> why (an error
    unless the value is empty). `ignored`: keys accepted and ignored -> the warning to record.
    Anything else is an unknown field, reported with the closest known key.
    """
    unsupported = unsupported or {}
    ignored = ignored or {}
    known = [*fields, *unsupported, *ignored]

    def convert(ctx: _Ctx, value: Any, loc: _Loc) -> Any:
        if not isinstance(value, dict):
            ctx.fail(loc, f"expected a mapping with fields {', '.join(fields)}, got {_describe(value)}")
        mapping = value if isinstance(value, _Map) else _Map(loc.line)
        if mapping is not value:
            mapping.update(value)
        for key, raw in mapping.items():
            key_loc = _Loc(loc.path, mapping.key_lines.get(key, loc.line))
            if not isinstance(key, str):
                ctx.fail(key_loc, f"field names must be strings, got {_describe(key)}")
            if key in fields:
                continue
            if key in ignored:
                ctx.warn(loc.key(key, key_loc.line), ignored[key])
            elif key in unsupported:
                if not _is_unset(raw):
                    ctx.fail(loc.key(key, key_loc.line), f"'{key}' is not supported by ocp-bundler: {unsupported[key]}")
            else:
                ctx.fail(key_loc, f"unknown field '{key}'{_suggestion(key, known)}")
        values: Dict[str, Any] = {}
        for key, spec in fields.items():
            raw = mapping.get(key)
            if raw is None:
                if spec.required:
                    ctx.fail(loc, f"missing required field '{key}'")
                continue
            values[spec.attribute] = spec.convert(ctx, raw, loc.key(key, mapping.key_lines.get(key)))
        return build(ctx, _Record(values, loc, mapping))

    return convert


def _values(ctx: _Ctx, record: _Record) -> Dict[str, Any]:
    return record.values


def _check_range(ctx: _Ctx, record: _Record) -> None:
    low, high = record.values.get("min_version"), record.values.get("max_version")
    if low is not None and high is not None and Version.parse(low) > Version.parse(high):
        ctx.fail(record.at("maxVersion"), f"minVersion {low} is greater than maxVersion {high}")


def _unique(ctx: _Ctx, record: _Record, key: str, attribute: Callable[[Any], str], what: str) -> None:
    """Fail when two items of the list at `key` share `attribute` (two entries for one package...)."""
    items: Sequence[Any] = record.values.get(key, ())  # the YAML key and the attribute are the same here
    raw = record.mapping.get(key)
    lines = raw.item_lines if isinstance(raw, _Seq) else []
    seen: Dict[str, int] = {}
    for index, item in enumerate(items):
        value = attribute(item)
        if value in seen:
            line = lines[index] if index < len(lines) else None
            ctx.fail(
                record.at(key).index(index, line), f"{what} {value!r} is listed twice (also at index {seen[value]})"
            )
        seen[value] = index


def _dedupe(ctx: _Ctx, items: Iterable[str], loc: _Loc, what: str) -> Tuple[str, ...]:
    """The items in order, each once (linear: a set remembers what was seen); a warning per repeat."""
    result: Dict[str, None] = {}
    for item in items:
        if item in result:
            ctx.warn(loc, f"{what} {item!r} is listed more than once; carrying it once")
        else:
            result[item] = None
    return tuple(result)


# --------------------------------------------------------------------------------------------------
# Tables shared by both formats
# --------------------------------------------------------------------------------------------------

_CHANNEL_NAME = _text("a channel name without spaces", re.compile(r"\S+"))
_PACKAGE_NAME = _text("an operator package name like local-storage-operator", re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*"))


def _build_release_channel(ctx: _Ctx, record: _Record) -> ChannelSpec:
    _check_range(ctx, record)
    return ChannelSpec(**record.values)


_RELEASE_CHANNEL_FIELDS: Mapping[str, _Field] = {
    "name": _Field("name", _CHANNEL_NAME, required=True),
    "type": _Field("type", _choice(_PLATFORM_TYPES, "platform type")),
    "minVersion": _Field("min_version", _version),
    "maxVersion": _Field("max_version", _version),
    "shortestPath": _Field("shortest_path", _flag),
    "full": _Field("full", _flag),
}
_RELEASE_CHANNEL = _record(_RELEASE_CHANNEL_FIELDS, _build_release_channel)


def _architectures(ctx: _Ctx, value: Any, loc: _Loc) -> Tuple[str, ...]:
    names = _list_of(_choice(_ARCHITECTURE_ALIASES, "architecture"), "architectures")(ctx, value, loc)
    return tuple(dict.fromkeys(names))


def _build_channel_filter(ctx: _Ctx, record: _Record) -> ChannelFilter:
    _check_range(ctx, record)
    return ChannelFilter(**record.values)


def _build_package(ctx: _Ctx, record: _Record) -> PackageSpec:
    _check_range(ctx, record)
    _unique(ctx, record, "channels", lambda c: str(c.name), "channel")
    return PackageSpec(**record.values)


def _build_catalog(ctx: _Ctx, record: _Record) -> CatalogSpec:
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
    _unique(ctx, record, "packages", lambda p: str(p.name), "package")
    return CatalogSpec(**values)


def _catalog_namespace(reference: str) -> str:
    """The path between host and name: `registry.redhat.io/redhat/x:v4` -> `redhat`."""
    return _repository_of(reference).rpartition("/")[0]


_CHANNEL_FILTER_FIELDS: Mapping[str, _Field] = {
    "name": _Field("name", _CHANNEL_NAME, required=True),
    "minVersion": _Field("min_version", _version),
    "maxVersion": _Field("max_version", _version),
}
_PACKAGE_FIELDS_BASE: Mapping[str, _Field] = {
    "name": _Field("name", _PACKAGE_NAME, required=True),
    "minVersion": _Field("min_version", _version),
    "maxVersion": _Field("max_version", _version),
    "defaultChannel": _Field("default_channel", _CHANNEL_NAME),
}
_CATALOG_FIELDS_BASE: Mapping[str, _Field] = {
    "catalog": _Field("catalog", _reference("a catalog (index) image reference"), required=True),
    "full": _Field("full", _flag),
    "skipDependencies": _Field("skip_dependencies", _flag),
    "targetCatalog": _Field(
        "target_catalog", _text("a repository path like olm/redhat-operator-index", _REPOSITORY_RE)
    ),
    "targetTag": _Field("target_tag", _text("an image tag like v4.14", _TAG_RE)),
}

_MIN_BUNDLE = "not supported yet; select bundles by minVersion/maxVersion instead"


def _operators(
    *,
    package_unsupported: Optional[Mapping[str, str]] = None,
    channel_unsupported: Optional[Mapping[str, str]] = None,
    catalog_extra: Optional[Mapping[str, _Field]] = None,
    catalog_unsupported: Optional[Mapping[str, str]] = None,
    catalog_ignored: Optional[Mapping[str, str]] = None,
) -> _Converter:
    """The operator-catalog list converter; the formats differ only in the extra/unsupported tables."""
    channel = _record(_CHANNEL_FILTER_FIELDS, _build_channel_filter, unsupported=channel_unsupported)
    package = _record(
        {**_PACKAGE_FIELDS_BASE, "channels": _Field("channels", _list_of(channel, "channels"))},
        _build_package,
        unsupported=package_unsupported,
    )
    catalog = _record(
        {
            **_CATALOG_FIELDS_BASE,
            **(catalog_extra or {}),
            "packages": _Field("packages", _list_of(package, "packages")),
        },
        _build_catalog,
        unsupported=catalog_unsupported,
        ignored=catalog_ignored,
    )
    return _list_of(catalog, "operator catalogs")


def _named_image(what: str) -> _Converter:
    """oc-mirror's `{name: <reference>}` entry."""
    return _record({"name": _Field("name", _reference(what), required=True)}, lambda ctx, r: r.values["name"])


# --------------------------------------------------------------------------------------------------
# Our format: ocp-bundler.io/v1alpha1 ImageSet
# --------------------------------------------------------------------------------------------------


def _image_entry(ctx: _Ctx, value: Any, loc: _Loc) -> str:
    """An additional image: a reference string, or oc-mirror's `{name: <reference>}`."""
    if isinstance(value, dict):
        result: str = _named_image("an image reference")(ctx, value, loc)
        return result
    return str(_reference("an image reference")(ctx, value, loc))


def _build_samples(ctx: _Ctx, record: _Record) -> SamplesSpec:
    return SamplesSpec(**record.values)


_EXCLUDE_NAME = _text(
    "an imagestream name like jenkins, or name:tag", re.compile(rf"[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?(?::{_TAG})?")
)

_OWN_TOP: Mapping[str, _Field] = {
    "apiVersion": _Field("api_version", _text("an apiVersion")),
    "kind": _Field("kind", _text("a kind")),
    "target": _Field(
        "target",
        _record(
            {
                "registry": _Field("registry", _registry_host),
                "releaseRepository": _Field(
                    "release_repository", _text("a repository path like ocp4/openshift4", _REPOSITORY_RE)
                ),
                "prefix": _Field("prefix", _text("a repository path prefix like mirror/ocp", _REPOSITORY_RE)),
            },
            lambda ctx, r: TargetSpec(**r.values),
        ),
    ),
    "releases": _Field(
        "releases",
        _record(
            {
                "images": _Field("images", _list_of(_reference("a release image reference"), "release images")),
                "channels": _Field("channels", _list_of(_RELEASE_CHANNEL, "release channels")),
                "architectures": _Field("architectures", _architectures),
                "graphURL": _Field("graph_url", _url),
                "graphData": _Field("graph_data", _flag),
                "signatures": _Field("signatures", _flag),
            },
            _values,
        ),
    ),
    "samples": _Field(
        "samples",
        _record(
            {
                "fromRelease": _Field("from_release", _flag),
                "directory": _Field("directory", _path),
                "images": _Field("images", _list_of(_reference("a sample image reference"), "image references")),
                "exclude": _Field("exclude", _list_of(_EXCLUDE_NAME, "imagestream names")),
            },
            _build_samples,
        ),
    ),
    "operators": _Field("operators", _operators()),
    "additionalImages": _Field("additional_images", _list_of(_image_entry, "image references")),
    "registryImages": _Field(
        "registry_images",
        _record(
            {
                "enabled": _Field("enabled", _flag),
                "quay": _Field("quay", _reference("a Quay image reference")),
                "postgres": _Field("postgres", _reference("a PostgreSQL image reference")),
                "redis": _Field("redis", _reference("a Redis image reference")),
            },
            lambda ctx, r: RegistryImagesSpec(**r.values),
        ),
    ),
    "volumeSizeGiB": _Field("volume_size_gib", _positive_int("a volume size in GiB")),
}


def _build_own(ctx: _Ctx, record: _Record) -> ImageSet:
    values = record.values
    target: TargetSpec = values.get("target", TargetSpec())
    release_values: Dict[str, Any] = dict(values.get("releases", {}))
    if "images" in release_values:
        release_values["images"] = _dedupe(
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
    return _finish(
        ctx,
        record,
        ImageSet(
            source_format=API_VERSION,
            source_name=ctx.source_name,
            releases=releases,
            samples=samples,
            operators=values.get("operators", ()),
            additional_images=_dedupe(
                ctx, values.get("additional_images", ()), record.at("additionalImages"), "additional image"
            ),
            registry_images=values.get("registry_images", RegistryImagesSpec()),
            target=target,
            volume_size_hint=gib * _GIB if gib is not None else None,
        ),
    )


# --------------------------------------------------------------------------------------------------
# oc-mirror: mirror.openshift.io/v1alpha2 and v2alpha1 ImageSetConfiguration
# --------------------------------------------------------------------------------------------------

_UNSUPPORTED_MIRROR: Mapping[str, str] = {
    "helm": "Helm charts are not carried yet; list the chart's images under additionalImages instead",
    "blockedImages": "images cannot be filtered out yet; remove the field and the images from the other sections",
    "samples": "oc-mirror does not implement it either; use the ocp-bundler format's samples section",
}

_PLATFORM_FIELDS_V1ALPHA2: Mapping[str, _Field] = {
    "channels": _Field("channels", _list_of(_RELEASE_CHANNEL, "release channels")),
    "architectures": _Field("architectures", _architectures),
    "graph": _Field("graph", _flag),
}


def _oc_mirror_fields(
    *,
    platform_fields: Mapping[str, _Field],
    platform_unsupported: Mapping[str, str],
    operators: _Converter,
) -> Mapping[str, _Field]:
    """The top-level table of an oc-mirror ImageSetConfiguration; versions differ in the tables passed in."""
    mirror = _record(
        {
            "platform": _Field("platform", _record(platform_fields, _values, unsupported=platform_unsupported)),
            "operators": _Field("operators", operators),
            "additionalImages": _Field(
                "additional_images", _list_of(_named_image("an image reference"), "images ({name: <reference>})")
            ),
        },
        _values,
        unsupported=_UNSUPPORTED_MIRROR,
    )
    return {
        "apiVersion": _Field("api_version", _text("an apiVersion")),
        "kind": _Field("kind", _text("a kind")),
        "mirror": _Field("mirror", mirror),
        "archiveSize": _Field("archive_size", _positive_int("an archive size in GiB")),
    }


_OC_MIRROR_V1ALPHA2_FIELDS = _oc_mirror_fields(
    platform_fields=_PLATFORM_FIELDS_V1ALPHA2,
    platform_unsupported={},
    operators=_operators(
        package_unsupported={"minBundle": _MIN_BUNDLE},
        channel_unsupported={"minBundle": _MIN_BUNDLE},
        catalog_extra={
            "targetName": _Field(
                "target_name", _text("a repository name like redhat-operator-index", re.compile(_PATH_COMPONENT))
            )
        },
        catalog_ignored={"originalRef": "ignored: deprecated by oc-mirror 4.13 and only used for oci: catalogs"},
    ),
)
_STORAGE_CONFIG_IGNORED: Mapping[str, str] = {
    "storageConfig": "ignored: oc-mirror keeps its metadata there; ocp-bundler keeps its own state in the bundle"
}

_OC_MIRROR_V2ALPHA1_FIELDS = _oc_mirror_fields(
    platform_fields={
        **_PLATFORM_FIELDS_V1ALPHA2,
        "release": _Field("release", _reference("a release image reference")),
    },
    platform_unsupported={
        "kubeVirtContainer": (
            "not extracted from the release yet; list the KubeVirt container image under additionalImages instead"
        ),
    },
    operators=_operators(
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


def _build_oc_mirror(ctx: _Ctx, record: _Record) -> ImageSet:
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
    return _finish(
        ctx,
        record,
        ImageSet(
            source_format=str(record.values["api_version"]),
            source_name=ctx.source_name,
            releases=releases,
            operators=mirror.get("operators", ()),
            additional_images=_dedupe(
                ctx, mirror.get("additional_images", ()), mirror_loc.key("additionalImages", None), "additional image"
            ),
            volume_size_hint=archive_size * _GIB if archive_size is not None else None,
        ),
    )


def _finish(ctx: _Ctx, record: _Record, image_set: ImageSet) -> ImageSet:
    if image_set.is_empty():
        ctx.warn(record.loc, "selects no content: nothing would be carried")
    return dataclasses.replace(image_set, warnings=tuple(ctx.warnings))


# --------------------------------------------------------------------------------------------------
# The formats, by apiVersion, and the entry points
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Format:
    kind: str
    fields: Mapping[str, _Field]
    build: Callable[[_Ctx, _Record], ImageSet]
    ignored: Mapping[str, str] = dataclasses.field(default_factory=dict)
    unsupported: Mapping[str, str] = dataclasses.field(default_factory=dict)


_FORMATS: Mapping[str, _Format] = {
    API_VERSION: _Format(KIND, _OWN_TOP, _build_own),
    OC_MIRROR_V1ALPHA2: _Format(OC_MIRROR_KIND, _OC_MIRROR_V1ALPHA2_FIELDS, _build_oc_mirror, _STORAGE_CONFIG_IGNORED),
    OC_MIRROR_V2ALPHA1: _Format(
        OC_MIRROR_KIND,
        _OC_MIRROR_V2ALPHA1_FIELDS,
        _build_oc_mirror,
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
    document = _load_document(text, source_name)
    ctx = _Ctx(source_name, base_dir)
    root = _Loc("", document.line if isinstance(document, (_Map, _Seq)) else None)
    if not isinstance(document, _Map):  # the loader builds every YAML mapping as a _Map
        ctx.fail(
            root,
            f"expected a mapping with apiVersion and kind at the top of the document, got {_describe(document)}",
        )
    accepted = ", ".join(_FORMATS)
    api_version = document.get("apiVersion")
    api_loc = root.key("apiVersion", document.key_lines.get("apiVersion"))
    if api_version is None:
        ctx.fail(root, f"missing required field 'apiVersion': expected one of {accepted}")
    if not isinstance(api_version, str) or api_version not in _FORMATS:
        shown = api_version if isinstance(api_version, str) else _describe(api_version)
        ctx.fail(
            api_loc,
            f"unsupported apiVersion {shown!r}{_suggestion(str(api_version), _FORMATS)}: expected one of {accepted}",
        )
    fmt = _FORMATS[api_version]
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
    image_set: ImageSet = _record(fmt.fields, fmt.build, ignored=fmt.ignored, unsupported=fmt.unsupported)(
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

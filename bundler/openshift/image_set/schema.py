"""The table-driven validation framework the image-set formats are written in.

It owns reading YAML with line numbers and duplicate-key detection, where a value sits in the document
(`Loc`: ``mirror.operators[0].packages[2].channels[0].minVersion`` and a line), and the converters:
scalars, lists, and mappings described by tables of `Field`s (YAML key -> attribute name + converter)
plus tables of fields known but not supported, and of fields accepted and ignored with a warning.
Every problem is a `ConfigError` naming the file, the path, what was expected and, for unknown fields,
the closest known one. It knows no format: `sections`, `native` and `oc_mirror` are written with it.

Image references get a syntactic check only (``host/path`` with a tag or a digest), in the one grammar
of `bundler.oci.reference`.
"""

from __future__ import annotations

import difflib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, NoReturn, Optional, Sequence, Tuple
from urllib.parse import urlsplit

import yaml

from bundler.base.errors import ConfigError, InvalidReferenceError, UsageError
from bundler.oci.reference import HOST, QUALIFIED_REFERENCE_RE, is_registry_host, parse_host
from bundler.openshift.image_set.model import API_VERSION, KIND, OC_MIRROR_KIND, Version
from bundler.transfer.transports import OCI_SCHEME, parse_layout_source

log = logging.getLogger(__name__)


class YamlMap(Dict[Any, Any]):
    """A YAML mapping that remembers the line of each key."""

    def __init__(self, line: Optional[int]) -> None:
        super().__init__()
        self.line = line
        self.key_lines: Dict[Any, int] = {}


class YamlSeq(List[Any]):
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


def _construct_map(loader: Any, node: Any) -> YamlMap:
    explicit = {id(key) for key, _ in node.value if key.tag != "tag:yaml.org,2002:merge"}
    loader.flatten_mapping(node)
    result = YamlMap(node.start_mark.line + 1)
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


def _construct_seq(loader: Any, node: Any) -> YamlSeq:
    result = YamlSeq(node.start_mark.line + 1)
    for child in node.value:
        result.append(loader.construct_object(child, deep=True))
        result.item_lines.append(child.start_mark.line + 1)
    return result


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


def load_document(text: str, source_name: str) -> Any:
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
class Loc:
    """Where a value sits in the document: a path like `mirror.operators[0].catalog` and a line."""

    path: str
    line: Optional[int]

    def key(self, key: str, line: Optional[int]) -> Loc:
        return Loc(f"{self.path}.{key}" if self.path else key, line if line is not None else self.line)

    def index(self, index: int, line: Optional[int]) -> Loc:
        return Loc(f"{self.path}[{index}]", line if line is not None else self.line)

    def __str__(self) -> str:
        return self.path or "top level"


class Ctx:
    def __init__(self, source_name: str, base_dir: Optional[Path]) -> None:
        self.source_name = source_name
        self.base_dir = base_dir
        self.warnings: List[str] = []
        self.case_insensitive = False
        """Match field names regardless of case (oc-mirror's decoder does), with a warning."""

    def fail(self, loc: Loc, message: str) -> NoReturn:
        line = f" [line {loc.line}]" if loc.line is not None else ""
        raise ConfigError(f"{self.source_name}: {loc}: {message}{line}")

    def warn(self, loc: Loc, message: str) -> None:
        text = f"{self.source_name}: {loc}: {message}"
        log.debug("image-set warning: %s", text)
        self.warnings.append(text)


Converter = Callable[[Ctx, Any, Loc], Any]


def describe(value: Any) -> str:
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


def expect_str(ctx: Ctx, value: Any, loc: Loc, what: str) -> str:
    if isinstance(value, str):
        if not value.strip():
            ctx.fail(loc, f"expected {what}, got an empty string")
        return value
    hint = ""
    if isinstance(value, (bool, int, float)):
        hint = "; quote it so YAML keeps it as text (write '4.10', not 4.10)"
    ctx.fail(loc, f"expected {what}, got {describe(value)}{hint}")


def text_value(what: str, pattern: Optional[re.Pattern[str]] = None) -> Converter:
    def convert(ctx: Ctx, value: Any, loc: Loc) -> str:
        text = expect_str(ctx, value, loc, what)
        if pattern is not None and not pattern.fullmatch(text):
            ctx.fail(loc, f"expected {what}, got {text!r}")
        return text

    return convert


def boolean(ctx: Ctx, value: Any, loc: Loc) -> bool:
    if not isinstance(value, bool):
        ctx.fail(loc, f"expected true or false, got {describe(value)}")
    return value


def positive_int(what: str) -> Converter:
    def convert(ctx: Ctx, value: Any, loc: Loc) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            ctx.fail(loc, f"expected {what} (a whole number greater than 0), got {describe(value)}")
        return value

    return convert


def version_text(ctx: Ctx, value: Any, loc: Loc) -> str:
    text = expect_str(ctx, value, loc, "a version like 4.8.0 or 4.14.0-rc.1")
    try:
        Version.parse(text)
    except ValueError:
        ctx.fail(loc, f"expected a version like 4.8.0 or 4.14.0-rc.1 (major.minor.patch), got {text!r}")
    return text


def choice(choices: Mapping[str, str], what: str) -> Converter:
    """A string from `choices` (accepted spelling -> canonical value), case-insensitive."""

    def convert(ctx: Ctx, value: Any, loc: Loc) -> str:
        canonical = sorted(set(choices.values()))
        text = expect_str(ctx, value, loc, f"{what}: one of {', '.join(canonical)}")
        if text.lower() in choices:
            return choices[text.lower()]
        ctx.fail(loc, f"unknown {what} {text!r}{suggestion(text, choices)}: expected one of {', '.join(canonical)}")

    return convert


_REFERENCE_EXAMPLE = "registry.example.com/org/repo:tag or registry.example.com/org/repo@sha256:<64 hex>"


def image_reference(what: str) -> Converter:
    """A light syntactic check of an image reference: `host/path` with a tag and/or a digest."""

    def convert(ctx: Ctx, value: Any, loc: Loc) -> str:
        text = expect_str(ctx, value, loc, f"{what} ({_REFERENCE_EXAMPLE})")
        if text.startswith("docker://"):
            text = text[len("docker://") :]
        if re.match(r"(oci|file|dir|oci-archive|docker-archive):", text):
            ctx.fail(
                loc, f"{text!r}: images on disk are not supported yet: give a registry reference ({_REFERENCE_EXAMPLE})"
            )
        first, slash, _ = text.partition("/")
        if not slash or not is_registry_host(first):
            full = f"docker.io/{text}" if slash else f"docker.io/library/{text}"
            ctx.fail(loc, f"{text!r} names no registry host: write it in full, e.g. {full}")
        match = QUALIFIED_REFERENCE_RE.fullmatch(text)
        if match is None:
            repository = repository_of(text)
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
        _check_port(ctx, match.group("host"), loc)
        return text

    return convert


def repository_of(reference: str) -> str:
    """The repository path of `host/path[:tag][@digest]`, without host, tag and digest."""
    path = reference.split("@", 1)[0].partition("/")[2]
    head, slash, last = path.rpartition("/")
    return head + slash + last.split(":", 1)[0]


def registry_host(ctx: Ctx, value: Any, loc: Loc) -> str:
    what = "a registry host[:port] like registry.example.com:8443"
    text = expect_str(ctx, value, loc, what)
    if "://" in text:
        ctx.fail(loc, f"expected {what} without a scheme, got {text!r}")
    if "/" in text:
        ctx.fail(loc, f"expected {what} without a path, got {text!r}: put repository paths in target.prefix")
    if not re.fullmatch(HOST, text):
        ctx.fail(loc, f"expected {what}, got {text!r}")
    _check_port(ctx, text, loc)
    return text


def _check_port(ctx: Ctx, host: str, loc: Loc) -> None:
    """The host's port in range, by the reference parser's own check."""
    try:
        parse_host(host)
    except InvalidReferenceError as exc:
        ctx.fail(loc, f"{exc.message}: {exc.hint}" if exc.hint else exc.message)


def http_url(ctx: Ctx, value: Any, loc: Loc) -> str:
    what = "an http(s) URL like https://api.openshift.com/api/upgrades_info/v1/graph"
    text = expect_str(ctx, value, loc, what)
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc or any(c.isspace() for c in text):
        ctx.fail(loc, f"expected {what}, got {text!r}")
    return text


def catalog_reference(what: str) -> Converter:
    """A catalog or additional image: an image reference, or oc-mirror's `oci://DIR` (a local OCI layout;
    `oci:DIR` too), optionally naming one image of the layout as `oci://DIR:REF` or `oci://DIR@sha256:<hex>`.

    The layout form is returned as `oci://<absolute DIR>[:REF|@DIGEST]` (relative to the config file's
    directory)."""
    registry = image_reference(what)

    def convert(ctx: Ctx, value: Any, loc: Loc) -> str:
        text = expect_str(ctx, value, loc, f"{what} ({_REFERENCE_EXAMPLE}) or oci:///path/to/layout")
        if not text.startswith("oci:"):
            reference: str = registry(ctx, value, loc)
            return reference
        try:
            source = parse_layout_source(text)
        except UsageError as exc:
            ctx.fail(loc, f"{text!r}: expected oci:///path/to/layout[:REF|@sha256:DIGEST] (a local OCI layout directory)"
                     + (f" ({exc.message})" if "digest" in exc.message else ""))
        assert source.directory is not None
        path = source.directory.expanduser()
        if not path.is_absolute() and ctx.base_dir is not None:
            path = ctx.base_dir / path
        selector = f":{source.ref_name}" if source.ref_name else f"@{source.digest}" if source.digest else ""
        return OCI_SCHEME + str(path) + selector

    return convert


#: Why a release cannot come from a local OCI layout (oc-mirror's `platform.release` reads a registry image too).
RELEASE_FROM_LAYOUT = (
    "a release cannot come from a local OCI layout: its payload names its ~190 component images by digest in "
    "the registry that publishes it, and its signatures, update graph and install-config entries all point "
    "there (oc-mirror reads platform.release as a registry image as well); name the release by registry "
    "reference (quay.io/openshift-release-dev/ocp-release@sha256:…) or by channel, and carry other images of "
    "a layout under additionalImages"
)


def release_reference(what: str) -> Converter:
    """A release image reference; an `oci:` one is refused with the reason (`RELEASE_FROM_LAYOUT`)."""
    registry = image_reference(what)

    def convert(ctx: Ctx, value: Any, loc: Loc) -> str:
        if isinstance(value, str) and value.startswith("oci:"):
            ctx.fail(loc, f"{value!r}: {RELEASE_FROM_LAYOUT}")
        reference: str = registry(ctx, value, loc)
        return reference

    return convert


def directory_path(ctx: Ctx, value: Any, loc: Loc) -> Path:
    path = Path(expect_str(ctx, value, loc, "a directory path")).expanduser()
    if not path.is_absolute() and ctx.base_dir is not None:
        path = ctx.base_dir / path
    return path


def list_of(item: Converter, what: str) -> Converter:
    def convert(ctx: Ctx, value: Any, loc: Loc) -> Tuple[Any, ...]:
        if not isinstance(value, list):
            ctx.fail(loc, f"expected a list of {what}, got {describe(value)}")
        lines = value.item_lines if isinstance(value, YamlSeq) else []
        return tuple(
            item(ctx, element, loc.index(i, lines[i] if i < len(lines) else None)) for i, element in enumerate(value)
        )

    return convert


@dataclass(frozen=True)
class Field:
    """One key of a YAML mapping: the attribute it becomes and how its value is converted."""

    attribute: str
    convert: Converter
    required: bool = False


@dataclass(frozen=True)
class Record:
    """A validated mapping: converted values keyed by attribute, and where each key was."""

    values: Dict[str, Any]
    loc: Loc
    mapping: YamlMap

    def at(self, key: str) -> Loc:
        return self.loc.key(key, self.mapping.key_lines.get(key))


# Spellings from older oc-mirror documents and common slips, pointed at what replaced them.
_RENAMED: Mapping[str, str] = {
    "startingVersion": "minVersion",
    "headsOnly": "full",
    "skipDeps": "skipDependencies",
    "ocp": "platform",
    "repos": "repositories",
}


def suggestion(key: str, candidates: Iterable[str]) -> str:
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


def mapping_of(
    fields: Mapping[str, Field],
    build: Callable[[Ctx, Record], Any],
    *,
    unsupported: Optional[Mapping[str, str]] = None,
    ignored: Optional[Mapping[str, str]] = None,
) -> Converter:
    """A converter for a YAML mapping described by tables.

    `fields`: YAML key -> `Field`. `unsupported`: keys we know but cannot honour yet -> why (an error
    unless the value is empty). `ignored`: keys accepted and ignored -> the warning to record.
    Anything else is an unknown field, reported with the closest known key.
    """
    unsupported = unsupported or {}
    ignored = ignored or {}
    known = [*fields, *unsupported, *ignored]

    def convert(ctx: Ctx, value: Any, loc: Loc) -> Any:
        if not isinstance(value, dict):
            ctx.fail(loc, f"expected a mapping with fields {', '.join(fields)}, got {describe(value)}")
        mapping = value if isinstance(value, YamlMap) else YamlMap(loc.line)
        if mapping is not value:
            mapping.update(value)
        if ctx.case_insensitive:
            mapping = _canonical_keys(ctx, mapping, [*fields, *unsupported, *ignored], loc)
        for key, raw in mapping.items():
            key_loc = Loc(loc.path, mapping.key_lines.get(key, loc.line))
            if not isinstance(key, str):
                ctx.fail(key_loc, f"field names must be strings, got {describe(key)}")
            if key in fields:
                continue
            if key in ignored:
                ctx.warn(loc.key(key, key_loc.line), ignored[key])
            elif key in unsupported:
                if not _is_unset(raw):
                    ctx.fail(loc.key(key, key_loc.line), f"'{key}' is not supported yet by ocp-bundler: {unsupported[key]}")
            else:
                ctx.fail(key_loc, f"unknown field '{key}'{suggestion(key, known)}")
        values: Dict[str, Any] = {}
        for key, spec in fields.items():
            raw = mapping.get(key)
            if raw is None:
                if spec.required:
                    ctx.fail(loc, f"missing required field '{key}'")
                continue
            values[spec.attribute] = spec.convert(ctx, raw, loc.key(key, mapping.key_lines.get(key)))
        return build(ctx, Record(values, loc, mapping))

    return convert


def _canonical_keys(ctx: Ctx, mapping: YamlMap, known: Sequence[str], loc: Loc) -> YamlMap:
    """`mapping` with each key that differs from a known field only in case renamed to it, with a warning;
    a key given in two spellings is an error."""
    by_lower = {name.lower(): name for name in known}
    renamed = YamlMap(mapping.line)
    for key, raw in mapping.items():
        line = mapping.key_lines.get(key)
        canonical = by_lower.get(key.lower()) if isinstance(key, str) and key not in known else None
        if canonical is not None:
            if canonical in mapping or canonical in renamed:
                ctx.fail(loc.key(key, line), f"'{key}' and '{canonical}' are the same field (oc-mirror ignores case): keep one")
            ctx.warn(loc.key(key, line), f"'{key}' read as '{canonical}' (oc-mirror matches field names regardless of case)")
            key = canonical
        renamed[key] = raw
        if line is not None:
            renamed.key_lines[key] = line
    return renamed


def values_of(ctx: Ctx, record: Record) -> Dict[str, Any]:
    return record.values


def check_range(ctx: Ctx, record: Record) -> None:
    low, high = record.values.get("min_version"), record.values.get("max_version")
    if low is not None and high is not None and Version.parse(low) > Version.parse(high):
        ctx.fail(record.at("maxVersion"), f"minVersion {low} is greater than maxVersion {high}")


def check_unique(ctx: Ctx, record: Record, key: str, attribute: Callable[[Any], str], what: str) -> None:
    """Fail when two items of the list at `key` share `attribute` (two entries for one package...)."""
    items: Sequence[Any] = record.values.get(key, ())  # the YAML key and the attribute are the same here
    raw = record.mapping.get(key)
    lines = raw.item_lines if isinstance(raw, YamlSeq) else []
    seen: Dict[str, int] = {}
    for index, item in enumerate(items):
        value = attribute(item)
        if value in seen:
            line = lines[index] if index < len(lines) else None
            ctx.fail(
                record.at(key).index(index, line), f"{what} {value!r} is listed twice (also at index {seen[value]})"
            )
        seen[value] = index


def dedupe(ctx: Ctx, items: Iterable[str], loc: Loc, what: str) -> Tuple[str, ...]:
    """The items in order, each once (linear: a dict finds repeats in constant time); a warning per repeat."""
    result: Dict[str, None] = {}
    for item in items:
        if item in result:
            ctx.warn(loc, f"{what} {item!r} is listed more than once; carrying it once")
        else:
            result[item] = None
    return tuple(result)


"""The operator-catalog model (a file-based catalog, FBC), how it is read and written, and how it is filtered.

Owns, for `bundler.openshift.catalog.plan`:

- `DeclarativeConfig`: one in-memory model of a catalog, whatever it came from. File-based catalogs
  (operator-registry `alpha/declcfg`: streams of JSON or YAML objects `olm.package`, `olm.channel`,
  `olm.bundle`, `olm.deprecations`, …, `.indexignore` honoured) are read by `load_fbc`, including the older
  alpha layout where channel membership is an `olm.channel` property on each bundle (`olm.skips`,
  `olm.skipRange` properties); sqlite catalogs are converted into the same model by `catalog_sqlite`.
- `select`: the image-set config's operator filters (oc-mirror's semantics, PROTOCOL-NOTES §5):
  no packages → the head of every channel (or everything with `full`); packages → only those, each
  channel's head unless `full` or a `minVersion`/`maxVersion` range says otherwise; bundles that the
  selection depends on (`olm.gvk.required`, `olm.package.required`) are added with their upgrade path to
  their channel head, as operator-registry's `DiffGenerator` does, unless `skipDependencies`. Unknown
  packages and channels are `ConfigError`s listing close matches.
- `render_fbc`: the selected part of the catalog as a JSON stream, for the pruned catalog image.
- `csv_images`: the images a ClusterServiceVersion names (`spec.relatedImages[].image` *or* `.value` —
  bugzilla 1821515 — and the deployments' containers and init containers).

Nothing here touches a registry.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import fnmatch
import json
import logging
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, FrozenSet, Iterable, Iterator, List, Mapping, Optional, Sequence, Set, Tuple

import yaml

from bundler.base.errors import ConfigError, UsageError
from bundler.openshift.image_set import CatalogSpec, PackageSpec, Version

log = logging.getLogger(__name__)

SCHEMA_PACKAGE = "olm.package"
SCHEMA_CHANNEL = "olm.channel"
SCHEMA_BUNDLE = "olm.bundle"
SCHEMA_DEPRECATIONS = "olm.deprecations"

PROP_PACKAGE = "olm.package"
PROP_PACKAGE_PROVIDED = "olm.package.provided"
PROP_PACKAGE_REQUIRED = "olm.package.required"
PROP_GVK = "olm.gvk"
PROP_GVK_PROVIDED = "olm.gvk.provided"
PROP_GVK_REQUIRED = "olm.gvk.required"
PROP_CHANNEL = "olm.channel"
PROP_SKIPS = "olm.skips"
PROP_SKIP_RANGE = "olm.skipRange"
PROP_BUNDLE_OBJECT = "olm.bundle.object"

INDEX_IGNORE = ".indexignore"

FORMAT_FBC = "fbc"
FORMAT_FBC_ALPHA = "fbc-alpha"
FORMAT_SQLITE = "sqlite"

GVK = Tuple[str, str, str]
"""(group, version, kind)"""

try:  # libyaml is ten times faster on big catalogs
    _YamlLoader: Any = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - pure-python PyYAML
    _YamlLoader = yaml.SafeLoader


class InvalidCatalogError(UsageError):
    """A catalog whose content cannot be used (broken stream, entry without bundle, two channel heads…)."""


# --------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RelatedImage:
    name: str
    image: str


@dataclass(frozen=True)
class ChannelEntry:
    name: str
    replaces: Optional[str] = None
    skips: Tuple[str, ...] = ()
    skip_range: Optional[str] = None


@dataclass
class Channel:
    package: str
    name: str
    entries: Dict[str, ChannelEntry] = field(default_factory=dict)
    raw: Optional[Dict[str, Any]] = None
    """The original `olm.channel` object (modern FBC only)."""
    declared_head: Optional[str] = None
    """The head a sqlite catalog records in its `channel` table."""

    def head(self) -> str:
        """The entry no other entry of the channel replaces or skips (operator-registry `Channel.Head`)."""
        return head_of(self.entries.values(), where=f"package {self.package!r} channel {self.name!r}")


@dataclass
class Package:
    name: str
    default_channel: Optional[str]
    channels: Dict[str, Channel] = field(default_factory=dict)
    raw: Optional[Dict[str, Any]] = None


@dataclass
class Bundle:
    package: str
    name: str
    image: str
    """The bundle image ("" when the catalog has none: sqlite catalogs built from manifests)."""
    version_text: str = ""
    related_images: Tuple[RelatedImage, ...] = ()
    provided_gvks: FrozenSet[GVK] = frozenset()
    required_gvks: FrozenSet[GVK] = frozenset()
    required_packages: Tuple[Tuple[str, str], ...] = ()
    """(package, semver range) pairs; "" is any version."""
    bundle_objects: Tuple[str, ...] = ()
    """base64 `olm.bundle.object` data (the CSV is one of them)."""
    csv_json: Optional[str] = None
    """The CSV as JSON text (sqlite `operatorbundle.csv`)."""
    raw: Optional[Dict[str, Any]] = None
    version: Optional[Version] = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.version = parse_version(self.version_text)

    def csv(self) -> Optional[Dict[str, Any]]:
        """The ClusterServiceVersion the catalog carries for this bundle, when it carries one."""
        if self.csv_json:
            try:
                obj = json.loads(self.csv_json)
            except ValueError:
                log.debug("bundle %s: csv column is not JSON", self.name)
            else:
                if isinstance(obj, dict):
                    return obj
        for data in self.bundle_objects:
            try:
                obj = json.loads(base64.b64decode(data, validate=False))
            except (ValueError, binascii.Error):
                continue
            if isinstance(obj, dict) and obj.get("kind") == "ClusterServiceVersion":
                return obj
        return None


@dataclass
class DeclarativeConfig:
    packages: Dict[str, Package] = field(default_factory=dict)
    bundles: Dict[Tuple[str, str], Bundle] = field(default_factory=dict)
    """By (package, bundle name), in catalog order."""
    others: List[Dict[str, Any]] = field(default_factory=list)
    """Objects of other schemas (`olm.deprecations`, unknown ones), kept as they are."""
    source_format: str = FORMAT_FBC

    def bundle(self, package: str, name: str) -> Bundle:
        return self.bundles[(package, name)]

    def channel_count(self) -> int:
        return sum(len(p.channels) for p in self.packages.values())


def parse_version(text: str) -> Optional[Version]:
    text = (text or "").strip()
    if text.startswith("v"):
        text = text[1:]
    try:
        return Version.parse(text)
    except ValueError:
        return None


def head_of(entries: Iterable[ChannelEntry], *, where: str) -> str:
    entries = list(entries)
    incoming: Set[str] = set()
    for e in entries:
        if e.replaces:
            incoming.add(e.replaces)
        incoming.update(e.skips)
    heads = [e.name for e in entries if e.name not in incoming]
    if not heads:
        raise InvalidCatalogError(f"{where}: no channel head (every entry is replaced or skipped by another)")
    if len(heads) > 1:
        raise InvalidCatalogError(f"{where}: several channel heads ({', '.join(sorted(heads))})", hint="the catalog is invalid; ask its publisher")
    return heads[0]


# --------------------------------------------------------------------------------------------------
# Reading a file-based catalog
# --------------------------------------------------------------------------------------------------


class _IndexIgnore:
    """`.indexignore` files (gitignore-like patterns, relative to the directory holding the file)."""

    def __init__(self, files: Mapping[str, bytes]) -> None:
        self._rules: List[Tuple[str, str, bool, bool, bool]] = []  # (dir, pattern, negate, dir_only, anchored)
        for path in sorted(files, key=lambda p: p.count("/")):
            if posixpath.basename(path) != INDEX_IGNORE:
                continue
            base = posixpath.dirname(path)
            for line in files[path].decode("utf-8", "replace").splitlines():
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                negate = line.startswith("!")
                if negate:
                    line = line[1:]
                dir_only = line.endswith("/")
                line = line.strip("/") if dir_only else line
                anchored = "/" in line.lstrip("/") or line.startswith("/")
                self._rules.append((base, line.lstrip("/"), negate, dir_only, anchored))

    def ignored(self, path: str) -> bool:
        if posixpath.basename(path) == INDEX_IGNORE:
            return True
        result = False
        for base, pattern, negate, dir_only, anchored in self._rules:
            if base and not path.startswith(base + "/"):
                continue
            rel = path[len(base) + 1 :] if base else path
            parts = rel.split("/")
            # candidate paths: every parent directory, and the file itself unless the rule is for directories
            candidates = ["/".join(parts[: i + 1]) for i in range(len(parts) - (1 if dir_only else 0))]
            if anchored:
                hit = any(fnmatch.fnmatchcase(c, pattern) for c in candidates)
            else:
                hit = any(fnmatch.fnmatchcase(c.rsplit("/", 1)[-1], pattern) for c in candidates)
            if hit:
                result = not negate
        return result


def _iter_json_stream(text: str, where: str) -> Iterator[Any]:
    decoder = json.JSONDecoder()
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in " \t\r\n":
            i += 1
        if i >= n:
            return
        try:
            obj, i = decoder.raw_decode(text, i)
        except ValueError as exc:
            raise InvalidCatalogError(f"{where}: not a stream of JSON objects ({exc})") from None
        yield obj


def parse_stream(name: str, data: bytes) -> List[Dict[str, Any]]:
    """The catalog objects in one file: a JSON stream, or YAML documents (sniffed like operator-registry)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidCatalogError(f"{name}: not UTF-8 text") from None
    lower = name.lower()
    is_json = lower.endswith(".json") or (not lower.endswith((".yaml", ".yml")) and text.lstrip().startswith("{"))
    if is_json:
        docs: Iterable[Any] = _iter_json_stream(text, name)
    else:
        try:
            docs = list(yaml.load_all(text, Loader=_YamlLoader))
        except yaml.YAMLError as exc:
            raise InvalidCatalogError(f"{name}: not valid YAML ({str(exc).splitlines()[0]})") from None
    out: List[Dict[str, Any]] = []
    for doc in docs:
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise InvalidCatalogError(f"{name}: expected catalog objects (mappings with a schema), found {type(doc).__name__}")
        if not doc.get("schema"):
            raise InvalidCatalogError(f"{name}: an object without 'schema' (name {doc.get('name')!r})")
        out.append(doc)
    return out


def _props(obj: Mapping[str, Any]) -> List[Tuple[str, Any]]:
    props = obj.get("properties") or []
    return [(str(p.get("type", "")), p.get("value")) for p in props if isinstance(p, dict)]


def _gvk(value: Any) -> Optional[GVK]:
    if not isinstance(value, dict):
        return None
    return (str(value.get("group", "")), str(value.get("version", "")), str(value.get("kind", "")))


def _bundle_from_object(obj: Dict[str, Any], where: str) -> Tuple[Bundle, List[Tuple[str, ChannelEntry]]]:
    """A bundle, and its alpha-layout channel memberships (empty for modern catalogs)."""
    name = str(obj.get("name") or "")
    package = str(obj.get("package") or "")
    if not name or not package:
        raise InvalidCatalogError(f"{where}: olm.bundle without name or package")
    version = ""
    provided: Set[GVK] = set()
    required: Set[GVK] = set()
    required_pkgs: List[Tuple[str, str]] = []
    objects: List[str] = []
    alpha_channels: List[Tuple[str, Optional[str]]] = []
    skips: List[str] = []
    skip_range: Optional[str] = None
    for ptype, value in _props(obj):
        if ptype in (PROP_PACKAGE, PROP_PACKAGE_PROVIDED) and isinstance(value, dict):
            version = str(value.get("version", "") or "")
        elif ptype in (PROP_GVK, PROP_GVK_PROVIDED):
            g = _gvk(value)
            if g:
                provided.add(g)
        elif ptype == PROP_GVK_REQUIRED:
            g = _gvk(value)
            if g:
                required.add(g)
        elif ptype == PROP_PACKAGE_REQUIRED and isinstance(value, dict):
            required_pkgs.append((str(value.get("packageName", "")), str(value.get("versionRange", "") or "")))
        elif ptype == PROP_BUNDLE_OBJECT and isinstance(value, dict) and isinstance(value.get("data"), str):
            objects.append(value["data"])
        elif ptype == PROP_CHANNEL and isinstance(value, dict):
            ch = value.get("name") or value.get("channelName")
            if ch:
                rep = value.get("replaces")
                alpha_channels.append((str(ch), str(rep) if rep else None))
        elif ptype == PROP_SKIPS and value:
            skips.append(str(value))
        elif ptype == PROP_SKIP_RANGE and value:
            skip_range = str(value)
    related = []
    for ri in obj.get("relatedImages") or []:
        if isinstance(ri, dict):
            related.append(RelatedImage(str(ri.get("name") or ""), str(ri.get("image") or "")))
    bundle = Bundle(
        package=package,
        name=name,
        image=str(obj.get("image") or ""),
        version_text=version,
        related_images=tuple(related),
        provided_gvks=frozenset(provided),
        required_gvks=frozenset(required),
        required_packages=tuple(required_pkgs),
        bundle_objects=tuple(objects),
        raw=obj,
    )
    memberships = [(ch, ChannelEntry(name, rep, tuple(skips), skip_range)) for ch, rep in alpha_channels]
    return bundle, memberships


def load_fbc(files: Mapping[str, bytes]) -> DeclarativeConfig:
    """Build the model from a file-based catalog: `files` maps paths (relative to the catalog root) to bytes.

    `.indexignore` files are honoured; every other file must hold catalog objects (JSON or YAML).
    """
    ignore = _IndexIgnore(files)
    objects: List[Tuple[str, Dict[str, Any]]] = []
    for path in sorted(files):
        if ignore.ignored(path):
            continue
        objects.extend((path, obj) for obj in parse_stream(path, files[path]))
    return build_model(objects)


def build_model(objects: Sequence[Tuple[str, Dict[str, Any]]]) -> DeclarativeConfig:
    """The model from (file, object) pairs; checks what operator-registry's `ConvertToModel` checks."""
    model = DeclarativeConfig()
    channel_objects: List[Tuple[str, Dict[str, Any]]] = []
    alpha: List[Tuple[str, str, ChannelEntry]] = []
    for where, obj in objects:
        schema = obj.get("schema")
        if schema == SCHEMA_PACKAGE:
            name = str(obj.get("name") or "")
            if not name:
                raise InvalidCatalogError(f"{where}: olm.package without a name")
            if name in model.packages:
                raise InvalidCatalogError(f"{where}: package {name!r} is declared twice")
            default = obj.get("defaultChannel")
            model.packages[name] = Package(name, str(default) if default else None, raw=obj)
        elif schema == SCHEMA_CHANNEL:
            channel_objects.append((where, obj))
        elif schema == SCHEMA_BUNDLE:
            bundle, memberships = _bundle_from_object(obj, where)
            key = (bundle.package, bundle.name)
            if key in model.bundles:
                raise InvalidCatalogError(f"{where}: bundle {bundle.name!r} of package {bundle.package!r} is declared twice")
            model.bundles[key] = bundle
            alpha.extend((bundle.package, ch, entry) for ch, entry in memberships)
        else:
            model.others.append(obj)
    for where, obj in channel_objects:
        pkg_name, ch_name = str(obj.get("package") or ""), str(obj.get("name") or "")
        pkg = model.packages.get(pkg_name)
        if pkg is None:
            raise InvalidCatalogError(f"{where}: channel {ch_name!r} names package {pkg_name!r}, which has no olm.package")
        if ch_name in pkg.channels:
            raise InvalidCatalogError(f"{where}: package {pkg_name!r} declares channel {ch_name!r} twice")
        ch = pkg.channels[ch_name] = Channel(pkg_name, ch_name, raw=obj)
        for e in obj.get("entries") or []:
            if not isinstance(e, dict) or not e.get("name"):
                raise InvalidCatalogError(f"{where}: channel {ch_name!r} of {pkg_name!r} has an entry without a name")
            skips = e.get("skips") or []
            ch.entries[str(e["name"])] = ChannelEntry(
                str(e["name"]),
                str(e["replaces"]) if e.get("replaces") else None,
                tuple(str(s) for s in skips),
                str(e["skipRange"]) if e.get("skipRange") else None,
            )
    if alpha:
        model.source_format = FORMAT_FBC_ALPHA
        for pkg_name, ch_name, entry in alpha:
            pkg = model.packages.get(pkg_name)
            if pkg is None:
                raise InvalidCatalogError(f"bundle {entry.name!r} names package {pkg_name!r}, which has no olm.package")
            ch = pkg.channels.setdefault(ch_name, Channel(pkg_name, ch_name))
            ch.entries[entry.name] = entry
    _check(model)
    return model


def _check(model: DeclarativeConfig) -> None:
    in_channels: Set[Tuple[str, str]] = set()
    for pkg in model.packages.values():
        for ch in pkg.channels.values():
            for name in ch.entries:
                if (pkg.name, name) not in model.bundles:
                    raise InvalidCatalogError(f"package {pkg.name!r} channel {ch.name!r} lists bundle {name!r}, which the catalog does not define")
                in_channels.add((pkg.name, name))
    for key, b in model.bundles.items():
        if b.package not in model.packages:
            raise InvalidCatalogError(f"bundle {b.name!r} names package {b.package!r}, which has no olm.package")
        if key not in in_channels:
            log.warning("catalog bundle %s (package %s) is in no channel; OLM cannot install it, so it is ignored", b.name, b.package)


# --------------------------------------------------------------------------------------------------
# ClusterServiceVersion images (the value: bug)
# --------------------------------------------------------------------------------------------------


def csv_images(csv: Mapping[str, Any]) -> List[RelatedImage]:
    """Images a CSV names: `spec.relatedImages[].image` or `.value`, and the images (and RELATED_IMAGE_*
    environment values) of every container and init container of `spec.install.spec.deployments`."""
    out: List[RelatedImage] = []
    spec = csv.get("spec") if isinstance(csv, Mapping) else None
    if not isinstance(spec, Mapping):
        return out
    for ri in spec.get("relatedImages") or []:
        if isinstance(ri, Mapping):
            image = ri.get("image") or ri.get("value")
            if isinstance(image, str) and image.strip():
                out.append(RelatedImage(str(ri.get("name") or ""), image.strip()))
    install = spec.get("install")
    deployments: List[Any] = []
    if isinstance(install, Mapping) and isinstance(install.get("spec"), Mapping):
        deployments = install["spec"].get("deployments") or []
    for dep in deployments:
        try:
            pod = dep["spec"]["template"]["spec"]
        except (KeyError, TypeError):
            continue
        if not isinstance(pod, Mapping):
            continue
        for key in ("initContainers", "containers"):
            for c in pod.get(key) or []:
                if not isinstance(c, Mapping):
                    continue
                image = c.get("image")
                if isinstance(image, str) and image.strip():
                    out.append(RelatedImage(str(c.get("name") or ""), image.strip()))
                for env in c.get("env") or []:
                    if isinstance(env, Mapping) and str(env.get("name", "")).startswith("RELATED_IMAGE_"):
                        value = env.get("value")
                        if isinstance(value, str) and value.strip():
                            out.append(RelatedImage(str(env["name"]), value.strip()))
    return out


def parse_csv_document(name: str, data: bytes) -> Optional[Dict[str, Any]]:
    """A ClusterServiceVersion from a bundle manifest file (YAML or JSON), or None if the file is another kind."""
    try:
        docs = list(yaml.load_all(data.decode("utf-8-sig", "replace"), Loader=_YamlLoader))
    except yaml.YAMLError:
        log.debug("%s: not YAML", name)
        return None
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") == "ClusterServiceVersion":
            return doc
    return None


# --------------------------------------------------------------------------------------------------
# Selection
# --------------------------------------------------------------------------------------------------


@dataclass
class Selection:
    """The part of a catalog to carry: package → channel → bundle names (catalog order)."""

    model: DeclarativeConfig
    channels: Dict[str, Dict[str, List[str]]]
    default_channels: Dict[str, str]
    pruned: bool
    """True when packages were named: the catalog image must be rebuilt to offer only this."""
    full: bool
    dependencies: List[Tuple[str, str]] = field(default_factory=list)
    """(package, bundle) pairs added because selected bundles depend on them."""
    notes: List[str] = field(default_factory=list)

    def bundle_keys(self) -> List[Tuple[str, str]]:
        """Selected (package, bundle) pairs, once each, in catalog order."""
        wanted = {(p, b) for p, chans in self.channels.items() for names in chans.values() for b in names}
        return [k for k in self.model.bundles if k in wanted]

    def bundles(self) -> List[Bundle]:
        return [self.model.bundles[k] for k in self.bundle_keys()]

    def channel_count(self) -> int:
        return sum(len(c) for c in self.channels.values())

    def to_json(self) -> Dict[str, Any]:
        return {
            pkg: {"defaultChannel": self.default_channels.get(pkg), "channels": {ch: list(names) for ch, names in chans.items()}}
            for pkg, chans in self.channels.items()
        }


class _Builder:
    """Accumulates (package, channel, bundle) memberships and keeps catalog order on output."""

    def __init__(self, model: DeclarativeConfig) -> None:
        self.model = model
        self.members: Dict[str, Dict[str, Set[str]]] = {}

    def add(self, package: str, channel: str, names: Iterable[str]) -> None:
        self.members.setdefault(package, {}).setdefault(channel, set()).update(names)

    def has(self, package: str, channel: str, name: str) -> bool:
        return name in self.members.get(package, {}).get(channel, set())

    def result(self) -> Dict[str, Dict[str, List[str]]]:
        out: Dict[str, Dict[str, List[str]]] = {}
        for pkg in self.model.packages.values():
            chans = self.members.get(pkg.name)
            if not chans:
                continue
            out[pkg.name] = {}
            for ch in pkg.channels.values():
                names = chans.get(ch.name)
                if names:
                    out[pkg.name][ch.name] = [n for n in ch.entries if n in names]
        return out


def _close(name: str, candidates: Iterable[str]) -> str:
    cands = sorted(set(candidates))
    close = difflib.get_close_matches(name, cands, n=3, cutoff=0.6)
    if not close:
        lowered = {c.lower(): c for c in cands}
        close = [lowered[m] for m in difflib.get_close_matches(name.lower(), list(lowered), n=3, cutoff=0.5)]
    hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    listing = ", ".join(cands[:20]) + (f", … ({len(cands)} in all)" if len(cands) > 20 else "")
    return (hint + " " if hint else "") + (f"available: {listing}" if cands else "there are none")


def _version_bound(text: Optional[str], where: str) -> Optional[Version]:
    if not text:
        return None
    v = parse_version(text)
    if v is None:
        raise ConfigError(f"{where}: {text!r} is not a version like 1.2.3")
    return v


def _in_range(b: Bundle, low: Optional[Version], high: Optional[Version]) -> bool:
    if b.version is None:
        return False
    if low is not None and b.version < low:
        return False
    if high is not None and high < b.version:
        return False
    return True


def select(model: DeclarativeConfig, spec: CatalogSpec) -> Selection:
    """What to carry from `model` for one catalog entry of the image-set config."""
    builder = _Builder(model)
    named = {p.name for p in spec.packages}
    if not spec.packages:
        for pkg in model.packages.values():
            for ch in pkg.channels.values():
                builder.add(pkg.name, ch.name, ch.entries if spec.full else [_head(ch)])
    else:
        for pspec in spec.packages:
            _select_package(model, spec, pspec, builder)
    selection = Selection(model, {}, {}, pruned=bool(spec.packages), full=spec.full and not spec.packages)
    if not spec.skip_dependencies and not selection.full:
        selection.dependencies = _add_dependencies(model, builder)
    selection.channels = builder.result()
    _check_heads(selection)
    _default_channels(selection, spec, named)
    return selection


def _head(ch: Channel) -> str:
    if ch.declared_head and ch.declared_head in ch.entries:
        return ch.declared_head
    return ch.head()


def _select_package(model: DeclarativeConfig, spec: CatalogSpec, pspec: PackageSpec, builder: _Builder) -> None:
    pkg = model.packages.get(pspec.name)
    if pkg is None:
        raise ConfigError(
            f"catalog {spec.catalog}: package {pspec.name!r} does not exist",
            hint=_close(pspec.name, model.packages),
        )
    where = f"catalog {spec.catalog}: package {pkg.name!r}"
    p_low = _version_bound(pspec.min_version, f"{where} minVersion")
    p_high = _version_bound(pspec.max_version, f"{where} maxVersion")
    if pspec.default_channel and pspec.default_channel not in pkg.channels:
        raise ConfigError(f"{where}: defaultChannel {pspec.default_channel!r} does not exist", hint=_close(pspec.default_channel, pkg.channels))
    targets: List[Tuple[Channel, Optional[Version], Optional[Version], bool]] = []
    if pspec.channels:
        for cf in pspec.channels:
            ch = pkg.channels.get(cf.name)
            if ch is None:
                raise ConfigError(f"{where}: channel {cf.name!r} does not exist", hint=_close(cf.name, pkg.channels))
            low = _version_bound(cf.min_version, f"{where} channel {ch.name!r} minVersion")
            high = _version_bound(cf.max_version, f"{where} channel {ch.name!r} maxVersion")
            if low is None and high is None:
                low, high = p_low, p_high  # the package range applies to channels without their own
            targets.append((ch, low, high, cf.min_version is not None or cf.max_version is not None))
    else:
        targets = [(ch, p_low, p_high, False) for ch in pkg.channels.values()]
    for ch, low, high, explicit in targets:
        if low is None and high is None:
            builder.add(pkg.name, ch.name, ch.entries if spec.full else [_head(ch)])
            continue
        names = [n for n in ch.entries if _in_range(model.bundle(pkg.name, n), low, high)]
        if not names:
            if not explicit and not pspec.channels and len(targets) > 1:
                continue  # a package-wide range need not hit every channel
            in_channel = sorted((model.bundle(pkg.name, n) for n in ch.entries), key=lambda b: (b.version is None, b.version or Version(0, 0, 0)))
            have = [b.version_text or "?" for b in in_channel]
            raise ConfigError(
                f"{where} channel {ch.name!r}: no bundle between {low or 'any'} and {high or 'any'}",
                hint=f"versions in this channel: {', '.join(have)}",
            )
        builder.add(pkg.name, ch.name, names)
    if not builder.members.get(pkg.name):
        raise ConfigError(f"{where}: no bundle between {p_low or 'any'} and {p_high or 'any'} in any channel")


# -- dependencies (operator-registry alpha/declcfg/diff.go addAllDependencies) ---------------------


_RANGE_PART = re.compile(r"^(>=|<=|!=|==|=|>|<)?\s*v?(.+)$")


def _range_predicate(text: str) -> Callable[[Version], bool]:
    """A blang/semver range (`>=1.0.0 <2.0.0 || 3.x`); unparseable ranges match everything (and say so)."""
    text = (text or "").strip()
    if not text:
        return lambda v: True
    alternatives = []
    try:
        for alt in text.split("||"):
            checks: List[Callable[[Version], bool]] = []
            for part in alt.replace(",", " ").split():
                m = _RANGE_PART.match(part)
                if not m:
                    raise ValueError(part)
                op, ver = m.group(1) or "=", m.group(2)
                if "x" in ver.lower().split(".") or "*" in ver:
                    nums = [p for p in re.split(r"\.", ver) if p.isdigit()]
                    lo = Version.parse(".".join((nums + ["0", "0", "0"])[:3]))
                    if len(nums) == 0:
                        checks.append(lambda v: True)
                        continue
                    hi_parts = [int(n) for n in nums]
                    hi_parts[-1] += 1
                    hi = Version.parse(".".join(str(x) for x in (hi_parts + [0, 0, 0])[:3]))
                    checks.append(lambda v, lo=lo, hi=hi: lo <= v and v < hi)  # type: ignore[misc]
                    continue
                bound = Version.parse(ver)
                checks.append(_OPS[op](bound))
            alternatives.append(checks)
    except ValueError:
        log.warning("cannot read the version range %r; treating it as any version", text)
        return lambda v: True
    return lambda v: any(all(c(v) for c in checks) for checks in alternatives)


_OPS: Dict[str, Callable[[Version], Callable[[Version], bool]]] = {
    ">=": lambda b: (lambda v: not v < b),
    "<=": lambda b: (lambda v: not b < v),
    ">": lambda b: (lambda v: b < v),
    "<": lambda b: (lambda v: v < b),
    "!=": lambda b: (lambda v: v != b),
    "=": lambda b: (lambda v: v == b),
    "==": lambda b: (lambda v: v == b),
}


def _providing(model: DeclarativeConfig, pkg: Package, gvks: Set[GVK], ranges: Sequence[Tuple[str, Callable[[Version], bool]]]) -> List[Tuple[str, str]]:
    """(channel, bundle) of the latest bundles of `pkg` providing a required GVK or version range.

    Same version in two channels: the default channel's wins (operator-registry getBundlesThatProvide).
    """
    by_gvk: Dict[GVK, List[Tuple[Version, bool, str, str]]] = {}
    by_range: List[List[Tuple[Version, bool, str, str]]] = [[] for _ in ranges]
    for ch in pkg.channels.values():
        is_default = ch.name == pkg.default_channel
        for name in ch.entries:
            b = model.bundle(pkg.name, name)
            if b.version is None:
                continue
            cand = (b.version, is_default, ch.name, name)
            for g in b.provided_gvks & gvks:
                by_gvk.setdefault(g, []).append(cand)
            for i, (_, pred) in enumerate(ranges):
                if pred(b.version):
                    by_range[i].append(cand)
    chosen: Dict[str, Tuple[str, str]] = {}
    for cands in list(by_gvk.values()) + by_range:
        if cands:
            best = max(cands, key=lambda c: (c[0], c[1]))
            chosen[str(best[0])] = (best[2], best[3])
    return list(chosen.values())


def _upgrade_path(ch: Channel, start: str) -> List[str]:
    """`start`, the channel head, and the bundles between them (operator-registry findIntersectingBundles)."""
    head = _head(ch)
    if start == head:
        return [head]
    start_chain: Set[str] = {start}
    cur: Optional[ChannelEntry] = ch.entries.get(start)
    seen: Set[str] = set()
    while cur is not None and cur.replaces and cur.name not in seen:
        seen.add(cur.name)
        start_chain.add(cur.replaces)
        cur = ch.entries.get(cur.replaces)
    intersection = ""
    if head in start_chain:
        intersection = head
    else:
        cur = ch.entries.get(head)
        seen = set()
        while cur is not None and cur.replaces and cur.name not in seen:
            seen.add(cur.name)
            if cur.replaces in start_chain:
                intersection = cur.replaces
                break
            cur = ch.entries.get(cur.replaces)
    if not intersection:
        return [start, head]
    replaced_by: Dict[str, List[str]] = {}
    for e in ch.entries.values():
        if e.replaces:
            replaced_by.setdefault(e.replaces, []).append(e.name)
    found: Set[str] = set()
    queue = list(replaced_by.get(intersection, []))
    while queue:
        n = queue.pop(0)
        if n not in found:
            found.add(n)
            queue.extend(replaced_by.get(n, []))
    cur = ch.entries.get(start)
    seen = set()
    while cur is not None and cur.name != intersection and cur.name not in seen:
        seen.add(cur.name)
        found.discard(cur.name)
        cur = ch.entries.get(cur.replaces) if cur.replaces else None
    found.update((start, head))
    return [n for n in ch.entries if n in found]


def _add_dependencies(model: DeclarativeConfig, builder: _Builder) -> List[Tuple[str, str]]:
    current = {(p, b) for p, chans in builder.members.items() for names in chans.values() for b in names}
    visited: Set[Tuple[str, str, str]] = set()
    providing: Dict[str, List[Tuple[str, str]]] = {}
    while current:
        gvks: Set[GVK] = set()
        pkg_ranges: Dict[str, List[Tuple[str, Callable[[Version], bool]]]] = {}
        for key in current:
            b = model.bundles[key]
            gvks.update(b.required_gvks)
            for pname, rng in b.required_packages:
                pkg_ranges.setdefault(pname, []).append((rng, _range_predicate(rng)))
        if not gvks and not pkg_ranges:
            break
        nxt: Set[Tuple[str, str]] = set()
        for pkg in model.packages.values():
            for ch_name, name in _providing(model, pkg, gvks, pkg_ranges.get(pkg.name, [])):
                if (pkg.name, ch_name, name) in visited:
                    continue
                visited.add((pkg.name, ch_name, name))
                nxt.add((pkg.name, name))
                providing.setdefault(pkg.name, []).append((ch_name, name))
        current = nxt
    added: List[Tuple[str, str]] = []
    for pkg_name, pairs in providing.items():
        pkg = model.packages[pkg_name]
        pairs.sort(key=lambda cn: (cn[0], model.bundle(pkg_name, cn[1]).version or Version(0, 0, 0)))
        for ch_name, name in pairs:
            if builder.has(pkg_name, ch_name, name):
                continue
            path = _upgrade_path(pkg.channels[ch_name], name)
            new = [n for n in path if not builder.has(pkg_name, ch_name, n)]
            builder.add(pkg_name, ch_name, new)
            added.extend((pkg_name, n) for n in new)
    seen: Set[Tuple[str, str]] = set()
    return [k for k in added if not (k in seen or seen.add(k))]  # type: ignore[func-returns-value]


def _check_heads(selection: Selection) -> None:
    for pkg_name, chans in selection.channels.items():
        pkg = selection.model.packages[pkg_name]
        for ch_name, names in chans.items():
            if len(names) == len(pkg.channels[ch_name].entries):
                continue  # the whole channel, as the catalog has it
            entries = [pkg.channels[ch_name].entries[n] for n in names]
            try:
                head_of(entries, where="")
            except InvalidCatalogError:
                incoming = {e.replaces for e in entries if e.replaces} | {s for e in entries for s in e.skips}
                heads = [e.name for e in entries if e.name not in incoming]
                raise ConfigError(
                    f"package {pkg_name!r} channel {ch_name!r}: the selected bundles do not form one upgrade graph (heads: {', '.join(heads)})",
                    hint="widen minVersion/maxVersion so the versions between them are included",
                ) from None


def _default_channels(selection: Selection, spec: CatalogSpec, named: Set[str]) -> None:
    wanted = {p.name: p.default_channel for p in spec.packages if p.default_channel}
    for pkg_name, chans in selection.channels.items():
        pkg = selection.model.packages[pkg_name]
        asked = wanted.get(pkg_name)
        if asked:
            if asked not in chans:
                raise ConfigError(
                    f"package {pkg_name!r}: defaultChannel {asked!r} is not among the selected channels",
                    hint=f"selected: {', '.join(chans)}",
                )
            selection.default_channels[pkg_name] = asked
        elif pkg.default_channel in chans:
            selection.default_channels[pkg_name] = pkg.default_channel
        elif pkg_name in named:
            raise ConfigError(
                f"package {pkg_name!r}: its default channel {pkg.default_channel!r} is not among the selected channels ({', '.join(chans)})",
                hint=f"add channel {pkg.default_channel!r} or set defaultChannel to one of: {', '.join(chans)}",
            )
        else:
            best = max(chans, key=lambda c: (selection.model.bundle(pkg_name, _head_of_names(pkg.channels[c], chans[c])).version or Version(0, 0, 0), c))
            selection.default_channels[pkg_name] = best
            selection.notes.append(
                f"package {pkg_name} (added as a dependency): default channel {pkg.default_channel} is not carried; {best} is the default in the pruned catalog"
            )


def _head_of_names(ch: Channel, names: Sequence[str]) -> str:
    return head_of([ch.entries[n] for n in names], where=f"package {ch.package!r} channel {ch.name!r}")


def selected_head(selection: Selection, package: str, channel: str) -> str:
    """The head of a channel as pruned (what a pruned sqlite catalog records)."""
    return _head_of_names(selection.model.packages[package].channels[channel], selection.channels[package][channel])


# --------------------------------------------------------------------------------------------------
# Rendering the pruned catalog
# --------------------------------------------------------------------------------------------------


def _dump(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _bundle_object(b: Bundle, channels: Sequence[str], alpha: bool) -> Dict[str, Any]:
    if b.raw is not None:
        if not alpha:
            return b.raw
        kept = [
            p for p in b.raw.get("properties") or []
            if not (isinstance(p, dict) and p.get("type") == PROP_CHANNEL and (p.get("value") or {}).get("name") not in channels)
        ]
        return {**b.raw, "properties": kept}
    props: List[Dict[str, Any]] = [{"type": PROP_PACKAGE, "value": {"packageName": b.package, "version": b.version_text}}]
    props += [{"type": PROP_GVK, "value": {"group": g, "version": v, "kind": k}} for g, v, k in sorted(b.provided_gvks)]
    props += [{"type": PROP_GVK_REQUIRED, "value": {"group": g, "version": v, "kind": k}} for g, v, k in sorted(b.required_gvks)]
    props += [{"type": PROP_PACKAGE_REQUIRED, "value": {"packageName": p, "versionRange": r}} for p, r in b.required_packages]
    if b.csv_json:
        props.append({"type": PROP_BUNDLE_OBJECT, "value": {"data": base64.b64encode(b.csv_json.encode()).decode()}})
    out: Dict[str, Any] = {"schema": SCHEMA_BUNDLE, "name": b.name, "package": b.package, "image": b.image, "properties": props}
    related = [{"name": r.name, "image": r.image} for r in b.related_images if r.image]
    if related:
        out["relatedImages"] = related
    return out


def _filter_deprecations(obj: Dict[str, Any], selection: Selection) -> Optional[Dict[str, Any]]:
    pkg = str(obj.get("package") or "")
    chans = selection.channels.get(pkg, {})
    bundles = {b for names in chans.values() for b in names}
    kept = []
    for e in obj.get("entries") or []:
        ref = (e or {}).get("reference") or {}
        schema, name = ref.get("schema"), ref.get("name")
        if schema == SCHEMA_CHANNEL and name not in chans:
            continue
        if schema == SCHEMA_BUNDLE and name not in bundles:
            continue
        kept.append(e)
    return {**obj, "entries": kept} if kept else None


def render_fbc_files(selection: Selection) -> Dict[str, bytes]:
    """The pruned catalog, one `<package>/catalog.json` JSON stream per package."""
    model = selection.model
    alpha = model.source_format == FORMAT_FBC_ALPHA
    by_package: Dict[str, List[Dict[str, Any]]] = {}
    for obj in model.others:
        pkg = obj.get("package")
        if pkg is None:
            by_package.setdefault("", []).append(obj)
        elif pkg in selection.channels:
            if obj.get("schema") == SCHEMA_DEPRECATIONS:
                kept = _filter_deprecations(obj, selection)
                if kept is not None:
                    by_package.setdefault(str(pkg), []).append(kept)
            else:
                by_package.setdefault(str(pkg), []).append(obj)
    members: Dict[Tuple[str, str], List[str]] = {}
    for pkg_name, chans in selection.channels.items():
        for ch_name, names in chans.items():
            for n in names:
                members.setdefault((pkg_name, n), []).append(ch_name)
    out: Dict[str, bytes] = {}
    for pkg_name, chans in selection.channels.items():
        pkg = model.packages[pkg_name]
        lines: List[str] = []
        pobj = dict(pkg.raw) if pkg.raw is not None else {"schema": SCHEMA_PACKAGE, "name": pkg.name}
        pobj["defaultChannel"] = selection.default_channels[pkg_name]
        lines.append(_dump(pobj))
        if not alpha:
            for ch_name, names in chans.items():
                ch = pkg.channels[ch_name]
                keep = set(names)
                if ch.raw is not None:
                    cobj = {**ch.raw, "entries": [e for e in ch.raw.get("entries") or [] if e.get("name") in keep]}
                else:
                    entries = []
                    for n in names:
                        e = ch.entries[n]
                        ej: Dict[str, Any] = {"name": e.name}
                        if e.replaces:
                            ej["replaces"] = e.replaces
                        if e.skips:
                            ej["skips"] = list(e.skips)
                        if e.skip_range:
                            ej["skipRange"] = e.skip_range
                        entries.append(ej)
                    cobj = {"schema": SCHEMA_CHANNEL, "name": ch_name, "package": pkg_name, "entries": entries}
                lines.append(_dump(cobj))
        for key, b in model.bundles.items():
            if key[0] == pkg_name and key in members:
                lines.append(_dump(_bundle_object(b, members[key], alpha)))
        lines.extend(_dump(o) for o in by_package.get(pkg_name, []))
        out[f"{_safe_dir(pkg_name)}/catalog.json"] = ("\n".join(lines) + "\n").encode()
    if by_package.get(""):
        out["catalog-others.json"] = ("\n".join(_dump(o) for o in by_package[""]) + "\n").encode()
    return out


def _safe_dir(name: str) -> str:
    clean = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    return clean if clean not in ("", ".", "..") else "_"


def render_fbc(selection: Selection) -> bytes:
    """The pruned catalog as one JSON stream (what `render_fbc_files` spreads over per-package files)."""
    return b"".join(data for _, data in sorted(render_fbc_files(selection).items()))

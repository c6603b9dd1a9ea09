"""Reading a file-based catalog (FBC) and the ClusterServiceVersions of its bundles into the model.

File-based catalogs (operator-registry `alpha/declcfg`: streams of JSON or YAML objects `olm.package`,
`olm.channel`, `olm.bundle`, `olm.deprecations`, …, `.indexignore` honoured) are read by `load_fbc`,
including the older alpha layout where channel membership is an `olm.channel` property on each bundle
(`olm.skips`, `olm.skipRange` properties). `csv_images` names the images a ClusterServiceVersion uses
(`spec.relatedImages[].image` *or* `.value` — bugzilla 1821515 — and the deployments' containers and init
containers). Nothing here touches a registry.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import posixpath
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Set, Tuple

import yaml

from bundler.openshift.catalog.model import (
    FORMAT_FBC_ALPHA,
    GVK,
    INDEX_IGNORE,
    PROP_BUNDLE_OBJECT,
    PROP_CHANNEL,
    PROP_GVK,
    PROP_GVK_PROVIDED,
    PROP_GVK_REQUIRED,
    PROP_PACKAGE,
    PROP_PACKAGE_PROVIDED,
    PROP_PACKAGE_REQUIRED,
    PROP_SKIP_RANGE,
    PROP_SKIPS,
    SCHEMA_BUNDLE,
    SCHEMA_CHANNEL,
    SCHEMA_PACKAGE,
    Channel,
    ChannelEntry,
    DeclarativeConfig,
    InvalidCatalogError,
    OperatorBundle,
    Package,
    RelatedImage,
)

log = logging.getLogger(__name__)

try:  # libyaml is ten times faster on big catalogs
    _YamlLoader: Any = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - pure-python PyYAML
    _YamlLoader = yaml.SafeLoader




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


def _bundle_from_object(obj: Dict[str, Any], where: str) -> Tuple[OperatorBundle, List[Tuple[str, ChannelEntry]]]:
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
    bundle = OperatorBundle(
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

"""A Helm chart: loading it (a .tgz archive or a directory), its values, and rendering its templates.

Owns what `helm template` does with the chart's own defaults, as oc-mirror renders charts to find their
images (https://helm.sh/docs/topics/charts/): ``Chart.yaml`` (``apiVersion`` v1/v2, ``dependencies`` with
``alias``), ``values.yaml``, ``templates/`` (files starting with ``_`` define only; ``NOTES.txt`` is not
rendered; a library chart only defines), ``requirements.yaml`` (v1 charts), subcharts in ``charts/`` (directories or archives, any depth) whose values are the parent's
``<name or alias>:`` section over their own defaults (which the parent's templates see there too), with
``global`` passed down; dependency ``condition``s and ``tags`` are applied to the defaults, as Helm's
ProcessDependencies (which oc-mirror calls) does, so a subchart off by default is not rendered. A
dependency with ``import-values`` is refused (its values would change what the parent renders), and so is
one listed in Chart.yaml but missing from ``charts/``.
Templates see ``.Values``, ``.Chart`` (Chart.yaml with capitalised keys), ``.Release`` (Helm's empty release
options: name and namespace empty, ``Service: Helm``), ``.Capabilities`` (`KUBE_VERSION`, the built-in API
versions), ``.Files`` (``Get``, ``GetBytes``, ``Glob``, ``Lines``, ``AsConfig``, ``AsSecrets``) and
``.Template``. YAML numbers are float64, as Helm reads them.

Archives are read member by member: regular files only, names normalised (no ``..``, no absolute paths),
bounded in count and size. The Go templates themselves are `gotemplate`, `goeval` and `gofuncs`.
"""

from __future__ import annotations

import base64
import dataclasses
import fnmatch
import io
import posixpath
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import yaml

from bundler.base.errors import UnsafeArchiveError, UsageError
from bundler.openshift.helm.goeval import GoObject, TemplateSet
from bundler.openshift.helm.gofuncs import FUNCTIONS, SPECIAL
from bundler.openshift.helm.gotemplate import TemplateError
from bundler.openshift.helm.values import coalesce, load_yaml

#: The Kubernetes version `.Capabilities` reports (helm's default capabilities of its v3.15 era).
KUBE_VERSION = "v1.30.0"
API_VERSIONS = frozenset(
    {
        "v1", "apps/v1", "batch/v1", "autoscaling/v1", "autoscaling/v2", "policy/v1", "networking.k8s.io/v1",
        "rbac.authorization.k8s.io/v1", "storage.k8s.io/v1", "apiextensions.k8s.io/v1", "admissionregistration.k8s.io/v1",
        "coordination.k8s.io/v1", "discovery.k8s.io/v1", "scheduling.k8s.io/v1", "certificates.k8s.io/v1",
        "node.k8s.io/v1", "events.k8s.io/v1", "apiregistration.k8s.io/v1", "flowcontrol.apiserver.k8s.io/v1",
    }
)
MAX_CHART_FILES = 5000
MAX_CHART_BYTES = 64 << 20
MAX_SUBCHART_DEPTH = 10


class ChartError(UsageError):
    """A chart that cannot be read or rendered (the message names the chart and the file)."""


@dataclass
class Chart:
    name: str
    version: str
    metadata: Dict[str, Any]
    values: Dict[str, Any]
    templates: Dict[str, str]  # path under the chart (templates/x.yaml) -> text
    files: Dict[str, bytes]  # every other file, for .Files
    subcharts: List["Chart"] = field(default_factory=list)
    alias: Optional[str] = None
    condition: Optional[str] = None  # from the parent's dependency entry
    tags: Tuple[str, ...] = ()

    @property
    def scope(self) -> str:
        return self.alias or self.name


# -- loading ----------------------------------------------------------------------------------------


def _normalise(name: str) -> str:
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise UnsafeArchiveError(f"chart archive member {name!r} leaves the chart", hint="use a chart archive made by helm package")
    return "/".join(parts)


def read_archive(data: bytes, *, what: str) -> Dict[str, bytes]:
    """Regular files of a chart archive, keyed by their path below the chart's top directory."""
    out: Dict[str, bytes] = {}
    total = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                name = _normalise(member.name)
                if "/" not in name:
                    continue  # files beside the chart directory are not part of it
                total += member.size
                if len(out) >= MAX_CHART_FILES or total > MAX_CHART_BYTES:
                    raise ChartError(f"{what}: the chart archive is larger than {MAX_CHART_BYTES >> 20} MiB or {MAX_CHART_FILES} files")
                f = tar.extractfile(member)
                if f is not None:
                    out[name.split("/", 1)[1]] = f.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ChartError(f"{what}: not a chart archive (.tgz): {exc}", hint="check the chart's path or URL") from None
    return out


def read_directory(path: Path) -> Dict[str, bytes]:
    out: Dict[str, bytes] = {}
    total = 0
    for p in sorted(path.rglob("*")):
        if p.is_symlink() or not p.is_file():
            continue
        total += p.stat().st_size
        if len(out) >= MAX_CHART_FILES or total > MAX_CHART_BYTES:
            raise ChartError(f"chart {path}: larger than {MAX_CHART_BYTES >> 20} MiB or {MAX_CHART_FILES} files")
        out[p.relative_to(path).as_posix()] = p.read_bytes()
    return out


def load_chart(files: Dict[str, bytes], *, what: str, depth: int = 0) -> Chart:
    """A chart from its files (paths relative to the chart directory)."""
    if "Chart.yaml" not in files:
        raise ChartError(f"{what}: no Chart.yaml", hint="point at a chart directory or a chart archive (.tgz)")
    try:
        metadata = load_yaml(files["Chart.yaml"].decode("utf-8", "replace")) or {}
        values = load_yaml(files["values.yaml"].decode("utf-8", "replace")) if "values.yaml" in files else {}
    except yaml.YAMLError as exc:
        raise ChartError(f"{what}: Chart.yaml or values.yaml is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(metadata, dict) or not metadata.get("name"):
        raise ChartError(f"{what}: Chart.yaml has no name")
    chart = Chart(
        name=str(metadata["name"]),
        version=str(metadata.get("version", "")),
        metadata=metadata,
        values=values if isinstance(values, dict) else {},
        templates={k: v.decode("utf-8", "replace") for k, v in files.items() if k.startswith("templates/")},
        files={k: v for k, v in files.items() if not k.startswith(("templates/", "charts/")) and k not in ("Chart.yaml", "values.yaml")},
    )
    if depth >= MAX_SUBCHART_DEPTH:
        raise ChartError(f"{what}: subcharts nested deeper than {MAX_SUBCHART_DEPTH} levels")
    subdirs: Dict[str, Dict[str, bytes]] = {}
    for k, v in files.items():
        if not k.startswith("charts/"):
            continue
        rest = k[len("charts/"):]
        top, _, inner = rest.partition("/")
        if inner:
            subdirs.setdefault(top, {})[inner] = v
        elif top.endswith((".tgz", ".tar.gz")):
            chart.subcharts.append(load_chart(read_archive(v, what=f"{what}: {k}"), what=f"{what}: {k}", depth=depth + 1))
    for top, subfiles in sorted(subdirs.items()):
        if "Chart.yaml" in subfiles:
            chart.subcharts.append(load_chart(subfiles, what=f"{what}: charts/{top}", depth=depth + 1))
    dependencies = list(metadata.get("dependencies") or [])
    if "requirements.yaml" in files:  # apiVersion v1 charts
        try:
            requirements = load_yaml(files["requirements.yaml"].decode("utf-8", "replace")) or {}
        except yaml.YAMLError as exc:
            raise ChartError(f"{what}: requirements.yaml is not valid YAML: {str(exc).splitlines()[0]}") from None
        dependencies += list(requirements.get("dependencies") or []) if isinstance(requirements, dict) else []
    chart.subcharts = _dependencies(chart.subcharts, [d for d in dependencies if isinstance(d, dict)], what=what)
    return chart


def _dependencies(present: List[Chart], dependencies: List[Dict[str, Any]], *, what: str) -> List[Chart]:
    """The subcharts as Helm's ProcessDependencies sees them: one per dependency entry (a copy per alias),
    with its condition and tags, then the charts in charts/ no entry names."""
    out: List[Chart] = []
    named = set()
    for dep in dependencies:
        name = str(dep.get("name", ""))
        if dep.get("import-values"):
            raise ChartError(
                f"{what}: dependency {name!r} uses import-values, which ocp-bundler does not apply when rendering",
                hint="list the chart's images under additionalImages instead",
            )
        found = [c for c in present if c.name == name]
        if not found:
            raise ChartError(
                f"{what}: dependency {name!r} is listed in Chart.yaml but not in its charts/ directory",
                hint="run helm dependency build and give the chart as a local chart (mirror.helm.local)",
            )
        named.add(name)
        tags = dep.get("tags") or []
        out.append(dataclasses.replace(
            found[0], alias=str(dep["alias"]) if dep.get("alias") else None,
            condition=str(dep["condition"]) if dep.get("condition") else None,
            tags=tuple(str(t) for t in tags) if isinstance(tags, list) else (),
        ))
    out.extend(c for c in present if c.name not in named)
    return out


def _lookup(values: Dict[str, Any], path: str) -> Any:
    value: Any = values
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _enabled(sub: Chart, values: Dict[str, Any], tags: Dict[str, Any]) -> bool:
    """Helm's rule: the first condition path that holds a boolean decides; else any true tag enables, and
    tags that are all false disable; else enabled."""
    for path in (sub.condition or "").split(","):
        value = _lookup(values, path.strip()) if path.strip() else None
        if isinstance(value, bool):
            return value
    states = [tags[t] for t in sub.tags if isinstance(tags.get(t), bool)]
    if states:
        return any(states)
    return True


def _coalesced(chart: Chart, given: Dict[str, Any]) -> Dict[str, Any]:
    """The chart's values as its templates see them: `given` over its defaults, each subchart's values
    (its defaults under the parent's `<name or alias>:` section, the parent's `global` over its own) kept
    under that key, as Helm's CoalesceValues leaves them."""
    values = coalesce(given, chart.values)
    glob = values.get("global")
    for sub in chart.subcharts:
        own = values.get(sub.scope)
        sub_given = dict(own) if isinstance(own, dict) else {}
        own_global = sub_given.get("global")
        sub_given["global"] = coalesce(glob if isinstance(glob, dict) else {}, own_global if isinstance(own_global, dict) else {})
        values[sub.scope] = _coalesced(sub, sub_given)
    return values


def _prune(chart: Chart, values: Dict[str, Any], tags: Dict[str, Any]) -> Chart:
    """The chart without the subcharts its conditions and tags turn off (recursively)."""
    kept = [_prune(s, values.get(s.scope) or {}, tags) for s in chart.subcharts if _enabled(s, values, tags)]
    return dataclasses.replace(chart, subcharts=kept)


# -- rendering --------------------------------------------------------------------------------------


class Files(GoObject):
    def __init__(self, files: Dict[str, bytes]) -> None:
        self.files = files

    def __str__(self) -> str:
        return "map[" + " ".join(sorted(self.files)) + "]"

    def go_items(self) -> List[Tuple[Any, Any]]:
        return [(k, self.files[k]) for k in sorted(self.files)]

    def go_field(self, name: str) -> Any:
        methods = {
            "Get": lambda p: self.files.get(str(p), b"").decode("utf-8", "replace"),
            "GetBytes": lambda p: self.files.get(str(p), b""),
            "Glob": lambda pattern: Files({k: v for k, v in self.files.items() if fnmatch.fnmatchcase(k, str(pattern))}),
            "Lines": lambda p: self.files.get(str(p), b"").decode("utf-8", "replace").split("\n"),
            "AsConfig": lambda: _as_yaml({posixpath.basename(k): v.decode("utf-8", "replace") for k, v in self.files.items()}),
            "AsSecrets": lambda: _as_yaml({posixpath.basename(k): base64.b64encode(v).decode() for k, v in self.files.items()}),
        }
        if name not in methods:
            raise KeyError(name)
        return methods[name]


def _as_yaml(data: Dict[str, str]) -> str:
    if not data:
        return ""
    return str(yaml.safe_dump(data, default_flow_style=False, sort_keys=True, width=1 << 30)).rstrip("\n")


class KubeVersion(GoObject):
    def __init__(self, version: str) -> None:
        self.version = version
        self.major, self.minor = version.lstrip("v").split(".")[:2]

    def __str__(self) -> str:
        return self.version

    def go_field(self, name: str) -> Any:
        return {"Version": self.version, "GitVersion": self.version, "Major": self.major, "Minor": self.minor}[name]


class ApiVersions(GoObject):
    def __str__(self) -> str:
        return "[" + " ".join(sorted(API_VERSIONS)) + "]"

    def go_items(self) -> List[Tuple[Any, Any]]:
        return list(enumerate(sorted(API_VERSIONS)))

    def go_field(self, name: str) -> Any:
        if name != "Has":
            raise KeyError(name)
        return lambda v: str(v) in API_VERSIONS or str(v).rsplit("/", 1)[0] in API_VERSIONS


def _capitalised(metadata: Dict[str, Any]) -> Dict[str, Any]:
    return {(k[:1].upper() + k[1:]): v for k, v in metadata.items()}


def _helm_order(name: str) -> Tuple[int, str]:
    return (name.count("/"), name)


def render(chart: Chart) -> Dict[str, str]:
    """Every rendered manifest of the chart and its subcharts: template path (``<chart>/templates/x.yaml``,
    subcharts as ``<chart>/charts/<sub>/templates/x.yaml``) → text. Raises `TemplateError` (with the file
    and line) for a template that cannot be rendered or uses what the evaluator does not support."""
    tset = TemplateSet(FUNCTIONS, SPECIAL)
    jobs: List[Tuple[str, Dict[str, Any]]] = []
    sources: Dict[str, str] = {}
    first = _coalesced(chart, {})
    tags = first.get("tags")
    chart = _prune(chart, first, tags if isinstance(tags, dict) else {})
    _collect(chart, chart.name, _coalesced(chart, {}), jobs, sources)
    # Helm parses the deepest files first (and, at one depth, in reverse name order): a parent chart's
    # `define` wins over a subchart's of the same name.
    for name in sorted(sources, key=_helm_order, reverse=True):
        tset.add_file(name, sources[name])
    out: Dict[str, str] = {}
    for name, data in jobs:
        try:
            text = tset.execute(name, data)
        except TemplateError as exc:
            if not exc.where.startswith(f"{name}:"):  # failed inside a define of another file: say which template ran it
                exc.message = f"{exc.message} (rendering {name})"
            raise
        out[name] = text.replace("<no value>", "")
    return out


def _collect(chart: Chart, prefix: str, values: Dict[str, Any], jobs: List[Tuple[str, Dict[str, Any]]], sources: Dict[str, str]) -> None:
    caps = {"KubeVersion": KubeVersion(KUBE_VERSION), "APIVersions": ApiVersions(), "HelmVersion": {"Version": "v3.15.0"}}
    release = {"Name": "", "Namespace": "", "Service": "Helm", "IsInstall": False, "IsUpgrade": False, "Revision": 0}
    files = Files(chart.files)
    for path in sorted(chart.templates):
        name = f"{prefix}/{path}"
        sources[name] = chart.templates[path]
        base = posixpath.basename(path)
        if base.startswith("_") or base.endswith(".txt") or chart.metadata.get("type") == "library":
            continue
        data = {
            "Values": values, "Chart": {**_capitalised(chart.metadata), "Name": chart.scope}, "Release": release, "Capabilities": caps,
            "Files": files, "Template": {"Name": name, "BasePath": f"{prefix}/templates"},
        }
        jobs.append((name, data))
    for sub in chart.subcharts:
        sub_values = values.get(sub.scope)
        _collect(sub, f"{prefix}/charts/{sub.scope}", sub_values if isinstance(sub_values, dict) else {}, jobs, sources)


__all__ = ["Chart", "ChartError", "load_chart", "read_archive", "read_directory", "render"]

"""oc-mirror's `mirror.helm` planned: each chart's archive, the images it names, and its OCI artifact.

Owns the Helm step of planning. For every chart of the config (repository charts through `repo`, local
charts as a directory or a .tgz) it:

* keeps the chart archive exactly as fetched (a local directory is packed the way ``helm package`` lays
  it out, deterministically); pack carries it as the bundle file ``helm/<name>-<version>.tgz`` and
  unpack writes it to ``<resources>/helm/``;
* renders the templates with the chart's own values (`chart`) and reads the images at the default image
  paths plus the chart's ``imagePaths`` (`images`); they are carried like additional images;
* builds the chart's OCI artifact as ``helm push`` makes it (config ``application/vnd.cncf.helm.config.v1+json``
  = Chart.yaml as JSON, one layer ``application/vnd.cncf.helm.chart.content.v1.tar+gzip`` = the archive,
  no timestamp, so the digest is fixed by the archive) into the work layout; it is carried as kind
  ``helm-chart`` to ``charts/<name>:<version>`` (``+`` in a version becomes ``_``, as helm does), so a
  cluster installs it with ``helm install oci://<mirror>/<prefix>/charts/<name> --version <version>``.

The Chart.yaml annotation ``artifacthub.io/images`` is not read: it is informational, often stale, and the
rendered templates are what the cluster will run.
"""

from __future__ import annotations

import io
import json
import logging
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Tuple

import yaml

from bundler.base.errors import InvalidReferenceError
from bundler.layout.store import Layout
from bundler.oci.digest import Digest
from bundler.oci.media import OCI_MANIFEST, Descriptor
from bundler.oci.planned import ImageFacts, PlannedImage
from bundler.oci.reference import Reference
from bundler.openshift.cincinnati import HttpFetcher
from bundler.openshift.helm.chart import Chart, ChartError, load_chart, read_archive, read_directory, render
from bundler.openshift.helm.gotemplate import TemplateError, TemplateUnsupportedError
from bundler.openshift.helm.images import DEFAULT_PATHS, images_in
from bundler.openshift.helm.repo import fetch_archive, fetch_index, select
from bundler.openshift.image_set.model import HelmChart, HelmSpec
from bundler.registry.client import TransportOptions

log = logging.getLogger(__name__)

HELM_CHART_KIND = "helm-chart"
HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"
HELM_LAYER = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
CHARTS_REPOSITORY = "charts"
FILES_DIR = "helm"


@dataclass(frozen=True)
class ChartReport:
    name: str
    version: str
    source: str  # repository URL or local path
    file: str  # the bundle file (helm/<name>-<version>.tgz)
    artifact: str  # charts/<name>:<tag>@<digest>
    images: Tuple[str, ...]

    def to_json(self) -> Dict[str, Any]:
        return {"name": self.name, "version": self.version, "source": self.source, "file": self.file, "artifact": self.artifact, "images": list(self.images)}


@dataclass(frozen=True)
class ChartImage:
    reference: str
    chart: str  # <name>-<version>
    platforms: Tuple[str, ...] = ()  # the chart's `platforms` (os/architecture); empty: any


def is_short_name(reference: str) -> bool:
    """`nginx:1.16`, `org/app`: no registry host, so Docker Hub by the Docker convention (CRI-O may search
    other registries for such names)."""
    first = reference.split("/", 1)[0]
    return "/" not in reference or not ("." in first or ":" in first or first == "localhost")


@dataclass
class HelmPlan:
    images: List[ChartImage] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    artifacts: List[PlannedImage] = field(default_factory=list)
    files: Dict[str, bytes] = field(default_factory=dict)
    charts: List[ChartReport] = field(default_factory=list)


def chart_tag(version: str) -> str:
    return version.replace("+", "_")


def package_directory(path: Path, name: str) -> bytes:
    """A chart directory as a .tgz with the chart under `<name>/`, deterministic (no times, no owners)."""
    files = read_directory(path)
    raw = io.BytesIO()
    import gzip

    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for rel in sorted(files):
                info = tarfile.TarInfo(f"{name}/{rel}")
                info.size = len(files[rel])
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(files[rel]))
    return raw.getvalue()


def build_artifact(layout: Layout, chart: Chart, archive: bytes) -> Tuple[Descriptor, str]:
    """The chart's OCI artifact in `layout` (blobs, manifest, a ref name); (manifest descriptor, ref name)."""
    config = json.dumps({k: v for k, v in _json_ready(chart.metadata).items()}, sort_keys=True, separators=(",", ":")).encode()
    config_digest = layout.put_bytes(config)
    layer_digest = layout.put_bytes(archive)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": HELM_CONFIG, "digest": str(config_digest), "size": len(config)},
        "layers": [{"mediaType": HELM_LAYER, "digest": str(layer_digest), "size": len(archive)}],
        "annotations": {"org.opencontainers.image.title": chart.name, "org.opencontainers.image.version": chart.version},
    }
    raw = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    digest: Digest = layout.put_bytes(raw)
    ref_name = f"ocp-bundler/helm/{chart.name}:{chart_tag(chart.version)}"
    descriptor = Descriptor(media_type=OCI_MANIFEST, digest=digest, size=len(raw))
    layout.add_refs([(ref_name, descriptor)])
    return descriptor, ref_name


def _json_ready(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_ready(v) for v in value]
    return value


def find_images(chart: Chart, image_paths: Tuple[str, ...], *, label: str) -> List[Tuple[str, str]]:
    """(image, template file) the chart names, rendered with its defaults; one clear `ChartError` otherwise.
    A rendered manifest that is not YAML is an error naming its template, never skipped."""
    try:
        rendered = render(chart)
    except TemplateUnsupportedError as exc:
        raise ChartError(
            f"chart {label}: {exc.where}: {exc.message} is not supported by ocp-bundler's template evaluator",
            hint="leave the chart out and list its images under additionalImages (imagePaths only adds places to look in rendered manifests)",
        ) from None
    except TemplateError as exc:
        raise ChartError(f"chart {label}: {exc}", hint="the chart does not render with its default values; check it with helm template") from None
    try:
        return images_in(rendered, DEFAULT_PATHS + tuple(image_paths))
    except yaml.YAMLError as exc:
        raise ChartError(f"chart {label}: a rendered manifest is not valid YAML: {str(exc).splitlines()[0]}") from None


def _add(plan: HelmPlan, layout: Layout, archive: bytes, spec: HelmChart, *, source: str) -> None:
    label = f"{spec.name} ({source})"
    chart = load_chart(read_archive(archive, what=f"chart {label}"), what=f"chart {label}")
    label = f"{chart.name}-{chart.version} ({source})"
    found = find_images(chart, spec.image_paths, label=label)
    for ref, template in found:
        try:
            Reference.parse(ref)
        except InvalidReferenceError as exc:
            raise ChartError(f"chart {label}: {template} names {ref!r}, which is not an image reference: {exc.message}", hint="list the chart's images under additionalImages instead") from None
    descriptor, ref_name = build_artifact(layout, chart, archive)
    tag = chart_tag(chart.version)
    file = f"{FILES_DIR}/{chart.name}-{chart.version}.tgz"
    plan.files[file] = archive
    plan.images.extend(ChartImage(ref, f"{chart.name}-{chart.version}", spec.platforms) for ref, _ in found)
    for ref, template in found:
        if is_short_name(ref):
            plan.warnings.append(
                f"helm chart {label}: {template} names {ref!r} without a registry: carried as {Reference.parse(ref)} (Docker Hub), "
                "which is where Kubernetes pulls it from unless the nodes search other registries for short names"
            )
    plan.artifacts.append(
        PlannedImage(
            source=f"{CHARTS_REPOSITORY}/{chart.name}:{tag}",
            kind=HELM_CHART_KIND,
            target_repository=f"{CHARTS_REPOSITORY}/{chart.name}",
            target_tag=tag,
            digest=str(descriptor.digest),
            in_layout=True,
            annotations={"helm-chart": chart.name, "helm-chart-version": chart.version, "helm-source": source},
            facts=ImageFacts(layout_ref=ref_name),
        )
    )
    plan.charts.append(ChartReport(chart.name, chart.version, source, file, f"{CHARTS_REPOSITORY}/{chart.name}:{tag}@{descriptor.digest}", tuple(r for r, _ in found)))
    log.info("helm chart %s: %d images", label, len(found))


def plan_helm(spec: HelmSpec, *, layout: Layout, options: TransportOptions = TransportOptions()) -> HelmPlan:
    plan = HelmPlan()
    for local in spec.local:
        path = local.path
        if path is None or not path.exists():
            raise ChartError(f"local chart {local.name}: {path} does not exist", hint="check mirror.helm.local[].path")
        archive = package_directory(path, local.name) if path.is_dir() else path.read_bytes()
        _add(plan, layout, archive, local, source=str(path))
    if spec.repositories:
        with HttpFetcher(options) as http:
            for repo in spec.repositories:
                index = fetch_index(http, repo.url, repo=repo.name)
                wanted: List[HelmChart] = list(repo.charts)
                if not wanted:  # every chart and version of the repository, as oc-mirror does
                    wanted = [HelmChart(name=e.name, version=e.version) for es in index.values() for e in es if not e.library]
                for c in wanted:
                    entry = select(index, c.name, c.version, repo=repo.name)
                    _add(plan, layout, fetch_archive(http, repo.url, entry, repo=repo.name), c, source=repo.url)
    return plan


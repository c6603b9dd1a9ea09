"""Sample imagestream images: what the cluster-samples-operator imports (PROTOCOL-NOTES §5 "Samples").

Owns turning a `SamplesSpec` into `PlannedImage`s of kind ``sample``. ImageStreams come from:

* the release's ``cluster-samples-operator`` component image: ``/opt/openshift/operator/<arch>/...`` (4.6+)
  and ``/opt/openshift/operator/ocp-<arch>/...`` (4.4-4.5); both are read and merged, every
  ``.../imagestreams/*.json|yaml`` file as the image's filesystem shows it (newest layer wins, whiteouts
  honoured; `bundler.transfer.image_files`). For a ``multi`` payload every ``ocp`` architecture directory is read;
  ``okd-*`` directories never are;
* a directory of ImageStream JSON/YAML files (``SamplesSpec.directory``, recursive; ``List`` documents
  holding ImageStreams are accepted, other kinds such as templates are skipped);
* a list of references (``SamplesSpec.images``).

Images are the ``spec.tags[].from.name`` whose ``kind`` is ``DockerImage`` (``ImageStreamTag`` entries are
aliases inside the stream). They are tag references and the samples operator only swaps the registry host
(``samplesRegistry``), so the target keeps ``<org>/<repo>:<tag>`` exactly as written (no ``library/``
insertion; a missing tag is ``latest``; a digest-only reference gets `digest_tag`). ``exclude`` drops
imagestreams by name (``jenkins``) or single tags (``jenkins:2``). Two different sources that would land
on the same ``<org>/<repo>:<tag>`` keep the first and are reported as a conflict.
"""

from __future__ import annotations

import json
import logging
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import yaml

from bundler.base.errors import ConfigError, IntegrityError, UsageError
from bundler.transfer.image_files import open_image, read_files
from bundler.openshift.image_set import SamplesSpec
from bundler.oci.planned import PlannedImage, digest_tag
from bundler.oci.reference import Reference, is_registry_host
from bundler.registry.client import Registries
from bundler.oci.platform import linux_platform
from bundler.openshift.release import ReleaseInfo, ReleasePlan
from bundler.transfer.transports import ImageSource, RegistryRepository

log = logging.getLogger(__name__)

OPERATOR_ROOT = "opt/openshift/operator"
IMAGESTREAM_SUFFIXES = (".json", ".yaml", ".yml")


@dataclass(frozen=True)
class ImageStreamDoc:
    """One ImageStream as read: where it came from, its name and the DockerImage tags (tag -> reference)."""

    origin: str
    name: str
    tags: Tuple[Tuple[str, str], ...]


@dataclass(frozen=True)
class SamplesReport:
    """What `plan_samples` read and decided, for the pack report."""

    sources: Tuple[str, ...] = ()
    """Where imagestreams were read (image and directories, or files)."""
    imagestreams: Tuple[str, ...] = ()
    excluded: Tuple[str, ...] = ()
    """Imagestreams or `name:tag`s left out by `exclude`."""
    conflicts: Tuple[str, ...] = ()
    """Sources dropped because another source already maps to the same target."""
    skipped: Tuple[str, ...] = ()
    """Documents that are not ImageStreams (templates, ...)."""
    warnings: Tuple[str, ...] = ()


@dataclass(frozen=True)
class SamplesPlan:
    images: Tuple[PlannedImage, ...]
    organisations: Tuple[str, ...]
    """First path components the mirror needs (Quay organisations), sorted."""
    report: SamplesReport = field(default_factory=SamplesReport)


# --------------------------------------------------------------------------------------------------
# Parsing imagestreams
# --------------------------------------------------------------------------------------------------


def _documents(raw: bytes, origin: str) -> List[Any]:
    """JSON first (upstream files are JSON, often tab-indented, which YAML refuses), then YAML documents."""
    try:
        return [json.loads(raw)]
    except ValueError:
        pass
    try:
        text = raw.decode("utf-8")
        return [d for d in yaml.safe_load_all(text) if d is not None]
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise IntegrityError(f"{origin} is neither JSON nor YAML ({str(exc).splitlines()[0]})") from None


def parse_imagestreams(raw: bytes, origin: str) -> Tuple[List[ImageStreamDoc], List[str]]:
    """ImageStreams in one file (an ImageStream, or a List of them); second value: skipped document kinds."""
    streams: List[ImageStreamDoc] = []
    skipped: List[str] = []
    pending: List[Any] = list(_documents(raw, origin))
    while pending:
        doc = pending.pop(0)
        if not isinstance(doc, dict):
            skipped.append(f"{origin}: {type(doc).__name__}")
            continue
        kind = doc.get("kind")
        if kind in ("List", "ImageStreamList") and isinstance(doc.get("items"), list):
            pending.extend(doc["items"])
            continue
        if kind != "ImageStream":
            skipped.append(f"{origin}: kind {kind!r}")
            continue
        metadata = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
        name = str((metadata or {}).get("name") or "")
        if not name:
            raise IntegrityError(f"{origin}: ImageStream without metadata.name")
        spec = doc.get("spec") if isinstance(doc.get("spec"), dict) else {}
        raw_tags = (spec or {}).get("tags") or []
        if not isinstance(raw_tags, list):
            raise IntegrityError(f"{origin}: ImageStream {name}: spec.tags is not a list")
        tags: List[Tuple[str, str]] = []
        for tag in raw_tags:
            if not isinstance(tag, dict):
                continue
            source = tag.get("from")
            if isinstance(source, dict) and source.get("kind") == "DockerImage" and isinstance(source.get("name"), str) and source["name"]:
                tags.append((str(tag.get("name") or ""), source["name"]))
        streams.append(ImageStreamDoc(origin, name, tuple(tags)))
    return streams, skipped


def _is_imagestream_path(path: str) -> bool:
    return "/imagestreams/" in f"/{path}" and path.endswith(IMAGESTREAM_SUFFIXES)


def operator_directories(arch: str) -> Tuple[str, ...]:
    """Directories under /opt/openshift/operator a samples operator of `arch` (release spelling) reads."""
    return (arch, f"ocp-{arch}")


def read_operator_imagestreams(image_source: ImageSource, *, arch: str, description: str) -> Tuple[List[ImageStreamDoc], List[str], List[str]]:
    """(imagestreams, skipped documents, directories found) from a samples-operator image.

    `arch` is the release's (x86_64, aarch64, ..., multi); a multi payload is read on linux/amd64 and every
    ``<arch>`` / ``ocp-<arch>`` directory counts.
    """
    platform = linux_platform(arch)
    image = open_image(image_source, platform=platform)
    wanted_dirs = None if arch == "multi" else set(operator_directories(arch))

    def wanted(path: str) -> bool:
        if not path.startswith(OPERATOR_ROOT + "/") or not _is_imagestream_path(path):
            return False
        top = path[len(OPERATOR_ROOT) + 1 :].split("/", 1)[0]
        if wanted_dirs is None:
            return not top.startswith("okd-")
        return top in wanted_dirs

    files = read_files(image, wanted)
    streams: List[ImageStreamDoc] = []
    skipped: List[str] = []
    directories = sorted({"/" + posixpath.join(OPERATOR_ROOT, p[len(OPERATOR_ROOT) + 1 :].split("/", 1)[0]) for p in files})
    for path in sorted(files):
        found, skip = parse_imagestreams(files[path], f"{description}:/{path}")
        streams.extend(found)
        skipped.extend(skip)
    return streams, skipped, directories


def read_directory_imagestreams(directory: Path) -> Tuple[List[ImageStreamDoc], List[str]]:
    if not directory.is_dir():
        raise ConfigError(f"samples directory {directory} does not exist or is not a directory")
    streams: List[ImageStreamDoc] = []
    skipped: List[str] = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix in IMAGESTREAM_SUFFIXES):
        try:
            found, skip = parse_imagestreams(path.read_bytes(), str(path))
        except IntegrityError as exc:
            raise ConfigError(str(exc)) from None
        streams.extend(found)
        skipped.extend(skip)
    return streams, skipped


# --------------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------------


def sample_target(text: str) -> Tuple[str, str, str]:
    """(source to pull, target repository, target tag) for a sample image reference, path kept as written."""
    ref = Reference.parse(text)
    name = text.split("@", 1)[0]
    first, sep, rest = name.partition("/")
    path = rest if sep and is_registry_host(first) else name
    if ref.tag is not None:
        path = path[: -(len(ref.tag) + 1)]
    if ref.digest is not None:
        tag = ref.tag or digest_tag(str(ref.digest))
        source = f"{ref.name}@{ref.digest}"
    else:
        tag = ref.tag or "latest"
        source = f"{ref.name}:{tag}"
    return source, path, tag


def _excluded(exclude: Sequence[str], stream: str, tag: str) -> Optional[str]:
    for rule in exclude:
        if rule == stream or rule == f"{stream}:{tag}":
            return rule
    return None


# --------------------------------------------------------------------------------------------------
# Planning
# --------------------------------------------------------------------------------------------------


def _samples_operator(release: ReleaseInfo) -> str:
    spec = release.samples_operator
    if spec is None:
        raise UsageError(
            f"release {release.version} ({release.arch}) has no cluster-samples-operator component",
            hint="list the sample images with samples.images or samples.directory instead",
        )
    return spec


def plan_samples(
    spec: SamplesSpec,
    *,
    registries: Registries,
    release_plan: Optional[ReleasePlan] = None,
    operator_sources: Optional[Mapping[str, ImageSource]] = None,
) -> SamplesPlan:
    """Plan the sample images `spec` selects.

    With `spec.from_release`, every release of `release_plan` contributes its samples operator's
    imagestreams. `operator_sources` (samples-operator pull spec -> source) lets a caller read those images
    from somewhere else than their registry (a work layout); by default they are read from the registry.
    """
    found = _FoundStreams()
    if spec.from_release:
        if release_plan is None or not release_plan.releases:
            raise UsageError("samples.fromRelease needs a release: add releases.images or releases.channels")
        _read_release_streams(release_plan, registries, operator_sources or {}, found)
    if spec.directory is not None:
        _read_directory_streams(spec.directory, found)
    targets = _SampleTargets()
    names, excluded = _add_stream_images(spec, found.streams, targets)
    for text in spec.images:
        targets.add(text, {"imagestream": "", "tag": ""})

    images = tuple(targets.planned[k] for k in sorted(targets.planned))
    organisations = tuple(sorted({p.target_repository.split("/", 1)[0] for p in images}))
    for conflict in targets.conflicts:
        log.warning("sample image conflict: %s", conflict)
    return SamplesPlan(
        images=images,
        organisations=organisations,
        report=SamplesReport(
            sources=tuple(found.sources),
            imagestreams=tuple(sorted(names)),
            excluded=tuple(sorted(excluded)),
            conflicts=tuple(targets.conflicts),
            skipped=tuple(found.skipped),
            warnings=tuple(found.warnings),
        ),
    )


@dataclass
class _FoundStreams:
    """The imagestreams read so far, and what the report says about where they came from."""

    streams: List[ImageStreamDoc] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    sources: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)


def _read_release_streams(
    release_plan: ReleasePlan, registries: Registries, operator_sources: Mapping[str, ImageSource], found: _FoundStreams
) -> None:
    """The imagestreams of each release's cluster-samples-operator image (each image read once)."""
    seen_images: Dict[str, None] = {}
    for release in release_plan.releases:
        operator = _samples_operator(release)
        if operator in seen_images:
            continue
        seen_images[operator] = None
        ref = Reference.parse(operator)
        source = operator_sources.get(operator) or RegistryRepository(registries.client(ref.registry), ref)
        streams, skip, dirs = read_operator_imagestreams(source, arch=release.arch, description=f"cluster-samples-operator of {release.version}-{release.arch}")
        if not streams:
            raise UsageError(
                f"the cluster-samples-operator image of release {release.version} ({release.arch}), {operator}, holds no imagestreams "
                f"under /{OPERATOR_ROOT}/{{{','.join(operator_directories(release.arch))}}}",
                hint="list the sample images with samples.images or samples.directory instead",
            )
        found.sources.append(f"{operator} ({release.version}-{release.arch}): {', '.join(dirs)}: {len(streams)} imagestreams")
        found.streams.extend(streams)
        found.skipped.extend(skip)


def _read_directory_streams(directory: Path, found: _FoundStreams) -> None:
    streams, skip = read_directory_imagestreams(directory)
    if not streams:
        found.warnings.append(f"samples directory {directory} holds no ImageStream")
    found.sources.append(f"{directory}: {len(streams)} imagestreams")
    found.streams.extend(streams)
    found.skipped.extend(skip)


@dataclass
class _SampleTargets:
    """Planned sample images by (repository, tag); a second source for a taken target is a conflict."""

    planned: Dict[Tuple[str, str], PlannedImage] = field(default_factory=dict)
    conflicts: List[str] = field(default_factory=list)

    def add(self, text: str, annotations: Mapping[str, str]) -> None:
        source, repository, tag = sample_target(text)
        key = (repository, tag)
        existing = self.planned.get(key)
        if existing is not None:
            if existing.source != source:
                self.conflicts.append(f"{source} (from {annotations.get('imagestream', 'samples.images')}) -> {repository}:{tag} already taken by {existing.source}")
            return
        self.planned[key] = PlannedImage(source=source, kind="sample", target_repository=repository, target_tag=tag, annotations=dict(annotations))


def _add_stream_images(
    spec: SamplesSpec, streams: Iterable[ImageStreamDoc], targets: _SampleTargets
) -> Tuple[Dict[str, None], Dict[str, None]]:
    """Plan every tag of `streams` that `spec.exclude` keeps; the imagestream names and exclusion rules used."""
    excluded: Dict[str, None] = {}
    names: Dict[str, None] = {}
    for stream in streams:
        if stream.name in spec.exclude:
            excluded[stream.name] = None
            continue
        names[stream.name] = None
        for tag, text in stream.tags:
            rule = _excluded(spec.exclude, stream.name, tag)
            if rule is not None:
                excluded[rule] = None
                continue
            try:
                targets.add(text, {"imagestream": stream.name, "tag": tag})
            except UsageError as exc:
                raise IntegrityError(f"{stream.origin}: ImageStream {stream.name} tag {tag!r}: {exc}") from None
    return names, excluded


def imagestream_images(streams: Iterable[ImageStreamDoc]) -> List[str]:
    """Every DockerImage reference of `streams`, in order, without duplicates (a convenience for reports)."""
    return list(dict.fromkeys(text for s in streams for _, text in s.tags))

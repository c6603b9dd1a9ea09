"""OpenShift release payloads: from a `ReleaseSpec` to the images to carry (PROTOCOL-NOTES §5 "Release payload").

Owns:

* resolving what releases a spec names: explicit release images, and channels through the update graph
  (`bundler.openshift.cincinnati`) for every architecture in ``ReleaseSpec.architectures``;
* reading each release image without unpacking it: ``release-manifests/image-references`` (an
  ``image.openshift.io/v1`` ImageStream whose ``spec.tags[].from.name`` pin every component by digest) and
  ``release-manifests/release-metadata`` (``cincinnati-metadata-v0``: version, previous versions), streamed
  out of the layers newest first with `bundler.transfer.image_files` (whiteouts honoured; the scan stops at the
  layer that holds the file, normally the last one);
* naming the targets the way ``oc adm release mirror --to=<repo>`` does: the release as
  ``<repo>:<version>-<arch>`` and each component as ``<repo>:<version>-<arch>-<component>``, arch in the
  release's spelling (``x86_64``, ``aarch64``, ``ppc64le``, ``s390x``, ``multi``);
* with `kubevirt`, the KubeVirt container disk of the release's architecture (every architecture for a
  ``multi`` payload) from ``release-manifests/0000_50_installer_coreos-bootimages.yaml`` (a ConfigMap whose
  ``data.stream`` JSON names ``architectures.<arch>.images.kubevirt.digest-ref``), planned as the component
  ``kube-virt-container`` (``kube-virt-container-<arch>`` when there are several), as oc-mirror names it;
* the release signatures of every planned release digest (`bundler.openshift.release_signatures`) when asked;
* `check_components`: a HEAD of every component, in parallel, reporting all missing ones at once.

The component repository is read from ``image-references``, never assumed (it is
``quay.io/openshift-release-dev/ocp-v4.0-art-dev`` for OCP, something else for OKD and CI payloads).

Errors (exit codes in `bundler.base.errors`):

* a release image that does not exist: `ImageNotFoundError` (2) naming it;
* an image with no ``release-manifests/image-references`` at all: `UsageError` (2), it is not a release image;
* an ``image-references`` that is not an ``image.openshift.io/v1`` ImageStream, a component not pinned by
  digest, or a payload whose version differs from what the update graph announced: `IntegrityError` (3) -
  the content is not what a release image must be, naming the image and what was found;
* components missing upstream (`check_components`): one `ImageNotFoundError` (2) listing them all.
"""

from __future__ import annotations

import io
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import yaml

from bundler.openshift.cincinnati import HttpFetcher, default_graph_url, fetch_graph, select_releases
from bundler.base.errors import ImageNotFoundError, IntegrityError, UsageError
from bundler.transfer.image_files import extract_file, list_children, open_image
from bundler.openshift.image_set import DEFAULT_RELEASE_REPOSITORY, ReleaseSpec, Version
from bundler.oci.media import is_index
from bundler.oci.platform import Platform, choose_child, go_arch, release_arch
from bundler.oci.planned import PlannedImage
from bundler.oci.reference import Reference, is_valid_tag
from bundler.registry.client import FetchedManifest, Registries
from bundler.openshift.release_signatures import DEFAULT_SIGNATURE_STORE, fetch_all
from bundler.transfer.transports import ImageSource, RegistryRepository

log = logging.getLogger(__name__)

IMAGE_REFERENCES = "release-manifests/image-references"
RELEASE_METADATA = "release-manifests/release-metadata"
#: The ConfigMap naming the RHCOS boot images, among them the KubeVirt container disk per architecture.
BOOT_IMAGES = "release-manifests/0000_50_installer_coreos-bootimages.yaml"
KUBEVIRT_COMPONENT = "kube-virt-container"
IMAGESTREAM_API_VERSION = "image.openshift.io/v1"
SAMPLES_OPERATOR_COMPONENT = "cluster-samples-operator"
#: release-metadata ``metadata`` key that marks a multi-architecture (manifest list) payload.
MULTI_ARCH_METADATA_KEY = "release.openshift.io/architecture"
MAX_MANIFEST_FILE_BYTES = 32 << 20

@dataclass(frozen=True)
class ReleaseInfo:
    """One release payload as read from its image."""

    version: str
    arch: str
    """Release spelling: x86_64, aarch64, ppc64le, s390x or multi."""
    digest: str
    """Digest of the top-level manifest (a manifest list for multi payloads): what is pulled, pushed and signed."""
    source: str
    """`registry/repository@digest` of the release image."""
    requested: str
    """The reference as the config or the update graph named it."""
    components: Mapping[str, str]
    """Component name -> digest-pinned pull spec, as listed in image-references."""
    target_repository: str = DEFAULT_RELEASE_REPOSITORY
    channels: Tuple[str, ...] = ()
    previous: Tuple[str, ...] = ()
    """Versions release-metadata says can update to this one."""
    kubevirt: Mapping[str, str] = field(default_factory=dict)
    """Boot-images architecture (x86_64, s390x, …) -> the KubeVirt container disk's digest pull spec; read
    only when asked for (`kubeVirtContainer`)."""

    @property
    def target_tag(self) -> str:
        return f"{self.version}-{self.arch}"

    @property
    def component_count(self) -> int:
        return len(self.components)

    @property
    def samples_operator(self) -> Optional[str]:
        """Pull spec of the `cluster-samples-operator` component, when the payload has one."""
        return self.components.get(SAMPLES_OPERATOR_COMPONENT)

    def component_tag(self, component: str) -> str:
        return f"{self.version}-{self.arch}-{component}"

    def to_json(self) -> Dict[str, Any]:
        """The report form (components counted, not listed: a payload has ~150 of them)."""
        return {
            "version": self.version,
            "arch": self.arch,
            "digest": self.digest,
            "source": self.source,
            "requested": self.requested,
            "target": f"{self.target_repository}:{self.target_tag}",
            "components": self.component_count,
            "samplesOperator": self.samples_operator,
            "channels": list(self.channels),
        }


@dataclass(frozen=True)
class ReleasePlan:
    """Everything the release part of an image set needs carried."""

    images: Tuple[PlannedImage, ...]
    releases: Tuple[ReleaseInfo, ...]
    signatures: Mapping[str, List[bytes]] = field(default_factory=dict)
    """Release digest -> signature-1..N (empty when `ReleaseSpec.signatures` is off)."""
    warnings: Tuple[str, ...] = ()


# --------------------------------------------------------------------------------------------------
# Reading one release image
# --------------------------------------------------------------------------------------------------


class _LimitedBuffer(io.BytesIO):
    def __init__(self, limit: int, what: str) -> None:
        super().__init__()
        self._limit = limit
        self._what = what

    def write(self, data: Any) -> int:
        if self.tell() + len(data) > self._limit:
            raise IntegrityError(f"{self._what} is larger than {self._limit} bytes")
        return super().write(data)


def _platform_for(source: ImageSource, top: FetchedManifest, preferred: str) -> Tuple[Optional[str], Optional[str]]:
    """(platform to read, arch known from the manifest list) for a release's top-level manifest."""
    if not is_index(top.media_type):
        return None, None
    children = [c for c in list_children(top) if c.platform is not None]
    if not children:
        raise IntegrityError(f"{source.description}: manifest list without platforms cannot be a release image")
    if len(children) == 1:
        p = children[0].platform
        assert p is not None
        return f"{p.os}/{p.architecture}", release_arch(p.architecture)
    chosen = choose_child(children, Platform("linux", preferred)) or children[0]
    p = chosen.platform
    assert p is not None
    return f"{p.os}/{p.architecture}", "multi"


def _load_document(raw: bytes, what: str) -> Any:
    """JSON (what payloads carry; may be tab-indented, which YAML refuses), else YAML."""
    try:
        return json.loads(raw)
    except ValueError:
        pass
    try:
        return yaml.safe_load(raw.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise IntegrityError(f"{what} is neither JSON nor YAML ({str(exc).splitlines()[0]})") from None


def parse_image_references(raw: bytes, *, image: str) -> Tuple[str, Dict[str, str]]:
    """(ImageStream name, component -> pull spec) from an image-references file; strict about its shape."""
    what = f"release image {image}: {IMAGE_REFERENCES}"
    doc = _load_document(raw, what)
    if not isinstance(doc, dict):
        raise IntegrityError(f"{what} is not an {IMAGESTREAM_API_VERSION} ImageStream (found {type(doc).__name__})")
    kind, api = doc.get("kind"), doc.get("apiVersion")
    if kind != "ImageStream" or api != IMAGESTREAM_API_VERSION:
        raise IntegrityError(
            f"{what} is not an {IMAGESTREAM_API_VERSION} ImageStream (found kind {kind!r}, apiVersion {api!r})",
            hint="is this really an OpenShift release image?",
        )
    metadata = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    name = str((metadata or {}).get("name") or "")
    spec = doc.get("spec")
    tags = spec.get("tags") if isinstance(spec, dict) else None
    if not isinstance(tags, list) or not tags:
        raise IntegrityError(f"{what} lists no components (spec.tags is empty or missing)")
    components: Dict[str, str] = {}
    for i, tag in enumerate(tags):
        if not isinstance(tag, dict) or not isinstance(tag.get("name"), str) or not tag["name"]:
            raise IntegrityError(f"{what}: spec.tags[{i}] has no name")
        component = tag["name"]
        source = tag.get("from")
        if not isinstance(source, dict) or source.get("kind") != "DockerImage" or not isinstance(source.get("name"), str):
            raise IntegrityError(f"{what}: component {component!r} does not name a DockerImage (found {source!r})")
        try:
            ref = Reference.parse(source["name"])
        except UsageError as exc:
            raise IntegrityError(f"{what}: component {component!r}: {exc}") from None
        if ref.digest is None:
            raise IntegrityError(f"{what}: component {component!r} is not pinned by digest ({source['name']})")
        if component in components:
            raise IntegrityError(f"{what}: component {component!r} is listed twice")
        components[component] = str(ref)
    return name, components


def parse_release_metadata(raw: bytes, *, image: str) -> Mapping[str, Any]:
    what = f"release image {image}: {RELEASE_METADATA}"
    doc = _load_document(raw, what)
    if not isinstance(doc, dict):
        raise IntegrityError(f"{what} is not a JSON object")
    if doc.get("kind") not in (None, "cincinnati-metadata-v0"):
        log.warning("%s has kind %r (expected cincinnati-metadata-v0)", what, doc.get("kind"))
    return doc


def parse_kubevirt(raw: bytes, *, image: str) -> Dict[str, str]:
    """Architecture -> KubeVirt container disk (digest pull spec) from the boot-images ConfigMap: its
    `data.stream` is JSON with `architectures.<arch>.images.kubevirt.digest-ref`."""
    what = f"release image {image}: {BOOT_IMAGES}"
    doc = _load_document(raw, what)
    data = doc.get("data") if isinstance(doc, dict) else None
    stream_text = data.get("stream") if isinstance(data, dict) else None
    if not isinstance(stream_text, str):
        raise IntegrityError(f"{what} has no data.stream")
    try:
        stream = json.loads(stream_text)
    except ValueError:
        raise IntegrityError(f"{what}: data.stream is not JSON") from None
    found: Dict[str, str] = {}
    architectures = stream.get("architectures") if isinstance(stream, dict) else None
    for arch, body in (architectures or {}).items() if isinstance(architectures, dict) else ():
        kubevirt = ((body or {}).get("images") or {}).get("kubevirt") if isinstance(body, dict) else None
        digest_ref = kubevirt.get("digest-ref") if isinstance(kubevirt, dict) else None
        if isinstance(digest_ref, str) and digest_ref:
            try:
                ref = Reference.parse(digest_ref)
            except UsageError as exc:
                raise IntegrityError(f"{what}: architecture {arch}: {exc}") from None
            if ref.digest is None:
                raise IntegrityError(f"{what}: the KubeVirt image of {arch} is not pinned by digest ({digest_ref})")
            found[str(arch)] = str(ref)
    return found


def _read_file(image: Any, path: str, what: str) -> Optional[bytes]:
    buf = _LimitedBuffer(MAX_MANIFEST_FILE_BYTES, what)
    member = extract_file(image, path, buf)
    return None if member is None else buf.getvalue()


def read_release(
    source: ImageSource,
    *,
    reference: str,
    repository: str = DEFAULT_RELEASE_REPOSITORY,
    preferred_arch: str = "amd64",
    expected_version: Optional[str] = None,
    channels: Sequence[str] = (),
    kubevirt: bool = False,
) -> ReleaseInfo:
    """Read one release image from any `ImageSource` (a registry repository, a layout image, a bundle).

    `reference` names the image for messages and for `ReleaseInfo.source` (its registry/repository).
    `preferred_arch` (Go name) is the child read from a multi-architecture manifest list. `kubevirt`:
    also read the KubeVirt container disks from the boot-images ConfigMap.
    """
    try:
        top = source.resolve()
    except ImageNotFoundError as exc:
        raise ImageNotFoundError(f"release image {reference} not found", hint=exc.hint or "check the reference") from None
    platform, list_arch = _platform_for(source, top, go_arch(preferred_arch))
    image = open_image(source, top, platform=platform or "linux/amd64")
    raw_refs = _read_file(image, IMAGE_REFERENCES, f"{reference}: {IMAGE_REFERENCES}")
    if raw_refs is None:
        raise UsageError(
            f"{reference} is not a release image: it has no {IMAGE_REFERENCES}",
            hint="name an OpenShift release image (e.g. quay.io/openshift-release-dev/ocp-release:4.14.1-x86_64)",
        )
    stream_name, components = parse_image_references(raw_refs, image=reference)
    raw_meta = _read_file(image, RELEASE_METADATA, f"{reference}: {RELEASE_METADATA}")
    metadata = parse_release_metadata(raw_meta, image=reference) if raw_meta is not None else {}

    version = str(metadata.get("version") or stream_name)
    if not version:
        raise IntegrityError(f"release image {reference}: neither release-metadata nor image-references names a version")
    if expected_version is not None and version != expected_version:
        raise IntegrityError(
            f"release image {reference} is version {version}, but the update graph announced {expected_version}",
            hint="the update service and the registry disagree; try again later or name the release explicitly",
        )
    meta_block = metadata.get("metadata") if isinstance(metadata.get("metadata"), dict) else {}
    if list_arch is not None:
        arch = list_arch
    else:
        config_arch = image.config.get("architecture")
        arch = release_arch(str(config_arch)) if isinstance(config_arch, str) and config_arch else release_arch(go_arch(preferred_arch))
    if (meta_block or {}).get(MULTI_ARCH_METADATA_KEY) == "multi":
        arch = "multi"
    previous = metadata.get("previous")
    kubevirt_images: Dict[str, str] = {}
    if kubevirt:
        raw_boot = _read_file(image, BOOT_IMAGES, f"{reference}: {BOOT_IMAGES}")
        kubevirt_images = parse_kubevirt(raw_boot, image=reference) if raw_boot is not None else {}
    name = Reference.parse(reference).name
    info = ReleaseInfo(
        version=version,
        arch=arch,
        digest=str(top.digest),
        source=f"{name}@{top.digest}",
        requested=reference,
        components=components,
        target_repository=repository,
        channels=tuple(channels),
        previous=tuple(str(p) for p in previous) if isinstance(previous, list) else (),
        kubevirt=kubevirt_images,
    )
    for tag in [info.target_tag, *(info.component_tag(c) for c in components)]:
        if not is_valid_tag(tag):
            raise UsageError(f"release image {reference}: target tag {tag!r} is not a valid tag", hint="tags are at most 128 characters of [A-Za-z0-9_.-]")
    log.debug("release %s %s: %s, %d components", version, arch, info.digest, len(components))
    return info


def release_images(info: ReleaseInfo) -> List[PlannedImage]:
    """The release image and its components, named as `oc adm release mirror` names them."""
    common = {"version": info.version, "arch": info.arch}
    images = [
        PlannedImage(
            source=info.source,
            kind="release",
            target_repository=info.target_repository,
            target_tag=info.target_tag,
            digest=info.digest,
            annotations={**common, "requested": info.requested},
        )
    ]
    for component in sorted(info.components):
        ref = Reference.parse(info.components[component])
        images.append(
            PlannedImage(
                source=str(ref),
                kind="release-component",
                target_repository=info.target_repository,
                target_tag=info.component_tag(component),
                digest=str(ref.digest),
                annotations={**common, "component": component, "release": info.digest},
            )
        )
    wanted = sorted(info.kubevirt) if info.arch == "multi" else [a for a in sorted(info.kubevirt) if a == info.arch]
    for arch in wanted:
        ref = Reference.parse(info.kubevirt[arch])
        name = KUBEVIRT_COMPONENT if len(wanted) == 1 else f"{KUBEVIRT_COMPONENT}-{arch}"
        images.append(
            PlannedImage(
                source=str(ref),
                kind="release-component",
                target_repository=info.target_repository,
                target_tag=info.component_tag(name),
                digest=str(ref.digest),
                annotations={**common, "component": name, "release": info.digest},
            )
        )
    return images


# --------------------------------------------------------------------------------------------------
# Planning
# --------------------------------------------------------------------------------------------------


@dataclass
class _Wanted:
    reference: str
    preferred_arch: str
    expected_version: Optional[str] = None
    channels: List[str] = field(default_factory=list)


def _wanted_releases(spec: ReleaseSpec, registries: Registries, graph_url: Optional[str]) -> List[_Wanted]:
    wanted: Dict[str, _Wanted] = {}
    default_arch = next((a for a in spec.architectures if a != "multi"), "amd64")
    for text in spec.images:
        Reference.parse(text)  # a clear error before any network
        wanted.setdefault(text, _Wanted(text, default_arch))
    if spec.channels:
        with HttpFetcher(registries.options) as http:
            for channel in spec.channels:
                url = graph_url or spec.graph_url or default_graph_url(channel)
                for arch in spec.architectures:
                    graph = fetch_graph(channel.name, arch, url=url, fetcher=http)
                    nodes = select_releases(graph, channel)
                    log.info("channel %s (%s): %s", channel.name, arch, ", ".join(str(n.version) for n in nodes))
                    for node in nodes:
                        w = wanted.setdefault(node.payload, _Wanted(node.payload, "amd64" if arch == "multi" else arch, str(node.version)))
                        if channel.name not in w.channels:
                            w.channels.append(channel.name)
    return list(wanted.values())


def _version_key(text: str) -> Tuple[int, Any]:
    try:
        return (0, Version.parse(text))
    except ValueError:
        return (1, text)


def plan_releases(
    spec: ReleaseSpec,
    *,
    registries: Registries,
    graph_url: Optional[str] = None,
    signature_store: Optional[str] = None,
    workers: int = 8,
    stage: Optional[Callable[[str], ImageSource]] = None,
    kubevirt: bool = False,
) -> ReleasePlan:
    """Resolve `spec` to release payloads and plan every image (release + components) to carry.

    `graph_url` overrides `spec.graph_url` (and the default update service); `signature_store` the
    default signature store (`release_signatures.DEFAULT_SIGNATURE_STORE`). `stage`, when given, turns a
    release reference into the source to read it from (pack copies it into its work layout first, so the
    release is downloaded once and a rerun reads it from disk).
    """
    if spec.is_empty():
        return ReleasePlan(images=(), releases=())
    wanted = _wanted_releases(spec, registries, graph_url)

    def read(w: _Wanted) -> ReleaseInfo:
        ref = Reference.parse(w.reference)
        source: ImageSource = stage(w.reference) if stage is not None else RegistryRepository(registries.client(ref.registry), ref)
        return read_release(
            source,
            reference=w.reference,
            repository=spec.repository,
            preferred_arch=w.preferred_arch,
            expected_version=w.expected_version,
            channels=w.channels,
            kubevirt=kubevirt,
        )

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(wanted)))) as pool:
        infos = list(pool.map(read, wanted))

    by_digest: Dict[str, ReleaseInfo] = {}
    by_tag: Dict[str, ReleaseInfo] = {}
    for info in infos:
        if info.digest in by_digest:
            continue  # the same payload named twice (a tag and a channel, two channels)
        other = by_tag.get(info.target_tag)
        if other is not None:
            raise UsageError(
                f"two different release images would both be mirrored as {info.target_repository}:{info.target_tag}: "
                f"{other.requested} ({other.digest}) and {info.requested} ({info.digest})",
                hint="list only one of them",
            )
        by_digest[info.digest] = by_tag[info.target_tag] = info
    releases = sorted(by_digest.values(), key=lambda i: (_version_key(i.version), i.arch))

    images: List[PlannedImage] = []
    warnings: List[str] = []
    for info in releases:
        images.extend(release_images(info))
        if kubevirt and not any(i.annotations.get("component", "").startswith(KUBEVIRT_COMPONENT) for i in images if i.annotations.get("release") == info.digest):
            warnings.append(f"release {info.version} ({info.arch}) names no KubeVirt container image for its architecture; kubeVirtContainer carries nothing for it")

    signatures: Dict[str, List[bytes]] = {}
    if spec.signatures:
        signatures = fetch_all(
            [i.digest for i in releases],
            store=signature_store or DEFAULT_SIGNATURE_STORE,
            options=registries.options,
            workers=workers,
        )
        for info in releases:
            if not signatures.get(info.digest):
                message = f"release {info.version} ({info.arch}, {info.digest}) has no published signature; the cluster cannot verify it on upgrade"
                log.warning(message)
                warnings.append(message)
    return ReleasePlan(images=tuple(images), releases=tuple(releases), signatures=signatures, warnings=tuple(warnings))


def check_components(
    images: Union[ReleasePlan, Iterable[PlannedImage]],
    *,
    registries: Registries,
    workers: int = 16,
) -> int:
    """HEAD every release component upstream (in parallel); one `ImageNotFoundError` lists all missing ones.

    Returns how many components were checked. Registry errors other than 404 propagate as they are.
    """
    planned = images.images if isinstance(images, ReleasePlan) else tuple(images)
    components = [p for p in planned if p.kind == "release-component"]
    unique = list({p.source: p for p in components}.values())

    def present(p: PlannedImage) -> bool:
        ref = Reference.parse(p.source)
        return registries.client(ref.registry).head_manifest(ref.repository, ref.identifier) is not None

    if not unique:
        return 0
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(unique)))) as pool:
        found = list(pool.map(present, unique))
    missing = [p for p, ok in zip(unique, found) if not ok]
    if missing:
        lines = [f"{p.annotations.get('component', '?')} of {p.annotations.get('version', '?')}-{p.annotations.get('arch', '?')} ({p.source})" for p in missing]
        raise ImageNotFoundError(
            f"{len(missing)} of {len(unique)} release components are missing upstream: " + "; ".join(lines),
            hint="the release payload is incomplete in the source registry (or the credentials cannot see it)",
        )
    return len(unique)

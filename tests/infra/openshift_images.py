"""Synthetic OpenShift-shaped images for tests and demos, built without ``bundler``.

Owns builders of content that looks like what Red Hat publishes, small enough for loopback registries:

- release images: ``release-manifests/image-references`` copied from the SHAPE of the real 4.8 nightly
  fixture (ImageStream metadata, annotations, ``spec.tags[]`` entries with their build annotations) but
  pointing at component images pushed to the test registry by digest, plus
  ``release-manifests/release-metadata`` (``cincinnati-metadata-v0``, as in the real 4.15.0 fixture), in
  a Docker manifest list like real payloads (``arch="multi"``: amd64 + arm64 children);
- the ``cluster-samples-operator`` image with the real imagestream fixtures at
  ``/opt/openshift/operator/x86_64/...`` (4.6+) and/or ``/opt/openshift/operator/ocp-x86_64/...`` (4.4-4.5);
- ``installer`` / ``cli`` / ``*-artifacts`` images carrying fake binaries with oc's stamping markers;
- loopback HTTP servers: an update graph (Cincinnati) endpoint and a static file server (signature store).

Typical use::

    rel = build_release(registry_plain.url, version="4.8.0", components=20)
    rel.release_ref          # 127.0.0.1:PORT/openshift-release-dev/ocp-release:4.8.0-x86_64
    rel.pinned_ref           # ...@sha256:<digest of the manifest list>
    rel.components["etcd"]   # 127.0.0.1:PORT/openshift-release-dev/ocp-v4.0-art-dev@sha256:...

    with GraphServer(graph_document([("4.8.0", rel.pinned_ref), ...], edges=[(0, 1)])) as g:
        ...  g.url, g.requests

Fixtures are read from ``$BUNDLER_FIXTURES`` (default ``/work/shared/fixtures``).
"""

from __future__ import annotations

import copy
import http.server
import json
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union
from urllib.parse import parse_qs, urlsplit

import yaml

from tests.infra.images import (
    Image,
    ImageIndex,
    Manifestish,
    make_image,
    make_index,
    make_layer,
    push,
)

FIXTURES = Path(os.environ.get("BUNDLER_FIXTURES", "/work/shared/fixtures"))
IMAGE_REFERENCES_FIXTURE = FIXTURES / "release-payload" / "image-references.4.8.0-0.nightly-2021-05-25.json"
RELEASE_METADATA_FIXTURE = FIXTURES / "release-payload" / "release-metadata.4.15.0.json"
SIGNATURE_FIXTURE = FIXTURES / "release-payload" / "signature-1.ocp-release-4.15.0-x86_64.gpg"
#: The digest the fixture signature signs (from SOURCES.txt).
SIGNATURE_FIXTURE_DIGEST = "sha256:0da6316466d60a3a4535d5fed3589feb0391989982fba59d47d4c729912d6363"
SAMPLES_FIXTURE_DIR = FIXTURES / "samples-operator" / "main-ocp-x86_64"
SAMPLES_SOURCES = FIXTURES / "samples-operator" / "SOURCES.txt"

#: oc's markers (openshift/installer pkg/asset/releaseimage/default.go; openshift/oc extract_tools.go).
RELEASE_IMAGE_MARKER = b"\x00_RELEASE_IMAGE_LOCATION_\x00" + b"X" * 300 + b"\x00"
RELEASE_VERSION_MARKER = b"\x00_RELEASE_VERSION_LOCATION_\x00" + b"X" * 64 + b"\x00"

GO_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "ppc64le": "ppc64le", "s390x": "s390x"}
#: Components every synthetic release has, whatever `components` says (samples, extract need them).
ESSENTIAL_COMPONENTS = ("cli", "cli-artifacts", "cluster-samples-operator", "installer", "installer-artifacts")
DEFAULT_RELEASE_REPO = "openshift-release-dev/ocp-release"
DEFAULT_COMPONENT_REPO = "openshift-release-dev/ocp-v4.0-art-dev"


def fixtures_available() -> bool:
    return IMAGE_REFERENCES_FIXTURE.is_file() and SAMPLES_FIXTURE_DIR.is_dir()


def _host(registry_url: str) -> str:
    return urlsplit(registry_url if "://" in registry_url else "http://" + registry_url).netloc


# --------------------------------------------------------------------------------------------------
# Fake binaries and component images
# --------------------------------------------------------------------------------------------------


def fake_binary(name: str, *, image_marker: bool = True, version_marker: bool = True, size: int = 64 * 1024, seed: str = "") -> bytes:
    """Bytes shaped like an ELF binary with oc's markers somewhere in the middle (deterministic)."""
    filler = (f"{name}:{seed}:".encode() * (size // max(1, len(name) + len(seed) + 2) + 1))[: size // 2]
    parts = [b"\x7fELF\x02\x01\x01\x00", filler]
    if image_marker:
        parts += [b"before-image-marker", RELEASE_IMAGE_MARKER, b"after-image-marker"]
    if version_marker:
        parts += [b"before-version-marker", RELEASE_VERSION_MARKER, b"after-version-marker"]
    parts.append(filler)
    return b"".join(parts)


def stamped(binary: bytes, marker: bytes, value: str) -> bytes:
    """What oc's copyAndReplace makes of `binary`: value + NUL over the first marker, the rest unchanged."""
    at = binary.index(marker)
    data = value.encode() + b"\x00"
    return binary[:at] + data + binary[at + len(data) :]


def installer_image(*, arch: str = "x86_64", docker: bool = True, binary: Optional[bytes] = None, seed: str = "", stale_layer: bool = True) -> Image:
    """The `installer` component: ``usr/bin/openshift-install`` (newest layer wins over a stale copy)."""
    binary = binary if binary is not None else fake_binary("openshift-install", seed=seed)
    base = [make_layer({"usr/bin/openshift-install": b"stale installer from an older layer", "etc/os-release": b"ID=rhel\n"})] if stale_layer else []
    return make_image(
        {"usr/bin/openshift-install": binary}, base_layers=base, docker=docker, architecture=GO_ARCH.get(arch, arch), seed=f"installer{seed}",
        labels={"io.openshift.release.operator": "false"},
    )


def installer_artifacts_image(*, arch: str = "x86_64", docker: bool = True, seed: str = "") -> Image:
    files = {
        f"usr/share/openshift/{d}/openshift-install": fake_binary("openshift-install", seed=f"{d}{seed}", size=8 * 1024)
        for d in ("mac", "mac_arm64", "linux_amd64", "linux_arm64")
    }
    return make_image(files, docker=docker, architecture=GO_ARCH.get(arch, arch), seed=f"installer-artifacts{seed}")


def cli_image(*, arch: str = "x86_64", docker: bool = True, seed: str = "") -> Image:
    return make_image(
        {"usr/bin/oc": fake_binary("oc", image_marker=False, seed=seed)}, docker=docker, architecture=GO_ARCH.get(arch, arch), seed=f"cli{seed}"
    )


def cli_artifacts_image(*, arch: str = "x86_64", docker: bool = True, seed: str = "") -> Image:
    files: Dict[str, Union[bytes, str]] = {
        f"usr/share/openshift/{d}/oc": fake_binary("oc", image_marker=False, seed=f"{d}{seed}", size=8 * 1024)
        for d in ("mac", "mac_arm64", "linux_amd64", "linux_arm64")
    }
    files["usr/share/openshift/windows/oc.exe"] = fake_binary("oc.exe", image_marker=False, seed=seed, size=8 * 1024)
    return make_image(files, docker=docker, architecture=GO_ARCH.get(arch, arch), seed=f"cli-artifacts{seed}")


def samples_imagestream_files() -> Dict[str, bytes]:
    """The real imagestream fixtures keyed by their path under ``assets/operator/ocp-x86_64/`` upstream
    (``ruby/imagestreams/ruby-rhel.json``...), as SOURCES.txt records them."""
    wanted: Dict[str, str] = {}
    pattern = re.compile(r"^main-ocp-x86_64/imagestreams/(\S+)\s+path: assets/operator/ocp-x86_64/(\S+)")
    if SAMPLES_SOURCES.is_file():
        for line in SAMPLES_SOURCES.read_text().splitlines():
            m = pattern.match(line.strip())
            if m:
                wanted[m.group(1)] = m.group(2)
    out: Dict[str, bytes] = {}
    for path in sorted((SAMPLES_FIXTURE_DIR / "imagestreams").glob("*.json")):
        out[wanted.get(path.name, f"{path.stem}/imagestreams/{path.name}")] = path.read_bytes()
    return out


def _rehost(text: str, host: str) -> str:
    first, sep, rest = text.partition("/")
    return f"{host}/{rest}" if sep and ("." in first or ":" in first or first == "localhost") else f"{host}/{text}"


def rehost_imagestream(raw: bytes, host: str) -> bytes:
    """An imagestream file whose DockerImage references point at `host` instead (paths and tags kept)."""
    doc = json.loads(raw)
    for tag in doc.get("spec", {}).get("tags", []):
        src = tag.get("from") or {}
        if src.get("kind") == "DockerImage":
            src["name"] = _rehost(src["name"], host)
    return json.dumps(doc, indent=2).encode()


def sample_references(host: Optional[str] = None) -> List[str]:
    """Every DockerImage reference in the fixture imagestreams (re-hosted to `host` when given), sorted."""
    refs = set()
    for raw in samples_imagestream_files().values():
        for tag in json.loads(raw)["spec"]["tags"]:
            if tag["from"]["kind"] == "DockerImage":
                refs.add(_rehost(tag["from"]["name"], host) if host else tag["from"]["name"])
    return sorted(refs)


def push_sample_images(registry_url: str, *, docker: bool = True) -> List[str]:
    """Push a tiny image at `<registry>/<org>/<repo>:<tag>` for every sample reference; returns the refs."""
    host = _host(registry_url)
    refs = sample_references(host)
    for ref in refs:
        path = ref[len(host) + 1 :]
        repo, _, tag = path.rpartition(":") if ":" in path else (path, "", "latest")
        push(registry_url, repo, make_image({"etc/sample": ref}, docker=docker, seed=ref), tag=tag or "latest")
    return refs


def samples_operator_image(
    *,
    arch: str = "x86_64",
    directories: Sequence[str] = ("x86_64", "ocp-x86_64"),
    docker: bool = True,
    extra_files: Optional[Mapping[str, Union[bytes, str]]] = None,
    samples_host: Optional[str] = None,
    seed: str = "",
) -> Image:
    """The `cluster-samples-operator` component with the real imagestreams (and templates) under
    ``/opt/openshift/operator/<dir>/`` for every dir in `directories`, plus an okd directory that must be ignored.
    `samples_host` re-hosts every sample reference (see `push_sample_images`) so a demo can pull them."""
    files: Dict[str, Union[bytes, str]] = {"usr/bin/cluster-samples-operator": b"\x7fELF samples operator " + seed.encode()}
    streams = samples_imagestream_files()
    if samples_host:
        streams = {k: rehost_imagestream(v, samples_host) for k, v in streams.items()}
    templates = sorted((SAMPLES_FIXTURE_DIR / "templates").glob("*.json"))
    for d in directories:
        for rel, data in streams.items():
            files[f"opt/openshift/operator/{d}/{rel}"] = data
        for t in templates:
            files[f"opt/openshift/operator/{d}/{t.stem}/templates/{t.name}"] = t.read_bytes()
    okd_stream = {
        "kind": "ImageStream", "apiVersion": "image.openshift.io/v1", "metadata": {"name": "okd-only"},
        "spec": {"tags": [{"name": "1", "from": {"kind": "DockerImage", "name": "quay.io/okd-only/never:1"}}]},
    }
    files["opt/openshift/operator/okd-x86_64/okd/imagestreams/okd-only.json"] = json.dumps(okd_stream)
    files.update(extra_files or {})
    return make_image(files, docker=docker, architecture=GO_ARCH.get(arch, arch), seed=f"samples{seed}")


def plain_component_image(name: str, *, arch: str = "x86_64", docker: bool = True, seed: str = "") -> Image:
    return make_image({f"usr/share/{name}/ID": f"{name} {seed}\n"}, docker=docker, architecture=GO_ARCH.get(arch, arch), seed=f"{name}{seed}")


# --------------------------------------------------------------------------------------------------
# Release images
# --------------------------------------------------------------------------------------------------


def _fixture_references() -> Dict[str, Any]:
    doc: Dict[str, Any] = json.loads(IMAGE_REFERENCES_FIXTURE.read_text())
    return doc


def component_names(count: int) -> List[str]:
    """`count` component names from the real 4.8 payload, always including `ESSENTIAL_COMPONENTS`."""
    names = [t["name"] for t in _fixture_references()["spec"]["tags"]]
    chosen = list(ESSENTIAL_COMPONENTS)
    for n in names:
        if len(chosen) >= count:
            break
        if n not in chosen:
            chosen.append(n)
    return sorted(chosen)


def image_references(version: str, components: Mapping[str, str]) -> Dict[str, Any]:
    """An image-references ImageStream shaped like the real fixture: same metadata layout and per-tag
    entries (annotations, generation, importPolicy, referencePolicy), `from.name` = `components[name]`."""
    doc = _fixture_references()
    by_name = {t["name"]: t for t in doc["spec"]["tags"]}
    template = doc["spec"]["tags"][0]
    tags = []
    for name in sorted(components):
        entry = copy.deepcopy(by_name.get(name, template))
        entry["name"] = name
        entry["from"] = {"kind": "DockerImage", "name": components[name]}
        tags.append(entry)
    out = {k: copy.deepcopy(v) for k, v in doc.items() if k != "status"}
    out["metadata"]["name"] = version
    out["metadata"]["annotations"] = {"release.openshift.io/from-image-stream": f"ocp/{version}"}
    out["spec"]["tags"] = tags
    return out


def release_metadata(version: str, *, previous: Sequence[str] = (), multi: bool = False) -> Dict[str, Any]:
    """release-metadata shaped like the real 4.15.0 fixture."""
    doc: Dict[str, Any] = json.loads(RELEASE_METADATA_FIXTURE.read_text()) if RELEASE_METADATA_FIXTURE.is_file() else {"kind": "cincinnati-metadata-v0"}
    doc["version"] = version
    doc["previous"] = list(previous)
    doc["metadata"] = dict(doc.get("metadata") or {})
    if multi:
        doc["metadata"]["release.openshift.io/architecture"] = "multi"
    return doc


def release_image(
    references: Union[Mapping[str, Any], bytes],
    metadata: Optional[Union[Mapping[str, Any], bytes]],
    *,
    arch: str = "x86_64",
    docker: bool = True,
    version: str = "",
    seed: str = "",
    as_list: bool = True,
    extra_files: Optional[Mapping[str, bytes]] = None,
) -> Manifestish:
    """A release image whose last layer holds release-manifests/image-references and release-metadata: a
    manifest list (Docker by default; `arch="multi"`: amd64 + arm64 children), or with `as_list=False` the
    single image."""
    refs_raw = references if isinstance(references, bytes) else json.dumps(references, indent=2).encode()
    files: Dict[str, Union[bytes, str]] = {"release-manifests/image-references": refs_raw}
    if metadata is not None:
        files["release-manifests/release-metadata"] = metadata if isinstance(metadata, bytes) else json.dumps(metadata, indent=2).encode()
    files["release-manifests/0000_00_cluster-version-operator_00_namespace.yaml"] = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: openshift-cluster-version\n"
    files.update(extra_files or {})
    base = make_layer({"usr/bin/cluster-version-operator": b"\x7fELF cvo " + seed.encode(), "release-manifests/image-references": b"stale, older layer"})
    labels = {"io.openshift.release": version} if version else None
    archs = ["amd64", "arm64"] if arch == "multi" else [GO_ARCH.get(arch, arch)]
    children: List[Manifestish] = [
        make_image(files, base_layers=[base], docker=docker, architecture=a, labels=labels, seed=f"release{seed}{a}") for a in archs
    ]
    if not as_list and arch != "multi":
        return children[0]
    return make_index(children, docker=docker)


@dataclass(frozen=True)
class ReleaseFixture:
    """A release pushed to a test registry."""

    host: str
    repository: str
    """`<host>/<repo>` of the release image."""
    tag: str
    digest: str
    """Digest of the top-level manifest (list)."""
    version: str
    arch: str
    components: Dict[str, str]
    """Component name -> `<host>/<component repo>@sha256:...`."""
    component_images: Dict[str, Manifestish] = field(repr=False, default_factory=dict)
    image: Optional[Manifestish] = field(repr=False, default=None)

    @property
    def release_ref(self) -> str:
        return f"{self.repository}:{self.tag}"

    @property
    def pinned_ref(self) -> str:
        return f"{self.repository}@{self.digest}"


def build_release(
    registry_url: str,
    *,
    version: str = "4.8.0",
    arch: str = "x86_64",
    components: int = 20,
    repo: str = DEFAULT_RELEASE_REPO,
    component_repo: str = DEFAULT_COMPONENT_REPO,
    docker: bool = True,
    tag: Optional[str] = None,
    previous: Sequence[str] = (),
    component_images: Optional[Mapping[str, Manifestish]] = None,
    unpushed_components: Sequence[str] = (),
    references_override: Optional[bytes] = None,
    with_metadata: bool = True,
    as_list: bool = True,
    samples_registry: Optional[str] = None,
    seed: str = "",
    extra_files: Optional[Mapping[str, bytes]] = None,
) -> ReleaseFixture:
    """Push a synthetic release and its components; return where everything is.

    `components` (>= 5) names from the real 4.8 payload (always the essential ones: cli, cli-artifacts,
    cluster-samples-operator, installer, installer-artifacts, which get realistic content); others get a
    tiny image each. `component_images` overrides any component's image. Components in
    `unpushed_components` are referenced but never pushed (a payload broken upstream).
    `references_override` replaces image-references with raw bytes (for error cases). `as_list=False`
    pushes the release as a single image instead of a manifest list. `samples_registry` (a registry URL):
    the samples operator's imagestreams point there and a tiny image is pushed for each of them, so
    ``samples.fromRelease`` can be packed without Red Hat's registries.
    """
    host = _host(registry_url)
    seed = seed or f"{version}-{arch}"
    carch = "x86_64" if arch == "multi" else arch
    images: Dict[str, Manifestish] = {}
    for name in component_names(components):
        if component_images and name in component_images:
            images[name] = component_images[name]
        elif name == "installer":
            images[name] = installer_image(arch=carch, docker=docker, seed=seed)
        elif name == "installer-artifacts":
            images[name] = installer_artifacts_image(arch=carch, docker=docker, seed=seed)
        elif name == "cli":
            images[name] = cli_image(arch=carch, docker=docker, seed=seed)
        elif name == "cli-artifacts":
            images[name] = cli_artifacts_image(arch=carch, docker=docker, seed=seed)
        elif name == "cluster-samples-operator":
            samples_host = _host(samples_registry) if samples_registry else None
            images[name] = samples_operator_image(arch=carch, docker=docker, seed=seed, samples_host=samples_host)
        else:
            images[name] = plain_component_image(name, arch=carch, docker=docker, seed=seed)
    for name, image in (component_images or {}).items():
        images.setdefault(name, image)
    if samples_registry:
        push_sample_images(samples_registry, docker=docker)
    refs: Dict[str, str] = {}
    for name, image in images.items():
        if name not in unpushed_components:
            push(registry_url, component_repo, image)
        refs[name] = f"{host}/{component_repo}@{image.digest}"
    references: Union[Mapping[str, Any], bytes] = references_override if references_override is not None else image_references(version, refs)
    metadata = release_metadata(version, previous=previous, multi=arch == "multi") if with_metadata else None
    release = release_image(references, metadata, arch=arch, docker=docker, version=version, seed=seed, as_list=as_list, extra_files=extra_files)
    tag = tag or f"{version}-{arch}"
    digest = push(registry_url, repo, release, tag=tag)
    return ReleaseFixture(
        host=host, repository=f"{host}/{repo}", tag=tag, digest=digest, version=version, arch=arch, components=refs,
        component_images=images, image=release,
    )


# --------------------------------------------------------------------------------------------------
# Loopback HTTP: update graph and static files (signature store)
# --------------------------------------------------------------------------------------------------


def boot_images(kubevirt: Mapping[str, str]) -> bytes:
    """release-manifests/0000_50_installer_coreos-bootimages.yaml as payloads ship it: a ConfigMap whose
    data.stream JSON names, per architecture, the KubeVirt container disk (`images.kubevirt.digest-ref`)."""
    architectures: Dict[str, Any] = {}
    for arch in ("x86_64", "aarch64", "ppc64le", "s390x"):
        body: Dict[str, Any] = {"artifacts": {"qemu": {"release": "421.94.0", "formats": {}}}}
        if arch in kubevirt:
            repo = kubevirt[arch].split("@", 1)[0]
            body["images"] = {"kubevirt": {"release": "421.94.0", "image": repo, "digest-ref": kubevirt[arch]}}
        architectures[arch] = body
    stream = {"stream": "rhcos-4.21", "metadata": {"last-modified": "2026-01-01T00:00:00Z", "generator": "plume"}, "architectures": architectures}
    doc = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "coreos-bootimages", "namespace": "openshift-machine-config-operator"},
        "data": {"releaseVersion": "4.21.0", "stream": json.dumps(stream, indent=2)},
    }
    return yaml.safe_dump(doc).encode()


def graph_document(nodes: Sequence[Tuple[str, str]], edges: Sequence[Tuple[int, int]] = ()) -> Dict[str, Any]:
    """A Cincinnati graph: nodes ``(version, payload)`` in order, edges as index pairs."""
    return {
        "nodes": [
            {"version": v, "payload": p, "metadata": {"io.openshift.upgrades.graph.release.channels": "stable-4.8", "url": f"https://example.invalid/{v}"}}
            for v, p in nodes
        ],
        "edges": [list(e) for e in edges],
    }


class _Server:
    """A ThreadingHTTPServer on 127.0.0.1 in a daemon thread; subclasses answer GETs."""

    def __init__(self) -> None:
        self.requests: List[Tuple[str, Dict[str, str]]] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                owner.requests.append((self.path, {k: v for k, v in self.headers.items()}))
                status, body, ctype = owner.answer(self.path, dict(self.headers.items()))
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name=type(self).__name__, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}" if isinstance(host, str) else f"http://{host.decode()}:{port}"

    def answer(self, path: str, headers: Mapping[str, str]) -> Tuple[int, bytes, str]:
        raise NotImplementedError

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "_Server":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class GraphServer(_Server):
    """Serves update graphs at ``/graph?channel=C&arch=A``: `graphs[(channel, arch)]`, or `graphs[channel]`
    for any arch; 404 for unknown channels. ``url`` is the graph URL to configure."""

    def __init__(self, graphs: Union[Mapping[str, Any], Mapping[Tuple[str, str], Any]]) -> None:
        self.graphs: Dict[Any, Any] = dict(graphs)
        super().__init__()

    @property
    def url(self) -> str:
        return super().url + "/graph"

    def answer(self, path: str, headers: Mapping[str, str]) -> Tuple[int, bytes, str]:
        parts = urlsplit(path)
        if parts.path != "/graph":
            return 404, b"not found", "text/plain"
        q = parse_qs(parts.query)
        channel, arch = q.get("channel", [""])[0], q.get("arch", [""])[0]
        graph = self.graphs.get((channel, arch), self.graphs.get(channel))
        if graph is None:
            return 404, json.dumps({"kind": "invalid_params", "value": f"unknown channel {channel}"}).encode(), "application/json"
        body = graph if isinstance(graph, bytes) else json.dumps(graph).encode()
        return 200, body, "application/json"


class StaticServer(_Server):
    """Serves `files[path]` (path with a leading slash); 404 otherwise."""

    def __init__(self, files: Mapping[str, bytes]) -> None:
        self.files: Dict[str, bytes] = dict(files)
        super().__init__()

    def answer(self, path: str, headers: Mapping[str, str]) -> Tuple[int, bytes, str]:
        data = self.files.get(urlsplit(path).path)
        if data is None:
            return 404, b"<html>404 Not Found</html>", "text/html"
        return 200, data, "application/octet-stream"


def signature_store(digests_to_signatures: Mapping[str, Sequence[bytes]], *, base: str = "/pub/openshift-v4/signatures/openshift/release") -> Tuple[StaticServer, str]:
    """A signature store on loopback laid out like mirror.openshift.com: (server, store URL)."""
    files: Dict[str, bytes] = {}
    for digest, sigs in digests_to_signatures.items():
        algorithm, _, hexdigest = digest.partition(":")
        for i, data in enumerate(sigs, start=1):
            files[f"{base}/{algorithm}={hexdigest}/signature-{i}"] = data
    server = StaticServer(files)
    return server, server.url + base


__all__ = [
    "FIXTURES", "GraphServer", "ImageIndex", "RELEASE_IMAGE_MARKER", "RELEASE_VERSION_MARKER", "ReleaseFixture",
    "SIGNATURE_FIXTURE", "SIGNATURE_FIXTURE_DIGEST", "StaticServer", "build_release", "cli_artifacts_image", "cli_image",
    "boot_images", "component_names", "fake_binary", "fixtures_available", "graph_document", "image_references", "installer_artifacts_image",
    "installer_image", "plain_component_image", "push_sample_images", "rehost_imagestream", "release_image", "release_metadata",
    "sample_references", "samples_imagestream_files", "samples_operator_image", "signature_store", "stamped",
]

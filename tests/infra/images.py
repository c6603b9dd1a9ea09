"""Synthetic container images for tests, built without ``bundler``.

Owns: deterministic layer/config/manifest/index construction (OCI and Docker schema 2
forms), a minimal distribution-API client (:class:`RegistryClient`, :func:`push`) with
Basic and Bearer-token auth over raw urllib3, and :func:`write_oci_layout`.

Every object keeps its exact bytes, media type and ``sha256:`` digest; nothing is ever
re-serialised after its digest is taken. Same arguments and seed -> same digests.

    img = make_image(files={"etc/hello": b"hi"}, random_layers=[1024], seed=1)
    lst = make_index([img, make_image(seed=2, architecture="arm64")], docker=True)
    push(reg.url, "ns/app", lst, tag="v1", ca_file=reg.ca_file, auth=reg.auth)
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import random
import re
import tarfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, FrozenSet, Iterator, List, Mapping, Optional, Sequence, Tuple, Union
from urllib.parse import quote, urlencode, urljoin, urlsplit

import urllib3

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
MANIFEST_TYPES = (OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST)
ACCEPT_ALL = ", ".join(MANIFEST_TYPES)
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"

_LAYER_TYPES = {  # (docker, compressed) -> media type
    (False, True): OCI_LAYER_GZIP,
    (False, False): OCI_LAYER_TAR,
    (True, True): DOCKER_LAYER_GZIP,
    (True, False): DOCKER_LAYER_TAR,
}
_EPOCH = "1970-01-01T00:00:00Z"


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


# --------------------------------------------------------------------------------------
# data model
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Blob:
    """A blob's exact bytes. ``diff_id`` is set for layers (sha256 of the tar)."""

    raw: bytes
    media_type: str
    digest: str
    diff_id: Optional[str] = None

    @classmethod
    def of(cls, raw: bytes, media_type: str, diff_id: Optional[str] = None) -> "Blob":
        return cls(raw, media_type, sha256_digest(raw), diff_id)

    @property
    def size(self) -> int:
        return len(self.raw)

    @property
    def compressed(self) -> bool:
        return self.raw[:2] == b"\x1f\x8b"

    def descriptor(self) -> Dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class Image:
    """A single-platform image: manifest bytes plus its config and layers."""

    manifest_raw: bytes
    media_type: str
    digest: str
    config: Blob
    layers: List[Blob]
    platform: Dict[str, str] = field(default_factory=dict)

    @property
    def raw(self) -> bytes:
        return self.manifest_raw

    @property
    def size(self) -> int:
        return len(self.manifest_raw)

    @property
    def manifest(self) -> Dict[str, Any]:
        doc: Dict[str, Any] = json.loads(self.manifest_raw)
        return doc

    @property
    def blobs(self) -> List[Blob]:
        """Config and layers (the blobs this manifest references)."""
        return [self.config, *self.layers]

    @property
    def images(self) -> List["Image"]:
        return [self]


@dataclass(frozen=True)
class ImageIndex:
    """An OCI image index or Docker manifest list and its children."""

    raw: bytes
    media_type: str
    digest: str
    children: List[Union[Image, "ImageIndex"]]

    @property
    def manifest_raw(self) -> bytes:
        return self.raw

    @property
    def size(self) -> int:
        return len(self.raw)

    @property
    def manifest(self) -> Dict[str, Any]:
        doc: Dict[str, Any] = json.loads(self.raw)
        return doc

    @property
    def images(self) -> List[Image]:
        """All single-platform images below this index (depth first)."""
        return [img for child in self.children for img in child.images]

    @property
    def blobs(self) -> List[Blob]:
        """Unique blobs of all images below this index."""
        seen: Dict[str, Blob] = {}
        for img in self.images:
            for blob in img.blobs:
                seen.setdefault(blob.digest, blob)
        return list(seen.values())


Manifestish = Union[Image, ImageIndex]


def iter_manifests(obj: Manifestish) -> Iterator[Manifestish]:
    """Children before parents (the order in which to push)."""
    if isinstance(obj, ImageIndex):
        for child in obj.children:
            yield from iter_manifests(child)
    yield obj


# --------------------------------------------------------------------------------------
# building
# --------------------------------------------------------------------------------------
def tar_bytes(files: Mapping[str, Union[bytes, str]], *, modes: Optional[Mapping[str, int]] = None) -> bytes:
    """A deterministic tar of ``files`` (path -> content; a path ending in "/" is a
    directory). Parent directories are added; mtime 0, owner root."""
    modes = modes or {}
    entries: Dict[str, Optional[bytes]] = {}
    for path, content in files.items():
        clean = path.strip("/")
        parts = clean.split("/")
        for i in range(1, len(parts)):
            entries.setdefault("/".join(parts[:i]) + "/", None)
        if path.endswith("/"):
            entries[clean + "/"] = None
        else:
            entries[clean] = content.encode() if isinstance(content, str) else bytes(content)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(entries):
            data = entries[name]
            info = tarfile.TarInfo(name.rstrip("/"))
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if data is None:
                info.type = tarfile.DIRTYPE
                info.mode = modes.get(name.rstrip("/"), 0o755)
                tar.addfile(info)
            else:
                info.size = len(data)
                info.mode = modes.get(name, 0o644)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6, mtime=0)


def make_layer(
    files: Mapping[str, Union[bytes, str]],
    *,
    compressed: bool = True,
    docker: bool = False,
    modes: Optional[Mapping[str, int]] = None,
) -> Blob:
    """A layer holding ``files``: gzip of a tar (or the bare tar)."""
    tar = tar_bytes(files, modes=modes)
    raw = gzip_bytes(tar) if compressed else tar
    return Blob.of(raw, _LAYER_TYPES[(docker, compressed)], diff_id=sha256_digest(tar))


def random_layer(size: int, *, seed: Union[int, str] = 0, compressed: bool = True, docker: bool = False) -> Blob:
    """A layer with one file of ``size`` random (incompressible) bytes."""
    data = random.Random("ocpb-layer-%s-%d" % (seed, size)).randbytes(size)
    return make_layer({"random/%s-%d.bin" % (seed, size): data}, compressed=compressed, docker=docker)


def retype_layer(blob: Blob, *, docker: bool) -> Blob:
    """The same bytes with the layer media type of the other manifest flavour."""
    if blob.media_type not in _LAYER_TYPES.values():
        return blob
    return replace(blob, media_type=_LAYER_TYPES[(docker, blob.compressed)])


def make_config(
    layers: Sequence[Blob],
    *,
    docker: bool = False,
    architecture: str = "amd64",
    os: str = "linux",
    variant: Optional[str] = None,
    labels: Optional[Mapping[str, str]] = None,
    extra: Optional[Mapping[str, Any]] = None,
) -> Blob:
    """An image config whose ``rootfs.diff_ids`` match ``layers``."""
    diff_ids = []
    for layer in layers:
        if layer.diff_id is None:
            raise ValueError("layer %s has no diff_id" % layer.digest)
        diff_ids.append(layer.diff_id)
    cfg: Dict[str, Any] = {
        "architecture": architecture,
        "os": os,
        "created": _EPOCH,
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": _EPOCH, "created_by": "ocpb-test layer %d" % i} for i in range(len(layers))],
    }
    if variant:
        cfg["variant"] = variant
    if labels:
        cfg["config"]["Labels"] = dict(labels)
    cfg.update(extra or {})
    return Blob.of(_canonical_json(cfg), DOCKER_CONFIG if docker else OCI_CONFIG)


def make_manifest(
    config: Blob,
    layers: Sequence[Blob],
    *,
    docker: bool = False,
    annotations: Optional[Mapping[str, str]] = None,
    platform: Optional[Mapping[str, str]] = None,
) -> Image:
    """A schema-2 manifest (OCI or Docker) referencing ``config`` and ``layers``."""
    layers = [retype_layer(layer, docker=docker) for layer in layers]
    config = replace(config, media_type=DOCKER_CONFIG if docker else OCI_CONFIG)
    media_type = DOCKER_MANIFEST if docker else OCI_MANIFEST
    doc: Dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": config.descriptor(),
        "layers": [layer.descriptor() for layer in layers],
    }
    if annotations:
        if docker:
            raise ValueError("Docker schema 2 manifests have no annotations")
        doc["annotations"] = dict(annotations)
    raw = json.dumps(doc, indent=3).encode()  # not canonical on purpose: digest = these bytes
    if platform is None:
        cfg = json.loads(config.raw)
        platform = {"architecture": cfg.get("architecture", "amd64"), "os": cfg.get("os", "linux")}
        if cfg.get("variant"):
            platform["variant"] = cfg["variant"]
    return Image(raw, media_type, sha256_digest(raw), config, layers, dict(platform))


def make_image(
    files: Optional[Mapping[str, Union[bytes, str]]] = None,
    random_layers: Sequence[int] = (),
    base_layers: Sequence[Blob] = (),
    *,
    docker: bool = False,
    labels: Optional[Mapping[str, str]] = None,
    seed: Union[int, str] = 0,
    architecture: str = "amd64",
    os: str = "linux",
    variant: Optional[str] = None,
    compressed: bool = True,
    annotations: Optional[Mapping[str, str]] = None,
) -> Image:
    """An image whose layers are, in order: ``base_layers`` (shared, re-typed to the
    chosen flavour), one random layer per size in ``random_layers``, then a layer with
    ``files`` (so a file like ``release-manifests/image-references`` is in the last
    layer). Without any layer, a small layer naming the seed is added."""
    layers = [retype_layer(b, docker=docker) for b in base_layers]
    layers += [
        random_layer(size, seed="%s-%d" % (seed, i), compressed=compressed, docker=docker)
        for i, size in enumerate(random_layers)
    ]
    if files or not layers:
        content = files if files else {"etc/ocpb-seed": "%s\n" % seed}
        layers.append(make_layer(content, compressed=compressed, docker=docker))
    config = make_config(
        layers, docker=docker, architecture=architecture, os=os, variant=variant, labels=labels
    )
    return make_manifest(config, layers, docker=docker, annotations=annotations)


def make_index(
    children: Sequence[Manifestish],
    *,
    docker: bool = False,
    annotations: Optional[Mapping[str, str]] = None,
) -> ImageIndex:
    """An OCI index (default) or Docker manifest list over ``children``; images get a
    ``platform`` entry. Children are kept as they are (their bytes are not changed)."""
    media_type = DOCKER_LIST if docker else OCI_INDEX
    entries = []
    for child in children:
        desc: Dict[str, Any] = {"mediaType": child.media_type, "digest": child.digest, "size": child.size}
        if isinstance(child, Image) and child.platform:
            desc["platform"] = dict(child.platform)
        entries.append(desc)
    doc: Dict[str, Any] = {"schemaVersion": 2, "mediaType": media_type, "manifests": entries}
    if annotations:
        if docker:
            raise ValueError("Docker manifest lists have no annotations")
        doc["annotations"] = dict(annotations)
    raw = json.dumps(doc, indent=3).encode()
    return ImageIndex(raw, media_type, sha256_digest(raw), list(children))


# --------------------------------------------------------------------------------------
# sigstore: cosign signatures and OCI 1.1 referrers
# --------------------------------------------------------------------------------------
COSIGN_SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
COSIGN_SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"


def cosign_tag(digest: str) -> str:
    """cosign's tag of the signature of ``digest``: ``sha256-<hex>.sig``."""
    return digest.replace(":", "-") + ".sig"


def simple_signing_payload(digest: str, docker_reference: str) -> bytes:
    """The payload ``cosign sign`` signs (compact JSON, as cosign writes it)."""
    doc = {
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature",
        },
        "optional": None,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def make_cosign_signature(payloads: Sequence[Tuple[bytes, bytes]]) -> Image:
    """A cosign signature manifest as ``cosign sign`` pushes it: an OCI manifest with one simple-signing layer
    per (payload, DER signature), the base64 signature in the layer's annotation, and a config whose
    ``rootfs.diff_ids`` are the payload digests."""
    layers = [Blob.of(payload, COSIGN_SIMPLESIGNING) for payload, _ in payloads]
    cfg = {
        "architecture": "",
        "config": {},
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": [b.digest for b in layers]},
    }
    config = Blob.of(_canonical_json(cfg), OCI_CONFIG)
    descs = []
    for blob, (_, signature) in zip(layers, payloads):
        d = blob.descriptor()
        d["annotations"] = {COSIGN_SIGNATURE_ANNOTATION: base64.b64encode(signature).decode()}
        descs.append(d)
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config.descriptor(), "layers": descs}
    raw = json.dumps(doc, separators=(",", ":")).encode()
    return Image(raw, OCI_MANIFEST, sha256_digest(raw), config, layers, {})


def make_referrer(subject: Manifestish, *, artifact_type: str, payload: bytes, payload_type: str) -> Image:
    """An OCI 1.1 artifact manifest whose ``subject`` is ``subject`` (what cosign's OCI 1.1 mode and oras
    attach): empty config, one layer with ``payload``."""
    empty = Blob.of(b"{}", OCI_EMPTY)
    layer = Blob.of(payload, payload_type)
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": empty.descriptor(),
        "layers": [layer.descriptor()],
        "subject": {"mediaType": subject.media_type, "digest": subject.digest, "size": subject.size},
    }
    raw = json.dumps(doc, separators=(",", ":")).encode()
    return Image(raw, OCI_MANIFEST, sha256_digest(raw), empty, [layer], {})


def make_referrers_index(referrers: Sequence[Image]) -> ImageIndex:
    """The OCI 1.1 referrers fallback: an index of ``referrers`` (pushed at tag ``sha256-<hex>`` of the subject)."""
    entries = []
    for r in referrers:
        entry: Dict[str, Any] = {"mediaType": r.media_type, "digest": r.digest, "size": r.size}
        artifact_type = r.manifest.get("artifactType")
        if artifact_type:
            entry["artifactType"] = artifact_type
        entries.append(entry)
    raw = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}, separators=(",", ":")).encode()
    return ImageIndex(raw, OCI_INDEX, sha256_digest(raw), list(referrers))


# --------------------------------------------------------------------------------------
# OCI layout
# --------------------------------------------------------------------------------------
def write_oci_layout(
    directory: Union[str, Path],
    entries: Sequence[Tuple[Optional[str], Manifestish]],
    *,
    merge: bool = True,
) -> Path:
    """Write an OCI image layout: ``oci-layout``, ``blobs/sha256/<hex>`` for every blob
    and manifest, and ``index.json`` with one entry per ``(ref_name, object)`` (annotated
    ``org.opencontainers.image.ref.name`` unless ref_name is None). With ``merge`` an
    existing index.json is kept and entries with the same ref name are replaced."""
    root = Path(directory)
    blobs_dir = root / "blobs" / "sha256"
    blobs_dir.mkdir(parents=True, exist_ok=True)
    (root / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))

    def put(raw: bytes, digest: str) -> None:
        path = blobs_dir / digest.split(":", 1)[1]
        if not path.exists():
            path.write_bytes(raw)

    manifests: List[Dict[str, Any]] = []
    index_path = root / "index.json"
    if merge and index_path.exists():
        manifests = json.loads(index_path.read_text()).get("manifests", [])
    for ref_name, obj in entries:
        for blob in obj.blobs:
            put(blob.raw, blob.digest)
        for m in iter_manifests(obj):
            put(m.raw, m.digest)
        desc: Dict[str, Any] = {"mediaType": obj.media_type, "digest": obj.digest, "size": obj.size}
        if ref_name is not None:
            manifests = [
                d for d in manifests if (d.get("annotations") or {}).get(REF_NAME_ANNOTATION) != ref_name
            ]
            desc["annotations"] = {REF_NAME_ANNOTATION: ref_name}
        if isinstance(obj, Image) and obj.platform:
            desc["platform"] = dict(obj.platform)
        manifests.append(desc)
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
    index_path.write_text(json.dumps(index, indent=2) + "\n")
    return root


# --------------------------------------------------------------------------------------
# distribution API client
# --------------------------------------------------------------------------------------
class PushError(RuntimeError):
    pass


_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


class RegistryClient:
    """Just enough of the distribution API to push and read back test content.

    ``auth`` is ``(user, password)``: sent as Basic when the registry asks for Basic,
    or to the token realm when it asks for Bearer. ``token_url`` overrides the realm
    named in the challenge. ``ca_file`` None with https means: do not verify.
    """

    def __init__(
        self,
        registry_url: str,
        *,
        ca_file: Optional[Union[str, Path]] = None,
        auth: Optional[Tuple[str, str]] = None,
        token_url: Optional[str] = None,
        timeout: float = 60.0,
    ) -> None:
        if "://" not in registry_url:
            registry_url = "http://" + registry_url
        self.base = registry_url.rstrip("/")
        self.auth = auth
        self.token_url = token_url
        kwargs: Dict[str, Any] = {"timeout": urllib3.Timeout(connect=10, read=timeout), "retries": False}
        if urlsplit(self.base).scheme == "https":
            if ca_file:
                kwargs.update(cert_reqs="CERT_REQUIRED", ca_certs=str(ca_file))
            else:
                kwargs.update(cert_reqs="CERT_NONE")
                urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        self.http = urllib3.PoolManager(**kwargs)
        self._basic = False
        self._tokens: Dict[FrozenSet[str], str] = {}
        self.tokens_fetched = 0

    def close(self) -> None:
        self.http.clear()

    def __enter__(self) -> "RegistryClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- auth -----------------------------------------------------------------------
    def _basic_header(self) -> str:
        assert self.auth is not None
        return "Basic " + base64.b64encode(("%s:%s" % self.auth).encode()).decode()

    def _fetch_token(self, params: Dict[str, str], scopes: FrozenSet[str]) -> str:
        realm = self.token_url or params.get("realm")
        if not realm:
            raise PushError("Bearer challenge without realm")
        query: List[Tuple[str, str]] = []
        if params.get("service"):
            query.append(("service", params["service"]))
        query += [("scope", s) for s in sorted(scopes)]
        headers = {"Authorization": self._basic_header()} if self.auth else {}
        url = realm + ("&" if "?" in realm else "?") + urlencode(query)
        resp = self.http.request("GET", url, headers=headers, redirect=False)
        if resp.status != 200:
            raise PushError("token request failed: %d %r" % (resp.status, resp.data[:200]))
        body = json.loads(resp.data)
        self.tokens_fetched += 1
        return str(body.get("token") or body.get("access_token"))

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        body: Optional[bytes] = None,
        headers: Optional[Mapping[str, str]] = None,
        scopes: Sequence[str] = (),
        preload: bool = True,
    ) -> urllib3.BaseHTTPResponse:
        """One request with authentication handled (401 -> Basic or token -> retry)."""
        url = urljoin(self.base + "/", path_or_url)
        wanted = frozenset(scopes)
        for attempt in range(2):
            hdrs = dict(headers or {})
            if wanted in self._tokens:
                hdrs["Authorization"] = "Bearer " + self._tokens[wanted]
            elif self._basic and self.auth:
                hdrs["Authorization"] = self._basic_header()
            resp = self.http.request(
                method, url, body=body, headers=hdrs, redirect=False, preload_content=preload
            )
            if resp.status != 401 or attempt:
                return resp
            challenge = resp.headers.get("WWW-Authenticate", "")
            resp.drain_conn()
            scheme = challenge.split(" ", 1)[0].lower()
            params = dict(_CHALLENGE_PARAM.findall(challenge))
            if scheme == "basic" and self.auth:
                self._basic = True
            elif scheme == "bearer":
                all_scopes = set(wanted)
                if params.get("scope"):
                    all_scopes.update(params["scope"].split(" "))
                self._tokens[wanted] = self._fetch_token(params, frozenset(all_scopes))
            else:
                return resp
        raise AssertionError("unreachable")

    # -- reading --------------------------------------------------------------------
    def get_manifest(self, repo: str, ref: str) -> Tuple[bytes, str]:
        """``(raw bytes, Content-Type)`` of a manifest, asking for all four types."""
        resp = self.request(
            "GET", "/v2/%s/manifests/%s" % (repo, ref), headers={"Accept": ACCEPT_ALL},
            scopes=["repository:%s:pull" % repo],
        )
        if resp.status != 200:
            raise PushError("GET manifest %s:%s -> %d %r" % (repo, ref, resp.status, resp.data[:300]))
        return resp.data, resp.headers.get("Content-Type", "")

    def get_blob(self, repo: str, digest: str) -> bytes:
        resp = self.request("GET", "/v2/%s/blobs/%s" % (repo, digest), scopes=["repository:%s:pull" % repo])
        if resp.status == 307 or resp.status == 302:
            resp = self.http.request("GET", urljoin(self.base, resp.headers["Location"]))
        if resp.status != 200:
            raise PushError("GET blob %s@%s -> %d" % (repo, digest, resp.status))
        return resp.data

    def blob_exists(self, repo: str, digest: str) -> bool:
        resp = self.request("HEAD", "/v2/%s/blobs/%s" % (repo, digest), scopes=["repository:%s:pull,push" % repo])
        return resp.status == 200

    # -- writing --------------------------------------------------------------------
    def push_blob(self, repo: str, blob: Blob) -> None:
        scopes = ["repository:%s:pull,push" % repo]
        if self.blob_exists(repo, blob.digest):
            return
        resp = self.request("POST", "/v2/%s/blobs/uploads/" % repo, scopes=scopes)
        if resp.status != 202:
            raise PushError("POST upload %s -> %d %r" % (repo, resp.status, resp.data[:300]))
        location = urljoin(self.base + "/", resp.headers["Location"])
        location += ("&" if "?" in location else "?") + "digest=" + quote(blob.digest)
        resp = self.request(
            "PUT", location, body=blob.raw,
            headers={"Content-Type": "application/octet-stream"}, scopes=scopes,
        )
        if resp.status != 201:
            raise PushError("PUT blob %s -> %d %r" % (blob.digest, resp.status, resp.data[:300]))

    def push_manifest(self, repo: str, ref: str, raw: bytes, media_type: str) -> str:
        resp = self.request(
            "PUT", "/v2/%s/manifests/%s" % (repo, ref), body=raw,
            headers={"Content-Type": media_type}, scopes=["repository:%s:pull,push" % repo],
        )
        if resp.status != 201:
            raise PushError("PUT manifest %s:%s -> %d %r" % (repo, ref, resp.status, resp.data[:300]))
        digest = sha256_digest(raw)
        got = resp.headers.get("Docker-Content-Digest")
        if got and got != digest:
            raise PushError("registry says %s for a manifest whose digest is %s" % (got, digest))
        return digest

    def push(self, repo: str, obj: Manifestish, tag: Optional[str] = None) -> str:
        """Push blobs, then children, then ``obj`` (by ``tag`` or by digest)."""
        for blob in obj.blobs:
            self.push_blob(repo, blob)
        for m in iter_manifests(obj):
            ref = tag if (m is obj and tag) else m.digest
            self.push_manifest(repo, ref, m.raw, m.media_type)
        return obj.digest


def push(
    registry_url: str,
    repo: str,
    obj: Manifestish,
    tag: Optional[str] = None,
    *,
    ca_file: Optional[Union[str, Path]] = None,
    auth: Optional[Tuple[str, str]] = None,
    token_url: Optional[str] = None,
) -> str:
    """Push an :class:`Image` or :class:`ImageIndex` (children first); return its digest."""
    with RegistryClient(registry_url, ca_file=ca_file, auth=auth, token_url=token_url) as client:
        return client.push(repo, obj, tag)

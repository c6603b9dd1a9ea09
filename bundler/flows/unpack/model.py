"""What unpack takes and gives: its options, the per-image and overall results, its errors, and the
planned targets (one bundle image at its place in the mirror) the other modules of this package act on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple

from bundler.base.compat import frozen_keyword_only
from bundler.base.errors import BundlerError, DigestMismatchError, PartialFailureError, UsageError
from bundler.base.progress import NullProgress, Progress
from bundler.bundle.manifest import BundleImage, BundleManifest
from bundler.oci.digest import Digest
from bundler.oci.media import Descriptor
from bundler.oci.reference import Reference, parse_host
from bundler.registry.client import FetchedManifest, TransportOptions
from bundler.transfer.copy import CopyStats
from bundler.transfer.transports import ImageSource

if TYPE_CHECKING:
    from bundler.openshift.resources import ResourcesChanges

REGISTRY_KINDS = ("auto", "quay", "plain")
#: Default directory for the cluster resources, relative to the working directory. Not next to the bundle:
#: bundles usually sit on read-only or removable media that leaves with the courier.
DEFAULT_RESOURCES_DIR = Path("ocp-bundler-resources")
#: The read-only robots' auth file in the resources dir; not `.json`, so `oc apply -f DIR` never reads it.
PULL_SECRET_FILE = "pull-secret.dockerconfigjson"
#: Image statuses that are failures: not pushed ("failed"; "refused": the registry cannot store it
#: digest-exact, known before pushing), or pushed but reading back another digest ("mismatch").
FAILED_STATUSES = ("failed", "refused", "mismatch")

# --- what unpack needs from an open bundle (`bundler.bundle.volumes.Bundle` provides it) ---------------------------


class OpenBundle(Protocol):
    """The reading side of a bundle: its manifest, and `image_source` reading manifests and blobs in place
    from the volumes."""

    @property
    def manifest(self) -> BundleManifest: ...

    def image_source(self, image: BundleImage) -> ImageSource: ...

    def read_file(self, name: str) -> bytes: ...

    def blobs_needed_from_base(self) -> List[Digest]: ...


# --- options and results ------------------------------------------------------------------------------------


@frozen_keyword_only
class UnpackOptions:
    """How to unpack.

    `registry` is the mirror, `host[:port]` (a `/path` after it joins `prefix`); every image lands at
    `<registry>/<prefix>/<target_repository>:<target_tag>`. `registry_kind`: "auto" asks the registry
    whether it is Quay, "quay" treats it as Quay, "plain" never talks to a Quay API. On Quay,
    organisations are created with `quay_token` or the token in `quay_data_dir` (the Quay bring-up's data).
    `resources_dir` defaults to `./ocp-bundler-resources`. `verify=False` skips bundle verification (a
    loud warning is logged and reported). `image_workers` 0 means as many as `workers`.
    """

    registry: str
    prefix: str = ""
    authfile: Optional[Path] = None
    transport: TransportOptions = TransportOptions()
    workers: int = 8
    image_workers: int = 0
    dry_run: bool = False
    verify: bool = True
    reverify: bool = False
    """Hash every volume again even when an earlier full verification of the same, unchanged files is on record."""
    key: Optional[Path] = None
    require_signature: bool = False
    state_dir: Optional[Path] = None
    """Where verification records are kept (default `$XDG_CACHE_HOME/ocp-bundler/verified`)."""
    registry_kind: str = "auto"
    quay_token: Optional[str] = field(default=None, repr=False)
    quay_data_dir: Optional[Path] = None
    quay_up: bool = False
    """First bring Quay up on this host (`ocp-bundler quay up`) as `registry`, from the bundle's images."""
    resources_dir: Optional[Path] = None
    icsp: bool = False
    resources_fresh: bool = False
    """Write the cluster resources from this bundle alone instead of adding to the set in `resources_dir`."""
    write_resources: bool = True
    ledger: Optional[Path] = None
    """The mirror ledger to record pushed tags in, for `prune` (default: the registry's in the state dir)."""
    progress: Progress = field(default_factory=NullProgress)


@frozen_keyword_only
class UnpackedImage:
    """One bundle image and what happened to it.

    `status`: "pushed" (copied now), "present" (the tag already pointed at the digest), "failed",
    "refused" (the registry cannot store it digest-exact: not pushed; `error` says why), "mismatch" (the
    tag read back as another digest), and in dry runs "would-push".
    `size`: bytes of the image's manifests and distinct blobs, when known.
    """

    source: str
    target: str
    digest: str
    kind: str
    status: str
    size: Optional[int] = None
    stats: CopyStats = field(default_factory=CopyStats)
    error: Optional[str] = None

    def to_json(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {
            "source": self.source,
            "target": self.target,
            "digest": self.digest,
            "kind": self.kind,
            "status": self.status,
            "size": self.size,
            "blobsCopied": self.stats.blobs_copied,
            "blobsMounted": self.stats.blobs_mounted,
            "blobsPresent": self.stats.blobs_present,
            "bytesCopied": self.stats.bytes_copied,
            "manifestsPushed": self.stats.manifests_pushed,
        }
        if self.error is not None:
            out["error"] = self.error
        return out


@frozen_keyword_only
class UnpackResult:
    """Everything `unpack` did, for the human summary and the JSON report."""

    bundle_id: str
    base_id: Optional[str]
    registry: str
    """`host[:port][/prefix]`: where the images are, as written into the cluster resources."""
    registry_kind: str
    dry_run: bool
    verified: bool
    images: Tuple[UnpackedImage, ...]
    verification: str = ""
    """How the bundle was verified: "full", "unchanged since a full verification at <time>", or why not."""
    organizations: Tuple[str, ...] = ()
    organizations_created: Tuple[str, ...] = ()
    organizations_to_create: Tuple[str, ...] = ()
    """Dry runs on Quay with a token: organisations that do not exist yet."""
    resources_dir: Optional[Path] = None
    pull_secret_file: Optional[Path] = None
    """On Quay: the read-only robots' credentials (auth file, 0600) for the cluster's pull secret."""
    resource_files: Tuple[Path, ...] = ()
    resource_changes: Optional["ResourcesChanges"] = None
    warnings: Tuple[str, ...] = ()
    seconds: float = 0.0

    @property
    def stats(self) -> CopyStats:
        total = CopyStats()
        for image in self.images:
            total.add(image.stats)
        return total

    def count(self, status: str) -> int:
        return sum(1 for image in self.images if image.status == status)

    @property
    def failed(self) -> Tuple[UnpackedImage, ...]:
        return tuple(i for i in self.images if i.status in FAILED_STATUSES)

    def to_json(self) -> Dict[str, Any]:
        s = self.stats
        return {
            "bundle": {"id": self.bundle_id, "baseId": self.base_id},
            "registry": self.registry,
            "registryKind": self.registry_kind,
            "dryRun": self.dry_run,
            "verified": self.verified,
            "verification": self.verification,
            "organizations": list(self.organizations),
            "organizationsCreated": list(self.organizations_created),
            "organizationsToCreate": list(self.organizations_to_create),
            "images": [i.to_json() for i in self.images],
            "totals": {
                "images": len(self.images),
                "pushed": self.count("pushed"),
                "present": self.count("present"),
                "failed": self.count("failed"),
                "mismatch": self.count("mismatch"),
                "refused": self.count("refused"),
                "wouldPush": self.count("would-push"),
                "blobsCopied": s.blobs_copied,
                "blobsMounted": s.blobs_mounted,
                "blobsPresent": s.blobs_present,
                "bytesCopied": s.bytes_copied,
                "manifestsPushed": s.manifests_pushed,
            },
            "resources": {
                "directory": str(self.resources_dir) if self.resources_dir else None,
                "pullSecret": str(self.pull_secret_file) if self.pull_secret_file else None,
                "files": [str(p) for p in self.resource_files],
                "changes": None if self.resource_changes is None else {
                    "mirrorsAdded": self.resource_changes.mirrors_added,
                    "mirrorsUnchanged": self.resource_changes.mirrors_unchanged,
                    "mirrorsRemoved": self.resource_changes.mirrors_removed,
                    "catalogsAdded": list(self.resource_changes.catalogs_added),
                    "catalogsUpdated": list(self.resource_changes.catalogs_updated),
                    "catalogsUnchanged": list(self.resource_changes.catalogs_unchanged),
                    "catalogsRemoved": list(self.resource_changes.catalogs_removed),
                },
            },
            "warnings": list(self.warnings),
            "seconds": round(self.seconds, 3),
        }


class UnpackPartialFailureError(PartialFailureError):
    """Some images could not be pushed after retries; the rest is in the registry. Carries the result."""

    def __init__(self, message: str, *, result: UnpackResult, failures: Sequence[str], hint: Optional[str] = None) -> None:
        super().__init__(message, failures=failures, hint=hint)
        self.result = result


class UnpackIntegrityError(DigestMismatchError):
    """Content is not what the bundle says (a blob the registry refused as DIGEST_INVALID, a damaged
    manifest, a tag reading back another digest). Exit 3. Carries the result."""

    def __init__(self, message: str, *, result: UnpackResult, hint: Optional[str] = None) -> None:
        super().__init__(message, hint=hint)
        self.result = result


class ReadBackMismatchError(UnpackIntegrityError):
    """A pushed tag reads back as another digest than the signed bundle manifest's."""



# --- the planned work -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One bundle image at its place in the mirror."""

    image: BundleImage
    reference: Reference
    digest: Digest

    @property
    def repo(self) -> str:
        return self.reference.repository

    @property
    def org(self) -> str:
        return self.reference.repository.split("/", 1)[0]

    @property
    def tag(self) -> str:
        return self.reference.tag or "latest"

    @property
    def text(self) -> str:
        return str(self.reference)


@dataclass
class Graph:
    """Every blob below one target, and the bytes of its manifests."""

    blobs: Dict[str, Descriptor] = field(default_factory=dict)
    manifest_bytes: int = 0
    manifests: List[FetchedManifest] = field(default_factory=list)

    @property
    def size(self) -> int:
        return self.manifest_bytes + sum(d.size for d in self.blobs.values())


@dataclass
class Outcome:
    """What pushing one target did."""

    status: str
    stats: CopyStats
    error: Optional[str] = None
    exception: Optional[BundlerError] = None


def known_size(t: Target) -> Optional[int]:
    return t.image.total_size


def size_of(t: Target, graphs: Mapping[str, Graph]) -> Optional[int]:
    known = known_size(t)
    if known is not None:
        return known
    graph = graphs.get(t.text)
    return graph.size if graph is not None else None


def image_entry(t: Target, status: str, *, size: Optional[int], stats: Optional[CopyStats] = None, error: Optional[str] = None) -> UnpackedImage:
    return UnpackedImage(
        source=str(t.image.source),
        target=t.text,
        digest=str(t.digest),
        kind=str(t.image.kind),
        status=status,
        size=size,
        stats=stats or CopyStats(),
        error=error,
    )


def split_registry(registry: str, prefix: str = "") -> Tuple[str, str]:
    """`host[:port][/path]` plus a prefix → (host, joined path prefix), both validated."""
    text = registry.strip()
    if not text or "://" in text or any(c.isspace() for c in text):
        raise UsageError(f"registry {registry!r} is not host[:port]", hint="give it without scheme, e.g. mirror.example.com:8443")
    host, _, path = text.partition("/")
    joined = "/".join(p for p in (path.strip("/"), prefix.strip("/")) if p)
    try:
        parse_host(host)
    except BundlerError as exc:
        raise UsageError(f"--registry {registry!r}: {exc.message}", hint=exc.hint) from None
    try:
        ref = Reference.parse(f"{host}/{joined + '/' if joined else ''}x")
    except BundlerError:
        raise UsageError(
            f"registry {registry!r} with prefix {prefix!r} is not a valid host[:port][/path]",
            hint="a host name or IP with an optional port, and a lower-case path prefix",
        ) from None
    if ref.registry != host:
        raise UsageError(f"registry {registry!r} does not start with a host name", hint="give host[:port], e.g. mirror.example.com:8443")
    return host, joined


def host_port(host: str, *, default_port: int) -> Tuple[str, int]:
    """`name:port`, `[v6]:port` or a bare name → (name, port)."""
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        return name, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else default_port
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit():
        return name, int(port)
    return host, default_port



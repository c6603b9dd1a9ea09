"""The `unpack` use-case: a verified bundle → a registry holding exactly what was packed, proof, and YAML.

Owns the disconnected-side flow of ARCHITECTURE "The data flow" (bundle ──► copy ──► read back ──►
cluster resources):

1. verify the bundle (`bundler.bundle.verify.verify_bundle`) unless told not to (loudly); a full verification is
   recorded, and a rerun on the very same files (manifest and signature bytes, each volume's device,
   inode, size, mtime and ctime) checks the signature again but does not re-hash the volumes;
2. on a Quay target (PROTOCOL-NOTES §4) create every organisation the targets need (the first path
   component of each target repository, prefix applied) and give each a robot that may create
   repositories there (Quay robots only get rights inside their own organisation); push as those robots;
3. check each target tag with one manifest HEAD (full Accept, PROTOCOL-NOTES §2): a tag that already
   points at the packed digest is done, so a no-op rerun costs one HEAD per image and no blob HEADs;
4. for incremental bundles, prove that every blob the bundle leaves to its base is in the registry;
5. push the rest with the copy engine (bottom-up, raw bytes, always with a tag, blobs read in place from
   the volumes), with one upload per blob for the whole registry: a repository that needs a blob another
   repository is uploading waits for that upload and then mounts it (cross-repository mount, §2). At most
   `workers` uploads move bytes at once; checks, mounts and waiting repositories run on other threads;
6. read back every pushed tag (HEAD → `Docker-Content-Digest`) and compare with the signed bundle manifest;
7. write the cluster resources (`bundler.openshift.resources`) for the registry actually used (host and prefix).

Failures: images that still fail after the client's retries are listed and the rest is done
(`UnpackPartialFailureError`, exit 4); a read-back mismatch is `ReadBackMismatchError` (exit 3); both carry
the full `UnpackResult` so the CLI can still print the report. Cluster resources are written only when
every image is in the registry. Nothing here imports click or tqdm; secrets never reach logs or results.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Mapping, Optional, Protocol, Sequence, Set, Tuple

from bundler.registry.auth import CredentialStore, Credentials
from bundler.bundle.manifest import MANIFEST_NAME, SIGNATURE_NAME, BundleImage, BundleManifest
from bundler.base.compat import frozen_keyword_only
from bundler.transfer.copy import Copier, CopyOptions, CopyResult, CopyStats
from bundler.oci.digest import Digest
from bundler.base.errors import (
    AuthenticationError,
    BundlerError,
    DigestMismatchError,
    IntegrityError,
    PartialFailureError,
    RegistryError,
    RegistryUnreachableError,
    UsageError,
)
from bundler.base.fsutil import atomic_write
from bundler.base.singleflight import SingleFlight
from bundler.oci.media import Descriptor, is_index, parse_manifest
from bundler.base.progress import NullProgress, Progress
from bundler.oci.reference import Reference
from bundler.registry.client import FetchedManifest, Registries, RegistryClient, TransportOptions
from bundler.transfer.transports import ImageSource, Opener, RegistryRepository

if TYPE_CHECKING:
    from bundler.bundle.verify import VerifyResult
    from bundler.openshift.resources import ResourcesChanges
    from bundler.quay.api import QuayAPI

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_RESOURCES_DIR",
    "REGISTRY_KINDS",
    "QuayData",
    "ReadBackMismatchError",
    "UnpackIntegrityError",
    "UnpackOptions",
    "UnpackPartialFailureError",
    "UnpackResult",
    "UnpackedImage",
    "unpack_bundle",
    "unpack_open_bundle",
]

REGISTRY_KINDS = ("auto", "quay", "plain")
#: Default directory for the cluster resources, relative to the working directory. Not next to the bundle:
#: bundles usually sit on read-only or removable media that leaves with the courier.
DEFAULT_RESOURCES_DIR = Path("ocp-bundler-resources")
#: Short name of the robot unpack creates in each Quay organisation (`<org>+ocp_bundler`).
ROBOT_NAME = "ocp_bundler"
_SIGNATURE_FILE = re.compile(r"^signatures/(sha256|sha512)-([0-9a-f]{64}|[0-9a-f]{128})-([1-9][0-9]*)$")

# --- what unpack needs from an open bundle (`bundler.bundle.volumes.Bundle` provides it) ---------------------------


class OpenBundle(Protocol):
    """The reading side of a bundle: its manifest, and `image_source` reading manifests and blobs in place
    from the volumes."""

    @property
    def manifest(self) -> BundleManifest: ...

    def image_source(self, image: BundleImage) -> ImageSource: ...

    def read_file(self, name: str) -> bytes: ...

    def blobs_needed_from_base(self) -> List[str]: ...


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
    "mismatch" (the tag read back as another digest), and in dry runs "would-push".
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
        return tuple(i for i in self.images if i.status in ("failed", "mismatch"))

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
                "wouldPush": self.count("would-push"),
                "blobsCopied": s.blobs_copied,
                "blobsMounted": s.blobs_mounted,
                "blobsPresent": s.blobs_present,
                "bytesCopied": s.bytes_copied,
                "manifestsPushed": s.manifests_pushed,
            },
            "resources": {
                "directory": str(self.resources_dir) if self.resources_dir else None,
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


# --- verification, once per unchanged bundle ------------------------------------------------------------

STAMP_VERSION = 1


def default_state_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ocp-bundler" / "verified"


def verify_once(directory: Path, options: UnpackOptions) -> Tuple[str, List[str]]:
    """`verify_bundle`, unless a full verification of these very files is on record.

    The record (in `state_dir`) holds the sha256 of the manifest and of its signature and, for every volume,
    device, inode, size, mtime and ctime (ctime cannot be set back by a user: any write or re-copy changes
    it). When all of that is unchanged and the record is at least as strong as what is asked now (same key,
    signature required), the volumes are not hashed again; the signature is still checked against the key.
    Whatever is pushed is checked by the registry against its digest in any case.
    """
    from bundler.bundle.verify import verify_bundle

    fingerprint = _fingerprint(directory)
    stamp_path = _stamp_path(options.state_dir, directory, fingerprint)
    current_key = _key_id(options.key) if options.key is not None else None
    if not options.reverify and fingerprint is not None and stamp_path is not None:
        stamp = _read_stamp(stamp_path)
        if (
            stamp is not None
            and stamp.get("fingerprint") == fingerprint
            and (current_key is None or stamp.get("keyId") == current_key)
            and (not (options.require_signature or options.key) or stamp.get("signed") is True)
        ):
            if options.key is not None:
                from bundler.bundle.signing import verify_signature

                raw = (directory / MANIFEST_NAME).read_bytes()
                verify_signature(raw, (directory / SIGNATURE_NAME).read_bytes(), options.key)
            when = str(stamp.get("verifiedAt", "?"))
            log.info("%s was fully verified at %s and its files are unchanged: not hashing the volumes again", directory, when)
            return f"unchanged since a full verification at {when}", [str(w) for w in stamp.get("warnings", [])]
    log.info("verifying %s", directory)
    result = verify_bundle(directory, key=options.key, require_signature=options.require_signature, progress=options.progress)
    record_verification(directory, result, fingerprint=fingerprint, state_dir=options.state_dir)
    return "full", list(result.warnings)


def record_verification(directory: Path, result: VerifyResult, *, fingerprint: Optional[Dict[str, Any]], state_dir: Optional[Path] = None) -> None:
    """Remember a successful full verification of these very files (`fingerprint` taken before it started),
    so that `unpack` need not hash the volumes again. Nothing is recorded if the files changed meanwhile."""
    stamp_path = _stamp_path(state_dir, directory, fingerprint)
    if fingerprint is None or stamp_path is None or fingerprint != _fingerprint(directory):
        return
    record = {
        "version": STAMP_VERSION,
        "directory": str(directory.resolve()),
        "bundleId": result.bundle_id,
        "fingerprint": fingerprint,
        "signed": result.signed,
        "keyId": result.key_id,
        "warnings": list(result.warnings),
        "verifiedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    try:
        stamp_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(stamp_path, (json.dumps(record, indent=1) + "\n").encode(), mode=0o600)
    except OSError as exc:
        log.debug("cannot record the verification in %s: %s", stamp_path, exc)


def bundle_fingerprint(directory: Path) -> Optional[Dict[str, Any]]:
    """What identifies these bundle files for a verification record (None when something cannot be read)."""
    return _fingerprint(directory)


def _fingerprint(directory: Path) -> Optional[Dict[str, Any]]:
    """What identifies these bundle files (see `verify_once`); None when something cannot be read."""
    try:
        raw = (directory / MANIFEST_NAME).read_bytes()
        signature = directory / SIGNATURE_NAME
        sig = signature.read_bytes() if signature.exists() else None
        manifest = BundleManifest.from_bytes(raw, where=MANIFEST_NAME)
        volumes = {}
        for volume in manifest.volumes:
            st = (directory / volume.name).stat()
            volumes[volume.name] = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
    except (OSError, BundlerError):
        return None
    return {
        "manifest": hashlib.sha256(raw).hexdigest(),
        "signature": hashlib.sha256(sig).hexdigest() if sig is not None else None,
        "volumes": volumes,
    }


def _stamp_path(state_dir: Optional[Path], directory: Path, fingerprint: Optional[Dict[str, Any]]) -> Optional[Path]:
    if fingerprint is None:
        return None
    where = hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:16]
    return Path(state_dir or default_state_dir()) / f"{str(fingerprint['manifest'])[:32]}-{where}.json"


def _read_stamp(path: Path) -> Optional[Dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("version") == STAMP_VERSION else None


def _key_id(path: Path) -> str:
    from bundler.bundle.signing import key_id, load_public_key

    return key_id(load_public_key(path))


# --- the Quay bring-up's data ------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuayData:
    """What a Quay bring-up left for later runs: its API token, robot credentials per organisation, CA."""

    token: Optional[str] = field(default=None, repr=False)
    robots: Mapping[str, Credentials] = field(default_factory=dict)
    ca_file: Optional[Path] = None


def load_quay_data(data_dir: Optional[Path]) -> QuayData:
    """Read what `ocp-bundler quay up` keeps in its data dir (`bundler.quay.bringup.QuayPaths`): the first user's
    API token and robot tokens from `secrets.json`, and the CA from `ca/ca.crt`. Empty without a dir."""
    if data_dir is None:
        return QuayData()
    from bundler.quay.bringup import QuayPaths
    from bundler.quay.config import load_secrets

    paths = QuayPaths(Path(data_dir))
    if not paths.root.is_dir():
        raise UsageError(f"Quay data dir {paths.root} does not exist", hint="give the --data-dir `ocp-bundler quay up` used")
    secrets = load_secrets(paths.secrets_file)
    robots: Dict[str, Credentials] = {}
    token: Optional[str] = None
    if secrets is not None:
        token = secrets.admin_token
        for name, robot_token in sorted(secrets.robot_tokens.items()):
            robots.setdefault(name.split("+", 1)[0], Credentials(name, robot_token))
    ca = paths.certificates.ca_cert
    return QuayData(token=token, robots=robots, ca_file=ca if ca.is_file() else None)


def _quay_up(directory: Path, options: UnpackOptions) -> Tuple[UnpackOptions, List[str]]:
    """Bring Quay up on this host (`bundler.quay.bringup.quay_up`) with the organisations the bundle needs, from the
    registry images the bundle carries; then unpack into it as its robots."""
    from bundler.quay import bringup as quay
    from bundler.bundle.volumes import Bundle

    host, prefix = split_registry(options.registry, options.prefix)
    hostname, port = _host_port(host, default_port=8443)
    images = Bundle.open(directory).manifest.images
    orgs = sorted({(f"{prefix}/{i.target_repository}" if prefix else i.target_repository).split("/", 1)[0] for i in images})
    data_dir = Path(options.quay_data_dir) if options.quay_data_dir else quay.default_data_dir()
    log.info("bringing Quay up as %s:%d (data in %s) with organisations %s", hostname, port, data_dir, ", ".join(orgs))
    up = quay.quay_up(
        quay.QuayUpOptions(hostname=hostname, port=port, data_dir=data_dir, organizations=tuple(orgs)),
        quay.images_from_bundle(directory),
    )
    for change in up.changes:
        log.info("quay up: %s", change)
    path = options.registry.strip().partition("/")[2]
    registry = up.server + (f"/{path}" if path else "")
    changed = dataclasses.replace(
        options,
        registry=registry,
        quay_data_dir=data_dir,
        registry_kind="quay" if options.registry_kind == "auto" else options.registry_kind,
    )
    return changed, list(up.warnings)


@dataclass
class _Quay:
    api: "QuayAPI"
    data: QuayData
    token: bool
    existing: Dict[str, bool] = field(default_factory=dict)


class _OrgCredentials(CredentialStore):
    """Per-organisation credentials (Quay robots) for one registry, in front of the auth files."""

    def __init__(self, fallback: CredentialStore, host: str) -> None:
        super().__init__(files=[])
        self.fallback = fallback
        self.host = host
        self.by_org: Dict[str, Credentials] = {}

    def add(self, registry: str, creds: Credentials) -> None:
        self.fallback.add(registry, creds)

    def lookup(self, registry: str, repository: str = "") -> Optional[Credentials]:
        if repository and registry == self.host:  # the client asks with the host it was made for
            creds = self.by_org.get(repository.split("/", 1)[0])
            if creds is not None:
                return creds
        return self.fallback.lookup(registry, repository)


# --- entry points -------------------------------------------------------------------------------------------


def unpack_bundle(directory: Path, *, options: UnpackOptions) -> UnpackResult:
    """Verify the bundle in `directory`, push every image into `options.registry`, read back, write YAML.

    Raises `IntegrityError` (bundle or read-back, exit 3), `UsageError` (options; an incremental bundle
    whose base is not in the registry, exit 2), `RegistryError` (cannot reach or log in, exit 5),
    `UnpackPartialFailureError` (some images failed, exit 4; a rerun pushes only what is missing).
    """
    directory = Path(directory)
    check_options(options)
    warnings: List[str] = []
    verified = False
    if not options.verify:
        verification = "skipped (--no-verify)"
        message = (
            "bundle verification skipped (--no-verify): volumes and signature were NOT checked; the registry "
            "still checks every blob's digest and the read-back every manifest's"
        )
        log.warning("WARNING: %s", message)
        warnings.append(message)
    elif options.dry_run:
        verification = "not done (dry run)"
        warnings.append("dry run: the bundle was not verified")
    else:
        verification, verify_warnings = verify_once(directory, options)
        warnings.extend(verify_warnings)
        verified = True
    if options.quay_up and not options.dry_run:
        options, quay_warnings = _quay_up(directory, options)
        warnings.extend(quay_warnings)
    from bundler.bundle.volumes import Bundle

    bundle = Bundle.open(directory)
    return _Unpacker(bundle, options, verified=verified, verification=verification, warnings=warnings).run()


def unpack_open_bundle(bundle: OpenBundle, *, options: UnpackOptions, verified: bool = False) -> UnpackResult:
    """`unpack_bundle` for a bundle the caller has opened (and verified, when it says `verified`)."""
    check_options(options)
    return _Unpacker(bundle, options, verified=verified, verification="by the caller" if verified else "not done", warnings=[]).run()


def check_options(options: UnpackOptions) -> None:
    if options.registry_kind not in REGISTRY_KINDS:
        raise UsageError(f"registry kind {options.registry_kind!r} is not one of {', '.join(REGISTRY_KINDS)}")
    if options.workers < 1 or options.image_workers < 0:
        raise UsageError("workers must be at least 1")
    if options.require_signature and not options.verify:
        raise UsageError("--require-signature cannot be combined with --no-verify")
    if options.registry_kind == "plain" and (options.quay_token or options.quay_up):
        raise UsageError("Quay options were given but --registry-kind is plain", hint="use --registry-kind quay or auto")
    split_registry(options.registry, options.prefix)


# --- the work -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
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
class _Graph:
    blobs: Dict[str, Descriptor] = field(default_factory=dict)
    manifest_bytes: int = 0

    @property
    def size(self) -> int:
        return self.manifest_bytes + sum(d.size for d in self.blobs.values())


@dataclass
class _Outcome:
    status: str
    stats: CopyStats
    error: Optional[str] = None
    exception: Optional[BundlerError] = None


class _Unpacker:
    def __init__(self, bundle: OpenBundle, options: UnpackOptions, *, verified: bool, verification: str, warnings: List[str]) -> None:
        self.bundle = bundle
        self.options = options
        self.verified = verified
        self.verification = verification
        self.warnings = warnings
        self.host, self.prefix = split_registry(options.registry, options.prefix)
        self.registry_path = self.host + (f"/{self.prefix}" if self.prefix else "")
        self.workers = max(1, options.workers)
        self.blob_threads = 4 * self.workers
        self.image_threads = 2 * self.workers
        self.started = time.monotonic()
        self.kind = "plain"
        self.quay: Optional[_Quay] = None
        self.organizations_created: List[str] = []
        self.organizations_to_create: List[str] = []
        self.errors: List[BundlerError] = []

    # -- orchestration ----------------------------------------------------------------------------------

    def run(self) -> UnpackResult:
        every = self._targets(self.bundle.manifest.images)  # one per bundle image (two may share a target)
        targets = list({t.text: t for t in reversed(every)}.values())[::-1]  # one per target, first kept
        orgs = tuple(sorted({t.org for t in targets}))
        credentials = _OrgCredentials(CredentialStore(self.options.authfile), self.host)
        transport = self.options.transport
        threads = self.blob_threads + (self.options.image_workers or self.image_threads)
        if transport.pool_size < threads:  # one kept-alive connection per thread that may talk at once
            transport = dataclasses.replace(transport, pool_size=threads)
        self.quay = self._detect_quay(credentials)
        if self.quay is not None and transport.ca_file is None and self.quay.data.ca_file is not None:
            transport = dataclasses.replace(transport, ca_file=self.quay.data.ca_file)
        registries = Registries(credentials=credentials, options=transport)
        mismatches: List[str] = []
        try:
            if self.quay is not None:
                self._prepare_organizations(self.quay, orgs, credentials)
            client = registries.client(self.host)
            current = self._check_tags(client, targets)
            pending = [t for t in targets if not isinstance(current[t.text], BundlerError) and current[t.text] != t.digest]
            needed = set(self.bundle.blobs_needed_from_base()) if pending else set()
            # an incremental bundle's base blobs may sit in repositories of images already in place: walk those too
            to_walk = list(targets) if needed else [t for t in pending if self.options.dry_run and _known_size(t) is None]
            graphs = self._walk(to_walk) if to_walk else {}
            if self.options.dry_run:
                images = [_image(t, "present" if current[t.text] == t.digest else "would-push", size=_size(t, graphs)) for t in every]
                return self._result(images, orgs)
            self._check_base_blobs(client, pending, graphs, needed, elsewhere=targets)
            outcomes = self._push(client, pending, graphs)
            mismatches = self._read_back(client, [t for t in pending if outcomes[t.text].status == "pushed"], outcomes)
            images = self._images(every, current, outcomes, graphs)
        finally:
            registries.close()
            if self.quay is not None:
                self.quay.api.close()
        result = self._result(images, orgs)
        self._record(targets, result)
        self._raise_for_failures(result, mismatches)
        if self.options.write_resources:
            result = self._write_resources(result, every)
        return result

    def _targets(self, images: Iterable[BundleImage]) -> List[_Target]:
        targets: List[_Target] = []
        seen: Dict[str, _Target] = {}
        for image in images:
            if not image.target_tag or not image.target_repository:
                raise UsageError(f"bundle image {image.source} has no target repository or tag", hint="the bundle is malformed; pack it again")
            repo = f"{self.prefix}/{image.target_repository}" if self.prefix else str(image.target_repository)
            text = f"{self.host}/{repo}:{image.target_tag}"
            reference = Reference.parse(text)
            if reference.registry != self.host or reference.repository != repo or reference.tag != image.target_tag:
                raise UsageError(f"bundle image {image.source}: target {text} is not a valid image reference")
            try:
                digest = Digest.parse(str(image.digest))
            except BundlerError:
                raise IntegrityError(f"bundle image {image.source} has an invalid digest {image.digest!r}") from None
            target = _Target(image=image, reference=reference, digest=digest)
            earlier = seen.setdefault(target.text, target)
            if earlier.digest != digest:
                raise UsageError(
                    f"two bundle images go to {target.text} with different digests ({earlier.image.source}, {image.source})",
                    hint="the bundle is inconsistent; pack it again",
                )
            targets.append(target)
        return targets

    # -- Quay -------------------------------------------------------------------------------------------------

    def _detect_quay(self, credentials: _OrgCredentials) -> Optional[_Quay]:
        """None for a plain registry; for Quay (`is_quay()`, or forced) the API client and bring-up data."""
        kind = self.options.registry_kind
        if kind == "plain":
            return None
        from bundler.quay.api import QuayAPI

        data = load_quay_data(self.options.quay_data_dir)
        token = self.options.quay_token or data.token
        ca_file = self.options.transport.ca_file or data.ca_file
        insecure = self.host in self.options.transport.insecure_hosts
        api: Optional[QuayAPI] = None
        # an --insecure-registry host may speak plain HTTP: ask that way first (a TLS port just says 400)
        for scheme in ("http", "https") if insecure else ("https",):
            candidate = QuayAPI(f"{scheme}://{self.host}", token=token, ca_file=ca_file, insecure=insecure)
            try:
                if scheme == "http" and candidate.request("GET", "/v2/", auth=False).status not in (200, 401):
                    candidate.close()
                    continue  # not a registry speaking plain HTTP (a TLS port answers 400): try TLS
                if candidate.is_quay():
                    api = candidate
                    break
                candidate.close()
                break  # it answered and it is not Quay
            except RegistryError as exc:
                log.debug("Quay detection over %s: %s", scheme, exc)
                candidate.close()
        if api is None:
            if kind == "auto":
                log.info("%s is not Quay: no organisations to create", self.host)
                return None
            api = QuayAPI(f"{'http' if insecure else 'https'}://{self.host}", token=token, ca_file=ca_file, insecure=insecure)
            self.warnings.append(f"{self.host} does not answer like Quay; treating it as Quay anyway (--registry-kind quay)")
        self.kind = "quay"
        for org, robot in data.robots.items():
            credentials.by_org.setdefault(org, robot)
        if not token:
            message = (
                f"{self.host} is Quay but there is no API token (--quay-token, or the Quay bring-up's data dir): "
                "organisations cannot be created and must exist already"
            )
            log.warning("%s", message)
            self.warnings.append(message)
        return _Quay(api=api, data=data, token=bool(token))

    def _prepare_organizations(self, quay: _Quay, orgs: Sequence[str], credentials: _OrgCredentials) -> None:
        """Create missing organisations; give each one a robot (the bring-up's, or `<org>+ocp_bundler`) in a
        team with role `creator`, and push as that robot."""
        if not quay.token:
            return
        api = quay.api
        if self.options.dry_run:
            self.organizations_to_create = [org for org in orgs if not api.organization_exists(org)]
            return
        for org in orgs:
            if api.ensure_organization(org):
                self.organizations_created.append(org)
                log.info("created organisation %s on %s", org, self.host)
            quay.existing[org] = True
            robot = quay.data.robots.get(org)
            account = api.ensure_robot(org, robot.username.split("+", 1)[1] if robot is not None else ROBOT_NAME)
            api.grant_creator(org, account.name)
            credentials.by_org[org] = Credentials(account.name, account.token)

    def _org_exists(self, org: str) -> Optional[bool]:
        quay = self.quay
        if quay is None or not quay.token:
            return None
        if org not in quay.existing:
            try:
                quay.existing[org] = quay.api.organization_exists(org)
            except RegistryError:
                return None
        return quay.existing[org]

    # -- what is there already -------------------------------------------------------------------------

    def _head_threads(self, count: int) -> int:
        """Threads for a batch of HEADs: starting a thread costs about as much as a loopback HEAD."""
        return max(1, min(self.blob_threads, max(self.workers, count // 8), count))

    def _check_tags(self, client: RegistryClient, targets: Sequence[_Target]) -> Dict[str, Any]:
        """One manifest HEAD per target tag: its digest, None when absent, or the (explained) error."""

        def head(target: _Target) -> Tuple[str, Any]:
            try:
                found = client.head_manifest(target.repo, target.tag)
            except RegistryUnreachableError:
                raise
            except RegistryError as exc:
                return target.text, None if self.options.dry_run else self._explain(exc, target)
            return target.text, (found.digest if found is not None else None)

        with ThreadPoolExecutor(max_workers=self._head_threads(len(targets)), thread_name_prefix="tag-check") as pool:
            current = dict(pool.map(head, targets))
        present = [t for t in targets if current[t.text] == t.digest]
        log.info("%d of %d images already in %s", len(present), len(targets), self.registry_path)
        for t in present:
            self.options.progress.item_done(t.text, "present")
        return current

    def _walk(self, targets: Sequence[_Target]) -> Dict[str, _Graph]:
        """Every manifest and blob below each target, from the manifests in the bundle."""

        def walk(target: _Target) -> Tuple[str, _Graph]:
            source = self.bundle.image_source(target.image)
            graph = _Graph()
            top = source.resolve()
            if top.digest != target.digest:
                raise IntegrityError(f"bundle image {target.image.source}: its manifest is {top.digest}, the bundle manifest says {target.digest}")
            stack: List[FetchedManifest] = [top]
            while stack:
                manifest = stack.pop()
                graph.manifest_bytes += len(manifest.raw)
                parsed = parse_manifest(manifest.raw, manifest.media_type)
                if is_index(manifest.media_type):
                    stack.extend(source.fetch_manifest(child) for child in parsed.children)
                for blob in parsed.blobs:
                    graph.blobs.setdefault(str(blob.digest), blob)
            return target.text, graph

        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="walk") as pool:
            return dict(pool.map(walk, targets))

    def _check_base_blobs(
        self, client: RegistryClient, targets: Sequence[_Target], graphs: Mapping[str, _Graph], needed: Iterable[str], *, elsewhere: Sequence[_Target] = ()
    ) -> None:
        """An incremental bundle leaves some blobs to its base: each must be in the registry already, in a
        repository that needs it or in one of `elsewhere`'s (images already in place) whose image uses it.

        A blob found is remembered by the client, so repositories lacking it mount it from there."""
        wanted = set(needed)
        if not wanted:
            return
        users: Dict[str, List[_Target]] = {}
        for target in targets:
            for digest in graphs[target.text].blobs:
                if digest in wanted:
                    users.setdefault(digest, []).append(target)
        if not users:
            return

        holders: Dict[str, List[str]] = {}
        for target in elsewhere:
            graph = graphs.get(target.text)
            for digest in graph.blobs if graph is not None else ():
                if digest in wanted:
                    holders.setdefault(digest, []).append(target.repo)

        def find(item: Tuple[str, List[_Target]]) -> Tuple[str, bool]:
            digest, using = item
            for repo in dict.fromkeys([*(t.repo for t in using), *holders.get(digest, [])]):
                if client.has_blob(repo, Digest.parse(digest), scopes=(f"repository:{repo}:pull,push",)):
                    return digest, True
            return digest, False

        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="base-check") as pool:
            missing = sorted(d for d, ok in pool.map(find, sorted(users.items())) if not ok)
        log.info("%d blobs come from the base bundle; %d of them missing in %s", len(users), len(missing), self.host)
        if missing:
            base = self.bundle.manifest.base_id or "(unknown)"
            lines = [f"{d} (needed by {', '.join(sorted({t.text for t in users[d]}))})" for d in missing]
            raise UsageError(
                f"this incremental bundle needs {len(missing)} blob(s) from its base bundle {base} that "
                f"{self.registry_path} does not have: " + "; ".join(lines),
                hint=f"unpack the base bundle {base} first (same registry and prefix), then rerun",
            )

    # -- pushing and reading back -----------------------------------------------------------------------

    def _push(self, client: RegistryClient, targets: Sequence[_Target], graphs: Mapping[str, _Graph]) -> Dict[str, _Outcome]:
        outcomes: Dict[str, _Outcome] = {}
        if not targets:
            return outcomes
        # `workers` bounds the uploads in flight (the semaphore); the engine gets more threads than that so
        # that checks, mounts and repositories waiting for another's upload never take an upload's place.
        uploads = _BlobUploads(client, same_org_first=self.kind == "quay", max_uploads=self.workers)
        # Biggest images first: they bound the wall time, and their blobs become mount sources early.
        ordered = sorted(targets, key=lambda t: -(_size(t, graphs) or 0))
        jobs = [(self.bundle.image_source(t.image), _PushTarget(RegistryRepository(client, t.reference), uploads), t.digest) for t in ordered]
        image_workers = self.options.image_workers or self.image_threads
        log.info("pushing %d images to %s (%d uploads at a time)", len(jobs), self.registry_path, self.workers)
        with Copier(CopyOptions(workers=self.blob_threads, image_workers=image_workers, progress=self.options.progress)) as copier:
            results = copier.copy_many(jobs)
        for target, result in zip(ordered, results):
            outcomes[target.text] = self._outcome(result, target)
        return outcomes

    def _outcome(self, result: CopyResult, target: _Target) -> _Outcome:
        if result.status != "failed":
            return _Outcome("pushed", result.stats)
        error = self._explain(result.error, target) if result.error is not None else None
        if isinstance(error, RegistryError) and "DIGEST_INVALID" in error.codes:
            # the registry hashed what we sent from the bundle and it did not match: the bundle is damaged
            error = IntegrityError(
                f"{target.text}: the registry refused a blob read from the bundle as not matching its digest ({error.message})",
                hint="the bundle is damaged: run ocp-bundler verify to find the volume to copy again",
            )
        return _Outcome("failed", result.stats, str(error) if error else "failed", error)

    def _read_back(self, client: RegistryClient, targets: Sequence[_Target], outcomes: Dict[str, _Outcome]) -> List[str]:
        """HEAD every pushed tag (full Accept) and compare its digest with the bundle's; mark mismatches."""

        def head(target: _Target) -> Tuple[_Target, Optional[Digest], Optional[RegistryError]]:
            try:
                found = client.head_manifest(target.repo, target.tag)
            except RegistryError as exc:
                return target, None, exc
            return target, (found.digest if found is not None else None), None

        mismatches: List[str] = []
        with ThreadPoolExecutor(max_workers=self._head_threads(len(targets)), thread_name_prefix="read-back") as pool:
            for target, digest, error in pool.map(head, targets):
                outcome = outcomes[target.text]
                if error is not None:
                    outcome.status, outcome.error, outcome.exception = "failed", f"read-back failed: {error}", error
                elif digest != target.digest:
                    outcome.status = "mismatch"
                    outcome.error = f"{target.text} reads back as {digest or 'nothing'}, the signed bundle manifest says {target.digest}"
                    mismatches.append(f"{outcome.error} (source {target.image.source})")
        log.info("read back %d tags: %d mismatches", len(targets), len(mismatches))
        return mismatches

    # -- errors -------------------------------------------------------------------------------------------------

    def _explain(self, exc: BundlerError, target: _Target) -> BundlerError:
        """Quay answers 401 to pushes into an organisation that does not exist (PROTOCOL-NOTES §4): say so."""
        if not isinstance(exc, AuthenticationError) or exc.status != 401:
            return exc
        org = target.org
        fix = "create it or rerun with --registry-kind quay and a token"
        if self.kind == "quay":
            exists = self._org_exists(org)
            if exists:
                return AuthenticationError(
                    f"{self.host}: the credentials in use may not push into organisation '{org}' ({exc.message})",
                    status=401,
                    codes=exc.codes,
                    url=exc.url,
                    hint=f"give them the creator role in '{org}' (a team or a robot), or rerun with --registry-kind quay and a token",
                )
            return AuthenticationError(
                f"organisation '{org}' does not exist on {self.host}: {fix}",
                status=401,
                codes=exc.codes,
                url=exc.url,
                hint=None if exists is False else "Quay answers 401 to pushes into a missing organisation; if it does exist, the credentials in use may not create repositories in it",
            )
        return AuthenticationError(
            exc.message,
            status=401,
            codes=exc.codes,
            url=exc.url,
            hint=f"check the credentials; if {self.host} is Quay, organisation '{org}' may not exist: {fix}",
        )

    def _raise_for_failures(self, result: UnpackResult, mismatches: Sequence[str]) -> None:
        if mismatches:
            raise ReadBackMismatchError(
                f"{len(mismatches)} image(s) read back with another digest than the signed bundle manifest's: " + "; ".join(mismatches),
                result=result,
                hint="something else writes these tags or the registry alters manifests; investigate, then rerun to push them again",
            )
        failed = [i for i in result.images if i.status == "failed"]
        if not failed:
            return
        lines = [f"{i.target}: {i.error}" for i in failed]
        errors = self.errors
        broken = [str(e) for e in errors if isinstance(e, IntegrityError)]
        if broken:
            others = len(failed) - len(broken)
            raise UnpackIntegrityError(
                f"{len(broken)} image(s) could not be pushed because their content is not what the bundle says: " + "; ".join(broken)
                + (f" ({others} more failed for other reasons)" if others else ""),
                result=result,
                hint="run ocp-bundler verify on the bundle; copy the damaged volumes again, then rerun",
            )
        if len(failed) == len(result.images) and errors and all(isinstance(e, AuthenticationError) for e in errors):
            # nothing could be pushed, all for lack of rights: that is a registry/auth failure (exit 5)
            distinct = list(dict.fromkeys(str(e) for e in errors))
            first = errors[0]
            assert isinstance(first, AuthenticationError)
            raise AuthenticationError(
                "no image could be pushed: " + "; ".join(distinct[:5]) + (f"; … and {len(distinct) - 5} more" if len(distinct) > 5 else ""),
                status=first.status,
                codes=first.codes,
                url=first.url,
            )
        raise UnpackPartialFailureError(
            f"{len(failed)} of {len(result.images)} images failed: " + "; ".join(lines),
            result=result,
            failures=lines,
            hint="everything else is in the registry; fix the cause and rerun the same command: it pushes only what is missing",
        )

    # -- results ------------------------------------------------------------------------------------------------

    def _images(self, targets: Sequence[_Target], current: Mapping[str, Any], outcomes: Mapping[str, _Outcome], graphs: Mapping[str, _Graph]) -> List[UnpackedImage]:
        """One entry per bundle image; an image sharing its target with an earlier one shares its status
        (its transfer counts are the earlier one's, reported once)."""
        images: List[UnpackedImage] = []
        seen: Set[str] = set()
        for t in targets:
            first = t.text not in seen
            seen.add(t.text)
            found = current[t.text]
            if isinstance(found, BundlerError):
                if first:
                    self.errors.append(found)
                images.append(_image(t, "failed", size=_size(t, graphs), error=str(found)))
            elif found == t.digest:
                images.append(_image(t, "present", size=_size(t, graphs)))
            else:
                outcome = outcomes[t.text]
                if outcome.exception is not None and first:
                    self.errors.append(outcome.exception)
                stats = outcome.stats if first else CopyStats()
                images.append(_image(t, outcome.status, size=_size(t, graphs), stats=stats, error=outcome.error))
        return images

    def _result(self, images: Sequence[UnpackedImage], orgs: Tuple[str, ...]) -> UnpackResult:
        return UnpackResult(
            bundle_id=str(self.bundle.manifest.id),
            base_id=self.bundle.manifest.base_id,
            registry=self.registry_path,
            registry_kind=self.kind,
            dry_run=self.options.dry_run,
            verified=self.verified,
            verification=self.verification,
            images=tuple(images),
            organizations=orgs,
            organizations_created=tuple(self.organizations_created),
            organizations_to_create=tuple(self.organizations_to_create),
            warnings=tuple(self.warnings),
            seconds=time.monotonic() - self.started,
        )

    def _record(self, targets: Sequence[_Target], result: UnpackResult) -> None:
        """Write the tags now in place into the mirror ledger, so `prune` knows what unpack put there."""
        from bundler.flows.ledger import LedgerEntry, optional_path, record

        done = {image.target for image in result.images if image.status in ("pushed", "present")}
        entries = [
            LedgerEntry(repository=t.repo, tag=t.tag, digest=str(t.digest), bundle=result.bundle_id)
            for t in targets
            if t.text in done
        ]
        record(optional_path(self.options.ledger, self.registry_path), entries)

    def _write_resources(self, result: UnpackResult, targets: Sequence[_Target]) -> UnpackResult:
        from bundler.openshift.resources import ResourcesOptions, write_cluster_resources

        out_dir = Path(self.options.resources_dir or DEFAULT_RESOURCES_DIR)
        images, catalogs = _resource_inputs(targets)
        signatures = self._signatures()
        try:
            written = write_cluster_resources(images, catalogs, signatures, ResourcesOptions(registry=self.registry_path, out_dir=out_dir, icsp=self.options.icsp, fresh=self.options.resources_fresh))
        except UsageError as exc:
            raise type(exc)(f"every image is in {self.registry_path}, but the cluster resources could not be written: {exc.message}", hint=exc.hint) from exc
        return dataclasses.replace(
            result,
            resources_dir=out_dir,
            resource_files=written.files,
            resource_changes=written.changes,
            warnings=result.warnings + written.warnings,
            seconds=time.monotonic() - self.started,
        )

    def _signatures(self) -> List[Any]:
        """Release signatures the bundle carries (`signatures/<alg>-<hex>-<N>`) as `ReleaseSignature`s."""
        from bundler.openshift.resources import ReleaseSignature

        out: List[Any] = []
        for entry in self.bundle.manifest.files:
            name = entry.name
            match = _SIGNATURE_FILE.match(name)
            if match is None:
                continue
            algorithm, encoded, index = match.groups()
            out.append(ReleaseSignature(digest=f"{algorithm}:{encoded}", index=int(index), data=self.bundle.read_file(name)))
        return out


def _resource_inputs(targets: Sequence[_Target]) -> Tuple[List[Any], List[Any]]:
    """`MirroredImage`s for every target, `CatalogInfo`s for catalogs (DNS-1123 names, unique)."""
    from bundler.openshift.resources import CatalogInfo, MirroredImage

    images: List[Any] = []
    catalogs: List[Any] = []
    names: Dict[str, int] = {}
    for target in targets:
        image = target.image
        images.append(MirroredImage(source=image.source, target=target.text, kind=image.kind, digest=str(target.digest), tag=Reference.parse(image.source).tag))  # the source's own tag (an imagestream tag name is not it)
        if image.kind != "catalog":
            continue
        last = target.repo.rsplit("/", 1)[-1]
        name = dns1123_label(image.facts.catalog_name or last)
        if name in names:
            name = dns1123_label(f"{name[:50]}-{target.tag}")
        while name in names:
            names[name] += 1
            name = dns1123_label(f"{name[:58]}-{names[name]}")
        names[name] = 1
        display = image.facts.display_name or f"{last}:{target.tag}"
        catalogs.append(CatalogInfo(name=name, source=image.source, target=target.text, display_name=display))
    return images, catalogs


def _known_size(t: _Target) -> Optional[int]:
    return t.image.total_size


def _size(t: _Target, graphs: Mapping[str, _Graph]) -> Optional[int]:
    known = _known_size(t)
    if known is not None:
        return known
    graph = graphs.get(t.text)
    return graph.size if graph is not None else None


def _image(t: _Target, status: str, *, size: Optional[int], stats: Optional[CopyStats] = None, error: Optional[str] = None) -> UnpackedImage:
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


# --- the push sink ------------------------------------------------------------------------------------------


class _BlobUploads:
    """One upload per blob for the whole registry: other repositories wait for it, then mount it.

    At most `max_uploads` uploads move bytes at once. A waiter only ever waits for an upload that is already
    registered by a running transfer (the owner registers from inside its own thread), so the shared blob pool
    cannot deadlock, and waiters hold no upload slot; they wait only while that upload makes progress:
    after `patience` seconds without a byte moving, the waiter transfers the blob itself. Mount sources in
    the same organisation are preferred on Quay, where a robot may only read its own organisation.
    """

    def __init__(self, client: RegistryClient, *, same_org_first: bool, max_uploads: int, patience: float = 30.0) -> None:
        self.client = client
        self.same_org_first = same_org_first
        self.patience = patience
        self._slots = threading.BoundedSemaphore(max(1, max_uploads))
        self._lock = threading.Lock()
        self._inflight: SingleFlight[str, str] = SingleFlight()
        self._last_progress: Dict[str, float] = {}
        self._stored: Dict[str, List[str]] = {}  # digest -> repositories that have it (from this run)

    def put(self, repo: str, descriptor: Descriptor, opener: Opener, on_bytes: Optional[Callable[[int], None]]) -> str:
        key = str(descriptor.digest)
        while True:
            with self._lock:
                owner, fut = self._inflight.claim(key)
                if owner:
                    self._last_progress[key] = time.monotonic()
            if owner:
                break
            if not self._wait(key, fut):
                log.debug("upload of %s elsewhere makes no progress; uploading to %s too", descriptor.digest.short, repo)
                return self._store(repo, descriptor, opener, on_bytes)
            if fut.exception() is not None:
                continue  # the other transfer failed: try again (perhaps as the owner)
            return self._store(repo, descriptor, opener, on_bytes)

        def counting(n: int) -> None:
            self._last_progress[key] = time.monotonic()
            if on_bytes is not None:
                on_bytes(n)

        try:
            how = self._store(repo, descriptor, opener, counting)
        except BaseException as exc:
            fut.set_exception(exc)  # the key is free again: a waiter retries as the new owner
            raise
        fut.set_result(how)
        return how

    def _wait(self, key: str, fut: "Future[str]") -> bool:
        """Wait for the owner's upload; False when it stopped making progress."""
        while True:
            try:
                fut.exception(timeout=min(5.0, self.patience))
                return True
            except FutureTimeout:
                if time.monotonic() - self._last_progress.get(key, 0.0) > self.patience:
                    return False

    def _store(self, repo: str, descriptor: Descriptor, opener: Opener, on_bytes: Optional[Callable[[int], None]]) -> str:
        key = str(descriptor.digest)
        source = self._mount_source(key, repo)
        if source is not None:  # a mount moves no bytes: no upload slot needed
            how = self.client.upload_blob(repo, descriptor, opener, mount_from=source, on_bytes=on_bytes)
        else:
            with self._slots:
                how = self.client.upload_blob(repo, descriptor, opener, on_bytes=on_bytes)
        with self._lock:
            self._stored.setdefault(key, []).append(repo)
        return "copied" if how == "uploaded" else how

    def _mount_source(self, digest: str, repo: str) -> Optional[str]:
        with self._lock:
            candidates = [r for r in self._stored.get(digest, ()) if r != repo]
        known = self.client.known_blobs.get(digest)
        if known and known != repo and known not in candidates:
            candidates.append(known)
        if self.same_org_first:
            org = repo.split("/", 1)[0]
            candidates.sort(key=lambda r: r.split("/", 1)[0] != org)
        return candidates[0] if candidates else None

    def stored_elsewhere(self, digest: str, repo: str) -> bool:
        with self._lock:
            return any(r != repo for r in self._stored.get(digest, ()))


class _PushTarget:
    """A registry repository as the copy engine's sink, with registry-wide upload de-duplication."""

    def __init__(self, inner: RegistryRepository, uploads: _BlobUploads) -> None:
        self.inner = inner
        self.uploads = uploads
        self.description = inner.description
        self.blob_scope = inner.blob_scope

    def has_blob(self, descriptor: Descriptor) -> bool:
        if self.uploads.stored_elsewhere(str(descriptor.digest), self.inner.repo):
            return False  # stored in another repository during this run: mount it, no HEAD needed
        return self.inner.has_blob(descriptor)

    def put_blob(self, descriptor: Descriptor, opener: Opener, on_bytes: Optional[Callable[[int], None]]) -> str:
        return self.uploads.put(self.inner.repo, descriptor, opener, on_bytes)

    def has_manifest(self, digest: Digest) -> bool:
        return self.inner.has_manifest(digest)

    def put_manifest(self, manifest: FetchedManifest, *, top: bool) -> None:
        self.inner.put_manifest(manifest, top=top)

    def top_is_current(self, manifest: FetchedManifest) -> bool:
        return self.inner.top_is_current(manifest)


# --- helpers ----------------------------------------------------------------------------------------------------


def split_registry(registry: str, prefix: str = "") -> Tuple[str, str]:
    """`host[:port][/path]` plus a prefix → (host, joined path prefix), both validated."""
    text = registry.strip()
    if not text or "://" in text or any(c.isspace() for c in text):
        raise UsageError(f"registry {registry!r} is not host[:port]", hint="give it without scheme, e.g. mirror.example.com:8443")
    host, _, path = text.partition("/")
    joined = "/".join(p for p in (path.strip("/"), prefix.strip("/")) if p)
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


def _host_port(host: str, *, default_port: int) -> Tuple[str, int]:
    """`name:port`, `[v6]:port` or a bare name → (name, port)."""
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        return name, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else default_port
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit():
        return name, int(port)
    return host, default_port


def dns1123_label(text: str) -> str:
    """A Kubernetes object name (DNS-1123 label) made from `text`."""
    label = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:63].strip("-")
    return label or "catalog"

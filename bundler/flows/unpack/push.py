"""Pushing the targets: the copy engine (bottom-up, raw bytes, always with a tag, blobs read in place from the
volumes) into a registry sink with one upload per blob for the whole registry: a repository that needs a blob
another repository is uploading waits for that upload and then mounts it (cross-repository mount,
PROTOCOL-NOTES §2). At most `workers` uploads move bytes at once; checks, mounts and waiting repositories run
on other threads.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Callable, Dict, List, Mapping, Optional, Sequence

from bundler.base.errors import BundlerError, IntegrityError, RegistryError
from bundler.base.progress import Progress
from bundler.base.singleflight import SingleFlight
from bundler.flows.unpack.model import Graph, OpenBundle, Outcome, Target, size_of
from bundler.oci.digest import Digest
from bundler.oci.media import Descriptor
from bundler.registry.client import FetchedManifest, RegistryClient
from bundler.transfer.copy import Copier, CopyOptions, CopyResult
from bundler.transfer.transports import Opener, RegistryRepository

log = logging.getLogger(__name__)


class BlobUploads:
    """One upload per blob for the whole registry: other repositories wait for it, then mount it.

    At most `max_uploads` uploads move bytes at once. A waiter only ever waits for an upload that is already
    registered by a running transfer (the owner registers from inside its own thread), so the shared blob pool
    cannot deadlock, and waiters hold no upload slot; they wait only while that upload makes progress:
    after `patience` seconds without a byte moving, the waiter transfers the blob itself. On Quay, where a robot
    may only read its own organisation, mounts come only from repositories of the same organisation.
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
        if self.same_org_first:  # Quay: each organisation has its own robot, which reads only its own organisation
            org = repo.split("/", 1)[0]
            candidates = [r for r in candidates if r.split("/", 1)[0] == org]
        return candidates[0] if candidates else None

    def stored_elsewhere(self, digest: str, repo: str) -> bool:
        with self._lock:
            return any(r != repo for r in self._stored.get(digest, ()))


class PushTarget:
    """A registry repository as the copy engine's sink, with registry-wide upload de-duplication.

    The top manifest is not looked for (the tag check did that). Blobs up to `upload_unchecked` bytes are
    sent without a HEAD first, where the registry takes a whole upload in one request (Quay): one request
    either way, and the request count, not bytes, bounds a push into Quay."""

    def __init__(self, inner: RegistryRepository, uploads: BlobUploads, top: Digest, *, upload_unchecked: int = 0) -> None:
        self.inner = inner
        self.top = top
        self.upload_unchecked = upload_unchecked
        self.uploads = uploads
        self.description = inner.description
        self.blob_scope = inner.blob_scope

    def has_blob(self, descriptor: Descriptor) -> bool:
        if self.uploads.stored_elsewhere(str(descriptor.digest), self.inner.repo):
            return False  # stored in another repository during this run: mount it, no HEAD needed
        if descriptor.size <= self.upload_unchecked:
            return False  # sending it costs one request, as the HEAD would: send it (a blob it has is stored again)
        return self.inner.has_blob(descriptor)

    def put_blob(self, descriptor: Descriptor, opener: Opener, on_bytes: Optional[Callable[[int], None]]) -> str:
        return self.uploads.put(self.inner.repo, descriptor, opener, on_bytes)

    def has_manifest(self, digest: Digest) -> bool:
        if digest == self.top:
            return False  # the tag check found the tag elsewhere or absent: push the manifest under its tag
        return self.inner.has_manifest(digest)

    def put_manifest(self, manifest: FetchedManifest, *, top: bool) -> None:
        self.inner.put_manifest(manifest, top=top)

    def top_is_current(self, manifest: FetchedManifest) -> bool:
        return self.inner.top_is_current(manifest)



def push(
    client: RegistryClient,
    bundle: OpenBundle,
    targets: Sequence[Target],
    graphs: Mapping[str, Graph],
    *,
    workers: int,
    blob_threads: int,
    image_workers: int,
    same_org_first: bool,
    upload_unchecked: int = 0,
    progress: Progress,
    explain: Callable[[BundlerError, Target], BundlerError],
) -> Dict[str, Outcome]:
    """Push every target; one outcome per target text."""
    outcomes: Dict[str, Outcome] = {}
    if not targets:
        return outcomes
    # `workers` bounds the uploads in flight (the semaphore); the engine gets more threads than that so
    # that checks, mounts and repositories waiting for another's upload never take an upload's place.
    # Biggest images first: they bound the wall time, and their blobs become mount sources early.
    ordered = sorted(targets, key=lambda t: -(size_of(t, graphs) or 0))
    log.info("pushing %d images to %s (%d uploads at a time)", len(ordered), client.host, workers)
    with Copier(CopyOptions(workers=blob_threads, image_workers=image_workers, progress=progress)) as copier:
        for attempt in range(RACE_RETRIES + 1):
            uploads = BlobUploads(client, same_org_first=same_org_first, max_uploads=workers)
            jobs = [(bundle.image_source(t.image), PushTarget(RegistryRepository(client, t.reference), uploads, t.digest, upload_unchecked=upload_unchecked), t.digest) for t in ordered]
            results = copier.copy_many(jobs)
            for target, result in zip(ordered, results):
                outcomes[target.text] = outcome_of(result, target, explain)
            ordered = [t for t, r in zip(ordered, results) if _raced(r.error)]
            if not ordered or attempt == RACE_RETRIES:
                break
            # Another writer of the same repositories (a second unpack) made the registry lose track of blobs
            # for a moment: push those images again; blobs now in place are not sent twice.
            log.info("%d image(s) met a registry-side conflict (%s); pushing them again", len(ordered), ", ".join(RACE_CODES))
            time.sleep(0.5 * 2**attempt)
    return outcomes


RACE_CODES = ("MANIFEST_BLOB_UNKNOWN", "DIGEST_INVALID")
"""What docker-registry answers while two clients write the same repository: a manifest PUT reads a blob
link the other client is rewriting. Images that fail so are pushed again, up to `RACE_RETRIES` times."""
RACE_RETRIES = 3


def _raced(error: Optional[BundlerError]) -> bool:
    return isinstance(error, RegistryError) and bool(set(RACE_CODES) & set(error.codes))


class RegistryConflictError(RegistryError):
    """The registry contradicted itself while another client wrote the same repositories (exit 4 after retries)."""


def outcome_of(result: CopyResult, target: Target, explain: Callable[[BundlerError, Target], BundlerError]) -> Outcome:
    if result.status != "failed":
        return Outcome("pushed", result.stats)
    error = explain(result.error, target) if result.error is not None else None
    if isinstance(error, RegistryError) and "MANIFEST_BLOB_UNKNOWN" in error.codes:
        # the manifest's bytes are checked here; the registry lost its own record of blobs it had accepted
        error = RegistryConflictError(
            f"{target.text}: the registry lost track of blobs it had accepted while another run wrote the same repositories ({error.message})",
            status=error.status,
            codes=error.codes,
            url=error.url,
            hint="the bundle is intact; rerun once the other run has finished: only what is missing is pushed",
        )
    elif isinstance(error, RegistryError) and "DIGEST_INVALID" in error.codes:
        # the registry hashed what we sent from the bundle and it did not match: the bundle is damaged
        error = IntegrityError(
            f"{target.text}: the registry refused a blob read from the bundle as not matching its digest ({error.message})",
            hint="the bundle is damaged: run ocp-bundler verify to find the volume to copy again",
        )
    return Outcome("failed", result.stats, str(error) if error else "failed", error)

"""The copy engine: move an image graph from any `ImageSource` to any `ImageSink`, digest-exact.

Walks the descriptor graph from the top manifest: lists → child manifests → config and layers. Pushes
bottom-up (blobs, then child manifests, then the list), skips whatever the sink already has (a present
manifest means everything below it is present, because nothing is ever stored top-down), and keeps the raw
manifest bytes so digests never change. Blobs move in parallel on one shared pool; the same blob needed by
several images at once is transferred once (in-flight de-duplication per sink scope). Images run in
parallel on a second pool, so an image waiting for its blobs never starves the blob workers.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from bundler.base.singleflight import SingleFlight
from bundler.oci.digest import Digest
from bundler.base.errors import BundlerError, DigestMismatchError
from bundler.oci.graph import walk_manifests
from bundler.oci.media import Descriptor
from bundler.base.progress import NullProgress, Progress
from bundler.registry.client import FetchedManifest
from bundler.transfer.transports import ImageSink, ImageSource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CopyOptions:
    workers: int = 8
    """Blob transfers at once."""
    image_workers: int = 16
    """Images in flight at once. Image threads mostly wait for their blobs, so more of them than blob workers
    keeps the blob pool full (measured: 2x the blob workers halves a 30-image copy's wall time)."""
    progress: Progress = field(default_factory=NullProgress)


@dataclass
class CopyStats:
    blobs_copied: int = 0
    blobs_mounted: int = 0
    blobs_present: int = 0
    bytes_copied: int = 0
    manifests_pushed: int = 0

    def add(self, other: "CopyStats") -> None:
        self.blobs_copied += other.blobs_copied
        self.blobs_mounted += other.blobs_mounted
        self.blobs_present += other.blobs_present
        self.bytes_copied += other.bytes_copied
        self.manifests_pushed += other.manifests_pushed


@dataclass
class CopyResult:
    source: str
    destination: str
    status: str  # "copied", "present" or "failed"
    digest: Optional[Digest] = None
    media_type: str = ""
    stats: CopyStats = field(default_factory=CopyStats)
    error: Optional[BundlerError] = None

    def to_json(self) -> Dict[str, object]:
        out: Dict[str, object] = {
            "source": self.source,
            "destination": self.destination,
            "status": self.status,
            "digest": str(self.digest) if self.digest else None,
            "mediaType": self.media_type,
            "blobsCopied": self.stats.blobs_copied,
            "blobsMounted": self.stats.blobs_mounted,
            "blobsPresent": self.stats.blobs_present,
            "bytesCopied": self.stats.bytes_copied,
        }
        if self.error is not None:
            out["error"] = str(self.error)
        return out


class Copier:
    """Copies images; one instance per command so the blob pool and de-duplication are shared."""

    def __init__(self, options: CopyOptions = CopyOptions()) -> None:
        self.options = options
        self._blob_pool = ThreadPoolExecutor(max_workers=max(1, options.workers), thread_name_prefix="blob")
        self._inflight: SingleFlight[Tuple[str, str], str] = SingleFlight()

    def close(self) -> None:
        self._blob_pool.shutdown(wait=True)

    def __enter__(self) -> "Copier":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one image -----------------------------------------------------------------------------------------

    def copy(self, source: ImageSource, sink: ImageSink, *, expected: Optional[Digest] = None) -> CopyResult:
        """Copy one image (a single manifest or a whole list). Raises BundlerError on failure."""
        stats = CopyStats()
        top = source.resolve()
        if expected is not None and expected != top.digest:
            raise DigestMismatchError(f"{source.description} is {top.digest}, expected {expected}")
        if sink.has_manifest(top.digest):
            status = "present"
            if not sink.top_is_current(top):
                sink.put_manifest(top, top=True)
                stats.manifests_pushed += 1
        else:
            status = "copied"
            self._copy_graph(source, sink, top, stats)
        self.options.progress.item_done(source.description, status)
        return CopyResult(source.description, sink.description, status, top.digest, top.media_type, stats)

    def _copy_graph(self, source: ImageSource, sink: ImageSink, top: FetchedManifest, stats: CopyStats) -> None:
        """Every manifest the sink lacks, bottom-up: each one's blobs, then the manifest itself."""

        def missing(child: Descriptor) -> Optional[FetchedManifest]:
            return None if sink.has_manifest(child.digest) else source.fetch_manifest(child)

        for node in walk_manifests(top, missing, children_first=True, description=source.description):
            self._copy_blobs(source, sink, node.blobs, stats)
            sink.put_manifest(node.manifest, top=node.top)
            stats.manifests_pushed += 1

    def _copy_blobs(self, source: ImageSource, sink: ImageSink, blobs: Sequence[Descriptor], stats: CopyStats) -> None:
        """An image's config and layers, in parallel; the first failure is raised once all have settled."""
        futures = [self._ensure_blob(source, sink, d) for d in blobs]
        first_error: Optional[BaseException] = None
        for d, fut in zip(blobs, futures):
            try:
                how = fut.result()
            except BaseException as exc:  # collected, re-raised below after all blobs settle
                first_error = first_error or exc
                continue
            if how == "present":
                stats.blobs_present += 1
            elif how == "mounted":
                stats.blobs_mounted += 1
            elif how == "copied":
                stats.blobs_copied += 1
                stats.bytes_copied += d.size
        if first_error is not None:
            raise first_error

    def _ensure_blob(self, source: ImageSource, sink: ImageSink, d: Descriptor) -> "Future[str]":
        owner, fut = self._inflight.claim((sink.blob_scope, str(d.digest)))
        if not owner:
            return _shared(fut)
        try:
            self._blob_pool.submit(self._settle, fut, source, sink, d)
        except RuntimeError as exc:  # the pool is shut down: free the key again
            fut.set_exception(exc)
            raise
        return fut

    def _settle(self, fut: "Future[str]", source: ImageSource, sink: ImageSink, d: Descriptor) -> None:
        try:
            fut.set_result(self._move_blob(source, sink, d))
        except BaseException as exc:  # handed to every waiter through the future
            fut.set_exception(exc)

    def _move_blob(self, source: ImageSource, sink: ImageSink, d: Descriptor) -> str:
        progress = self.options.progress
        if sink.has_blob(d):
            progress.advance(0)
            return "present"
        progress.add_total(d.size)
        how = sink.put_blob(d, lambda offset: source.open_blob(d, offset), progress.advance)
        if how == "mounted":
            progress.advance(d.size)
        return how

    # -- many images ---------------------------------------------------------------------------------------

    def copy_many(
        self,
        jobs: Sequence[Tuple[ImageSource, ImageSink, Optional[Digest]]],
        *,
        on_result: Optional[Callable[[CopyResult], None]] = None,
    ) -> List[CopyResult]:
        """Copy every job; failures are returned as results with status "failed", never raised."""

        def run(job: Tuple[ImageSource, ImageSink, Optional[Digest]]) -> CopyResult:
            src, dst, expected = job
            try:
                result = self.copy(src, dst, expected=expected)
            except BundlerError as exc:
                log.debug("copy of %s failed", src.description, exc_info=True)
                result = CopyResult(src.description, dst.description, "failed", error=exc)
                self.options.progress.item_done(src.description, "failed")
            if on_result is not None:
                on_result(result)
            return result

        with ThreadPoolExecutor(max_workers=max(1, self.options.image_workers), thread_name_prefix="image") as pool:
            return list(pool.map(run, jobs))


def _shared(fut: "Future[str]") -> "Future[str]":
    """A second waiter on an in-flight blob sees "present" once the first transfer succeeds."""
    out: "Future[str]" = Future()

    def done(f: "Future[str]") -> None:
        exc = f.exception()
        if exc is not None:
            out.set_exception(exc)
        else:
            out.set_result("present")

    fut.add_done_callback(done)
    return out

"""Putting content into a registry: blob uploads and manifest pushes.

Owns blob uploads over the distribution API — a cross-repository mount when the blob is known to be in
another repository of the registry, the whole blob in the first request when the registry completes that
(Quay), otherwise monolithic (one PUT) or, for big blobs, chunked (PATCH, resuming from the offset the
registry reports after a broken chunk, never resending blindly) — the record of where each blob is known to
be, and manifests PUT as exact bytes with their media type, the digest the registry reports checked.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, ContextManager, Dict, Iterator, Optional, Tuple
from urllib.parse import urlencode, urljoin

import urllib3

from bundler.base.errors import DigestMismatchError, RegistryError
from bundler.oci.digest import CHUNK_SIZE, Digest, Readable
from bundler.oci.media import Descriptor
from bundler.registry.http import redact
from bundler.registry.session import HostSession, SharedState, _pull, _push

log = logging.getLogger(__name__)

#: Blobs larger than this are uploaded in chunks so a failure resumes instead of restarting.
CHUNKED_UPLOAD_THRESHOLD = 256 << 20
UPLOAD_CHUNK_SIZE = 64 << 20
#: Blobs up to this size go in the upload's first request (`?digest=` and the body: Quay answers 201).
MONOLITHIC_POST_LIMIT = 32 << 20


class BlobPush(HostSession):
    """Uploads and manifest pushes to one registry host."""

    def __init__(self, host: str, shared: SharedState) -> None:
        super().__init__(host, shared)
        #: where each blob is known to exist on this registry (for cross-repository mounts)
        self.known_blobs: Dict[str, str] = {}
        self._known_lock = threading.Lock()
        #: whether a POST with `?digest=` and the body completes an upload (Quay: 201); None until known
        self.monolithic_post: Optional[bool] = None

    def remember_blob(self, digest: Digest, repo: str) -> None:
        with self._known_lock:
            self.known_blobs.setdefault(str(digest), repo)

    def upload_blob(
        self,
        repo: str,
        descriptor: Descriptor,
        opener: Callable[[int], ContextManager[Readable]],
        *,
        mount_from: Optional[str] = None,
        on_bytes: Optional[Callable[[int], None]] = None,
    ) -> str:
        """Put a blob into `repo`: a cross-repository mount when possible, else an upload. Returns how."""
        digest = descriptor.digest
        scopes = _push(repo) + (_pull(mount_from) if mount_from else ())
        start = f"/v2/{repo}/blobs/uploads/"
        if mount_from:
            start += "?" + urlencode({"mount": str(digest), "from": mount_from})
        elif self.monolithic_post and descriptor.size <= MONOLITHIC_POST_LIMIT:
            how = self._post_monolithic(repo, descriptor, opener, scopes, on_bytes)
            if how is not None:
                return how
        attempt = 0
        while True:
            attempt += 1
            resp = self.request("POST", start, scopes=scopes, what=f"upload start {repo}")
            if resp.status == 201:
                self.remember_blob(digest, repo)
                return "mounted"
            if resp.status != 202:
                raise self._fail(resp, f"upload of {digest.short} to {repo}", start, repo=repo)
            location = self._location(resp, start)
            try:
                if descriptor.size > CHUNKED_UPLOAD_THRESHOLD:
                    self._upload_chunked(repo, descriptor, opener, location, scopes, on_bytes)
                else:
                    self._upload_monolithic(repo, descriptor, opener, location, scopes, on_bytes)
                break
            except RegistryError as exc:
                # A body cut half way cancels the upload session on most registries (docker-registry then
                # answers 404 BLOB_UPLOAD_INVALID): open a new session and send the blob again.
                session_lost = exc.status == 404 and bool({"BLOB_UPLOAD_INVALID", "BLOB_UPLOAD_UNKNOWN"} & set(exc.codes))
                if not (exc.temporary or session_lost) or attempt >= self._opts.max_attempts:
                    raise
                self._sleep(attempt, None, f"upload of {digest.short} to {repo}: {exc}")
        self.remember_blob(digest, repo)
        return "uploaded"

    def _post_monolithic(
        self,
        repo: str,
        d: Descriptor,
        opener: Callable[[int], ContextManager[Readable]],
        scopes: Tuple[str, ...],
        on_bytes: Optional[Callable[[int], None]],
    ) -> Optional[str]:
        """The whole upload in one request (`POST ?digest=` with the body; distribution spec "single POST"):
        "uploaded" when the registry answers 201, None when it did not complete it (the caller uploads the
        usual way; a registry that ignored the body is not asked this way again)."""
        url = f"/v2/{repo}/blobs/uploads/?" + urlencode({"digest": str(d.digest)})
        resp = self._send_whole_blob("POST", url, d, opener, scopes, on_bytes)
        if resp.status == 201:
            self._check_upload_done(resp, repo, d, url)
            self.remember_blob(d.digest, repo)
            return "uploaded"
        if resp.status == 202:
            log.debug("%s completes no upload in its first request: uploading in two steps from now on", self.host)
            self.monolithic_post = False
        elif resp.status in (401, 403):
            raise self._fail(resp, f"upload of {d.digest.short} to {repo}", url, repo=repo)
        return None

    def _location(self, resp: urllib3.BaseHTTPResponse, base_path: str) -> str:
        loc = resp.headers.get("Location")
        if not loc:
            raise RegistryError(f"{self.host}: upload answered without a Location header", url=redact(base_path))
        return urljoin(self._base() + base_path, loc)

    def _upload_monolithic(
        self,
        repo: str,
        d: Descriptor,
        opener: Callable[[int], ContextManager[Readable]],
        location: str,
        scopes: Tuple[str, ...],
        on_bytes: Optional[Callable[[int], None]],
    ) -> None:
        url = _with_query(location, {"digest": str(d.digest)})
        resp = self._send_whole_blob("PUT", url, d, opener, scopes, on_bytes)
        self._check_upload_done(resp, repo, d, url)

    def _send_whole_blob(
        self,
        method: str,
        url: str,
        d: Descriptor,
        opener: Callable[[int], ContextManager[Readable]],
        scopes: Tuple[str, ...],
        on_bytes: Optional[Callable[[int], None]],
    ) -> urllib3.BaseHTTPResponse:
        """One request whose body is the whole blob, streamed from `opener` (opened again on a retry)."""

        def body() -> Iterator[bytes]:
            return _chunks(opener, 0, d.size, on_bytes)

        return self.request(
            method,
            url,
            scopes=scopes,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(d.size)},
            body=body,
            what=f"upload of {d.digest.short}",
        )

    def _upload_chunked(
        self,
        repo: str,
        d: Descriptor,
        opener: Callable[[int], ContextManager[Readable]],
        location: str,
        scopes: Tuple[str, ...],
        on_bytes: Optional[Callable[[int], None]],
    ) -> None:
        offset = 0
        failures = 0
        while offset < d.size:
            end = min(d.size, offset + UPLOAD_CHUNK_SIZE)
            start_at = offset

            def body(start_at: int = start_at, end: int = end) -> Iterator[bytes]:
                return _chunks(opener, start_at, end - start_at, on_bytes)

            try:
                resp = self.request(
                    "PATCH",
                    location,
                    scopes=scopes,
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Length": str(end - start_at),
                        "Content-Range": f"{start_at}-{end - 1}",
                    },
                    body=body,
                    what=f"upload chunk of {d.digest.short}",
                    retry=False,
                )
            except RegistryError as exc:
                if not exc.temporary:
                    raise
                resp = None
            if resp is not None and resp.status == 202:
                location = self._location(resp, location)
                offset = end
                continue
            failures += 1
            if failures > self._opts.max_attempts:
                raise RegistryError(f"{self.host}: chunked upload of {d.digest.short} keeps failing", temporary=True, hint="rerun to resume")
            self._sleep(failures, resp.headers.get("Retry-After") if resp is not None else None, f"upload chunk of {d.digest.short}")
            offset, location = self._upload_offset(location, scopes)  # never resend blindly: ask where it is
        url = _with_query(location, {"digest": str(d.digest)})
        resp = self.request("PUT", url, scopes=scopes, headers={"Content-Length": "0"}, body=b"", what=f"upload end {d.digest.short}")
        self._check_upload_done(resp, repo, d, url)

    def _upload_offset(self, location: str, scopes: Tuple[str, ...]) -> Tuple[int, str]:
        resp = self.request("GET", location, scopes=scopes, what="upload status")
        if resp.status not in (200, 204):
            raise self._fail(resp, "upload status", location)
        rng = resp.headers.get("Range", "")
        new_loc = resp.headers.get("Location")
        nxt = urljoin(location, new_loc) if new_loc else location
        # `Range: 0-<last byte>`; docker-registry also answers `0-0` for an EMPTY upload, and a chunk is never a
        # single byte, so `0-0` means nothing arrived yet.
        start, sep, last = rng.partition("-")
        if not sep or not last.isdigit() or last == "0":
            return 0, nxt
        return int(last) + 1, nxt

    def _check_upload_done(self, resp: urllib3.BaseHTTPResponse, repo: str, d: Descriptor, url: str) -> None:
        if resp.status != 201:
            raise self._fail(resp, f"upload of {d.digest.short} to {repo}", url, repo=repo)
        got = resp.headers.get("Docker-Content-Digest")
        if got and got != str(d.digest):
            raise DigestMismatchError(f"{self.host}/{repo}: blob stored as {got}, expected {d.digest}")

    def put_manifest(self, repo: str, ref: str, raw: bytes, media_type: str) -> Digest:
        """PUT the exact bytes with their media type under a tag or digest; checks the digest the registry reports."""
        path = f"/v2/{repo}/manifests/{ref}"
        resp = self.request(
            "PUT", path, scopes=_push(repo), headers={"Content-Type": media_type}, body=raw, what=f"manifest push {repo}:{ref}"
        )
        if resp.status not in (200, 201):
            raise self._fail(resp, f"manifest push {repo}:{ref}", path, repo=repo)
        expected = Digest.of(raw)
        got = resp.headers.get("Docker-Content-Digest")
        if got and got != str(expected):
            raise DigestMismatchError(f"{self.host}/{repo}:{ref}: the registry stored the manifest as {got}, expected {expected}")
        return expected


def _chunks(opener: Callable[[int], ContextManager[Readable]], offset: int, length: int, on_bytes: Optional[Callable[[int], None]]) -> Iterator[bytes]:
    with opener(offset) as src:
        left = length
        while left > 0:
            chunk = src.read(min(CHUNK_SIZE, left))
            if not chunk:
                raise RegistryError("source ended before the blob was complete", temporary=False)
            left -= len(chunk)
            if on_bytes is not None:
                on_bytes(len(chunk))
            yield chunk


def _with_query(url: str, params: Dict[str, str]) -> str:
    return url + ("&" if "?" in url else "?") + urlencode(params)

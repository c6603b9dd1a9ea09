"""A client of the OCI distribution API (distribution-spec v1.1) over urllib3.

Owns `Registries` (everything one command shares across registries, and one client per host) and
`RegistryClient`, the distribution API of one host: manifests fetched as raw bytes with their media type
(full `Accept` always), HEAD checks, referrers, tag lists, deletes, and streaming blob GETs with Range
resume. It builds on `registry.session` (authentication, retries, error answers) and `registry.push`
(uploads, manifest PUT), so one client object offers the whole API.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple
from urllib.parse import urljoin, urlsplit

import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import ProtocolError, ReadTimeoutError

from bundler.base.errors import DigestMismatchError, ImageNotFoundError, IntegrityError, RangeIgnoredError, RegistryError
from bundler.base.jsonlimits import JsonTooDeepError, loads_bounded
from bundler.oci.digest import CHUNK_SIZE, Digest, Readable
from bundler.oci.media import ACCEPT, Descriptor, detect_media_type
from bundler.oci.media import FetchedManifest as FetchedManifest  # re-exported: part of this module's API
from bundler.registry.auth import CredentialStore
from bundler.registry.http import MAX_MANIFEST_BYTES, Progress, StalledError, read_some, short_reason
from bundler.registry.http import TransportOptions as TransportOptions  # re-exported: part of this module's API
from bundler.registry.http import discard
from bundler.registry.http import redact as redact
from bundler.registry.push import BlobPush
from bundler.registry.registries_conf import RegistriesConf
from bundler.registry.session import SharedState, _error_codes, _pull, _push

log = logging.getLogger(__name__)

#: Pages of a tag list followed at most (1,000 tags a page).
MAX_TAG_PAGES = 1000


@dataclass(frozen=True)
class ManifestHead:
    digest: Optional[Digest]
    media_type: str
    size: Optional[int]


class Registries(SharedState):
    """Shared HTTP pools, token cache and credentials for every registry one command talks to, and one
    client per host."""

    def __init__(
        self, *, credentials: Optional[CredentialStore] = None, options: TransportOptions = TransportOptions(), conf: RegistriesConf = RegistriesConf()
    ) -> None:
        super().__init__(credentials=credentials, options=options, conf=conf)
        self._clients: Dict[str, "RegistryClient"] = {}

    def client(self, host: str) -> "RegistryClient":
        with self._guard:
            c = self._clients.get(host)
            if c is None:
                c = self._clients[host] = RegistryClient(host, self)
            return c


class RegistryClient(BlobPush):
    """The distribution API of one registry host."""

    # -- API -----------------------------------------------------------------------------------------------

    def ping(self) -> None:
        """Check that the registry answers the API (authenticating if it asks)."""
        resp = self.request("GET", "/v2/", scopes=(), what="API check")
        if resp.status not in (200, 401):
            raise self._fail(resp, "API check", "/v2/")

    def get_manifest(self, repo: str, ref: str) -> FetchedManifest:
        path = f"/v2/{repo}/manifests/{ref}"
        resp = self.request(
            "GET", path, scopes=_pull(repo), headers={"Accept": ACCEPT}, what=f"manifest {repo}:{ref}", max_body=MAX_MANIFEST_BYTES
        )
        if resp.status == 404:
            raise ImageNotFoundError(
                f"image {self.host}/{repo}{'@' if ':' in ref else ':'}{ref} not found",
                hint="check the name, tag or digest (and that the credentials can see it)",
            )
        if resp.status != 200:
            raise self._fail(resp, f"manifest {repo}:{ref}", path, repo=repo)
        raw = bytes(resp.data)
        where = f"{self.host}/{repo}{'@' if ':' in ref else ':'}{ref}"
        try:
            loads_bounded(raw)
        except JsonTooDeepError as exc:
            raise IntegrityError(f"{where}: the registry served a manifest with {exc}", hint="this is not an image manifest; check the source") from None
        except ValueError:
            raise IntegrityError(f"{where}: the registry served a manifest that is not valid JSON", hint="the source is broken or truncated the answer; rerun, or check the source") from None
        media_type = detect_media_type(raw, resp.headers.get("Content-Type"))
        digest = Digest.of(raw)
        if ref.startswith("sha") and ":" in ref:
            expected = Digest.parse(ref)
            if expected != digest:
                raise DigestMismatchError(f"{self.host}/{repo}@{ref}: the registry served a manifest with digest {digest}")
        return FetchedManifest(raw, media_type, digest)

    def head_manifest(self, repo: str, ref: str, *, scopes: Optional[Tuple[str, ...]] = None) -> Optional[ManifestHead]:
        path = f"/v2/{repo}/manifests/{ref}"
        resp = self.request("HEAD", path, scopes=scopes or _pull(repo), headers={"Accept": ACCEPT}, what=f"manifest check {repo}:{ref}")
        if resp.status == 404:
            return None
        if resp.status != 200:
            raise self._fail(resp, f"manifest check {repo}:{ref}", path, repo=repo)
        dcd = resp.headers.get("Docker-Content-Digest")
        length = resp.headers.get("Content-Length")
        return ManifestHead(
            digest=Digest.parse(dcd) if dcd else None,
            media_type=(resp.headers.get("Content-Type") or "").split(";")[0].strip(),
            size=int(length) if length and length.isdigit() else None,
        )

    def get_referrers(self, repo: str, digest: Digest) -> Optional[List[Descriptor]]:
        """The manifests whose `subject` is `digest` (distribution-spec v1.1 referrers API), or None when the
        registry does not serve the API (it answers 404: a registry that has it never does, even for an
        unknown digest). An answer that is not an index is treated as no API too."""
        path = f"/v2/{repo}/referrers/{digest}"
        resp = self.request(
            "GET",
            path,
            scopes=_pull(repo),
            headers={"Accept": "application/vnd.oci.image.index.v1+json"},
            what=f"referrers of {repo}@{digest.short}",
            max_body=MAX_MANIFEST_BYTES,
        )
        if resp.status in (404, 405):
            return None
        if resp.status != 200:
            raise self._fail(resp, f"referrers of {repo}@{digest.short}", path, repo=repo)
        try:
            obj = loads_bounded(bytes(resp.data))
        except ValueError:
            return None
        if not isinstance(obj, dict) or not isinstance(obj.get("manifests"), list):
            return None
        return [Descriptor.from_json(m, where=f"referrers of {repo}@{digest.short}") for m in obj["manifests"] if isinstance(m, dict)]

    def has_blob(self, repo: str, digest: Digest, *, scopes: Optional[Tuple[str, ...]] = None) -> bool:
        path = f"/v2/{repo}/blobs/{digest}"
        resp = self.request("HEAD", path, scopes=scopes or _pull(repo), what=f"blob check {digest.short}")
        if resp.status == 200:
            self.remember_blob(digest, repo)
            return True
        if resp.status == 404:
            return False
        raise self._fail(resp, f"blob check {repo}@{digest.short}", path, repo=repo)

    def list_tags(self, repo: str) -> List[str]:
        """Every tag of `repo` (following `Link` pages); [] when the repository does not exist."""
        tags: List[str] = []
        path: Optional[str] = f"/v2/{repo}/tags/list?n=1000"
        pages = 0
        while path:
            pages += 1
            if pages > MAX_TAG_PAGES:
                raise RegistryError(f"{self.host}: the tag list of {repo} goes on for more than {MAX_TAG_PAGES} pages")
            resp = self.request("GET", path, scopes=_pull(repo), what=f"tag list of {repo}")
            if resp.status == 404:
                return tags
            if resp.status != 200:
                raise self._fail(resp, f"tag list of {repo}", path, repo=repo)
            try:
                listed = loads_bounded(bytes(resp.data or b"{}")).get("tags") or []
            except (ValueError, AttributeError):
                raise RegistryError(f"{self.host}: the tag list of {repo} is not JSON") from None
            tags.extend(str(t) for t in listed)
            link = resp.headers.get("Link", "")
            path = link.split(";", 1)[0].strip().strip("<>") if 'rel="next"' in link else None
            if path and urlsplit(urljoin(self._base() + "/", path)).netloc != self.host:
                # the next page on another host would get this registry's credentials: refuse
                raise RegistryError(f"{self.host}: the tag list of {repo} points to another host for its next page", url=redact(path))
        return tags

    def delete_manifest(self, repo: str, ref: str) -> str:
        """DELETE a manifest by tag or digest: "deleted", "gone" (404), or "unsupported" (the registry
        does not delete by this kind of reference, e.g. docker-registry and tags)."""
        path = f"/v2/{repo}/manifests/{ref}"
        # Quay wants push rights (and refuses a "delete" action in a scope); docker-registry's token auth
        # wants "delete": ask for push first, and for delete as well only when that is not enough.
        resp = self.request("DELETE", path, scopes=_push(repo), what=f"delete {repo}:{ref}")
        if resp.status == 401:
            resp = self.request("DELETE", path, scopes=_push(repo) + (f"repository:{repo}:delete",), what=f"delete {repo}:{ref}")
        if resp.status in (200, 202, 204):
            return "deleted"
        if resp.status == 404:
            codes, _ = _error_codes(bytes(resp.data or b""))
            return "gone" if not codes or "MANIFEST_UNKNOWN" in codes or "NAME_UNKNOWN" in codes else "unsupported"
        if resp.status in (400, 405):
            return "unsupported"
        raise self._fail(resp, f"delete of {repo}:{ref}", path, repo=repo)

    @contextlib.contextmanager
    def open_blob(self, repo: str, digest: Digest, offset: int = 0, end: Optional[int] = None) -> Iterator[Readable]:
        """Stream a blob from `offset` (HTTP Range). Reading errors surface as temporary RegistryError.

        With `end`, only the bytes `[offset, end)` are asked for (a bounded Range); a registry that answers
        with the whole blob (200) raises `RangeIgnoredError` before a byte is read, as does a 206 for other
        bytes than those asked for."""
        path = f"/v2/{repo}/blobs/{digest}"
        if end is not None:
            headers = {"Range": f"bytes={offset}-{end - 1}"}
        else:
            headers = {"Range": f"bytes={offset}-"} if offset else {}
        resp = self.request("GET", path, scopes=_pull(repo), headers=headers, preload=False, what=f"blob {digest.short}")
        try:
            if resp.status == 404:
                raise ImageNotFoundError(f"blob {digest} not found in {self.host}/{repo}", hint="the image upstream is incomplete")
            if resp.status not in (200, 206):
                raise self._fail(self._small(resp), f"blob {repo}@{digest.short}", path, repo=repo)
            if end is not None and (resp.status != 206 or not _content_range_starts(resp, offset, end)):
                raise RangeIgnoredError(f"{self.host}: blob {digest.short}: a request for bytes {offset}-{end - 1} was answered with {resp.status}")
            stream = _SafeStream(resp, self.host, digest, self._opts.read_timeout)
            if offset and resp.status == 200:
                _discard(stream, offset)  # the server ignored Range: skip what we have
            yield stream
        finally:
            # a body read to its end frees the connection for the next request; one left half way (a stall,
            # an error, a reader that stopped at the size it expected) may still be sending: close it
            discard(resp, drain=getattr(resp, "length_remaining", None) == 0)


class _SafeStream:
    """A response body whose read errors and stalls are temporary `RegistryError`s (so callers resume)."""

    def __init__(self, resp: urllib3.BaseHTTPResponse, host: str, digest: Digest, timeout: float) -> None:
        self._resp = resp
        self._host = host
        self._digest = digest
        self._progress = Progress(timeout)

    def read(self, n: int = CHUNK_SIZE) -> bytes:
        try:
            return read_some(self._resp, n, self._progress)
        except StalledError as exc:
            raise RegistryError(f"{self._host}: download of {self._digest.short} stalled: {exc}", temporary=True) from None
        except ReadTimeoutError:
            raise RegistryError(
                f"{self._host}: download of {self._digest.short} stalled: no bytes for {self._progress.timeout:g}s", temporary=True
            ) from None
        except (ProtocolError, ReadTimeoutError, Urllib3Error, OSError) as exc:
            raise RegistryError(f"{self._host}: download of {self._digest.short} interrupted: {short_reason(exc)}", temporary=True) from None


def _content_range_starts(resp: urllib3.BaseHTTPResponse, offset: int, end: int) -> bool:
    """The answer's `Content-Range` is exactly `bytes offset-(end-1)/…`."""
    value = (resp.headers.get("Content-Range") or "").strip()
    unit, _, rest = value.partition(" ")
    span = rest.partition("/")[0]
    return unit == "bytes" and span == f"{offset}-{end - 1}"


def _discard(stream: Readable, n: int) -> None:
    while n > 0:
        chunk = stream.read(min(n, CHUNK_SIZE))
        if not chunk:
            raise RegistryError("stream ended while skipping to the resume offset", temporary=True)
        n -= len(chunk)

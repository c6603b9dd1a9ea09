"""A client of the OCI distribution API (distribution-spec v1.1) over urllib3.

Owns every HTTP exchange with a registry: manifests fetched and pushed as raw bytes with their media type
(full `Accept` always), HEAD checks, streaming blob GETs with Range resume, monolithic and chunked uploads,
cross-repository mounts, authentication (Basic and Bearer with a per-scope token cache, see `auth`), and
bounded retries by predicate: connection errors, 429 (honouring Retry-After) and 5xx. Errors come out as
`RegistryError` subclasses carrying status, registry error codes and a redacted URL.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import logging
import threading
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple
from urllib.parse import urlencode, urljoin, urlsplit

import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import (
    MaxRetryError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)

from bundler.registry.auth import Challenge, CredentialStore, TokenCache, parse_challenge
from bundler.registry.registries_conf import RegistriesConf
from bundler.oci.digest import CHUNK_SIZE, Digest, Readable
from bundler.base.errors import (
    AuthenticationError,
    DigestMismatchError,
    ImageNotFoundError,
    IntegrityError,
    RangeIgnoredError,
    RegistryError,
)
from bundler.base.jsonlimits import JsonTooDeepError, loads_bounded
from bundler.registry.http import (
    MAX_MANIFEST_BYTES,
    RETRY_STATUSES,
    SMALL_BODY_LIMIT,
    USER_AGENT,
    Body,
    BodyTooLargeError,
    HttpPools,
    Progress,
    StalledError,
    backoff,
    discard,
    read_bounded,
    read_some,
    send_with_retries,
    short_reason,
)
from bundler.registry.http import TransportOptions as TransportOptions  # re-exported: part of this module's API
from bundler.registry.http import redact as redact
from bundler.oci.media import ACCEPT, Descriptor, detect_media_type
from bundler.oci.media import FetchedManifest as FetchedManifest  # re-exported: part of this module's API

log = logging.getLogger(__name__)

#: Blobs larger than this are uploaded in chunks so a failure resumes instead of restarting.
CHUNKED_UPLOAD_THRESHOLD = 256 << 20
#: Pages of a tag list followed at most (1,000 tags a page).
MAX_TAG_PAGES = 1000
UPLOAD_CHUNK_SIZE = 64 << 20
#: Repositories one shared token may cover (`RegistryClient.share_tokens`).
MAX_TOKEN_REPOSITORIES = 25
#: Blobs up to this size go in the upload's first request (`?digest=` and the body: Quay answers 201).
MONOLITHIC_POST_LIMIT = 32 << 20



@dataclass(frozen=True)
class ManifestHead:
    digest: Optional[Digest]
    media_type: str
    size: Optional[int]


def _error_codes(data: bytes) -> Tuple[List[str], str]:
    try:
        obj = loads_bounded(data)
        errs = obj.get("errors") or []
        codes = [str(e.get("code", "")) for e in errs if isinstance(e, dict)]
        messages = [str(e.get("message", "")) for e in errs if isinstance(e, dict)]
        return codes, "; ".join(m for m in messages if m)
    except (ValueError, AttributeError):
        return [], ""


@dataclass
class _HostState:
    scheme: Optional[str] = None
    challenge: Optional[Challenge] = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class Registries:
    """Shared HTTP pools, token cache and credentials for every registry one command talks to."""

    def __init__(
        self, *, credentials: Optional[CredentialStore] = None, options: TransportOptions = TransportOptions(), conf: RegistriesConf = RegistriesConf()
    ) -> None:
        self.options = options
        #: registries.conf: where pulls really go (mirrors, location rewrites), what is blocked
        self.conf = conf
        self.credentials = credentials if credentials is not None else CredentialStore(files=[])
        self.tokens = TokenCache()
        self.pools = HttpPools(options)
        self._hosts: Dict[str, _HostState] = {}
        self._guard = threading.RLock()
        self._clients: Dict[str, "RegistryClient"] = {}

    def client(self, host: str) -> "RegistryClient":
        with self._guard:
            c = self._clients.get(host)
            if c is None:
                c = self._clients[host] = RegistryClient(host, self)
            return c

    def _state(self, host: str) -> _HostState:
        with self._guard:
            return self._hosts.setdefault(host, _HostState())

    def close(self) -> None:
        self.pools.close()


def _pull(repo: str) -> Tuple[str, ...]:
    return (f"repository:{repo}:pull",)


def _push(repo: str) -> Tuple[str, ...]:
    return (f"repository:{repo}:pull,push",)


class RegistryClient:
    """The distribution API of one registry host."""

    def __init__(self, host: str, shared: Registries) -> None:
        self.host = host
        self._shared = shared
        self._opts = shared.options
        self._state = shared._state(host)
        self._once = dataclasses.replace(self._opts, max_attempts=1)
        self.insecure = shared.pools.is_insecure(host)
        #: where each blob is known to exist on this registry (for cross-repository mounts)
        self.known_blobs: Dict[str, str] = {}
        self._known_lock = threading.Lock()
        #: repository -> the scopes of the one token that serves it and the other repositories of its group
        self._token_groups: Dict[str, Tuple[str, ...]] = {}
        #: whether a POST with `?digest=` and the body completes an upload (Quay: 201); None until known
        self.monolithic_post: Optional[bool] = None

    def share_tokens(self, groups: Iterable[Sequence[str]], *, most: int = MAX_TOKEN_REPOSITORIES) -> None:
        """Ask one token for several repositories (repeated `scope=` parameters, `pull,push` each).

        Any request about repositories of one group (pull or push, a mount between two of them) then uses
        that group's token, so a run over many repositories asks the token service once per group instead
        of once per repository and action. Groups are cut into slices of at most `most` repositories (a
        token lists every repository: its size grows with them, and so does the request header)."""
        for group in groups:
            repos = sorted(dict.fromkeys(group))
            for i in range(0, len(repos), max(1, most)):
                part = repos[i : i + most]
                scopes = tuple(f"repository:{r}:pull,push" for r in part)
                for repo in part:
                    self._token_groups[repo] = scopes

    def _widen(self, scopes: Tuple[str, ...]) -> Tuple[str, ...]:
        """The scopes of the shared token that covers every one of `scopes`, else `scopes` unchanged."""
        group: Optional[Tuple[str, ...]] = None
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            repo, _, actions = rest.rpartition(":")
            if kind != "repository" or not set(actions.split(",")) <= {"pull", "push"}:
                return scopes
            mine = self._token_groups.get(repo)
            if mine is None or (group is not None and mine is not group):
                return scopes
            group = mine
        return group if group is not None else scopes

    # -- plumbing ------------------------------------------------------------------------------------------

    def _pool(self) -> urllib3.PoolManager:
        return self._shared.pools.manager

    def _base(self) -> str:
        st = self._state
        if st.scheme is None:
            with st.lock:
                if st.scheme is None:
                    st.scheme = self._probe_scheme()
        return f"{st.scheme}://{self.host}"

    def _probe_scheme(self) -> str:
        if not self.insecure:
            return "https"
        try:
            resp = self._pool().request(
                "GET", f"https://{self.host}/v2/", retries=False, redirect=False, preload_content=False, timeout=urllib3.Timeout(connect=5, read=10)
            )
            discard(resp)
            return "https"
        except (SSLError, ProtocolError, MaxRetryError) as exc:
            log.debug("%s: TLS probe failed (%s); using plain HTTP", self.host, exc)
            return "http"
        except Urllib3Error:
            return "http"

    def _auth_header(self, scopes: Tuple[str, ...], *, force_refresh: bool = False) -> Optional[str]:
        ch = self._state.challenge
        if ch is None:
            return None
        creds = self._shared.credentials.lookup(self.host, _repo_of(scopes))
        if ch.scheme == "basic":
            return creds.basic_header() if creds else None
        if ch.scheme != "bearer":
            return None
        realm = ch.params.get("realm", "")
        service = ch.params.get("service", "")
        scopes = self._widen(scopes)
        key = (realm, service, tuple(sorted(scopes)))
        tokens = self._shared.tokens
        if force_refresh:
            tokens.invalidate(key)
        tok = tokens.get(key)
        if tok is not None:
            return f"Bearer {tok}"
        with tokens.lock_for(key):
            tok = tokens.get(key)
            if tok is None:
                tok = self._fetch_token(realm, service, scopes, key)
        return f"Bearer {tok}"

    def _fetch_token(self, realm: str, service: str, scopes: Tuple[str, ...], key: Tuple[str, str, Tuple[str, ...]]) -> str:
        if not realm:
            raise AuthenticationError(f"{self.host} asked for a token but named no realm")
        params: List[Tuple[str, str]] = []
        if service:
            params.append(("service", service))
        params.extend(("scope", s) for s in scopes)
        url = realm + ("&" if "?" in realm else "?") + urlencode(params)
        headers = {"User-Agent": USER_AGENT}
        creds = self._shared.credentials.lookup(self.host, _repo_of(scopes))
        realm_parts = urlsplit(realm)
        if creds is not None and (realm_parts.scheme == "https" or realm_parts.hostname == self.host.split(":")[0]):
            headers["Authorization"] = creds.basic_header()
        # The token server gets the TLS the policy gives ITS host: a registry named insecure does not make
        # the token server it points at insecure.
        resp = send_with_retries(
            self._pool(), self._opts, "GET", url, headers, None, what=f"token from {redact(realm)}", host=realm_parts.netloc or self.host
        )
        data = resp.data
        if resp.status in (401, 403):
            raise AuthenticationError(
                f"{self.host}: the token service refused the credentials" + (" (none were found)" if creds is None else f" for user {creds.username!r}"),
                status=resp.status,
                url=redact(realm),
                hint="check the auth file (--authfile, or log in with podman login) and try again",
            )
        if resp.status != 200:
            raise RegistryError(f"{self.host}: token service answered HTTP {resp.status}", status=resp.status, url=redact(realm))
        try:
            obj = loads_bounded(data)
            token = obj.get("token") or obj.get("access_token")
            expires_in = float(obj.get("expires_in") or jwt_lifetime(str(token or "")) or 60)
        except (ValueError, AttributeError, TypeError):
            raise RegistryError(f"{self.host}: token service returned something that is not a token", url=redact(realm)) from None
        if not token:
            raise RegistryError(f"{self.host}: token service returned no token", url=redact(realm))
        self._shared.tokens.put(key, str(token), expires_in)
        return str(token)

    def _sleep(self, attempt: int, retry_after: Optional[str], why: str) -> None:
        backoff(self._opts, attempt, retry_after, why)

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        scopes: Tuple[str, ...],
        headers: Optional[Dict[str, str]] = None,
        body: Body = None,
        preload: bool = True,
        what: str = "",
        retry: bool = True,
        max_body: int = SMALL_BODY_LIMIT,
    ) -> urllib3.BaseHTTPResponse:
        """Send an authenticated request; answers 401 by authenticating once, then gives the answer back.

        `retry=False` sends it once: for requests that must not be repeated blindly (an upload chunk that
        broke off may have been half appended; the caller asks the registry where the upload stands).
        With `preload` the answer is read whole, at most `max_body` bytes (see `http.read_bounded`)."""
        url = path_or_url if "://" in path_or_url else self._base() + path_or_url
        what = what or f"{method} {redact(url)}"
        answered_challenge = False
        refreshed = False
        while True:
            hdrs = {"User-Agent": USER_AGENT, **(headers or {})}
            auth = self._auth_header(scopes, force_refresh=refreshed)
            if auth:
                hdrs["Authorization"] = auth
            resp = send_with_retries(
                self._pool(),
                self._opts if retry else self._once,
                method,
                url,
                hdrs,
                body,
                what=what,
                host=self.host,
                preload=preload,
                max_body=max_body,
            )
            if resp.status != 401:
                return resp
            if not preload:
                discard(resp)
            challenge = parse_challenge(resp.headers.get("WWW-Authenticate", ""))
            known = self._state.challenge
            if challenge is not None and not answered_challenge and (auth is None or known is None or known.scheme != challenge.scheme):
                self._state.challenge = challenge  # learn how this registry wants to be asked, then ask again
                answered_challenge = True
                continue
            if not refreshed and self._state.challenge is not None and self._state.challenge.scheme == "bearer":
                refreshed = True  # the token may have expired early or lack a scope: fetch a new one once
                continue
            return resp

    def _small(self, resp: urllib3.BaseHTTPResponse) -> urllib3.BaseHTTPResponse:
        """A streamed answer we only want the (error) body of: at most `SMALL_BODY_LIMIT` of it is read."""
        try:
            data = read_bounded(resp, SMALL_BODY_LIMIT, Progress(self._opts.read_timeout, deadline=self._opts.read_timeout))
        except (BodyTooLargeError, StalledError, Urllib3Error, OSError):
            data = b""
        discard(resp, drain=False)
        return urllib3.HTTPResponse(body=data, headers=resp.headers, status=resp.status, reason=resp.reason, preload_content=True)

    def _fail(self, resp: urllib3.BaseHTTPResponse, what: str, url: str, *, repo: str = "") -> RegistryError:
        data = resp.data if resp.data is not None else b""
        codes, message = _error_codes(data or b"")
        status = resp.status
        detail = f"HTTP {status}" + (f" {','.join(codes)}" if codes else "") + (f": {message}" if message else "")
        if status in (401, 403):
            creds = self._shared.credentials.lookup(self.host, repo)
            who = f"user {creds.username!r}" if creds else "anonymous access (no credentials found)"
            return AuthenticationError(
                f"{self.host}: not authorised for {what} as {who} ({detail})",
                status=status,
                codes=codes,
                url=redact(url),
                hint="check the credentials in the auth file and the permissions on the repository",
            )
        temporary = status in RETRY_STATUSES
        return RegistryError(f"{self.host}: {what} failed ({detail})", status=status, codes=codes, url=redact(url), temporary=temporary)

    # -- API -----------------------------------------------------------------------------------------------

    def use_scheme(self, scheme: str) -> None:
        """Speak `scheme` ("http" or "https") to this host: the caller already knows (no TLS probe)."""
        if scheme in ("http", "https") and (scheme == "https" or self.insecure):
            self._state.scheme = scheme

    def learn_challenge(self) -> None:
        """One unauthenticated `GET /v2/` to learn how this registry wants to be asked (its 401 challenge),
        so that parallel first requests do not each collect a 401 first."""
        if self._state.challenge is not None:
            return
        url = self._base() + "/v2/"
        resp = send_with_retries(self._pool(), self._opts, "GET", url, {"User-Agent": USER_AGENT}, None, what="API check", host=self.host)
        if resp.status == 401:
            self._state.challenge = parse_challenge(resp.headers.get("WWW-Authenticate", ""))

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

    def remember_blob(self, digest: Digest, repo: str) -> None:
        with self._known_lock:
            self.known_blobs.setdefault(str(digest), repo)

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

        def body() -> Iterator[bytes]:
            return _chunks(opener, 0, d.size, on_bytes)

        resp = self.request(
            "POST",
            url,
            scopes=scopes,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(d.size)},
            body=body,
            what=f"upload of {d.digest.short}",
        )
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

        def body() -> Iterator[bytes]:
            return _chunks(opener, 0, d.size, on_bytes)

        resp = self.request(
            "PUT",
            url,
            scopes=scopes,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(d.size)},
            body=body,
            what=f"upload of {d.digest.short}",
        )
        self._check_upload_done(resp, repo, d, url)

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


def jwt_lifetime(token: str) -> Optional[float]:
    """`exp - iat` of a JWT's claims (read, not verified: only to know when to ask again), else None.

    Quay's token service answers without `expires_in` (the distribution spec's default is 60 s) but its
    tokens live an hour: without this a long run would ask for a new token every minute."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = loads_bounded(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        lifetime = float(claims["exp"]) - float(claims["iat"])
    except (ValueError, KeyError, TypeError):
        return None
    return lifetime if lifetime > 0 else None


def _repo_of(scopes: Sequence[str]) -> str:
    for s in scopes:
        parts = s.split(":")
        if len(parts) >= 3:
            return parts[1]
    return ""

"""One registry host's authenticated requests: the state shared by every host of a command and the session
with one host.

Owns the plumbing every distribution-API call goes through: which scheme a host speaks (TLS probe for
insecure hosts), its 401 challenge, Basic and Bearer authentication with a per-scope token cache (tokens
shared by groups of repositories, see `auth`), one request with bounded retries by predicate (connection
errors, 429 honouring Retry-After, 5xx), and the registry's error answers as `RegistryError` subclasses
carrying status, registry error codes and a redacted URL. What is asked of a registry lives above:
`registry.push` (uploads, manifest PUT) and `registry.client` (reads, tags, deletes).
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import threading
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple
from urllib.parse import urlencode, urlsplit

import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import MaxRetryError, ProtocolError, SSLError

from bundler.base.errors import AuthenticationError, RegistryError
from bundler.base.jsonlimits import loads_bounded
from bundler.registry.auth import Challenge, CredentialStore, TokenCache, parse_challenge
from bundler.registry.http import (
    RETRY_STATUSES,
    SMALL_BODY_LIMIT,
    USER_AGENT,
    Body,
    BodyTooLargeError,
    HttpPools,
    Progress,
    StalledError,
    TransportOptions,
    backoff,
    discard,
    read_bounded,
    redact,
    send_with_retries,
)
from bundler.registry.registries_conf import RegistriesConf

log = logging.getLogger(__name__)

#: Repositories one shared token may cover (`RegistryClient.share_tokens`).
MAX_TOKEN_REPOSITORIES = 25


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


class SharedState:
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

    def _state(self, host: str) -> _HostState:
        with self._guard:
            return self._hosts.setdefault(host, _HostState())

    def close(self) -> None:
        self.pools.close()


def _pull(repo: str) -> Tuple[str, ...]:
    return (f"repository:{repo}:pull",)


def _push(repo: str) -> Tuple[str, ...]:
    return (f"repository:{repo}:pull,push",)


class HostSession:
    """Authenticated requests to one registry host (the plumbing under its distribution-API client)."""

    def __init__(self, host: str, shared: SharedState) -> None:
        self.host = host
        self._shared = shared
        self._opts = shared.options
        self._state = shared._state(host)
        self._once = dataclasses.replace(self._opts, max_attempts=1)
        self.insecure = shared.pools.is_insecure(host)
        #: repository -> the scopes of the one token that serves it and the other repositories of its group
        self._token_groups: Dict[str, Tuple[str, ...]] = {}

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

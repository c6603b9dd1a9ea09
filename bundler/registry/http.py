"""HTTP plumbing shared by every client we have (registries, the update service, signature stores).

Owns:

- the connection pools: one urllib3 pool manager whose SSL settings come, per host, from the one
  `TlsPolicy` (`bundler.registry.tls`): TLS is verified for every host not named with
  ``--insecure-registry``, including token servers and redirect targets;
- one logical request (`send_with_retries`): bounded retries by predicate — connection errors, stalls,
  429 (honouring Retry-After) and 5xx — with jittered exponential backoff; redirects followed here (at
  most `MAX_REDIRECTS`), each hop getting its own host's TLS and losing `Authorization` when it leaves
  the host. A TLS failure is never retried: it is a configuration problem, reported with what to pass;
- the bounded reader (`read_bounded`): every answer read into memory has a size cap (`SMALL_BODY_LIMIT`
  unless the caller names another, e.g. 4 MiB for manifests); a `Content-Length` over the cap is refused
  before reading, a body that grows past it is cut off;
- stall detection and deadlines (`Progress`, `_HeaderDeadline`): a read that gets no bytes for
  `read_timeout` seconds, or a stream that moves fewer than `STALL_MIN_BYTES` in any such window (a
  trickle), is a stall; an answer's status line and headers must arrive within `read_timeout` seconds of
  the request being sent, and an answer read into memory must then arrive whole within `read_timeout`
  seconds more. Stalls are retried like connection errors. Worst case for one request:
  ``attempts × (connect + 2 × read_timeout)`` plus the backoff between attempts (at most `backoff_max`
  each);
- proxies (`proxy`): each request goes through the proxy its URL needs, tunnelled with `CONNECT` for
  TLS, with the same TLS settings as a direct connection;
- `redact`: the form in which URLs are logged or shown (no credentials, no query string).
"""

from __future__ import annotations

import contextlib
import logging
import random
import re
import socket
import ssl
import threading
import time
from dataclasses import InitVar, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, FrozenSet, Iterator, Optional, Union
from urllib.parse import urljoin, urlsplit

import urllib3
import urllib3.connection
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError, ReadTimeoutError, SSLError

from bundler import __version__
from bundler.base.errors import RegistryError, RegistryUnreachableError
from bundler.base.units import human_bytes
from bundler.registry.proxy import Proxy, ProxySettings
from bundler.registry.tls import HostTls, TlsPolicy, build_ssl_context, split_host

log = logging.getLogger(__name__)

USER_AGENT = f"ocp-bundler/{__version__}"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
CHUNK_SIZE = 1 << 20
MAX_REDIRECTS = 5

#: Cap of an answer read into memory when the caller names none (tokens, error bodies, API checks).
SMALL_BODY_LIMIT = 1 << 20
#: Cap of a manifest (containers/image's `maxManifestBodySize`).
MAX_MANIFEST_BYTES = 4 << 20
#: A stream that moves fewer bytes than this in `timeout` seconds is stalled (a trickle).
STALL_MIN_BYTES = 1024
#: How much of an unwanted body (redirect, retried error) is read to keep the connection; beyond, it is closed.
DISCARD_LIMIT = 64 << 10

DEFAULT_TIMEOUT = 60.0
DEFAULT_RETRY_TIMES = 4

Pool = Union[urllib3.PoolManager, urllib3.HTTPConnectionPool]
"""Where a request goes: a pool manager (any host, full URLs), or one host's connection pool (paths)."""

Body = Union[None, bytes, Callable[[], Iterator[bytes]]]
"""A request body: bytes, or a factory giving a fresh chunk iterator for every attempt."""


@dataclass(frozen=True)
class TransportOptions:
    """How to reach servers.

    `tls`: which hosts are verified and with what (see `TlsPolicy`). `read_timeout`: seconds without progress
    before a read counts as stalled, and the deadline for an answer read into memory (``--timeout``).
    `max_attempts`: tries per request, the first included (``--retry-times`` + 1).

    `ca_file` and `insecure_hosts` are construction shorthands only: they are folded into `tls` (read the
    policy, never these)."""

    tls: TlsPolicy = field(default_factory=TlsPolicy)
    connect_timeout: float = 15.0
    read_timeout: float = DEFAULT_TIMEOUT
    max_attempts: int = DEFAULT_RETRY_TIMES + 1
    backoff_base: float = 0.5
    backoff_max: float = 10.0
    pool_size: int = 16
    proxies: ProxySettings = ProxySettings()
    ca_file: InitVar[Optional[Path]] = None
    insecure_hosts: InitVar[FrozenSet[str]] = frozenset()

    def __post_init__(self, ca_file: Optional[Path], insecure_hosts: FrozenSet[str]) -> None:
        tls = self.tls
        if ca_file is not None:
            tls = tls.with_ca_file(Path(ca_file))
        if insecure_hosts:
            extra = TlsPolicy.from_options(insecure=insecure_hosts).insecure_hosts
            tls = replace(tls, insecure_hosts=tls.insecure_hosts | extra)
        object.__setattr__(self, "tls", tls)


_QUERY_IN_TEXT = re.compile(r"(?<=[\w/.\-])\?[^\s\"'<>?]*=[^\s\"'<>]*")
_USERINFO_IN_TEXT = re.compile(r"(://)[^/\s@]*@")


def redact(url: str) -> str:
    """A URL without credentials or query string (upload session state and tokens live there)."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    with contextlib.suppress(ValueError):
        if parts.port:
            netloc += f":{parts.port}"
    return f"{parts.scheme}://{netloc}{parts.path}" if parts.scheme else parts.path


def redact_text(text: str) -> str:
    """`text` with every query string (``?k=v…`` up to the next space or quote) and URL userinfo removed."""
    if "?" in text:
        text = _QUERY_IN_TEXT.sub("", text)
    return _USERINFO_IN_TEXT.sub(r"\1", text) if "@" in text else text


def short_reason(exc: object) -> str:
    """The part of a urllib3/socket error a person can act on."""
    text = str(exc)
    for marker in ("Caused by ", "(Caused by "):
        if marker in text:
            text = text.split(marker, 1)[1]
    tunnel = re.search(r"Tunnel connection failed: (\d{3}[^'\")]*)", text)
    if tunnel:
        return f"the proxy refused the tunnel ({tunnel.group(1).strip()})"
    if "Unable to connect to proxy" in text:
        return "cannot connect to the proxy (" + short_reason(text.split("Unable to connect to proxy", 1)[1]) + ")"
    if "Connection refused" in text:
        return "connection refused"
    if "Name or service not known" in text or "nodename nor servname" in text or "Temporary failure in name resolution" in text:
        return "unknown host name"
    if "timed out" in text:
        return "timed out"
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return "certificate verify failed"
    return redact_text(text[:200])


def tls_failure(host: str, exc: object, policy: TlsPolicy, url: str) -> RegistryUnreachableError:
    """One line for a TLS failure that says which kind it is, with the hint that fits that kind."""
    text = str(exc)
    if "certificate has expired" in text:
        msg, hint = "its certificate has expired", "renew the server's certificate (or check this machine's clock)"
    elif "not yet valid" in text:
        msg, hint = "its certificate is not valid yet", "check this machine's clock and the certificate's dates"
    elif "Hostname mismatch" in text or "doesn't match" in text or "IP address mismatch" in text:
        msg, hint = f"its certificate is not issued for {host}", "connect with a name the certificate lists, or reissue it with this name"
    elif "CERTIFICATE_VERIFY_FAILED" in text:
        cas = policy.for_host(host).ca_files
        if cas:
            msg = f"its certificate is not signed by a trusted CA (system store + {', '.join(str(c) for c in cas)})"
            hint = "give the CA that signed the server's certificate with --ca-file"
        else:
            msg = "its certificate is not signed by a trusted CA"
            hint = f"pass its CA with --ca-file, or --insecure-registry {host} for a test server"
    else:
        msg, hint = short_reason(exc), f"check that {host} speaks TLS on this port"
    return RegistryUnreachableError(f"TLS error talking to {host}: {msg}", url=redact(url), hint=hint)


class _HeaderDeadline:
    """Connection mixin: the status line and headers must arrive within `header_deadline` seconds of
    asking, however slowly they trickle (a socket timeout only limits the gap between two bytes)."""

    header_deadline: float = DEFAULT_TIMEOUT
    sock: Any

    def getresponse(self) -> Any:
        sock = self.sock
        fired = threading.Event()

        def abort() -> None:
            fired.set()
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

        timer = threading.Timer(self.header_deadline, abort)
        timer.daemon = True
        timer.start()
        try:
            return super().getresponse()  # type: ignore[misc]
        except Exception:
            if fired.is_set():
                raise socket.timeout(f"no complete answer within {self.header_deadline:g}s") from None
            raise
        finally:
            timer.cancel()


def _pool_classes(deadline: float) -> Dict[str, Any]:
    """HTTP and HTTPS connection pools whose connections enforce `deadline` on the answer's headers."""
    attrs = {"header_deadline": deadline}
    http_conn = type("_HTTPConnection", (_HeaderDeadline, urllib3.connection.HTTPConnection), attrs)
    https_conn = type("_HTTPSConnection", (_HeaderDeadline, urllib3.connection.HTTPSConnection), attrs)
    return {
        "http": type("_HTTPPool", (urllib3.HTTPConnectionPool,), {"ConnectionCls": http_conn}),
        "https": type("_HTTPSPool", (urllib3.HTTPSConnectionPool,), {"ConnectionCls": https_conn}),
    }


class _PolicyPoolManager(urllib3.PoolManager):
    """A pool manager that gives each host the SSL context its `TlsPolicy` entry asks for, and whose
    connections give up on an answer whose headers do not arrive within `header_deadline` seconds.

    A request whose URL needs a proxy (`proxies`) goes through a `_PolicyProxyManager` of that proxy,
    which uses this manager's SSL contexts and connection classes."""

    def __init__(self, policy: TlsPolicy, *, header_deadline: float = DEFAULT_TIMEOUT, proxies: ProxySettings = ProxySettings(), **kw: Any) -> None:
        super().__init__(**kw)
        self.policy = policy
        self._contexts: Dict[HostTls, ssl.SSLContext] = {}
        self._contexts_lock = threading.Lock()
        self.pool_classes_by_scheme = _pool_classes(header_deadline)
        self._proxies = proxies
        self._kw = kw
        self._via: Dict[Proxy, urllib3.PoolManager] = {}
        self._via_lock = threading.Lock()

    def urlopen(self, method: str, url: str, redirect: bool = True, **kw: Any) -> Any:  # type: ignore[override]
        proxy = self._proxies.proxy_for(url)
        if proxy is None:
            return super().urlopen(method, url, redirect=redirect, **kw)
        with self._via_lock:
            manager = self._via.get(proxy)
            if manager is None:
                manager = self._via[proxy] = _PolicyProxyManager(self, proxy, **self._kw)
        return manager.urlopen(method, url, redirect=redirect, **kw)

    def clear(self) -> None:
        super().clear()
        for manager in self._via.values():
            manager.clear()

    def context_for(self, tls: HostTls) -> ssl.SSLContext:
        """The one SSL context of `tls`, built on first use (under a lock: the first requests run in parallel)."""
        ctx = self._contexts.get(tls)
        if ctx is None:
            with self._contexts_lock:
                ctx = self._contexts.get(tls)
                if ctx is None:
                    ctx = self._contexts[tls] = build_ssl_context(tls)
        return ctx

    def connection_from_host(
        self,
        host: Optional[str],
        port: Optional[int] = None,
        scheme: Optional[str] = "http",
        pool_kwargs: Optional[Dict[str, Any]] = None,
    ) -> Any:
        return super().connection_from_host(host, port=port, scheme=scheme, pool_kwargs=self.policy_kwargs(host, port, scheme, pool_kwargs))

    def policy_kwargs(self, host: Optional[str], port: Optional[int], scheme: Optional[str], pool_kwargs: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        """The pool arguments the policy gives `host`: its SSL context, verification or not."""
        kwargs = dict(pool_kwargs or {})
        if (scheme or "http") == "https" and host:
            name = f"[{host}]" if ":" in host and not host.startswith("[") else host
            tls = self.policy.for_host(f"{name}:{port or 443}")
            kwargs["ssl_context"] = self.context_for(tls)
            kwargs["cert_reqs"] = "CERT_REQUIRED" if tls.verify else "CERT_NONE"
            if not tls.verify:
                kwargs["assert_hostname"] = False
        return kwargs


class _PolicyProxyManager(urllib3.ProxyManager):
    """One proxy's pool manager: `CONNECT` for https (TLS end to end, with the policy's context for the
    target host), forwarding for http; `Proxy-Authorization` only from the proxy URL's credentials."""

    def __init__(self, parent: _PolicyPoolManager, proxy: Proxy, **kw: Any) -> None:
        auth = f"{proxy.username}:{proxy.password}" if proxy.username is not None else None
        super().__init__(
            proxy.url,
            proxy_headers=urllib3.make_headers(proxy_basic_auth=auth) if auth is not None else None,
            proxy_ssl_context=parent.context_for(parent.policy.for_host(proxy.url)),
            **kw,
        )
        self._parent = parent
        self.pool_classes_by_scheme = parent.pool_classes_by_scheme

    def connection_from_host(
        self,
        host: Optional[str],
        port: Optional[int] = None,
        scheme: Optional[str] = "http",
        pool_kwargs: Optional[Dict[str, Any]] = None,
    ) -> Any:
        return super().connection_from_host(host, port=port, scheme=scheme, pool_kwargs=self._parent.policy_kwargs(host, port, scheme, pool_kwargs))


class HttpPools:
    """The pool manager every request goes through; TLS chosen per host by the `TlsPolicy`."""

    def __init__(self, options: TransportOptions) -> None:
        self.options = options
        self.policy = options.tls
        timeout = urllib3.Timeout(connect=min(options.connect_timeout, options.read_timeout), read=options.read_timeout)
        kw: Dict[str, Any] = {"maxsize": options.pool_size, "block": False, "timeout": timeout, "num_pools": 32}
        if str(getattr(urllib3, "__version__", "")).startswith("2"):
            kw["blocksize"] = CHUNK_SIZE
        self.manager = _PolicyPoolManager(self.policy, header_deadline=options.read_timeout, proxies=options.proxies, **kw)
        # Fail now, with the file named, when a CA or client certificate file cannot be used. A context that
        # loads no file cannot fail: it is built when a host first needs it (the system CAs take a while).
        for tls in {self.policy.for_host(h) for h in ["_default_"] + [e for e, _ in self.policy.host_ca_files] + [e for e, _, _ in self.policy.client_certs]}:
            if tls.ca_files or tls.client_cert is not None:
                self.manager.context_for(tls)

    def is_insecure(self, url_or_host: str) -> bool:
        return self.policy.is_insecure(url_or_host)

    def for_url(self, url: str) -> urllib3.PoolManager:
        return self.manager

    def close(self) -> None:
        self.manager.clear()


class StalledError(Exception):
    """No (or too little) progress for the timeout, or an answer that missed its deadline."""


class Progress:
    """Stall detection for one body: `feed` after every read; raises `StalledError`.

    Stalled: fewer than `STALL_MIN_BYTES` in a `timeout`-second window; or, with `deadline`, the whole
    body not there `deadline` seconds after this object was made."""

    def __init__(self, timeout: float, *, deadline: Optional[float] = None) -> None:
        self.timeout = timeout
        now = time.monotonic()
        self.deadline_at = now + deadline if deadline is not None else None
        self._window_start = now
        self._window_bytes = 0

    def feed(self, n: int) -> None:
        now = time.monotonic()
        if self.deadline_at is not None and now > self.deadline_at:
            raise StalledError("the answer did not arrive in time")
        self._window_bytes += n
        if now - self._window_start >= self.timeout:
            if self._window_bytes < STALL_MIN_BYTES:
                raise StalledError(f"fewer than {STALL_MIN_BYTES} bytes in {self.timeout:g}s")
            self._window_start, self._window_bytes = now, 0


def read_some(resp: urllib3.BaseHTTPResponse, n: int, progress: Progress) -> bytes:
    """Up to `n` bytes of `resp` (fewer only at the end), checking `progress` after every network read."""
    out = bytearray()
    # read1 returns after one read from the network (urllib3 >= 2.3); older urllib3 reads whole requests,
    # so ask it for small pieces to keep checking progress
    read1 = getattr(resp, "read1", None)
    while len(out) < n:
        chunk = read1(min(n - len(out), CHUNK_SIZE)) if read1 is not None else resp.read(min(n - len(out), 8192))
        progress.feed(len(chunk))
        if not chunk:
            break
        out += chunk
    return bytes(out)


class BodyTooLargeError(Exception):
    def __init__(self, limit: int, declared: Optional[int] = None) -> None:
        self.limit = limit
        self.declared = declared
        size = f"{limit >> 20} MiB" if limit % (1 << 20) == 0 else f"{limit} bytes"
        super().__init__(f"larger than {size}" + (f" (it declares {human_bytes(declared)})" if declared is not None else ""))


def declared_length(resp: urllib3.BaseHTTPResponse) -> Optional[int]:
    value = (resp.headers.get("Content-Length") or "").strip()
    return int(value) if value.isdigit() else None


def read_bounded(resp: urllib3.BaseHTTPResponse, limit: int, progress: Progress) -> bytes:
    """The whole body of `resp` if it is at most `limit` bytes, else `BodyTooLargeError` (read no further)."""
    declared = declared_length(resp)
    if declared is not None and declared > limit:
        raise BodyTooLargeError(limit, declared)
    data = read_some(resp, limit + 1, progress)
    if len(data) > limit:
        raise BodyTooLargeError(limit)
    return data


def discard(resp: urllib3.BaseHTTPResponse, *, drain: bool = True, timeout: float = 1.0) -> None:
    """Let go of a response whose body nobody wants: with `drain`, a small body that arrives within
    `timeout` seconds is read to keep the connection; anything else closes the connection. Never reads
    more than `DISCARD_LIMIT` bytes."""
    try:
        declared = declared_length(resp)
        if drain and (declared is None or declared <= DISCARD_LIMIT):
            read_some(resp, DISCARD_LIMIT + 1, Progress(timeout, deadline=timeout))
            if read_some(resp, 1, Progress(timeout, deadline=timeout)) == b"":
                resp.release_conn()
                return
    except (StalledError, Urllib3Error, OSError):
        pass
    with contextlib.suppress(Exception):
        resp.close()
    with contextlib.suppress(Exception):
        resp.release_conn()


def buffered(resp: urllib3.BaseHTTPResponse, data: bytes) -> urllib3.BaseHTTPResponse:
    """A detached copy of `resp` holding `data` as its (already read) body."""
    return urllib3.HTTPResponse(body=data, headers=resp.headers, status=resp.status, reason=resp.reason, preload_content=True)


def backoff(options: TransportOptions, attempt: int, retry_after: Optional[str], why: str) -> None:
    """Sleep before attempt `attempt + 1`: jittered exponential, or what Retry-After asks (at most 60 s)."""
    delay = min(options.backoff_max, options.backoff_base * (2 ** (attempt - 1))) * (0.5 + random.random() / 2)
    if retry_after:
        with contextlib.suppress(ValueError):
            delay = min(60.0, max(float(retry_after), 0.0))
    log.debug("retrying in %.1fs (%s)", delay, why)
    time.sleep(delay)


def send_with_retries(
    pool: Pool,
    options: TransportOptions,
    method: str,
    url: str,
    headers: Dict[str, str],
    body: Body,
    *,
    what: str,
    host: str,
    preload: bool = True,
    redirect: bool = True,
    max_body: int = SMALL_BODY_LIMIT,
) -> urllib3.BaseHTTPResponse:
    """One logical request: retried on connection errors, stalls, 429 and 5xx, bounded, with backoff.

    Whatever status comes back last is returned (callers decide what it means). With `preload` the body is
    read here, at most `max_body` bytes within `options.read_timeout` seconds, and the answer is detached from
    the connection; without it the caller streams the body (see `read_some`). A server that cannot be
    reached after every attempt, or a TLS failure, raises `RegistryUnreachableError` naming the host; a
    body over `max_body` raises `RegistryError`.
    """
    attempt = 0
    while True:
        attempt += 1
        hop = _Hop(url, dict(headers), method, host)
        try:
            resp = _follow_redirects(pool, hop, body, what=what, redirect=redirect)
            if resp.status in RETRY_STATUSES and attempt < options.max_attempts:
                retry_after = resp.headers.get("Retry-After")
                discard(resp)
                backoff(options, attempt, retry_after, f"{what}: HTTP {resp.status}")
                continue
            if not preload:
                return resp
            return _read_answer(resp, hop, options, what=what, max_body=max_body)
        except (MaxRetryError, ProtocolError, ReadTimeoutError, NewConnectionError, SSLError, Urllib3Error, StalledError, OSError) as exc:
            why = _failed_attempt(exc, hop, options, attempt=attempt, what=what)
            backoff(options, attempt, None, f"{what}: {why}")
            continue


@dataclass
class _Hop:
    """Where one attempt of a request goes; a redirect moves it (and a redirect to another host drops the
    credentials and names that host in errors)."""

    url: str
    headers: Dict[str, str]
    method: str
    host: str


def _follow_redirects(pool: Pool, hop: _Hop, body: Body, *, what: str, redirect: bool) -> urllib3.BaseHTTPResponse:
    """Send `hop` and follow at most `MAX_REDIRECTS` redirects (when `redirect`); `hop` ends where the answer came from."""
    method = hop.method
    for _hop in range(MAX_REDIRECTS + 1):
        payload: Any = body() if callable(body) else body
        resp = pool.urlopen(
            hop.method,
            hop.url,
            body=payload if hop.method == method else None,
            headers=hop.headers,
            retries=False,
            redirect=False,
            preload_content=False,
            decode_content=False,
        )
        location = resp.headers.get("Location") if redirect and resp.status in REDIRECT_STATUSES else None
        if not location:
            return resp
        discard(resp)
        nxt = urljoin(hop.url, location)
        if split_host(nxt, 0) != split_host(hop.url, 0):
            hop.headers.pop("Authorization", None)  # credentials stay with the host they were meant for
            hop.host = urlsplit(nxt).netloc or hop.host
        if resp.status == 303:
            hop.method = "GET"
        log.debug("%s: redirected to %s", what, redact(nxt))
        hop.url = nxt
    discard(resp)
    raise RegistryError(f"{what}: more than {MAX_REDIRECTS} redirects", url=redact(hop.url))


def _read_answer(resp: urllib3.BaseHTTPResponse, hop: _Hop, options: TransportOptions, *, what: str, max_body: int) -> urllib3.BaseHTTPResponse:
    """The answer with its whole body (at most `max_body` bytes, within the read timeout), detached from the connection."""
    if hop.method == "HEAD":  # no body follows: Content-Length describes the resource, not this answer
        resp.release_conn()
        return buffered(resp, b"")
    try:
        # the body's deadline starts with the headers: sending a large request body takes what it takes
        data = read_bounded(resp, max_body, Progress(options.read_timeout, deadline=options.read_timeout))
    except BodyTooLargeError as exc:
        discard(resp, drain=False)
        raise RegistryError(
            f"{hop.host}: the answer to {what} is {exc}; refusing it", url=redact(hop.url), status=resp.status
        ) from None
    except BaseException:
        discard(resp, drain=False)
        raise
    resp.release_conn()
    return buffered(resp, data)


def _failed_attempt(exc: Exception, hop: _Hop, options: TransportOptions, *, attempt: int, what: str) -> str:
    """Why an attempt could not reach the server, to retry after; raises when it must not be retried (a TLS
    failure, a proxy refusing its credentials, the last attempt)."""
    reason = getattr(exc, "reason", None) or exc
    if isinstance(reason, (SSLError, ssl.SSLError)) or isinstance(exc, SSLError):
        raise tls_failure(hop.host, reason, options.tls, hop.url) from None
    why = str(exc) if isinstance(exc, StalledError) else short_reason(reason)
    if isinstance(exc, StalledError):
        why = f"stalled: {why}"
    if attempt >= options.max_attempts or "Tunnel connection failed: 407" in str(reason):
        raise RegistryUnreachableError(
            f"cannot reach {hop.host} for {what}: {why}" + (f" ({attempt} attempts)" if attempt > 1 else ""),
            url=redact(hop.url),
            temporary=True,
            hint="check the host name, port and network (and HTTPS_PROXY / NO_PROXY or --proxy), then rerun; --timeout and --retry-times tune the limits",
        ) from None
    return why

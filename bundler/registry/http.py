"""HTTP plumbing shared by every client we have (registries, the update service, signature stores).

Owns the connection pools (TLS verified with the system CAs plus `--ca-file`, plus a host's certs.d CA
files, presenting its certs.d client certificate; unverified TLS or plain HTTP only for the hosts given
with `--insecure-registry`; each request routed through the proxy its URL needs, see `proxy`), and one
logical request with bounded retries by predicate — connection errors, 429 (honouring Retry-After) and
5xx — with jittered exponential backoff.
A TLS failure is never retried: it is a configuration problem, reported with what to pass.
"""

from __future__ import annotations

import contextlib
import logging
import random
import re
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, FrozenSet, Iterator, Optional, Tuple, Union
from urllib.parse import urlsplit

import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError, ReadTimeoutError, SSLError

from bundler import __version__
from bundler.base.errors import RegistryUnreachableError, UsageError
from bundler.registry.proxy import Proxy, ProxySettings

log = logging.getLogger(__name__)

USER_AGENT = f"ocp-bundler/{__version__}"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
CHUNK_SIZE = 1 << 20

Body = Union[None, bytes, Callable[[], Iterator[bytes]]]
"""A request body: bytes, or a factory giving a fresh chunk iterator for every attempt."""


@dataclass(frozen=True)
class TransportOptions:
    """How to reach servers. `insecure_hosts`: plain HTTP or unverified TLS for these hosts only."""

    ca_file: Optional[Path] = None
    insecure_hosts: FrozenSet[str] = frozenset()
    connect_timeout: float = 15.0
    read_timeout: float = 120.0
    max_attempts: int = 5
    backoff_base: float = 0.5
    backoff_max: float = 10.0
    pool_size: int = 16
    proxies: ProxySettings = ProxySettings()
    #: certs.d: `(HOST:PORT, CA file)` trusted for that host only, `(HOST:PORT, cert, key)` presented to it
    host_ca_files: Tuple[Tuple[str, Path], ...] = ()
    client_certs: Tuple[Tuple[str, Path, Path], ...] = ()


def redact(url: str) -> str:
    """A URL without credentials or query string (upload session state and tokens live there)."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return f"{parts.scheme}://{netloc}{parts.path}"


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
    return text[:200]


class _Routed(urllib3.PoolManager):
    """A pool manager that sends each request through the proxy its URL needs (`ProxySettings`), or
    directly, and gives each host the SSL context `host_contexts` lists for it (certs.d), else its own.

    The proxy managers it makes for itself are of the same kind, so a host keeps its TLS through a tunnel."""

    def __init__(
        self, *, proxies: ProxySettings, host_contexts: Dict[str, ssl.SSLContext], proxy_ssl_context: Optional[ssl.SSLContext], **kw: Any
    ) -> None:
        super().__init__(**kw)
        self._proxies = proxies
        self._host_contexts = host_contexts
        self._proxy_ssl_context = proxy_ssl_context
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
                manager = self._via[proxy] = _RoutedProxy(proxy, self._host_contexts, self._proxy_ssl_context, **self._kw)
        return manager.urlopen(method, url, redirect=redirect, **kw)

    def connection_from_host(self, host: Optional[str], port: Optional[int] = None, scheme: Optional[str] = "http", pool_kwargs: Optional[Dict[str, Any]] = None) -> Any:
        return super().connection_from_host(host, port, scheme, pool_kwargs=_with_host_context(self._host_contexts, host, port, scheme, pool_kwargs))

    def clear(self) -> None:
        super().clear()
        for manager in self._via.values():
            manager.clear()


class _RoutedProxy(urllib3.ProxyManager):
    """A proxy's pool manager: `CONNECT` for https (TLS end to end, with the host's SSL context),
    forwarding for http; `Proxy-Authorization` only from the proxy URL's credentials."""

    def __init__(self, proxy: Proxy, host_contexts: Dict[str, ssl.SSLContext], proxy_ssl_context: Optional[ssl.SSLContext], **kw: Any) -> None:
        auth = f"{proxy.username}:{proxy.password}" if proxy.username is not None else None
        super().__init__(
            proxy.url,
            proxy_headers=urllib3.make_headers(proxy_basic_auth=auth) if auth is not None else None,
            proxy_ssl_context=proxy_ssl_context,
            **kw,
        )
        self._host_contexts = host_contexts

    def connection_from_host(self, host: Optional[str], port: Optional[int] = None, scheme: Optional[str] = "http", pool_kwargs: Optional[Dict[str, Any]] = None) -> Any:
        return super().connection_from_host(host, port, scheme, pool_kwargs=_with_host_context(self._host_contexts, host, port, scheme, pool_kwargs))


def _with_host_context(
    contexts: Dict[str, ssl.SSLContext], host: Optional[str], port: Optional[int], scheme: Optional[str], pool_kwargs: Optional[Dict[str, Any]]
) -> Optional[Dict[str, Any]]:
    if not contexts or scheme != "https" or not host:
        return pool_kwargs
    name = f"[{host}]" if ":" in host and not host.startswith("[") else host
    ctx = contexts.get(f"{name}:{port or 443}")
    return pool_kwargs if ctx is None else {**(pool_kwargs or {}), "ssl_context": ctx}


class HttpPools:
    """A verified-TLS pool manager and an unverified one, chosen per host; each routes requests through
    the proxy their URL needs, and uses a host's certs.d CA files and client certificate for that host."""

    def __init__(self, options: TransportOptions) -> None:
        self.options = options
        timeout = urllib3.Timeout(connect=options.connect_timeout, read=options.read_timeout)
        ctx = self._context()
        kw: Dict[str, Any] = {"maxsize": options.pool_size, "block": False, "timeout": timeout, "num_pools": 32}
        if str(getattr(urllib3, "__version__", "")).startswith("2"):
            kw["blocksize"] = CHUNK_SIZE
        # fail now, naming the file, when a certs.d file cannot be used
        hosts = sorted({h for h, _ in options.host_ca_files} | {h for h, _, _ in options.client_certs})
        host_contexts = {h: self._context(h) for h in hosts}
        self.secure = _Routed(proxies=options.proxies, host_contexts=host_contexts, proxy_ssl_context=ctx, ssl_context=ctx, **kw)
        self.insecure = _Routed(proxies=options.proxies, host_contexts={}, proxy_ssl_context=ctx, cert_reqs="CERT_NONE", **kw)

    def _context(self, host_port: Optional[str] = None) -> ssl.SSLContext:
        """The system CAs and --ca-file; for `host_port`, also its certs.d CA files and client certificate."""
        ctx = ssl.create_default_context()
        files = [self.options.ca_file] if self.options.ca_file is not None else []
        files += [p for h, p in self.options.host_ca_files if h == host_port]
        for ca in files:
            try:
                ctx.load_verify_locations(cafile=str(ca))
            except (ssl.SSLError, ValueError):
                raise UsageError(f"CA file {ca} holds no PEM certificate", hint="give a PEM file (-----BEGIN CERTIFICATE-----)") from None
        for h, cert, key in self.options.client_certs:
            if h == host_port:
                try:
                    ctx.load_cert_chain(certfile=str(cert), keyfile=str(key))
                except (ssl.SSLError, ValueError, OSError):
                    raise UsageError(f"client certificate {cert} and key {key} are not a PEM certificate and its key") from None
                break
        return ctx

    def is_insecure(self, url_or_host: str) -> bool:
        parts = urlsplit(url_or_host if "://" in url_or_host else f"//{url_or_host}")
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return netloc in self.options.insecure_hosts or host in self.options.insecure_hosts

    def for_url(self, url: str) -> urllib3.PoolManager:
        return self.insecure if self.is_insecure(url) else self.secure

    def close(self) -> None:
        self.secure.clear()
        self.insecure.clear()


def backoff(options: TransportOptions, attempt: int, retry_after: Optional[str], why: str) -> None:
    """Sleep before attempt `attempt + 1`: jittered exponential, or what Retry-After asks (at most 60 s)."""
    delay = min(options.backoff_max, options.backoff_base * (2 ** (attempt - 1))) * (0.5 + random.random() / 2)
    if retry_after:
        with contextlib.suppress(ValueError):
            delay = min(60.0, max(float(retry_after), 0.0))
    log.debug("retrying in %.1fs (%s)", delay, why)
    time.sleep(delay)


def send_with_retries(
    pool: urllib3.PoolManager,
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
) -> urllib3.BaseHTTPResponse:
    """One logical request: retried on connection errors, 429 and 5xx, bounded, with backoff.

    Whatever status comes back last is returned (callers decide what it means); a server that cannot be
    reached after every attempt, or a TLS failure, raises `RegistryUnreachableError` naming `host`.
    """
    attempt = 0
    while True:
        attempt += 1
        payload: Any = body() if callable(body) else body
        try:
            resp = pool.urlopen(
                method,
                url,
                body=payload,
                headers=headers,
                retries=urllib3.Retry(total=None, connect=0, read=0, status=0, other=0, redirect=5 if redirect else 0, raise_on_redirect=False),
                redirect=redirect,
                preload_content=preload,
                decode_content=False,
            )
        except (MaxRetryError, ProtocolError, ReadTimeoutError, NewConnectionError, SSLError, Urllib3Error) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, SSLError) or isinstance(exc, SSLError):
                raise RegistryUnreachableError(
                    f"TLS error talking to {host}: {short_reason(reason)}",
                    url=redact(url),
                    hint=f"pass its CA with --ca-file, or --insecure-registry {host} for a test server",
                ) from None
            if attempt >= options.max_attempts or "Tunnel connection failed: 407" in str(reason):
                raise RegistryUnreachableError(
                    f"cannot reach {host} for {what}: {short_reason(reason)}",
                    url=redact(url),
                    temporary=True,
                    hint="check the host name, port and network (and HTTPS_PROXY / NO_PROXY or --proxy), then rerun",
                ) from None
            backoff(options, attempt, None, f"{what}: {short_reason(reason)}")
            continue
        if resp.status in RETRY_STATUSES and attempt < options.max_attempts:
            retry_after = resp.headers.get("Retry-After")
            if not preload:
                resp.drain_conn()
            resp.release_conn()
            backoff(options, attempt, retry_after, f"{what}: HTTP {resp.status}")
            continue
        return resp

"""Which HTTP(S) proxy a request goes through: the environment conventions every containers tool follows.

Owns the choice of proxy per URL, the way Go's `net/http` (and so skopeo, podman and oc-mirror) makes it
(`golang.org/x/net/http/httpproxy`):

- `https://` URLs use `HTTPS_PROXY`, `http://` URLs use `HTTP_PROXY`; the upper-case variable wins over
  the lower-case one; a proxy given without a scheme is `http://`. `--proxy URL` replaces both.
- `NO_PROXY` (or `no_proxy`): comma-separated entries, `*` for every host; `example.com` matches the host and
  its subdomains, `.example.com` (or `*.example.com`) its subdomains only; an IP address, or a CIDR range
  (`10.0.0.0/8`, `fd00::/8`); any entry may end in `:PORT` to match that port only.
- `localhost` and loopback addresses never go through a proxy.

TLS to a server behind a proxy is tunnelled with `CONNECT` (end to end: the proxy sees neither the
requests nor the registry credentials). `Proxy-Authorization` is sent only when the proxy URL itself
carries `user:password@`.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Tuple, Union
from urllib.parse import unquote, urlsplit

from bundler.base.errors import UsageError

IpNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


@dataclass(frozen=True)
class Proxy:
    """One proxy: its URL without credentials, and the `Proxy-Authorization` credentials of its URL, if any."""

    url: str
    username: Optional[str] = None
    password: Optional[str] = None

    def __repr__(self) -> str:  # never show the password
        return f"Proxy({self.url!r}, user={self.username!r})"

    @classmethod
    def parse(cls, text: str, *, source: str) -> "Proxy":
        value = text.strip()
        if "://" not in value:
            value = "http://" + value
        parts = urlsplit(value)
        try:
            port = parts.port
        except ValueError:
            raise UsageError(f"{source}: invalid port in proxy URL {_redacted(value)!r}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(
                f"{source}: {_redacted(value)!r} is not an http:// or https:// proxy URL",
                hint="give http://HOST:PORT (a SOCKS proxy is not supported)",
            )
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        url = f"{parts.scheme}://{host}" + (f":{port}" if port else "")
        user = unquote(parts.username) if parts.username is not None else None
        password = unquote(parts.password) if parts.password is not None else ("" if user is not None else None)
        return cls(url, user, password)


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.username is None:
        return url
    return url.replace(parts.netloc, parts.netloc.rsplit("@", 1)[1], 1)


@dataclass(frozen=True)
class _DomainMatch:
    suffix: str  # always starts with "."
    port: str
    match_host: bool  # also the bare domain itself

    def matches(self, host: str, port: str) -> bool:
        if not (host.endswith(self.suffix) or (self.match_host and host == self.suffix[1:])):
            return False
        return not self.port or self.port == port


@dataclass(frozen=True)
class NoProxy:
    """A parsed `NO_PROXY` list (see the module docstring for the forms)."""

    everything: bool = False
    networks: Tuple[IpNetwork, ...] = ()
    addresses: Tuple[Tuple[str, str], ...] = ()  # (ip, port or "")
    domains: Tuple[_DomainMatch, ...] = ()

    @classmethod
    def parse(cls, text: str) -> "NoProxy":
        networks: List[IpNetwork] = []
        addresses: List[Tuple[str, str]] = []
        domains: List[_DomainMatch] = []
        for raw in text.split(","):
            entry = raw.strip().lower()
            if not entry:
                continue
            if entry == "*":
                return cls(everything=True)
            if "/" in entry:
                try:
                    networks.append(ipaddress.ip_network(entry, strict=False))
                    continue
                except ValueError:
                    pass
            host, port = _split_host_port(entry)
            if not host:
                continue
            try:
                addresses.append((str(ipaddress.ip_address(host)), port))
                continue
            except ValueError:
                pass
            if host.startswith("*."):
                host = host[1:]
            match_host = not host.startswith(".")
            domains.append(_DomainMatch(host if not match_host else "." + host, port, match_host))
        return cls(False, tuple(networks), tuple(addresses), tuple(domains))

    def bypass(self, host: str, port: str) -> bool:
        """Whether `host` (lower case, no brackets) on `port` is reached directly."""
        if self.everything:
            return True
        try:
            ip: Optional[Union[ipaddress.IPv4Address, ipaddress.IPv6Address]] = ipaddress.ip_address(host)
        except ValueError:
            ip = None
        if ip is not None:
            if any(ip in net for net in self.networks):
                return True
            if any(str(ip) == a and (not p or p == port) for a, p in self.addresses):
                return True
        return any(d.matches(host, port) for d in self.domains)


def _split_host_port(entry: str) -> Tuple[str, str]:
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else ""
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        return host, port
    return entry, ""  # a host, or a bare IPv6 address


@dataclass(frozen=True)
class ProxySettings:
    """The proxies of one command: per scheme, and which hosts bypass them."""

    https: Optional[Proxy] = None
    http: Optional[Proxy] = None
    no_proxy: NoProxy = NoProxy()

    @classmethod
    def from_environment(cls, env: Optional[Mapping[str, str]] = None, *, override: Optional[str] = None) -> "ProxySettings":
        """Read `HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY` (upper case first, then lower case); `override`
        (`--proxy`) replaces both proxies but keeps `NO_PROXY`."""
        env = os.environ if env is None else env

        def get(name: str) -> Tuple[str, str]:
            for key in (name.upper(), name.lower()):
                if env.get(key):
                    return key, env[key]
            return name.upper(), ""

        no_proxy = NoProxy.parse(get("no_proxy")[1])
        if override:
            proxy = Proxy.parse(override, source="--proxy")
            return cls(proxy, proxy, no_proxy)
        proxies: Dict[str, Optional[Proxy]] = {}
        for scheme in ("https", "http"):
            key, value = get(f"{scheme}_proxy")
            proxies[scheme] = Proxy.parse(value, source=key) if value else None
        return cls(proxies["https"], proxies["http"], no_proxy)

    @property
    def any(self) -> bool:
        return self.https is not None or self.http is not None

    def proxy_for(self, url: str) -> Optional[Proxy]:
        """The proxy a request to `url` goes through, or None for a direct connection."""
        parts = urlsplit(url)
        proxy = self.https if parts.scheme == "https" else self.http if parts.scheme == "http" else None
        if proxy is None:
            return None
        host = (parts.hostname or "").lower()
        try:
            port = str(parts.port or (443 if parts.scheme == "https" else 80))
        except ValueError:
            return proxy
        if host == "localhost" or _is_loopback(host):
            return None
        return None if self.no_proxy.bypass(host, port) else proxy


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

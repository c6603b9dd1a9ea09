"""Which TLS each host gets: the one place that decides certificate verification.

`TlsPolicy` is a frozen value built once per command. Every connection we open (registries, the token
servers their challenges name, hosts a request is redirected to, update service, signature stores) asks it
for its host, and `bundler.registry.http.HttpPools` builds its SSL contexts only from its answers:

- a host NAMED as insecure (``--insecure-registry``) gets unverified TLS, or plain HTTP where the caller
  falls back to it; every host not named is verified, always — a registry being insecure never extends to
  the token server or redirect target it points at;
- a verified host trusts the system CAs, plus `ca_file` (``--ca-file``, for every host), plus the CA
  files listed for it in `host_ca_files` (certs.d style, per ``HOST[:PORT]``);
- a host listed in `client_certs` presents that certificate and key (mutual TLS).

Name matching (the same for every use, registry or not): an entry ``HOST:PORT`` matches that host on that
port only; an entry ``HOST`` matches the host on any port. Host names compare case-insensitively; IPv6
addresses are written in brackets (``[::1]:5000``).

API for callers: ``policy.is_insecure(host_or_url)``, ``policy.for_host(host_or_url) -> HostTls``
(`verify`, `ca_files`, `client_cert`), ``policy.verify_for(host_or_url)`` (False, True for the default
trust, or the tuple of extra CA files), and ``build_ssl_context(host_tls)``. A file that is not PEM raises
`UsageError` naming the file.
"""

from __future__ import annotations

import os
import ssl
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import FrozenSet, Iterable, Optional, Tuple, Union
from urllib.parse import urlsplit

from bundler.base.errors import InvalidReferenceError, UsageError
from bundler.oci.reference import parse_host


def split_host(host_or_url: str, default_port: Optional[int] = None) -> Tuple[str, Optional[int]]:
    """(lower-case host, port or `default_port`) of ``HOST[:PORT]`` or a URL. IPv6 keeps its brackets."""
    text = host_or_url if "://" in host_or_url else f"//{host_or_url}"
    parts = urlsplit(text)
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        raise UsageError(f"invalid port in {host_or_url!r}", hint="a port is a number from 1 to 65535") from None
    if port is None and "://" in host_or_url:
        port = {"https": 443, "http": 80}.get(parts.scheme, default_port)
    return host, port if port is not None else default_port


def _matches(entry: str, host: str, port: Optional[int]) -> bool:
    e_host, e_port = split_host(entry)
    if e_host != host:
        return False
    return e_port is None or e_port == port


@dataclass(frozen=True)
class HostTls:
    """The TLS one host gets. `ca_files`: extra CAs trusted on top of the system store."""

    verify: bool = True
    ca_files: Tuple[Path, ...] = ()
    client_cert: Optional[Tuple[Path, Path]] = None


@dataclass(frozen=True)
class TlsPolicy:
    """Per-host TLS decisions (see the module docstring for the matching rule).

    `insecure_hosts`: ``HOST`` or ``HOST:PORT`` entries allowed unverified TLS or plain HTTP.
    `ca_file`: an extra CA bundle trusted for every verified host.
    `host_ca_files`: ``(HOST[:PORT], ca file)`` pairs trusted for that host only.
    `client_certs`: ``(HOST[:PORT], cert file, key file)`` presented to that host.
    """

    insecure_hosts: FrozenSet[str] = frozenset()
    ca_file: Optional[Path] = None
    host_ca_files: Tuple[Tuple[str, Path], ...] = ()
    client_certs: Tuple[Tuple[str, Path, Path], ...] = ()

    @classmethod
    def from_options(cls, *, insecure: Iterable[str] = (), ca_file: Optional[Path] = None) -> "TlsPolicy":
        """The policy of the command-line flags ``--insecure-registry`` (each checked) and ``--ca-file``."""
        entries = set()
        for entry in insecure:
            try:
                parse_host(entry.strip())
            except InvalidReferenceError as exc:
                raise UsageError(f"--insecure-registry {entry!r}: {exc.message}", hint=exc.hint) from None
            host, port = split_host(entry.strip())
            entries.add(f"{host}:{port}" if port is not None else host)
        return cls(insecure_hosts=frozenset(entries), ca_file=ca_file)

    def with_ca_file(self, ca_file: Optional[Path]) -> "TlsPolicy":
        return replace(self, ca_file=ca_file)

    def is_insecure(self, host_or_url: str) -> bool:
        """Whether this exact host (and port) was named insecure. Unnamed hosts are never insecure."""
        host, port = split_host(host_or_url)
        return any(_matches(e, host, port) for e in self.insecure_hosts)

    def for_host(self, host_or_url: str) -> HostTls:
        host, port = split_host(host_or_url)
        if any(_matches(e, host, port) for e in self.insecure_hosts):
            return HostTls(verify=False)
        cas = ((self.ca_file,) if self.ca_file is not None else ()) + tuple(
            path for entry, path in self.host_ca_files if _matches(entry, host, port)
        )
        client = next(((cert, key) for entry, cert, key in self.client_certs if _matches(entry, host, port)), None)
        return HostTls(verify=True, ca_files=cas, client_cert=client)

    def verify_for(self, host_or_url: str) -> Union[bool, Tuple[Path, ...]]:
        """False (unverified), True (system CAs) or the extra CA files trusted on top of the system CAs."""
        tls = self.for_host(host_or_url)
        if not tls.verify:
            return False
        return tls.ca_files or True


def _log_keys_if_asked(ctx: ssl.SSLContext) -> None:
    """`$SSLKEYLOGFILE`, as `ssl.create_default_context` honours it."""
    keylog = os.environ.get("SSLKEYLOGFILE")
    if keylog and not sys.flags.ignore_environment and hasattr(ctx, "keylog_filename"):
        ctx.keylog_filename = keylog


def build_ssl_context(tls: HostTls) -> ssl.SSLContext:
    """An SSL context doing what `tls` says. A CA or client file that cannot be used is a `UsageError`."""
    if not tls.verify:
        # What `ssl.create_default_context()` makes, without loading the system CAs first (a few tens of
        # milliseconds that an unverified context never uses): the client protocol's secure defaults.
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        _log_keys_if_asked(ctx)
    else:
        ctx = ssl.create_default_context()
        for ca in tls.ca_files:
            try:
                ctx.load_verify_locations(cafile=str(ca))
            except (ssl.SSLError, ValueError):
                raise UsageError(f"CA file {ca} holds no PEM certificate", hint="give a PEM file (-----BEGIN CERTIFICATE-----)") from None
            except OSError as exc:
                raise UsageError(f"cannot read CA file {ca}: {exc.strerror or exc}") from None
    if tls.client_cert is not None:
        cert, key = tls.client_cert
        try:
            ctx.load_cert_chain(certfile=str(cert), keyfile=str(key))
        except (ssl.SSLError, ValueError):
            raise UsageError(f"client certificate {cert} or key {key} is not a PEM certificate and its key") from None
        except OSError as exc:
            raise UsageError(f"cannot read client certificate {cert} or key {key}: {exc.strerror or exc}") from None
    return ctx

"""certs.d: per-registry CA certificates and client certificates, where the containers tools look for them.

Owns finding the TLS files of a registry, the way containers/image does (`docker/docker_client.go`
`dockerCertDir`, `pkg/tlsclientconfig`):

- the directory of a registry is `HOST:PORT` (or `HOST` for a registry named without a port) under the
  first of these that has one: `~/.config/containers/certs.d`, `/etc/containers/certs.d`,
  `/etc/docker/certs.d`; directories of the same registry further down the list are not read;
- in it, every `*.crt` is a CA trusted for that registry (on top of the system CAs and `--ca-file`), and
  every `NAME.cert` with its `NAME.key` is a client certificate presented to it (mutual TLS); a `.cert`
  without its `.key`, or the reverse, is an error naming both files.

`CertsD.for_host` answers for one registry; `CertsD.scan` lists every registry that has files, as the
`(HOST:PORT, file)` pairs `TlsPolicy` takes. A registry named without a port is `HOST:443`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from bundler.base.errors import UsageError


def default_roots(env: Optional[Mapping[str, str]] = None) -> List[Path]:
    env = os.environ if env is None else env
    home = Path(env.get("HOME") or Path.home())
    return [home / ".config" / "containers" / "certs.d", Path("/etc/containers/certs.d"), Path("/etc/docker/certs.d")]


@dataclass(frozen=True)
class HostCerts:
    """The TLS files of one registry: its certs.d directory, CA files, and client certificate and key."""

    directory: Path
    ca_files: Tuple[Path, ...] = ()
    client_cert: Optional[Tuple[Path, Path]] = None


def read_host_dir(directory: Path) -> HostCerts:
    """The CA files and client certificate of one `HOST:PORT` directory (see the module docstring)."""
    try:
        names = sorted(p.name for p in directory.iterdir() if p.is_file())
    except OSError as exc:
        raise UsageError(f"cannot read certificate directory {directory}: {exc.strerror or exc}") from None
    cas = tuple(directory / n for n in names if n.endswith(".crt"))
    pairs: List[Tuple[Path, Path]] = []
    for n in names:
        if n.endswith(".cert"):
            key = n[: -len(".cert")] + ".key"
            if key not in names:
                raise UsageError(f"client certificate {directory / n} has no key {directory / key}", hint="add the key or remove the certificate")
            pairs.append((directory / n, directory / key))
        elif n.endswith(".key") and n[: -len(".key")] + ".cert" not in names:
            raise UsageError(
                f"key {directory / n} has no client certificate {directory / (n[: -len('.key')] + '.cert')}",
                hint="add the certificate or remove the key",
            )
    return HostCerts(directory, cas, pairs[0] if pairs else None)


def _dir_name(host_port: str) -> str:
    return host_port[: -len(":443")] if host_port.endswith(":443") else host_port


class CertsD:
    """certs.d lookups over `roots` (default: `default_roots()`), in order; the first directory wins."""

    def __init__(self, roots: Optional[Sequence[Path]] = None) -> None:
        self.roots = list(roots) if roots is not None else default_roots()

    def for_host(self, host_port: str) -> Optional[HostCerts]:
        """The files for a registry named `HOST[:PORT]` (exactly as in image references), or None."""
        for candidate in dict.fromkeys([host_port, _dir_name(host_port)]):
            for root in self.roots:
                d = root / candidate
                if d.is_dir():
                    return read_host_dir(d)
        return None

    def scan(self) -> Tuple[Tuple[Tuple[str, Path], ...], Tuple[Tuple[str, Path, Path], ...]]:
        """Every registry with files: (`(HOST:PORT, CA file)` pairs, `(HOST:PORT, cert, key)` triples)."""
        seen: Dict[str, HostCerts] = {}
        for root in self.roots:
            try:
                dirs = sorted(p for p in root.iterdir() if p.is_dir())
            except OSError:
                continue
            for d in dirs:
                name = d.name if ":" in d.name.rsplit("]", 1)[-1] else f"{d.name}:443"
                if name not in seen:
                    seen[name] = read_host_dir(d)
        cas = tuple((name, ca) for name, h in seen.items() for ca in h.ca_files)
        clients = tuple((name, h.client_cert[0], h.client_cert[1]) for name, h in seen.items() if h.client_cert is not None)
        return cas, clients

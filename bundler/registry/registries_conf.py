"""registries.conf: where an image is really pulled from, as containers-registries.conf(5) says.

Owns reading the files (version 2, and the version 1 `[registries.insecure]` / `[registries.block]`
lists) in the containers/image search order, and answering three questions for a reference:

- **where to pull it from** (`pull_sources`): the `[[registry]]` entry with the longest matching `prefix`
  (`host[:port][/path]`, or `*.example.com` for any subdomain) rewrites the reference to its `location`;
  its `[[registry.mirror]]` entries come first, in order, for a by-digest pull, and for a by-tag pull too
  unless `mirror-by-digest-only = true` or the mirror's `pull-from-mirror` says otherwise (`all`,
  `digest-only`, `tag-only`);
- **whether it is blocked** (`check_not_blocked`): `blocked = true` refuses it with a message naming the
  entry and its file;
- **which hosts are insecure** (`insecure_hosts`): the hosts of every `location` marked `insecure = true`
  (registries and mirrors) get plain HTTP or unverified TLS, like `--insecure-registry`.

Search order (the first that applies):

1. `$CONTAINERS_REGISTRIES_CONF`, then the drop-ins of `/etc/containers/registries.conf.d/` and
   `$HOME/.config/containers/registries.conf.d/`;
2. `$HOME/.config/containers/registries.conf`, then only `$HOME/.config/containers/registries.conf.d/`;
3. `/etc/containers/registries.conf`, then both drop-in directories as in 1.

Drop-ins (`*.conf`) are read in file-name order (a user file replaces a system file of the same name); an
entry with the same `prefix` as an earlier one replaces it, others are added. A missing file is no error;
a file that cannot be parsed is a `ConfigError` naming it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple

from bundler.base.errors import ConfigError, UsageError
from bundler.oci.reference import Reference
from bundler.registry.tomlsubset import TomlError, loads

log = logging.getLogger(__name__)

PULL_FROM_MIRROR = ("all", "digest-only", "tag-only")
SYSTEM_FILE = Path("/etc/containers/registries.conf")
SYSTEM_DIR = Path("/etc/containers/registries.conf.d")


@dataclass(frozen=True)
class Mirror:
    location: str
    insecure: bool = False
    pull_from_mirror: str = "all"


@dataclass(frozen=True)
class RegistryEntry:
    """One `[[registry]]` table. `source`: the file it came from (for messages)."""

    prefix: str
    location: str
    source: Path
    insecure: bool = False
    blocked: bool = False
    mirror_by_digest_only: bool = False
    mirrors: Tuple[Mirror, ...] = ()


@dataclass(frozen=True)
class PullSource:
    """Where to try one pull: the rewritten reference, and whether it is a mirror (else the registry itself)."""

    reference: Reference
    mirror: bool = False
    insecure: bool = False


def _matching_prefix_length(ref: str, prefix: str) -> int:
    """How much of `ref` (`host/path[:tag][@digest]`) `prefix` matches, or -1 (containers/image's rule)."""
    if prefix.startswith("*."):
        host = ref.split("/", 1)[0]
        suffix = prefix[1:]  # ".example.com"
        hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if hostname.endswith(suffix) and len(hostname) > len(suffix):
            return len(host)
        return -1
    if len(ref) < len(prefix) or not ref.startswith(prefix):
        return -1
    if len(ref) == len(prefix) or ref[len(prefix)] in "/:@":
        return len(prefix)
    return -1


@dataclass(frozen=True)
class RegistriesConf:
    """The registries of the merged files, in order; empty when no file exists."""

    registries: Tuple[RegistryEntry, ...] = ()
    files: Tuple[Path, ...] = ()

    # -- lookups ---------------------------------------------------------------------------------------

    def find(self, ref_or_host: str) -> Optional[RegistryEntry]:
        """The entry whose prefix matches longest (`ref_or_host` is `host[/path][:tag][@digest]`)."""
        best: Optional[RegistryEntry] = None
        best_len = -1
        for entry in self.registries:
            n = _matching_prefix_length(ref_or_host, entry.prefix)
            if n > best_len:
                best, best_len = entry, n
        return best

    def check_not_blocked(self, ref: Reference) -> None:
        entry = self.find(str(ref))
        if entry is not None and entry.blocked:
            raise UsageError(
                f"registry {entry.prefix!r} is blocked (blocked = true in {entry.source}), so {ref} is not used",
                hint=f"remove the entry from {entry.source} or pick another source",
            )

    def pull_sources(self, ref: Reference) -> List[PullSource]:
        """Where to pull `ref` from, in order: mirrors first (when they apply), then the registry itself."""
        text = str(ref)
        entry = self.find(text)
        if entry is None:
            return [PullSource(ref)]
        self.check_not_blocked(ref)
        by_digest = ref.digest is not None
        out: List[PullSource] = []
        for mirror in entry.mirrors:
            if entry.mirror_by_digest_only and not by_digest:
                continue
            if mirror.pull_from_mirror == "digest-only" and not by_digest:
                continue
            if mirror.pull_from_mirror == "tag-only" and by_digest:
                continue
            rewritten = _rewrite(text, entry.prefix, mirror.location, entry.source)
            if rewritten is not None:
                out.append(PullSource(rewritten, mirror=True, insecure=mirror.insecure))
        primary = _rewrite(text, entry.prefix, entry.location, entry.source)
        out.append(PullSource(primary if primary is not None else ref, insecure=entry.insecure))
        return out

    def insecure_hosts(self) -> FrozenSet[str]:
        hosts = set()
        for entry in self.registries:
            if entry.insecure and entry.location:
                hosts.add(entry.location.split("/", 1)[0])
            for mirror in entry.mirrors:
                if mirror.insecure:
                    hosts.add(mirror.location.split("/", 1)[0])
        return frozenset(hosts)

    # -- loading ---------------------------------------------------------------------------------------

    @classmethod
    def load(cls, env: Optional[Mapping[str, str]] = None, home: Optional[Path] = None) -> "RegistriesConf":
        """The merged configuration of this host (see the module docstring for the order)."""
        main, dirs = search_paths(env, home)
        files: List[Path] = []
        registries: List[RegistryEntry] = []
        if main.is_file():
            registries = _parse_file(main)
            files.append(main)
        drop_ins: Dict[str, Path] = {}
        for d in dirs:
            if d.is_dir():
                for p in d.glob("*.conf"):
                    drop_ins[p.name] = p
        for name in sorted(drop_ins):
            path = drop_ins[name]
            files.append(path)
            for entry in _parse_file(path):
                registries = [e for e in registries if e.prefix != entry.prefix] + [entry]
        if files:
            log.debug("registries.conf: %s (%d registries)", ", ".join(map(str, files)), len(registries))
        return cls(tuple(registries), tuple(files))


def search_paths(env: Optional[Mapping[str, str]] = None, home: Optional[Path] = None) -> Tuple[Path, List[Path]]:
    """(main file, drop-in directories) in containers/image's order."""
    env = os.environ if env is None else env
    home = home if home is not None else Path(env.get("HOME") or Path.home())
    user_file = home / ".config" / "containers" / "registries.conf"
    user_dir = home / ".config" / "containers" / "registries.conf.d"
    if env.get("CONTAINERS_REGISTRIES_CONF"):
        return Path(env["CONTAINERS_REGISTRIES_CONF"]), [SYSTEM_DIR, user_dir]
    if user_file.is_file():
        return user_file, [user_dir]
    return SYSTEM_FILE, [SYSTEM_DIR, user_dir]


def _rewrite(ref: str, prefix: str, location: str, source: Path) -> Optional[Reference]:
    n = _matching_prefix_length(ref, prefix)
    if n < 0:
        return None
    if not location:
        return Reference.parse(ref)  # `*.example.com` with no location: pulled as named
    text = location + ref[n:]
    try:
        return Reference.parse(text)
    except UsageError:
        raise ConfigError(f"{source}: location {location!r} turns {ref} into {text!r}, which is not an image reference") from None


def _parse_file(path: Path) -> List[RegistryEntry]:
    try:
        doc = loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    except TomlError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}", hint="fix the file (see containers-registries.conf(5))") from None
    return _entries(doc, path)


def _bool(table: Mapping[str, Any], key: str, path: Path) -> bool:
    value = table.get(key, False)
    if not isinstance(value, bool):
        raise ConfigError(f"{path}: {key} must be true or false, not {value!r}")
    return value


def _str(table: Mapping[str, Any], key: str, path: Path) -> str:
    value = table.get(key, "")
    if not isinstance(value, str):
        raise ConfigError(f"{path}: {key} must be a string, not {value!r}")
    return value.strip()


def _entries(doc: Mapping[str, Any], path: Path) -> List[RegistryEntry]:
    out: List[RegistryEntry] = []
    v1 = doc.get("registries")
    if isinstance(v1, Mapping):  # version 1: [registries.search] / .insecure / .block
        if "registry" in doc:
            raise ConfigError(f"{path} mixes the version 1 [registries.*] tables with version 2 [[registry]]", hint="use one format")
        lists: Dict[str, Sequence[str]] = {}
        for kind in ("insecure", "block"):
            table = v1.get(kind) or {}
            hosts = table.get("registries", []) if isinstance(table, Mapping) else []
            lists[kind] = [str(h).strip() for h in hosts]
        for host in sorted(set(lists["insecure"]) | set(lists["block"])):
            out.append(RegistryEntry(host, host, path, insecure=host in lists["insecure"], blocked=host in lists["block"]))
        return out
    tables = doc.get("registry", [])
    if not isinstance(tables, list):
        raise ConfigError(f"{path}: 'registry' must be written [[registry]] (an array of tables)")
    for table in tables:
        if not isinstance(table, Mapping):
            continue
        location = _str(table, "location", path)
        prefix = _str(table, "prefix", path) or location
        if not prefix:
            raise ConfigError(f"{path}: a [[registry]] entry has neither prefix nor location")
        if not location and not prefix.startswith("*."):
            location = prefix
        if prefix.startswith("*.") and "/" in prefix:
            raise ConfigError(f"{path}: wildcard prefix {prefix!r} must be a host name only (*.example.com)")
        mirrors: List[Mirror] = []
        raw_mirrors = table.get("mirror", [])
        if not isinstance(raw_mirrors, list):
            raise ConfigError(f"{path}: mirrors of {prefix!r} must be written [[registry.mirror]]")
        for m in raw_mirrors:
            if not isinstance(m, Mapping):
                continue
            loc = _str(m, "location", path)
            if not loc:
                raise ConfigError(f"{path}: a mirror of {prefix!r} has no location")
            pfm = _str(m, "pull-from-mirror", path) or "all"
            if pfm not in PULL_FROM_MIRROR:
                raise ConfigError(f"{path}: pull-from-mirror of {loc!r} is {pfm!r}", hint="use all, digest-only or tag-only")
            mirrors.append(Mirror(loc, _bool(m, "insecure", path), pfm))
        by_digest_only = _bool(table, "mirror-by-digest-only", path)
        if by_digest_only and any(m.pull_from_mirror != "all" for m in mirrors):
            raise ConfigError(f"{path}: {prefix!r} sets both mirror-by-digest-only and pull-from-mirror", hint="keep one")
        out.append(
            RegistryEntry(
                prefix, location, path, _bool(table, "insecure", path), _bool(table, "blocked", path), by_digest_only, tuple(mirrors)
            )
        )
    return out

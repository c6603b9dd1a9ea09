"""The mirror ledger: which tags `unpack` put into which registry, so `prune` touches only those.

One JSON-lines file per mirror registry (host, port and prefix) in `$XDG_STATE_HOME/ocp-bundler/mirrors/`
(default `~/.local/state/ocp-bundler/mirrors/`). Each line records one image of one bundle as it stands in
the registry after an unpack: repository (with the prefix, without the host), tag, manifest digest and the
bundle id. Lines are appended whole with a single write, so concurrent unpacks into one registry never
interleave; `prune` rewrites the file atomically without the entries it deleted, re-reading it under the
ledger's lock (which appends take too), so entries an unpack recorded while prune ran are kept.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ContextManager, Iterable, List, Optional

from bundler.base.errors import UsageError
from bundler.base.fsutil import atomic_write
from bundler.base.lock import exclusive_lock, lock_path_for

__all__ = ["LedgerEntry", "default_ledger_path", "drop_from_ledger", "read_ledger", "record"]

#: A ledger larger than this is not ours: refuse rather than read it into memory.
LEDGER_LIMIT = 256 * 1024 * 1024
LOCK_WAIT_SECONDS = 120.0


@dataclass(frozen=True)
class LedgerEntry:
    """One tag unpack left in the registry."""

    repository: str
    tag: str
    digest: str
    bundle: str
    at: str = ""

    def to_line(self) -> str:
        return json.dumps(
            {"repository": self.repository, "tag": self.tag, "digest": self.digest, "bundle": self.bundle, "at": self.at},
            sort_keys=True,
        ) + "\n"


def default_ledger_path(registry: str) -> Path:
    """The ledger of `registry` (`host[:port][/prefix]`) in the user's state directory."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    key = re.sub(r"[^A-Za-z0-9._-]", "_", registry.strip("/"))
    return Path(base) / "ocp-bundler" / "mirrors" / f"{key}.jsonl"


def record(path: Path, entries: Iterable[LedgerEntry]) -> None:
    """Append `entries` to the ledger at `path` (created with its directories, mode 0600)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    data = "".join(
        LedgerEntry(repository=e.repository, tag=e.tag, digest=e.digest, bundle=e.bundle, at=e.at or stamp).to_line()
        for e in entries
    ).encode("utf-8")
    if not data:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(path):
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
    except OSError as exc:
        raise UsageError(f"cannot record the pushed images in {path}: {exc.strerror or exc}", hint="check the permissions of that directory") from exc


def read_ledger(path: Path) -> List[LedgerEntry]:
    """Every entry of the ledger at `path`, oldest first ([] when there is none)."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(LEDGER_LIMIT + 1)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise UsageError(f"cannot read the mirror ledger {path}: {exc.strerror or exc}") from exc
    if len(raw) > LEDGER_LIMIT:
        raise UsageError(f"the mirror ledger {path} is larger than {LEDGER_LIMIT} bytes", hint="it is not one ocp-bundler wrote")
    entries: List[LedgerEntry] = []
    for number, line in enumerate(raw.decode("utf-8", "replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            entries.append(
                LedgerEntry(
                    repository=_text(item, "repository"), tag=_text(item, "tag"), digest=_text(item, "digest"),
                    bundle=_text(item, "bundle"), at=str(item.get("at", "")),
                )
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            raise UsageError(f"line {number} of the mirror ledger {path} is not a ledger entry", hint="fix or remove that line") from None
    return entries


def drop_from_ledger(path: Path, dropped: Iterable[LedgerEntry]) -> None:
    """Remove the `dropped` entries (as read earlier) from the ledger at `path`, atomically; what was
    recorded since that read stays."""
    gone = set(dropped)
    with _locked(path):
        kept = [e for e in read_ledger(path) if e not in gone]
        atomic_write(path, "".join(e.to_line() for e in kept).encode("utf-8"))


def _locked(path: Path) -> "ContextManager[None]":
    return exclusive_lock(lock_path_for(path), what=f"the mirror ledger {path}", wait=LOCK_WAIT_SECONDS)


def _text(item: object, key: str) -> str:
    if not isinstance(item, dict):
        raise TypeError(key)
    value = item[key]
    if not isinstance(value, str) or not value:
        raise TypeError(key)
    return value


def latest_by_tag(entries: Iterable[LedgerEntry]) -> List[LedgerEntry]:
    """One entry per (repository, tag): the latest recorded, in first-seen order."""
    latest: dict[tuple[str, str], LedgerEntry] = {}
    for entry in entries:
        latest.pop((entry.repository, entry.tag), None)
        latest[(entry.repository, entry.tag)] = entry
    return list(latest.values())


def optional_path(path: Optional[Path], registry: str) -> Path:
    """`path` when given, else the default ledger of `registry`."""
    return Path(path) if path is not None else default_ledger_path(registry)

"""Sqlite operator catalogs (`/database/index.db`): read into the catalog model, and prune.

Owns every query on an index database. Schemas differ by version (`schema_migrations.version`: v5 has
`api_provider`/`api_requirer` keyed by `channel_entry_id` and no `replaces`/`skips` columns; v7 keys them by
bundle and adds `operatorbundle.replaces`/`skips`; v8+ adds `dependencies`, v9+ `properties`), so columns
and tables are looked up with `PRAGMA table_info` / `sqlite_master`, never assumed (PROTOCOL-NOTES §5).

- `load_sqlite`: the model (`catalog_fbc.DeclarativeConfig`) of a database, read from a temporary copy.
  Images are `related_image.image` ∪ `operatorbundle.bundlepath` minus empty strings; empty
  `related_image` rows are kept as empty related images so the `value:` bug can be recovered from the CSV
  (`operatorbundle.csv`). Without `replaces`/`skips` columns they are computed from `channel_entry` the
  way operator-registry's migration 007 backfilled them (nearest replacement = replaces, the rest = skips).
- `prune_sqlite`: a copy of a database holding only a selection: rows of unselected packages, channels,
  bundles (and everything keyed by them) deleted, channel heads and default channels updated, schema kept.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

from bundler.openshift.catalog.model import (
    FORMAT_SQLITE,
    GVK,
    Channel,
    ChannelEntry,
    DeclarativeConfig,
    InvalidCatalogError,
    OperatorBundle,
    Package,
    RelatedImage,
)
from bundler.openshift.catalog.select import Selection, selected_head

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _connect(path: Path) -> Iterator[sqlite3.Connection]:
    try:
        conn = sqlite3.connect(str(path))
    except sqlite3.Error as exc:
        raise InvalidCatalogError(f"{path}: cannot open the index database ({exc})") from None
    try:
        yield conn
    finally:
        conn.close()


def _tables(conn: sqlite3.Connection) -> Set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def _columns(conn: sqlite3.Connection, table: str) -> List[str]:
    return [str(r[1]) for r in conn.execute(f'PRAGMA table_info("{table}")')]


def schema_version(conn: sqlite3.Connection) -> Optional[int]:
    try:
        row = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
    except sqlite3.Error:
        return None
    return int(row[0]) if row and row[0] is not None else None


def load_sqlite(db_path: Path) -> DeclarativeConfig:
    """The catalog model of an index database (read from a temporary copy; the file is never touched)."""
    with tempfile.TemporaryDirectory(prefix="ocpb-index-") as tmp:
        copy = Path(tmp) / "index.db"
        shutil.copyfile(db_path, copy)
        with _connect(copy) as conn:
            try:
                return _load(conn)
            except sqlite3.DatabaseError as exc:
                raise InvalidCatalogError(f"{db_path}: not a readable index database ({exc})") from None


def _load(conn: sqlite3.Connection) -> DeclarativeConfig:
    tables = _tables(conn)
    for needed in ("package", "channel", "channel_entry", "operatorbundle"):
        if needed not in tables:
            raise InvalidCatalogError(f"the index database has no {needed!r} table (schema version {schema_version(conn)})")
    model = DeclarativeConfig(source_format=FORMAT_SQLITE)
    for name, default in conn.execute("SELECT name, default_channel FROM package ORDER BY name"):
        model.packages[name] = Package(name, default or None)
    rows, has_replaces = _bundle_rows(conn)
    entries = _channel_entries(conn, rows)
    facts = _bundle_facts(conn, tables, entries.by_id)
    _add_bundles(model, rows, entries, facts, has_replaces=has_replaces)
    _add_channels(conn, model, rows, entries)
    return model


_BundleRow = Tuple[Any, ...]
"""(name, bundlepath, version, skiprange, csv, replaces, skips) of `operatorbundle`; absent columns empty."""


def _bundle_rows(conn: sqlite3.Connection) -> Tuple[Dict[str, _BundleRow], bool]:
    """The `operatorbundle` rows by name, and whether the table records replaces/skips itself."""
    ob_cols = set(_columns(conn, "operatorbundle"))
    sel = ["name", "bundlepath" if "bundlepath" in ob_cols else "''", "version" if "version" in ob_cols else "''",
           "skiprange" if "skiprange" in ob_cols else "NULL", "csv" if "csv" in ob_cols else "NULL",
           "replaces" if "replaces" in ob_cols else "NULL", "skips" if "skips" in ob_cols else "NULL"]
    rows: Dict[str, _BundleRow] = {r[0]: r for r in conn.execute(f"SELECT {', '.join(sel)} FROM operatorbundle")}
    return rows, "replaces" in ob_cols and "skips" in ob_cols


@dataclass
class _Entries:
    """What the `channel_entry` table says about the bundles the catalog holds."""

    by_id: Dict[int, Tuple[Any, ...]]
    bundle_package: Dict[str, str] = field(default_factory=dict)
    membership: Dict[Tuple[str, str], Dict[str, int]] = field(default_factory=dict)
    """(package, channel) -> bundle -> its greatest depth in the channel."""
    upgrades: Dict[str, Tuple[Optional[str], Tuple[str, ...]]] = field(default_factory=dict)
    """bundle -> (replaces, skips) as computed from the entries (migration 007's query)."""


def _channel_entries(conn: sqlite3.Connection, rows: Dict[str, _BundleRow]) -> _Entries:
    found = conn.execute(
        "SELECT entry_id, channel_name, package_name, operatorbundle_name, replaces, depth FROM channel_entry"
    ).fetchall()
    entries = _Entries(by_id={e[0]: e for e in found})
    # bundle -> [(depth, replacee name)] across its channel entries (migration 007's query)
    replacees: Dict[str, List[Tuple[int, Optional[str]]]] = {}
    for _entry_id, ch, pkg, bname, rep, depth in found:
        if bname not in rows:
            continue  # a skipped version that the catalog does not hold: not a bundle
        entries.bundle_package.setdefault(bname, pkg)
        replacee = entries.by_id[rep][3] if rep is not None and rep in entries.by_id else None
        replacees.setdefault(bname, []).append((depth or 0, replacee))
        m = entries.membership.setdefault((pkg, ch), {})
        m[bname] = max(m.get(bname, -1), depth or 0)
    for bname, reps in replacees.items():
        names: List[str] = []
        for _, r in sorted(reps, key=lambda x: x[0]):
            if r and r not in names:
                names.append(r)
        entries.upgrades[bname] = (names[0] if names else None, tuple(names[1:]))
    return entries


@dataclass
class _BundleFacts:
    """Per bundle name: related images, provided and required APIs, required packages."""

    related: Dict[str, List[RelatedImage]]
    provided: Dict[str, Set[GVK]]
    required: Dict[str, Set[GVK]]
    required_packages: Dict[str, List[Tuple[str, str]]]


def _json_value(value: Any) -> Any:
    try:
        return json.loads(value or "{}")
    except ValueError:
        return None


def _gvk_of(v: Dict[str, Any]) -> GVK:
    return (str(v.get("group", "")), str(v.get("version", "")), str(v.get("kind", "")))


def _bundle_facts(conn: sqlite3.Connection, tables: Set[str], by_id: Dict[int, Tuple[Any, ...]]) -> _BundleFacts:
    related: Dict[str, List[RelatedImage]] = {}
    if "related_image" in tables:
        for image, bname in conn.execute("SELECT image, operatorbundle_name FROM related_image"):
            related.setdefault(bname, []).append(RelatedImage("", (_text(image) or "").strip()))
    provided, required = _apis(conn, tables, by_id)
    req_pkgs: Dict[str, List[Tuple[str, str]]] = {}
    if "dependencies" in tables and {"type", "value", "operatorbundle_name"} <= set(_columns(conn, "dependencies")):
        for dtype, value, bname in conn.execute("SELECT type, value, operatorbundle_name FROM dependencies"):
            v = _json_value(value)
            if dtype == "olm.gvk" and isinstance(v, dict):
                required.setdefault(bname, set()).add(_gvk_of(v))
            elif dtype == "olm.package" and isinstance(v, dict):
                req_pkgs.setdefault(bname, []).append((str(v.get("packageName", "")), str(v.get("version", "") or "")))
    if "properties" in tables and {"type", "value", "operatorbundle_name"} <= set(_columns(conn, "properties")):
        for ptype, value, bname in conn.execute("SELECT type, value, operatorbundle_name FROM properties"):
            if ptype != "olm.gvk":
                continue
            v = _json_value(value)
            if isinstance(v, dict):
                provided.setdefault(bname, set()).add(_gvk_of(v))
    return _BundleFacts(related, provided, required, req_pkgs)


def _add_bundles(
    model: DeclarativeConfig, rows: Dict[str, _BundleRow], entries: _Entries, facts: _BundleFacts, *, has_replaces: bool
) -> None:
    """One `OperatorBundle` per row that is in some channel; replaces/skips from the row when it has them."""
    for bname, (_name, bundlepath, version, _skiprange, csv, rep_col, skips_col) in rows.items():
        bundlepath, version, csv, rep_col, skips_col = (_text(v) for v in (bundlepath, version, csv, rep_col, skips_col))
        pkg = entries.bundle_package.get(bname)
        if pkg is None or pkg not in model.packages:
            log.warning("index database: bundle %s is in no channel; OLM cannot install it, so it is ignored", bname)
            continue
        version_text = version or ""
        if not version_text and csv:
            with contextlib.suppress(ValueError, AttributeError):
                version_text = str(json.loads(csv).get("spec", {}).get("version") or "")
        model.bundles[(pkg, bname)] = OperatorBundle(
            package=pkg,
            name=bname,
            image=(bundlepath or "").strip(),
            version_text=version_text,
            related_images=tuple(facts.related.get(bname, ())),
            provided_gvks=frozenset(facts.provided.get(bname, ())),
            required_gvks=frozenset(facts.required.get(bname, ())),
            required_packages=tuple(facts.required_packages.get(bname, ())),
            csv_json=csv or None,
        )
        if has_replaces:
            entries.upgrades[bname] = (rep_col or None, tuple(s for s in (skips_col or "").split(",") if s))


def _add_channels(conn: sqlite3.Connection, model: DeclarativeConfig, rows: Dict[str, _BundleRow], entries: _Entries) -> None:
    for ch_name, pkg_name, head in conn.execute("SELECT name, package_name, head_operatorbundle_name FROM channel"):
        pkg = model.packages.get(pkg_name)
        if pkg is None:
            continue
        ch = pkg.channels[ch_name] = Channel(pkg_name, ch_name, declared_head=head or None)
        members = entries.membership.get((pkg_name, ch_name), {})
        for bname in sorted(members, key=lambda n: -members[n]):  # oldest (deepest) first, like FBC entries
            if (pkg_name, bname) not in model.bundles:
                continue
            replaces, skips = entries.upgrades.get(bname, (None, ()))
            ch.entries[bname] = ChannelEntry(bname, replaces, skips, _text(rows[bname][3]) or None)


def _text(value: Any) -> Optional[str]:
    """Text of a column that older databases store as BLOB."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    return None if value is None else str(value)


def _apis(conn: sqlite3.Connection, tables: Set[str], by_id: Dict[int, Tuple[Any, ...]]) -> Tuple[Dict[str, Set[GVK]], Dict[str, Set[GVK]]]:
    out: List[Dict[str, Set[GVK]]] = []
    for table in ("api_provider", "api_requirer"):
        found: Dict[str, Set[GVK]] = {}
        if table in tables:
            cols = set(_columns(conn, table))
            if "operatorbundle_name" in cols:
                q = f"SELECT group_name, version, kind, operatorbundle_name FROM {table}"
                for g, v, k, b in conn.execute(q):
                    found.setdefault(b, set()).add((g or "", v or "", k or ""))
            elif "channel_entry_id" in cols:
                q = f"SELECT group_name, version, kind, channel_entry_id FROM {table}"
                for g, v, k, eid in conn.execute(q):
                    e = by_id.get(eid)
                    if e is not None:
                        found.setdefault(e[3], set()).add((g or "", v or "", k or ""))
        out.append(found)
    return out[0], out[1]


def prune_sqlite(src: Path, dst: Path, selection: Selection) -> None:
    """Write to `dst` a copy of the database `src` that holds only `selection` (same schema)."""
    tmp = dst.with_name(dst.name + ".partial")
    shutil.copyfile(src, tmp)
    with _connect(tmp) as conn:
        try:
            _prune(conn, selection)
            conn.commit()
            conn.execute("VACUUM")
        except sqlite3.DatabaseError as exc:
            raise InvalidCatalogError(f"{src}: cannot prune the index database ({exc})") from None
    tmp.replace(dst)


def _prune(conn: sqlite3.Connection, selection: Selection) -> None:
    tables = _tables(conn)
    conn.execute("PRAGMA foreign_keys = OFF")
    conn.execute("CREATE TEMP TABLE keep_package (name TEXT PRIMARY KEY)")
    conn.execute("CREATE TEMP TABLE keep_channel (package_name TEXT, name TEXT, PRIMARY KEY(package_name, name))")
    conn.execute("CREATE TEMP TABLE keep_bundle (name TEXT PRIMARY KEY)")
    conn.execute("CREATE TEMP TABLE keep_member (package_name TEXT, channel_name TEXT, name TEXT, PRIMARY KEY(package_name, channel_name, name))")
    conn.executemany("INSERT INTO keep_package VALUES (?)", [(p,) for p in selection.channels])
    conn.executemany("INSERT INTO keep_channel VALUES (?, ?)", [(p, c) for p, chans in selection.channels.items() for c in chans])
    conn.executemany("INSERT OR IGNORE INTO keep_bundle VALUES (?)", [(b,) for _, b in selection.bundle_keys()])
    conn.executemany(
        "INSERT INTO keep_member VALUES (?, ?, ?)",
        [(p, c, b) for p, chans in selection.channels.items() for c, names in chans.items() for b in names],
    )
    # channel entries: drop unselected channels, and entries of real bundles not selected in that channel
    conn.execute("DELETE FROM channel_entry WHERE NOT EXISTS (SELECT 1 FROM keep_channel k WHERE k.package_name = channel_entry.package_name AND k.name = channel_entry.channel_name)")
    conn.execute(
        "DELETE FROM channel_entry WHERE operatorbundle_name IN (SELECT name FROM operatorbundle) AND NOT EXISTS "
        "(SELECT 1 FROM keep_member k WHERE k.package_name = channel_entry.package_name AND k.channel_name = channel_entry.channel_name "
        "AND k.name = channel_entry.operatorbundle_name)"
    )
    # entries of skipped versions the catalog does not hold: keep those a kept entry still points at
    while True:
        cur = conn.execute(
            "DELETE FROM channel_entry WHERE operatorbundle_name NOT IN (SELECT name FROM operatorbundle) "
            "AND entry_id NOT IN (SELECT replaces FROM channel_entry WHERE replaces IS NOT NULL)"
        )
        if cur.rowcount == 0:
            break
    conn.execute("UPDATE channel_entry SET replaces = NULL WHERE replaces IS NOT NULL AND replaces NOT IN (SELECT entry_id FROM channel_entry)")
    for table in sorted(tables):
        cols = set(_columns(conn, table))
        if table in ("channel_entry", "operatorbundle"):
            continue
        if "operatorbundle_name" in cols:
            conn.execute(f'DELETE FROM "{table}" WHERE operatorbundle_name NOT IN (SELECT name FROM keep_bundle)')
        if "channel_entry_id" in cols:
            conn.execute(f'DELETE FROM "{table}" WHERE channel_entry_id NOT IN (SELECT entry_id FROM channel_entry)')
        if table == "channel":
            conn.execute("DELETE FROM channel WHERE NOT EXISTS (SELECT 1 FROM keep_channel k WHERE k.package_name = channel.package_name AND k.name = channel.name)")
        elif table == "package":
            conn.execute("DELETE FROM package WHERE name NOT IN (SELECT name FROM keep_package)")
        elif "package_name" in cols:
            conn.execute(f'DELETE FROM "{table}" WHERE package_name NOT IN (SELECT name FROM keep_package)')
    conn.execute("DELETE FROM operatorbundle WHERE name NOT IN (SELECT name FROM keep_bundle)")
    if "api" in tables:
        refs = [t for t in ("api_provider", "api_requirer") if t in tables]
        if refs:
            cond = " AND ".join(
                f"NOT EXISTS (SELECT 1 FROM {t} r WHERE r.group_name = api.group_name AND r.version = api.version AND r.kind = api.kind)" for t in refs
            )
            conn.execute(f"DELETE FROM api WHERE {cond}")
    for pkg, chans in selection.channels.items():
        for ch in chans:
            conn.execute(
                "UPDATE channel SET head_operatorbundle_name = ? WHERE package_name = ? AND name = ?",
                (selected_head(selection, pkg, ch), pkg, ch),
            )
        conn.execute("UPDATE package SET default_channel = ? WHERE name = ?", (selection.default_channels[pkg], pkg))

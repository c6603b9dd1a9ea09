#!/usr/bin/env python3
"""Benchmark: the pure part of catalog planning on a synthetic catalog of realistic size.

Builds, in memory, a file-based catalog of 100 packages × 20 bundles (2,000 bundles) in two channels each,
every bundle with 5 related images (10,000 related image references), a base64 CSV (`olm.bundle.object`),
GVKs and some package dependencies; and the same catalog as a sqlite index database (schema v7 tables plus the v8 `dependencies` table).
Times load, select (heads-only, filtered, full), image collection (CSV cross-check included), render of the
pruned FBC and, for sqlite, the pruned database. No registry is involved.

Usage: python scripts/bench_catalog_plan.py [--packages 100] [--bundles 20] [--related 5] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import base64
import json
import resource
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bundler.openshift.catalog.plan import collect_images  # noqa: E402
from bundler.openshift.catalog.fbc import load_fbc, render_fbc, select  # noqa: E402
from bundler.openshift.catalog.sqlite import load_sqlite, prune_sqlite  # noqa: E402
from bundler.openshift.image_set import CatalogSpec, ChannelFilter, PackageSpec  # noqa: E402

HEX = "0123456789abcdef"


def fake_digest(*parts: object) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()


def bundle_data(p: int, b: int, related: int) -> Tuple[str, str, str, List[Dict[str, str]], Dict[str, Any]]:
    pkg = f"operator-{p:03d}"
    name = f"{pkg}.v1.{b}.0"
    image = f"registry.example.com/ns{p % 7}/{pkg}-bundle@{fake_digest(pkg, b, 'bundle')}"
    rel = [
        {"name": f"img{r}", "image": f"registry.example.com/ns{p % 7}/{pkg}-img{r}@{fake_digest(pkg, b, r)}"}
        for r in range(related)
    ]
    csv = {
        "apiVersion": "operators.coreos.com/v1alpha1",
        "kind": "ClusterServiceVersion",
        "metadata": {"name": name},
        "spec": {
            "version": f"1.{b}.0",
            "relatedImages": rel,
            "install": {"strategy": "deployment", "spec": {"deployments": [
                {"name": pkg, "spec": {"template": {"spec": {"containers": [{"name": "manager", "image": rel[0]["image"]}]}}}}
            ]}},
        },
    }
    return pkg, name, image, rel, csv


def build_fbc(n_pkgs: int, n_bundles: int, related: int) -> Dict[str, bytes]:
    files: Dict[str, bytes] = {}
    for p in range(n_pkgs):
        pkg = f"operator-{p:03d}"
        objs: List[Dict[str, Any]] = [{"schema": "olm.package", "name": pkg, "defaultChannel": "stable"}]
        stable, fast = [], []
        for b in range(n_bundles):
            _, name, image, rel, csv = bundle_data(p, b, related)
            entry: Dict[str, Any] = {"name": name}
            if b:
                entry["replaces"] = f"{pkg}.v1.{b - 1}.0"
                entry["skipRange"] = f"<1.{b}.0"
            fast.append(entry)
            if b < n_bundles - 2:
                stable.append(entry)
            props: List[Dict[str, Any]] = [
                {"type": "olm.package", "value": {"packageName": pkg, "version": f"1.{b}.0"}},
                {"type": "olm.gvk", "value": {"group": f"{pkg}.example.com", "kind": "Thing", "version": "v1"}},
                {"type": "olm.bundle.object", "value": {"data": base64.b64encode(json.dumps(csv).encode()).decode()}},
            ]
            if p % 10 == 1:  # every tenth package depends on the previous one
                props.append({"type": "olm.package.required", "value": {"packageName": f"operator-{p - 1:03d}", "versionRange": ">=1.0.0 <1.5.0"}})
            objs.append({"schema": "olm.bundle", "name": name, "package": pkg, "image": image, "properties": props, "relatedImages": rel})
        objs.insert(1, {"schema": "olm.channel", "package": pkg, "name": "stable", "entries": stable})
        objs.insert(2, {"schema": "olm.channel", "package": pkg, "name": "fast", "entries": fast})
        files[f"{pkg}/catalog.json"] = "\n".join(json.dumps(o) for o in objs).encode()
    return files


def build_sqlite(path: Path, n_pkgs: int, n_bundles: int, related: int) -> None:
    c = sqlite3.connect(path)
    c.executescript(
        """
        CREATE TABLE schema_migrations (version bigint NOT NULL, timestamp DATETIME DEFAULT CURRENT_TIMESTAMP);
        INSERT INTO schema_migrations(version) VALUES (7);
        CREATE TABLE api (group_name TEXT, version TEXT, kind TEXT, plural TEXT NOT NULL, PRIMARY KEY(group_name, version, kind));
        CREATE TABLE operatorbundle (name TEXT PRIMARY KEY, csv TEXT, bundle TEXT, bundlepath TEXT, skiprange TEXT, version TEXT, replaces TEXT, skips TEXT);
        CREATE TABLE package (name TEXT PRIMARY KEY, default_channel TEXT);
        CREATE TABLE channel (name TEXT, package_name TEXT, head_operatorbundle_name TEXT, PRIMARY KEY(name, package_name));
        CREATE TABLE channel_entry (entry_id INTEGER PRIMARY KEY, channel_name TEXT, package_name TEXT, operatorbundle_name TEXT, replaces INTEGER, depth INTEGER);
        CREATE TABLE related_image (image TEXT, operatorbundle_name TEXT);
        CREATE TABLE api_provider (group_name TEXT, version TEXT, kind TEXT, operatorbundle_name TEXT, operatorbundle_version TEXT, operatorbundle_path TEXT);
        CREATE TABLE api_requirer (group_name TEXT, version TEXT, kind TEXT, operatorbundle_name TEXT, operatorbundle_version TEXT, operatorbundle_path TEXT);
        CREATE TABLE dependencies (type TEXT, value TEXT, operatorbundle_name TEXT, operatorbundle_version TEXT, operatorbundle_path TEXT);
        """
    )
    entry_id = 0
    for p in range(n_pkgs):
        pkg = f"operator-{p:03d}"
        c.execute("INSERT INTO package VALUES (?, ?)", (pkg, "stable"))
        c.execute("INSERT INTO api VALUES (?, 'v1', 'Thing', 'things')", (f"{pkg}.example.com",))
        for b in range(n_bundles):
            _, name, image, rel, csv = bundle_data(p, b, related)
            c.execute(
                "INSERT INTO operatorbundle VALUES (?, ?, '', ?, ?, ?, ?, '')",
                (name, json.dumps(csv), image, f"<1.{b}.0" if b else None, f"1.{b}.0", f"{pkg}.v1.{b - 1}.0" if b else ""),
            )
            c.executemany("INSERT INTO related_image VALUES (?, ?)", [(r["image"], name) for r in rel])
            c.execute("INSERT INTO api_provider VALUES (?, 'v1', 'Thing', ?, ?, ?)", (f"{pkg}.example.com", name, f"1.{b}.0", image))
            if p % 10 == 1:
                dep = json.dumps({"packageName": f"operator-{p - 1:03d}", "version": ">=1.0.0 <1.5.0"})
                c.execute("INSERT INTO dependencies VALUES ('olm.package', ?, ?, ?, ?)", (dep, name, f"1.{b}.0", image))
        for ch, count in (("stable", n_bundles - 2), ("fast", n_bundles)):
            c.execute("INSERT INTO channel VALUES (?, ?, ?)", (ch, pkg, f"{pkg}.v1.{count - 1}.0"))
            first = entry_id + 1
            for depth, b in enumerate(range(count - 1, -1, -1)):
                entry_id += 1
                c.execute(
                    "INSERT INTO channel_entry VALUES (?, ?, ?, ?, ?, ?)",
                    (entry_id, ch, pkg, f"{pkg}.v1.{b}.0", entry_id + 1 if b else None, depth),
                )
            assert first <= entry_id
    c.commit()
    c.close()


def timed(label: str, fn: Callable[[], Any], rows: List[Tuple[str, float, str]], detail: Callable[[Any], str] = lambda r: "") -> Any:
    t0 = time.perf_counter()
    result = fn()
    rows.append((label, time.perf_counter() - t0, detail(result)))
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packages", type=int, default=100)
    ap.add_argument("--bundles", type=int, default=20)
    ap.add_argument("--related", type=int, default=5)
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args()

    n_bundles_total = args.packages * args.bundles
    rows: List[Tuple[str, float, str]] = []
    files = timed("generate FBC (not part of planning)", lambda: build_fbc(args.packages, args.bundles, args.related), rows,
                  lambda f: f"{sum(len(v) for v in f.values()) / 1e6:.1f} MB in {len(f)} files")
    filtered = CatalogSpec(
        catalog="registry.example.com/catalog/index:v1",
        packages=tuple(
            PackageSpec(name=f"operator-{p:03d}", channels=(ChannelFilter(name="stable", min_version="1.10.0"),)) for p in range(0, args.packages, 5)
        ),
    )
    heads = CatalogSpec(catalog="registry.example.com/catalog/index:v1")
    full = CatalogSpec(catalog="registry.example.com/catalog/index:v1", full=True)

    t_start = time.perf_counter()
    model = timed("fbc: load", lambda: load_fbc(files), rows, lambda m: f"{len(m.packages)} packages, {len(m.bundles)} bundles")
    sel_h = timed("fbc: select heads-only", lambda: select(model, heads), rows, lambda s: f"{len(s.bundle_keys())} bundles")
    sel_f = timed("fbc: select filtered (20 packages, minVersion)", lambda: select(model, filtered), rows, lambda s: f"{len(s.bundle_keys())} bundles")
    sel_all = timed("fbc: select full", lambda: select(model, full), rows, lambda s: f"{len(s.bundle_keys())} bundles")
    timed("fbc: collect images (full, CSV cross-check)", lambda: collect_images(sel_all), rows,
          lambda c: f"{len(c.uses)} image uses, {len({str(u.reference) for u in c.uses})} unique")
    timed("fbc: render pruned FBC (filtered)", lambda: render_fbc(sel_f), rows, lambda b: f"{len(b) / 1e6:.1f} MB")
    timed("fbc: render full FBC", lambda: render_fbc(sel_all), rows, lambda b: f"{len(b) / 1e6:.1f} MB")
    fbc_total = time.perf_counter() - t_start
    assert len(sel_h.bundle_keys()) >= 2 * args.packages  # heads, plus the dependencies of every tenth package

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "index.db"
        timed("generate sqlite (not part of planning)", lambda: build_sqlite(db, args.packages, args.bundles, args.related), rows,
              lambda _: f"{db.stat().st_size / 1e6:.1f} MB")
        t_start = time.perf_counter()
        smodel = timed("sqlite: load", lambda: load_sqlite(db), rows, lambda m: f"{len(m.packages)} packages, {len(m.bundles)} bundles")
        timed("sqlite: select heads-only", lambda: select(smodel, heads), rows, lambda s: f"{len(s.bundle_keys())} bundles")
        ssel = timed("sqlite: select filtered", lambda: select(smodel, filtered), rows, lambda s: f"{len(s.bundle_keys())} bundles")
        sall = timed("sqlite: select full", lambda: select(smodel, full), rows, lambda s: f"{len(s.bundle_keys())} bundles")
        timed("sqlite: collect images (full, CSV cross-check)", lambda: collect_images(sall), rows, lambda c: f"{len(c.uses)} image uses")
        out = Path(tmp) / "pruned.db"
        timed("sqlite: prune database (filtered)", lambda: prune_sqlite(db, out, ssel), rows, lambda _: f"{out.stat().st_size / 1e6:.2f} MB")
        timed("sqlite: render as FBC (filtered)", lambda: render_fbc(ssel), rows, lambda b: f"{len(b) / 1e6:.1f} MB")
        sqlite_total = time.perf_counter() - t_start

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"synthetic catalog: {args.packages} packages, {n_bundles_total} bundles, {n_bundles_total * args.related} related image references")
    width = max(len(r[0]) for r in rows)
    for label, secs, detail in rows:
        print(f"  {label:<{width}}  {secs:7.3f} s  {detail}")
    print(f"  {'fbc: planning total (load .. render)':<{width}}  {fbc_total:7.3f} s")
    print(f"  {'sqlite: planning total (load .. render)':<{width}}  {sqlite_total:7.3f} s")
    print(f"  peak RSS {peak_mb:.0f} MB")
    if args.json_out:
        args.json_out.write_text(json.dumps({"rows": [{"step": r[0], "seconds": r[1], "detail": r[2]} for r in rows],
                                             "fbc_total": fbc_total, "sqlite_total": sqlite_total, "peak_rss_mb": peak_mb}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

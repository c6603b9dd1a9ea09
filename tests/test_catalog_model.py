"""Catalog model, selection, rendering and image collection without a registry (fast).

Real fixtures: operator-registry's index-declcfgs (heads-only / include-channel / latest expectations, see
operator-registry alpha/action/diff_test.go and oc-mirror pkg/operator/diff/diff_test.go for the configs
that produced them), real Red Hat FBC JSON, sqlite databases of schema v5 and v7, and CSVs for the
`value:` bug (bugzilla 1821515).
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

from bundler.openshift.catalog.plan import collect_images
from bundler.openshift.catalog.fbc import csv_images, load_fbc, parse_csv_document, parse_stream
from bundler.openshift.catalog.model import (
    FORMAT_FBC_ALPHA,
    DeclarativeConfig,
    InvalidCatalogError,
    OperatorBundle,
    RelatedImage,
)
from bundler.openshift.catalog.render import render_fbc, render_fbc_files
from bundler.openshift.catalog.select import select
from bundler.openshift.catalog.sqlite import load_sqlite, prune_sqlite
from bundler.base.errors import ConfigError
from bundler.openshift.image_set import CatalogSpec, ChannelFilter, PackageSpec

FIXTURES = Path(os.environ.get("BUNDLER_FIXTURES", "/work/shared/fixtures"))
SYNTH = FIXTURES / "catalog-fbc" / "synthetic"
REDHAT = FIXTURES / "catalog-fbc" / "real-redhat"
SQLITE = FIXTURES / "catalog-sqlite"
CSVS = FIXTURES / "csv"
DATA = Path(__file__).parent / "data" / "catalog"

if not SYNTH.is_dir():
    pytest.skip(f"shared fixtures not found under {FIXTURES} (set BUNDLER_FIXTURES)", allow_module_level=True)

Shape = Dict[str, Dict[str, Set[str]]]


def fbc(path: Path) -> DeclarativeConfig:
    return load_fbc({path.name: path.read_bytes()})


def spec(**kw: object) -> CatalogSpec:
    return CatalogSpec(catalog="registry.example.com/catalog/index:v1", **kw)  # type: ignore[arg-type]


def model_shape(model: DeclarativeConfig) -> Shape:
    return {p.name: {c.name: set(c.entries) for c in p.channels.values()} for p in model.packages.values()}


def selection_shape(sel: object) -> Shape:
    return {p: {c: set(n) for c, n in chans.items()} for p, chans in sel.channels.items()}  # type: ignore[attr-defined]


def entries(model: DeclarativeConfig) -> Dict[Tuple[str, str, str], Tuple[object, ...]]:
    return {
        (p.name, c.name, e.name): (e.replaces, e.skips, e.skip_range)
        for p in model.packages.values()
        for c in p.channels.values()
        for e in c.entries.values()
    }


# -- the oc-mirror / operator-registry expectations --------------------------------------------------


def test_heads_only_matches_exp_headsonly() -> None:
    """No packages, not full: the head of every channel plus dependencies (foo needs bar <0.2.0)."""
    sel = select(fbc(SYNTH / "index-declcfgs-latest.yaml"), spec())
    exp = fbc(SYNTH / "index-declcfgs-exp-headsonly.yaml")
    assert selection_shape(sel) == model_shape(exp)
    assert {b.name for b in sel.bundles()} == {b.name for b in exp.bundles.values()}
    assert sel.dependencies == [("bar", "bar.v0.1.0"), ("bar", "bar.v0.2.0")]
    assert not sel.pruned and not sel.full
    # rendered, it is the expected catalog: same entries (replaces, skips, skipRange), same defaults
    rendered = load_fbc({"catalog.json": render_fbc(sel)})
    assert entries(rendered) == entries(exp)
    assert {p.name: p.default_channel for p in rendered.packages.values()} == {p.name: p.default_channel for p in exp.packages.values()}
    assert {k: b.image for k, b in rendered.bundles.items()} == {k: b.image for k, b in exp.bundles.items()}


def test_include_channel_matches_exp_include_channel() -> None:
    """operator-registry's IncludeChannel case (baz channel stable added to heads-only) in image-set terms:
    bar and foo by their heads, baz's stable channel from 1.0.0 up."""
    s = spec(
        packages=(
            PackageSpec(name="bar"),
            PackageSpec(name="baz", channels=(ChannelFilter(name="stable", min_version="1.0.0"),)),
            PackageSpec(name="foo"),
        )
    )
    sel = select(fbc(SYNTH / "index-declcfgs-latest.yaml"), s)
    exp = fbc(SYNTH / "index-declcfgs-exp-include-channel.yaml")
    assert selection_shape(sel) == model_shape(exp)
    assert sel.pruned
    assert entries(load_fbc({"c.json": render_fbc(sel)})) == entries(exp)


def test_latest_matches_heads_without_dependencies() -> None:
    """exp-latest is the diff old → latest; every bundle of it is a channel head of latest, and the only
    dependency (bar <0.2.0) was already in old — so it equals heads-only with skipDependencies."""
    sel = select(fbc(SYNTH / "index-declcfgs-latest.yaml"), spec(skip_dependencies=True))
    exp = fbc(SYNTH / "index-declcfgs-exp-latest.yaml")
    assert selection_shape(sel) == model_shape(exp)
    assert sel.dependencies == []


def test_full_selects_everything_and_old_catalog_heads() -> None:
    latest = fbc(SYNTH / "index-declcfgs-latest.yaml")
    sel = select(latest, spec(full=True))
    assert selection_shape(sel) == model_shape(latest)
    assert sel.full and not sel.pruned
    old = select(fbc(SYNTH / "index-declcfgs-old.yaml"), spec())
    assert {b.name for b in old.bundles()} >= {"bar.v0.2.0", "baz.v1.0.1", "foo.v0.3.0"}


def test_yaml_and_json_streams_give_the_same_model() -> None:
    latest = fbc(SYNTH / "index-declcfgs-latest.yaml")
    full = select(latest, spec(full=True))
    as_json = load_fbc({"x/catalog.json": render_fbc(full)})
    assert model_shape(as_json) == model_shape(latest)
    assert entries(as_json) == entries(latest)
    files = render_fbc_files(full)
    assert sorted(files) == ["bar/catalog.json", "baz/catalog.json", "foo/catalog.json"]


# -- filters -----------------------------------------------------------------------------------------


def test_package_filters_versions_and_default_channel() -> None:
    latest = fbc(SYNTH / "index-declcfgs-latest.yaml")
    sel = select(latest, spec(skip_dependencies=True, packages=(PackageSpec(name="foo", min_version="0.2.0", max_version="0.3.0"),)))
    assert selection_shape(sel) == {"foo": {"beta": {"foo.v0.2.0", "foo.v0.3.0"}}}
    sel = select(latest, spec(skip_dependencies=True, packages=(PackageSpec(name="bar", channels=(ChannelFilter(name="alpha", max_version="0.2.0"),), default_channel="alpha"),)))
    assert selection_shape(sel) == {"bar": {"alpha": {"bar.v0.1.0", "bar.v0.2.0"}}}
    assert sel.default_channels == {"bar": "alpha"}
    rendered = load_fbc({"c.json": render_fbc(sel)})
    assert rendered.packages["bar"].default_channel == "alpha"
    # full + package: the whole package
    sel = select(latest, spec(full=True, skip_dependencies=True, packages=(PackageSpec(name="baz"),)))
    assert selection_shape(sel) == {"baz": {"stable": {"baz.v1.0.0", "baz.v1.0.1", "baz.v1.1.0"}}}


def test_dependencies_pull_in_required_package() -> None:
    latest = fbc(SYNTH / "index-declcfgs-latest.yaml")
    sel = select(latest, spec(packages=(PackageSpec(name="foo"),)))
    # foo needs the Bar v1alpha1 API (latest provider: bar.v1.0.0, default channel first) and bar <0.2.0
    # (bar.v0.1.0, with its upgrade path to the alpha head)
    assert selection_shape(sel) == {
        "bar": {"alpha": {"bar.v0.1.0", "bar.v0.2.0", "bar.v1.0.0"}, "stable": {"bar.v1.0.0"}},
        "foo": {"beta": {"foo.v0.3.1"}},
    }
    assert sel.default_channels == {"bar": "stable", "foo": "beta"}
    assert select(latest, spec(skip_dependencies=True, packages=(PackageSpec(name="foo"),))).channels == {"foo": {"beta": ["foo.v0.3.1"]}}


def test_dependency_package_without_its_default_channel() -> None:
    objs = [
        {"schema": "olm.package", "name": "dep", "defaultChannel": "stable"},
        {"schema": "olm.channel", "package": "dep", "name": "stable", "entries": [{"name": "dep.v2.0.0"}]},
        {"schema": "olm.channel", "package": "dep", "name": "old", "entries": [{"name": "dep.v1.0.0"}, {"name": "dep.v1.1.0", "replaces": "dep.v1.0.0"}]},
        {"schema": "olm.package", "name": "app", "defaultChannel": "stable"},
        {"schema": "olm.channel", "package": "app", "name": "stable", "entries": [{"name": "app.v1.0.0"}]},
    ]
    for pkg, name, version in [("dep", "dep.v1.0.0", "1.0.0"), ("dep", "dep.v1.1.0", "1.1.0"), ("dep", "dep.v2.0.0", "2.0.0"), ("app", "app.v1.0.0", "1.0.0")]:
        props = [{"type": "olm.package", "value": {"packageName": pkg, "version": version}}]
        if pkg == "app":
            props.append({"type": "olm.package.required", "value": {"packageName": "dep", "versionRange": ">=1.0.0 <1.1.0 || =9.9.9"}})
        objs.append({"schema": "olm.bundle", "package": pkg, "name": name, "image": f"r.example.com/{pkg}/bundle:{version}", "properties": props})
    model = load_fbc({"c.json": "\n".join(json.dumps(o) for o in objs).encode()})
    sel = select(model, spec(packages=(PackageSpec(name="app"),)))
    assert selection_shape(sel) == {"app": {"stable": {"app.v1.0.0"}}, "dep": {"old": {"dep.v1.0.0", "dep.v1.1.0"}}}
    assert sel.dependencies == [("dep", "dep.v1.0.0"), ("dep", "dep.v1.1.0")]
    assert sel.default_channels["dep"] == "old"
    assert any("dep" in n and "dependency" in n and "old" in n for n in sel.notes)
    assert load_fbc({"c.json": render_fbc(sel)}).packages["dep"].default_channel == "old"


@pytest.mark.parametrize(
    "pkg, fragment, suggestion",
    [
        (PackageSpec(name="fooo"), "package 'fooo' does not exist", "'foo'"),
        (PackageSpec(name="bar", channels=(ChannelFilter(name="stabel"),)), "channel 'stabel' does not exist", "'stable'"),
        (PackageSpec(name="baz", default_channel="stabl"), "defaultChannel 'stabl' does not exist", "'stable'"),
    ],
)
def test_unknown_names_are_config_errors_with_close_matches(pkg: PackageSpec, fragment: str, suggestion: str) -> None:
    with pytest.raises(ConfigError) as info:
        select(fbc(SYNTH / "index-declcfgs-latest.yaml"), spec(packages=(pkg,)))
    text = str(info.value)
    assert fragment in text and "did you mean" in text and suggestion in text


def test_filter_errors_are_actionable() -> None:
    latest = fbc(SYNTH / "index-declcfgs-latest.yaml")
    with pytest.raises(ConfigError, match=r"no bundle between 9\.0\.0 and any.*versions in this channel: 0\.1\.0, 0\.2\.0, 0\.3\.0, 0\.3\.1"):
        select(latest, spec(packages=(PackageSpec(name="foo", channels=(ChannelFilter(name="beta", min_version="9.0.0"),)),)))
    with pytest.raises(ConfigError, match="default channel 'stable' is not among the selected channels.*defaultChannel"):
        select(latest, spec(packages=(PackageSpec(name="bar", channels=(ChannelFilter(name="alpha"),)),)))
    with pytest.raises(ConfigError, match="defaultChannel 'stable' is not among the selected channels"):
        select(latest, spec(packages=(PackageSpec(name="bar", channels=(ChannelFilter(name="alpha"),), default_channel="stable"),)))


# -- real Red Hat catalogs -----------------------------------------------------------------------------


def test_real_redhat_fbc_images() -> None:
    files = {p.name: p.read_bytes() for p in REDHAT.glob("*.json")}
    model = load_fbc(files)
    assert set(model.packages) == {"aws-load-balancer-operator", "node-observability-operator"}
    sel = select(model, spec())
    assert selection_shape(sel) == {
        "aws-load-balancer-operator": {"alpha": {"aws-load-balancer-operator.v0.0.1"}, "stable-v0.1": {"aws-load-balancer-operator.v0.0.1"}},
        "node-observability-operator": {"alpha": {"node-observability-operator.v0.2.0"}},
    }
    got = collect_images(sel)
    refs = {str(u.reference) for u in got.uses}
    assert all("@sha256:" in r for r in refs)
    assert "registry.redhat.io/noo/node-observability-agent-rhel8@sha256:a8e60d9f63e2ed0cf1e27309aac54014e3f1efc947b51ca0a99376338d220875" in refs
    assert sum(r.startswith("registry.redhat.io/openshift4/ose-kube-rbac-proxy@") for r in refs) == 2
    # 2 bundles + (agent, operator, rbac proxy) + (controller, operator, rbac proxy); the "" name entry is the bundle itself
    assert len(refs) == 8
    assert got.recovered == [] and got.unresolved == []
    with pytest.raises(ConfigError, match="did you mean 'stable-v0.1'"):
        select(model, spec(packages=(PackageSpec(name="aws-load-balancer-operator", channels=(ChannelFilter(name="stable-v0.2"),)),)))


def test_value_bug_recovered_from_the_catalog_csv() -> None:
    """The FBC carries the CSV (olm.bundle.object, base64); a related image emptied by the value: bug comes back."""
    doc = parse_stream("catalog.json", REDHAT.joinpath("node-observability-operator.catalog.json").read_bytes())
    for obj in doc:
        if obj["schema"] == "olm.bundle":
            for ri in obj["relatedImages"]:
                if ri["name"] == "agent":
                    ri["image"] = ""  # what operator-registry decodes from `value:`
    stream = "\n".join(json.dumps(o) for o in doc).encode()
    sel = select(load_fbc({"catalog.json": stream}), spec())
    got = collect_images(sel, bundle_csv=lambda b: pytest.fail("the catalog CSV suffices"))
    agent = "registry.redhat.io/noo/node-observability-agent-rhel8@sha256:a8e60d9f63e2ed0cf1e27309aac54014e3f1efc947b51ca0a99376338d220875"
    assert agent in {str(u.reference) for u in got.uses}
    assert [(r.image, r.source) for r in got.recovered] == [(agent, "catalog-csv")]
    assert "1821515" in got.recovered[0].reason
    assert got.unresolved == []
    # the CSV is the one the fixture holds
    csv = json.loads(CSVS.joinpath("node-observability-operator.v0.2.0.csv.from-fbc.json").read_text())
    assert sel.bundles()[0].csv() == csv


def test_value_key_csv_and_bundle_image_fallback() -> None:
    data = CSVS.joinpath("SYNTHETIC.etcdoperator.v0.9.2.relatedImages-value-key.clusterserviceversion.yaml").read_bytes()
    csv = parse_csv_document("etcd.clusterserviceversion.yaml", data)
    assert csv is not None
    imgs = csv_images(csv)
    assert RelatedImage("etcd-v3.4.0", "quay.io/coreos/etcd@sha256:3816b6daf9b66d6ced6f0f966314e2d4f894982c6b1493061502f8c2bf86ac84") in imgs
    assert RelatedImage("etcd-3.4.1", "quay.io/coreos/etcd@sha256:49d3d4a81e0d030d3f689e7167f23e120abf955f7d08dbedf3ea246485acee9f") in imgs
    assert any(i.image.startswith("quay.io/coreos/etcd-operator@sha256:c0301e46") for i in imgs)
    # a catalog without the CSV: the empty entries send us to the bundle image
    obj = {
        "schema": "olm.bundle", "name": "etcdoperator.v0.9.2", "package": "etcd", "image": "quay.io/test/etcd-bundle:v0.9.2",
        "properties": [{"type": "olm.package", "value": {"packageName": "etcd", "version": "0.9.2"}}],
        "relatedImages": [{"name": "etcd-v3.4.0", "image": ""}, {"name": "etcd-3.4.1", "image": ""}, {"name": "ghost", "image": "NOT A REF"}],
    }
    stream = "\n".join(json.dumps(o) for o in [
        {"schema": "olm.package", "name": "etcd", "defaultChannel": "alpha"},
        {"schema": "olm.channel", "name": "alpha", "package": "etcd", "entries": [{"name": "etcdoperator.v0.9.2"}]},
        obj,
    ]).encode()
    sel = select(load_fbc({"c.json": stream}), spec())
    asked: List[str] = []

    def loader(b: OperatorBundle) -> object:
        asked.append(b.image)
        return csv

    got = collect_images(sel, bundle_csv=loader)  # type: ignore[arg-type]
    assert asked == ["quay.io/test/etcd-bundle:v0.9.2"]
    rec = {r.image for r in got.recovered if r.source == "bundle-image"}
    assert "quay.io/coreos/etcd@sha256:3816b6daf9b66d6ced6f0f966314e2d4f894982c6b1493061502f8c2bf86ac84" in rec
    assert "quay.io/coreos/etcd@sha256:49d3d4a81e0d030d3f689e7167f23e120abf955f7d08dbedf3ea246485acee9f" in rec
    # the unreadable entry the CSV does not name is reported, never silently dropped
    assert [(u.name, u.reference) for u in got.unresolved] == [("ghost", "NOT A REF")]


# -- other FBC layouts ---------------------------------------------------------------------------------


def test_alpha_layout_channels_from_bundle_properties() -> None:
    model = fbc(DATA / "alpha-layout.json")
    assert model.source_format == FORMAT_FBC_ALPHA
    assert model_shape(model) == {
        "etcd": {
            "singlenamespace-alpha": {"etcdoperator.v0.9.0", "etcdoperator.v0.9.2"},
            "clusterwide-alpha": {"etcdoperator.v0.9.0", "etcdoperator.v0.9.2-clusterwide"},
        }
    }
    ch = model.packages["etcd"].channels["singlenamespace-alpha"]
    assert ch.head() == "etcdoperator.v0.9.2"
    assert ch.entries["etcdoperator.v0.9.2"].skips == ("etcdoperator.v0.6.1",)
    assert ch.entries["etcdoperator.v0.9.2"].skip_range == ">=0.9.0 <0.9.2-0"
    sel = select(model, spec(packages=(PackageSpec(name="etcd", channels=(ChannelFilter(name="singlenamespace-alpha", min_version="0.9.0"),)),)))
    rendered = load_fbc({"c.json": render_fbc(sel)})
    # v0.9.0 no longer claims the clusterwide channel in the pruned catalog
    assert model_shape(rendered) == {"etcd": {"singlenamespace-alpha": {"etcdoperator.v0.9.0", "etcdoperator.v0.9.2"}}}


def test_indexignore_and_deprecations() -> None:
    files = {
        "demo/catalog.yaml": (DATA / "deprecations.yaml").read_bytes(),
        ".indexignore": b"# comment\n*.md\nscratch/\n",
        "README.md": b"# not a catalog",
        "scratch/broken.json": b"{not json",
        "demo/.indexignore": b"/notes.txt\n",
        "demo/notes.txt": b"free text",
    }
    model = load_fbc(files)
    assert set(model.packages) == {"demo"}
    sel = select(model, spec(packages=(PackageSpec(name="demo", channels=(ChannelFilter(name="stable", min_version="1.1.0"),)),)))
    out = [json.loads(line) for line in render_fbc(sel).decode().splitlines()]
    dep = [o for o in out if o["schema"] == "olm.deprecations"]
    assert len(dep) == 1
    assert [e["reference"].get("name") for e in dep[0]["entries"]] == [None]  # legacy channel and v1.0.0 are gone
    with pytest.raises(InvalidCatalogError, match="broken.json"):
        load_fbc({**files, ".indexignore": b""})


def test_broken_catalogs_are_clear_errors() -> None:
    with pytest.raises(InvalidCatalogError, match="lists bundle 'x.v1'"):
        load_fbc({"c.json": b'{"schema":"olm.package","name":"x"}{"schema":"olm.channel","package":"x","name":"s","entries":[{"name":"x.v1"}]}'})
    model = load_fbc({"c.json": b'{"schema":"olm.package","name":"x"}{"schema":"olm.channel","package":"x","name":"s","entries":[{"name":"a"},{"name":"b"}]}'
                      b'{"schema":"olm.bundle","package":"x","name":"a","image":"r.io/a:1"}{"schema":"olm.bundle","package":"x","name":"b","image":"r.io/b:1"}'})
    with pytest.raises(InvalidCatalogError, match="several channel heads"):
        select(model, spec())


# -- sqlite ----------------------------------------------------------------------------------------------


def _sqlite_images(db: Path) -> Set[str]:
    with sqlite3.connect(db) as c:
        imgs = {r[0] for r in c.execute("SELECT image FROM related_image")} | {r[0] for r in c.execute("SELECT bundlepath FROM operatorbundle")}
    return {i for i in imgs if i}


@pytest.mark.parametrize("name", ["oc-catalog-testdata.v7.db", "operator-registry-indexer-bundles.v5.db"])
def test_sqlite_full_images_are_related_images_and_bundlepaths(name: str, tmp_path: Path) -> None:
    db = SQLITE / name
    before = db.read_bytes()
    model = load_sqlite(db)
    assert db.read_bytes() == before  # read from a copy
    sel = select(model, spec(full=True))
    got = collect_images(sel)
    from bundler.oci.reference import Reference

    assert {str(u.reference) for u in got.uses} == {str(Reference.parse(i)) for i in _sqlite_images(db)}


def test_sqlite_v5_replaces_and_skips_from_channel_entries() -> None:
    model = load_sqlite(SQLITE / "operator-registry-indexer-bundles.v5.db")
    alpha = model.packages["etcd"].channels["alpha"]
    assert alpha.entries["etcdoperator.v0.9.2"].replaces == "etcdoperator.v0.9.0"
    assert alpha.entries["etcdoperator.v0.9.2"].skips == ("etcdoperator.v0.9.1",)
    assert alpha.head() == alpha.declared_head == "etcdoperator.v0.9.2"
    heads = select(model, spec())
    assert selection_shape(heads)["strimzi-kafka-operator"] == {
        "stable": {"strimzi-cluster-operator.v0.11.1"},
        "beta": {"strimzi-cluster-operator.v0.12.1"},
        "alpha": {"strimzi-cluster-operator.v0.12.2"},
    }
    # the v7 database carries the same columns directly
    v7 = load_sqlite(SQLITE / "oc-catalog-testdata.v7.db")
    e = v7.packages["etcd"].channels["alpha"].entries["etcdoperator.v0.9.2"]
    assert (e.replaces, e.skips) == ("etcdoperator.v0.9.0", ("etcdoperator.v0.9.1",))
    assert v7.bundle("etcd", "etcdoperator.v0.9.0").csv() is None  # csv NULL in this database
    assert v7.bundle("etcd", "etcdoperator.v0.9.2").csv()["kind"] == "ClusterServiceVersion"  # type: ignore[index]


@pytest.mark.parametrize("name", ["oc-catalog-testdata.v7.db", "operator-registry-indexer-bundles.v5.db"])
def test_sqlite_prune_keeps_schema_and_only_the_selection(name: str, tmp_path: Path) -> None:
    src = SQLITE / name
    model = load_sqlite(src)
    s = spec(packages=(PackageSpec(name="etcd", channels=(ChannelFilter(name="alpha"), ChannelFilter(name="stable", max_version="0.9.0"))),))
    sel = select(model, s)
    out = tmp_path / "pruned.db"
    prune_sqlite(src, out, sel)
    with sqlite3.connect(src) as a, sqlite3.connect(out) as b:
        schema = "SELECT type, name, sql FROM sqlite_master ORDER BY name"
        assert a.execute(schema).fetchall() == b.execute(schema).fetchall()
        assert b.execute("SELECT name, default_channel FROM package").fetchall() == [("etcd", "alpha")]
        assert sorted(b.execute("SELECT name, head_operatorbundle_name FROM channel").fetchall()) == [
            ("alpha", "etcdoperator.v0.9.2"),
            ("stable", "etcdoperator.v0.9.0"),
        ]
        bundles = {r[0] for r in b.execute("SELECT name FROM operatorbundle")}
        related = {r[0] for r in b.execute("SELECT operatorbundle_name FROM related_image")}
        assert related <= bundles
    pruned = load_sqlite(out)
    assert model_shape(pruned) == selection_shape(sel)
    assert set(pruned.bundles) == set(sel.bundle_keys())
    # heads-only of the pruned database is the selection's head of each channel
    again = select(pruned, spec())
    assert selection_shape(again)["etcd"] == {"alpha": {"etcdoperator.v0.9.2"}, "stable": {"etcdoperator.v0.9.0"}}


def test_sqlite_value_bug_recovered_from_csv_column(tmp_path: Path) -> None:
    db = tmp_path / "index.db"
    db.write_bytes((SQLITE / "operator-registry-indexer-bundles.v5.db").read_bytes())
    with sqlite3.connect(db) as c:  # the value: bug: the etcd images decoded as "" (in a copy, never the fixture)
        c.execute("UPDATE related_image SET image = '' WHERE image LIKE 'quay.io/coreos/etcd@%'")
    sel = select(load_sqlite(db), spec(packages=(PackageSpec(name="etcd", channels=(ChannelFilter(name="alpha"),)),)))
    got = collect_images(sel)
    rec = {r.image for r in got.recovered}
    assert "quay.io/coreos/etcd@sha256:3816b6daf9b66d6ced6f0f966314e2d4f894982c6b1493061502f8c2bf86ac84" in rec
    assert "quay.io/coreos/etcd@sha256:49d3d4a81e0d030d3f689e7167f23e120abf955f7d08dbedf3ea246485acee9f" in rec
    assert got.unresolved == []


def test_bundle_object_base64_is_a_csv() -> None:
    latest = fbc(SYNTH / "index-declcfgs-latest.yaml")
    csv = latest.bundle("foo", "foo.v0.3.1").csv()
    assert csv is not None and csv["metadata"]["name"] == "foo.v0.3.1"
    assert base64.b64decode(latest.bundle("foo", "foo.v0.3.1").bundle_objects[1])


@pytest.mark.parametrize(
    "args, expected, changed",
    [
        (["serve", "/configs", "--cache-dir=/tmp/cache"], ["serve", "/configs"], True),
        (["serve", "/configs", "--cache-dir", "/tmp/cache", "--cache-enforce-integrity=true"], ["serve", "/configs"], True),
        (["/bin/sh", "-c", "opm serve /configs --cache-dir=/tmp/cache --port 50051"], ["/bin/sh", "-c", "opm serve /configs --port 50051"], True),
        (["registry", "serve", "--database", "/database/index.db"], ["registry", "serve", "--database", "/database/index.db"], False),
        (None, None, False),
    ],
)
def test_drop_cache_args(args: object, expected: object, changed: bool) -> None:
    from bundler.openshift.catalog.build import drop_cache_args

    assert drop_cache_args(args) == (expected, changed)  # type: ignore[arg-type]


def test_pruned_layer_is_deterministic_with_opaque_root(tmp_path: Path) -> None:
    import gzip
    import hashlib
    import io
    import tarfile

    from bundler.openshift.catalog.build import build_layer

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    files = {"configs/foo/catalog.json": b'{"schema":"olm.package","name":"foo"}\n', "configs/bar/catalog.json": b"{}\n"}
    one = build_layer(files, opaque_dirs=["configs"], workdir=tmp_path / "a")
    two = build_layer(dict(reversed(list(files.items()))), opaque_dirs=["configs"], workdir=tmp_path / "b")
    assert (one.digest, one.diff_id, one.size) == (two.digest, two.diff_id, two.size)
    raw = one.path.read_bytes()
    assert str(one.digest) == "sha256:" + hashlib.sha256(raw).hexdigest()
    tar_bytes = gzip.decompress(raw)
    assert one.diff_id == "sha256:" + hashlib.sha256(tar_bytes).hexdigest()
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        members = [(m.name, m.type, m.mtime, m.uid) for m in tar.getmembers()]
    names = [m[0] for m in members]
    assert names[:2] == ["configs", "configs/.wh..wh..opq"]
    assert set(names) == {"configs", "configs/.wh..wh..opq", "configs/bar", "configs/foo", "configs/bar/catalog.json", "configs/foo/catalog.json"}
    assert all(m[2] == 0 and m[3] == 0 for m in members)

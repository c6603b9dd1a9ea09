"""`plan_catalog` against a real loopback docker-registry, with skopeo as the oracle for the pruned image.

Synthetic index images are built from COPIES of the shared fixtures whose image references are rewritten
to point at the test registry (the fixture files are never edited); every bundle and related image they
name is pushed there, related images by tag so the planner has to resolve tags to digests.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from bundler.openshift.catalog.plan import LABEL_FBC, LABEL_SQLITE, CatalogPlan, plan_catalog
from bundler.openshift.catalog.fbc import load_fbc
from bundler.openshift.catalog.sqlite import load_sqlite
from bundler.transfer.copy import Copier, CopyOptions
from bundler.oci.digest import Digest
from bundler.base.errors import ImageNotFoundError, UsageError
from bundler.transfer.image_files import extract_file, open_image, read_files
from bundler.openshift.image_set import CatalogSpec, ChannelFilter, PackageSpec
from bundler.layout.store import Layout
from bundler.oci.media import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, parse_manifest
from bundler.oci.planned import LOCAL_LAYOUT_HOST, digest_tag
from bundler.oci.reference import Reference
from bundler.registry.client import Registries, TransportOptions
from bundler.transfer.transports import LayoutImage, RegistryRepository
from tests.infra.images import make_image, make_index, push, write_oci_layout
from tests.infra.catalog_images import catalog_files, fbc_catalog, index_image, sqlite_catalog
from tests.infra.registry import RegistryServer

FIXTURES = Path(os.environ.get("BUNDLER_FIXTURES", "/work/shared/fixtures"))
SYNTH = FIXTURES / "catalog-fbc" / "synthetic"
SQLITE = FIXTURES / "catalog-sqlite"
CSVS = FIXTURES / "csv"

if not SYNTH.is_dir():
    pytest.skip(f"shared fixtures not found under {FIXTURES} (set BUNDLER_FIXTURES)", allow_module_level=True)

OPM_CMD = ["serve", "/configs", "--cache-dir=/tmp/cache"]


# -- helpers --------------------------------------------------------------------------------------------


@pytest.fixture
def env(registry_plain: RegistryServer, tmp_path: Path) -> Iterator[Tuple[Registries, Layout, Copier]]:
    regs = Registries(options=TransportOptions(insecure_hosts=frozenset({registry_plain.host}), backoff_base=0.01))
    copier = Copier(CopyOptions(workers=4))
    try:
        yield regs, Layout(tmp_path / "work"), copier
    finally:
        copier.close()
        regs.close()


def read_layout_catalog(layout: Layout, ref_name: str, platform: str = "linux/amd64") -> Tuple[Dict[str, bytes], Any]:
    src = LayoutImage(layout, ref_name)
    img = open_image(src, platform=platform)
    return read_files(img, lambda p: p.startswith("configs/")), img


def bundle_shape(plan: CatalogPlan) -> Dict[str, Dict[str, List[str]]]:
    return {p: {c: sorted(v["channels"][c]) for c in v["channels"]} for p, v in plan.report.selection.items()}


# -- file-based catalogs ----------------------------------------------------------------------------------


def test_fbc_filtered_builds_pruned_oci_image(env: Tuple[Registries, Layout, Copier], registry_plain: RegistryServer, skopeo: Any) -> None:
    regs, layout, copier = env
    text, pushed, base = fbc_catalog(registry_plain, "cat-oci")
    original = index_image(catalog_files(text), {LABEL_FBC: "/configs", "vendor": "test"})
    original_digest = push(registry_plain.url, "cat-oci/catalog/index", original, "v1")
    spec = CatalogSpec(catalog=f"{base}/catalog/index:v1", packages=(PackageSpec(name="foo"),))

    plan = plan_catalog(spec, registries=regs, layout=layout, copier=copier)

    # bundles and related images: pinned by digest, resolved from their tags, target = source path
    assert bundle_shape(plan) == {
        "bar": {"alpha": ["bar.v0.1.0", "bar.v0.2.0", "bar.v1.0.0"], "stable": ["bar.v1.0.0"]},
        "foo": {"beta": ["foo.v0.3.1"]},
    }
    wanted = [f"{base}/{r}" for r in (
        "foo-operator/foo-bundle:v0.3.1", "foo-operator/foo:v0.3.1",
        "bar-operator/bar-bundle:v0.1.0", "bar-operator/bar:v0.1.0", "bar-operator/bar-bundle:v0.2.0", "bar-operator/bar:v0.2.0",
        "bar-operator/bar-bundle:v1.0.0", "bar-operator/bar:v1.0.0",
    )]
    by_source = {i.source: i for i in plan.images}
    assert len(plan.images) == len(wanted)
    for ref_text in wanted:
        ref = Reference.parse(ref_text)
        img = by_source[f"{ref.name}@{pushed[ref_text]}"]
        assert (img.kind, img.target_repository, img.target_tag, img.digest) == ("operator", ref.repository, ref.tag, pushed[ref_text])
        assert img.annotations["resolved-from"] == ref_text
    assert plan.report.recovered == [] and plan.report.unresolved == []

    # the pruned catalog: a new image in the layout, recorded as built there
    cat = plan.catalog_image
    assert cat.in_layout and cat.kind == "catalog"
    assert (cat.target_repository, cat.target_tag) == ("cat-oci/catalog/index", "v1")
    assert cat.digest != original_digest
    assert cat.annotations["original-digest"] == original_digest and cat.facts.pruned is True
    assert str(layout.resolve(cat.facts.layout_ref).digest) == cat.digest
    assert layout.has_blob(Digest.parse(original_digest))  # the original was copied digest-exact first

    files, img = read_layout_catalog(layout, cat.facts.layout_ref)
    assert sorted(files) == ["configs/bar/catalog.json", "configs/foo/catalog.json"]  # old index.yaml hidden
    pruned = load_fbc({k[len("configs/"):]: v for k, v in files.items()})
    assert {p.name: {c.name: sorted(c.entries) for c in p.channels.values()} for p in pruned.packages.values()} == bundle_shape(plan)
    assert img.manifest.media_type == OCI_MANIFEST
    assert img.labels == {LABEL_FBC: "/configs", "vendor": "test"}
    assert len(img.layers) == 3 and len(img.config["rootfs"]["diff_ids"]) == 3
    assert img.config["config"]["Cmd"] == ["serve", "/configs"]
    assert any("cache" in n for n in plan.report.notes)
    # the stale opm cache is still there, only no longer used
    assert read_files(img, lambda p: p.startswith("tmp/cache/"))

    # skopeo (the oracle) reads the pruned image from the layout
    assert skopeo.digest(f"oci:{layout.root}:{cat.facts.layout_ref}") == cat.digest
    info = json.loads(skopeo.run("inspect", f"oci:{layout.root}:{cat.facts.layout_ref}").stdout)
    assert info["Labels"][LABEL_FBC] == "/configs" and len(info["Layers"]) == 3

    report = plan.report.to_json()
    assert (report["packages"], report["channels"], report["bundles"], report["images"]) == (2, 3, 4, 8)
    assert report["pruned"] is True and report["prunedDigest"] == cat.digest and report["catalogBytes"] > 0
    assert report["dependencies"] == [{"package": "bar", "bundle": b} for b in ("bar.v0.1.0", "bar.v0.2.0", "bar.v1.0.0")]

    # a rerun builds the same bytes
    again = plan_catalog(spec, registries=regs, layout=layout, copier=copier)
    assert again.catalog_image.digest == cat.digest


def test_fbc_unfiltered_catalog_is_copied_digest_exact(env: Tuple[Registries, Layout, Copier], registry_plain: RegistryServer) -> None:
    regs, layout, copier = env
    text, pushed, base = fbc_catalog(registry_plain, "cat-heads")
    original_digest = push(registry_plain.url, "cat-heads/catalog/index", index_image(catalog_files(text), {LABEL_FBC: "/configs"}), "v2")
    spec = CatalogSpec(catalog=f"{base}/catalog/index:v2", target_catalog="mirror/index", target_tag="heads")

    plan = plan_catalog(spec, registries=regs, layout=layout, copier=copier)

    cat = plan.catalog_image
    assert not cat.in_layout and cat.digest == original_digest
    assert cat.source == f"{base}/catalog/index@{original_digest}"
    assert (cat.target_repository, cat.target_tag, cat.kind) == ("mirror/index", "heads", "catalog")
    assert plan.report.mode == "heads-only" and not plan.report.pruned
    assert bundle_shape(plan) == {
        "bar": {"alpha": ["bar.v0.1.0", "bar.v0.2.0", "bar.v1.0.0"], "stable": ["bar.v1.0.0"]},
        "baz": {"stable": ["baz.v1.1.0"]},
        "foo": {"beta": ["foo.v0.3.1"]},
    }
    assert plan.report.catalog_bundles == 10 and plan.report.bundles == 5
    assert any("unchanged" in n for n in plan.report.notes)
    assert all(i.digest and i.source.endswith(i.digest) for i in plan.images)

    full = plan_catalog(CatalogSpec(catalog=f"{base}/catalog/index:v2", full=True), registries=regs, layout=layout, copier=copier)
    assert full.catalog_image.digest == original_digest and full.report.bundles == 10 and len(full.images) == 20


def test_fbc_docker_list_pruned_per_platform(env: Tuple[Registries, Layout, Copier], registry_plain: RegistryServer, skopeo: Any) -> None:
    regs, layout, copier = env
    text, _, base = fbc_catalog(registry_plain, "cat-list")
    files = catalog_files(text)
    children = [index_image(files, {LABEL_FBC: "/configs"}, docker=True, architecture=a) for a in ("amd64", "arm64")]
    lst = make_index(children, docker=True)
    original_digest = push(registry_plain.url, "cat-list/catalog/index", lst, "v3")
    spec = CatalogSpec(catalog=f"{base}/catalog/index:v3", packages=(PackageSpec(name="baz", channels=(ChannelFilter(name="stable", min_version="1.0.1"),)),))

    plan = plan_catalog(spec, registries=regs, layout=layout, copier=copier)

    cat = plan.catalog_image
    top = layout.resolve(cat.facts.layout_ref)
    assert top.media_type == DOCKER_LIST and str(top.digest) == cat.digest != original_digest
    parsed = parse_manifest(layout.read_blob(top.digest), top.media_type)
    assert [str(c.platform) for c in parsed.children] == ["linux/amd64", "linux/arm64"]
    for child, orig in zip(parsed.children, children):
        assert child.media_type == DOCKER_MANIFEST
        m = parse_manifest(layout.read_blob(child.digest), child.media_type)
        assert len(m.layers) == 3 and m.layers[-1].media_type == "application/vnd.docker.image.rootfs.diff.tar.gzip"
        assert [str(x.digest) for x in m.layers[:2]] == [x.digest for x in orig.layers]
    for platform in ("linux/amd64", "linux/arm64"):
        got, img = read_layout_catalog(layout, cat.facts.layout_ref, platform)
        assert img.config["architecture"] == platform.split("/")[1]
        assert list(got) == ["configs/baz/catalog.json"]
        assert sorted(load_fbc({"c.json": got["configs/baz/catalog.json"]}).packages["baz"].channels["stable"].entries) == ["baz.v1.0.1", "baz.v1.1.0"]

    # skopeo 1.9.3 cannot read a Docker-typed list from an oci: layout (PROTOCOL-NOTES §1), so push the
    # pruned list with our copy engine and let skopeo read it from the registry
    dest = Reference(registry_plain.host, "pushed/cat-list", tag="pruned")
    copier.copy(LayoutImage(layout, cat.facts.layout_ref), RegistryRepository(regs.client(dest.registry), dest))
    assert skopeo.digest(f"{dest}") == cat.digest
    info = json.loads(skopeo.run("inspect", "--tls-verify=false", "--override-arch", "arm64", f"docker://{dest}").stdout)
    assert info["Architecture"] == "arm64" and len(info["Layers"]) == 3


def test_fbc_oci_index_drops_attestations(env: Tuple[Registries, Layout, Copier], registry_plain: RegistryServer, skopeo: Any) -> None:
    regs, layout, copier = env
    text, _, base = fbc_catalog(registry_plain, "cat-att")
    amd = index_image(catalog_files(text), {LABEL_FBC: "/configs"})
    att = make_image({"sbom.json": "{}"}, architecture="unknown", os="unknown", seed="attestation")
    lst = make_index([amd, att])
    push(registry_plain.url, "cat-att/catalog/index", lst, "v4")
    spec = CatalogSpec(catalog=f"{base}/catalog/index:v4", target_catalog="olm/pruned", target_tag="v4-small",
                       packages=(PackageSpec(name="baz"),), skip_dependencies=True)

    plan = plan_catalog(spec, registries=regs, layout=layout, copier=copier)

    top = layout.resolve(plan.catalog_image.facts.layout_ref)
    assert top.media_type == OCI_INDEX
    assert [str(c.platform) for c in parse_manifest(layout.read_blob(top.digest), OCI_INDEX).children] == ["linux/amd64"]
    assert any("attestation" in n for n in plan.report.notes)
    assert (plan.catalog_image.target_repository, plan.catalog_image.target_tag) == ("olm/pruned", "v4-small")
    assert skopeo.digest(f"oci:{layout.root}:{plan.catalog_image.facts.layout_ref}") == plan.catalog_image.digest
    info = json.loads(skopeo.run("inspect", f"oci:{layout.root}:{plan.catalog_image.facts.layout_ref}").stdout)
    assert len(info["Layers"]) == 3


def test_value_bug_recovered_from_the_bundle_image(env: Tuple[Registries, Layout, Copier], registry_plain: RegistryServer) -> None:
    """No CSV in the catalog, empty related images: the CSV is read out of the bundle image's manifests/."""
    regs, layout, copier = env
    host = registry_plain.host
    csv_text = CSVS.joinpath("SYNTHETIC.etcdoperator.v0.9.2.relatedImages-value-key.clusterserviceversion.yaml").read_text()
    csv_text = csv_text.replace("quay.io/coreos/", f"{host}/vb/coreos/")  # a copy, pointed at the test registry
    bundle_digest = push(registry_plain.url, "vb/etcd-bundle", make_image({
        "manifests/etcdoperator.v0.9.2.clusterserviceversion.yaml": csv_text,
        "manifests/etcdclusters.etcd.database.coreos.com.crd.yaml": "kind: CustomResourceDefinition\n",
    }), "v0.9.2")
    objs = [
        {"schema": "olm.package", "name": "etcd", "defaultChannel": "alpha"},
        {"schema": "olm.channel", "name": "alpha", "package": "etcd", "entries": [{"name": "etcdoperator.v0.9.2"}]},
        {"schema": "olm.bundle", "name": "etcdoperator.v0.9.2", "package": "etcd", "image": f"{host}/vb/etcd-bundle@{bundle_digest}",
         "properties": [{"type": "olm.package", "value": {"packageName": "etcd", "version": "0.9.2"}}],
         "relatedImages": [{"name": "etcd-v3.4.0", "image": ""}, {"name": "etcd-3.4.1", "image": ""},
                           {"name": "", "image": f"{host}/vb/etcd-bundle@{bundle_digest}"}]},
    ]
    stream = "\n".join(json.dumps(o) for o in objs)
    push(registry_plain.url, "vb/catalog", index_image({"configs/etcd/catalog.json": stream}, {LABEL_FBC: "/configs"}), "v1")

    plan = plan_catalog(CatalogSpec(catalog=f"{host}/vb/catalog:v1"), registries=regs, layout=layout, copier=copier)

    recovered = {r.image: r for r in plan.report.recovered}
    e340 = f"{host}/vb/coreos/etcd@sha256:3816b6daf9b66d6ced6f0f966314e2d4f894982c6b1493061502f8c2bf86ac84"
    e341 = f"{host}/vb/coreos/etcd@sha256:49d3d4a81e0d030d3f689e7167f23e120abf955f7d08dbedf3ea246485acee9f"
    assert set(recovered) >= {e340, e341}
    assert all(r.source == "bundle-image" for r in recovered.values())
    assert plan.report.unresolved == []
    by_source = {i.source: i for i in plan.images}
    assert by_source[e340].target_tag == digest_tag("sha256:3816b6daf9b66d6ced6f0f966314e2d4f894982c6b1493061502f8c2bf86ac84")
    assert by_source[e340].target_repository == "vb/coreos/etcd"
    assert by_source[e340].annotations["recovered"] == "bundle-image"
    assert plan.report.to_json()["recovered"][0]["from"] == "bundle-image"


def test_missing_related_image_is_reported_by_name(env: Tuple[Registries, Layout, Copier], registry_plain: RegistryServer) -> None:
    regs, layout, copier = env
    host = registry_plain.host
    bundle = push(registry_plain.url, "miss/bundle", make_image(seed="miss-bundle"), "v1")
    objs = [
        {"schema": "olm.package", "name": "m", "defaultChannel": "a"},
        {"schema": "olm.channel", "name": "a", "package": "m", "entries": [{"name": "m.v1"}]},
        {"schema": "olm.bundle", "name": "m.v1", "package": "m", "image": f"{host}/miss/bundle@{bundle}",
         "properties": [{"type": "olm.package", "value": {"packageName": "m", "version": "1.0.0"}}],
         "relatedImages": [{"name": "gone", "image": f"{host}/miss/gone:v1"}]},
    ]
    push(registry_plain.url, "miss/catalog", index_image({"configs/c.json": "\n".join(json.dumps(o) for o in objs)}, {LABEL_FBC: "/configs"}), "v1")
    with pytest.raises(ImageNotFoundError, match=f"{host}/miss/gone:v1"):
        plan_catalog(CatalogSpec(catalog=f"{host}/miss/catalog:v1"), registries=regs, layout=layout, copier=copier)


# -- sqlite catalogs --------------------------------------------------------------------------------------


def test_sqlite_filtered_builds_pruned_database(env: Tuple[Registries, Layout, Copier], registry_plain: RegistryServer, skopeo: Any, tmp_path: Path) -> None:
    regs, layout, copier = env
    db, refs = sqlite_catalog(registry_plain, "cat-sq", tmp_path)
    original = index_image({"database/index.db": db.read_bytes()}, {LABEL_SQLITE: "/database/index.db"},
                           cmd=["registry", "serve", "--database", "/database/index.db"])
    original_digest = push(registry_plain.url, "cat-sq/catalog/index", original, "v4.6")
    spec = CatalogSpec(catalog=f"{registry_plain.host}/cat-sq/catalog/index:v4.6", packages=(PackageSpec(name="etcd", channels=(ChannelFilter(name="alpha"),)),))

    plan = plan_catalog(spec, registries=regs, layout=layout, copier=copier)

    assert plan.report.format == "sqlite"
    assert bundle_shape(plan) == {"etcd": {"alpha": ["etcdoperator.v0.9.2"]}}
    sources = {i.source for i in plan.images}
    bundle_ref = Reference.parse(f"{registry_plain.host}/cat-sq/bundles/etcdoperator:v0.9.2")
    assert f"{bundle_ref.name}@{refs[str(bundle_ref)]}" in sources
    assert any("etcd-operator@" in s for s in sources)
    assert len(plan.images) == 2
    # the etcd CSV in the database names the same operator image, so nothing is "recovered"
    assert plan.report.unresolved == []

    cat = plan.catalog_image
    assert cat.in_layout and cat.digest != original_digest
    img = open_image(LayoutImage(layout, cat.facts.layout_ref))
    out = tmp_path / "pruned-from-image.db"
    with open(out, "wb") as f:
        assert extract_file(img, "database/index.db", f) is not None
    pruned = load_sqlite(out)
    assert {p.name: {c.name: sorted(c.entries) for c in p.channels.values()} for p in pruned.packages.values()} == {"etcd": {"alpha": ["etcdoperator.v0.9.2"]}}
    with sqlite3.connect(out) as c:
        assert c.execute("SELECT max(version) FROM schema_migrations").fetchone() == (7,)
        assert [r[0] for r in c.execute("SELECT name FROM operatorbundle")] == ["etcdoperator.v0.9.2"]
    assert img.config["config"]["Cmd"] == ["registry", "serve", "--database", "/database/index.db"]  # type: ignore[index]
    assert skopeo.digest(f"oci:{layout.root}:{cat.facts.layout_ref}") == cat.digest


def test_catalog_by_digest_gets_a_digest_tag(env: Tuple[Registries, Layout, Copier], registry_plain: RegistryServer) -> None:
    regs, layout, copier = env
    text, _, base = fbc_catalog(registry_plain, "cat-dig")
    digest = push(registry_plain.url, "cat-dig/catalog/index", index_image(catalog_files(text), {LABEL_FBC: "/configs"}), "v1")
    spec = CatalogSpec(catalog=f"{base}/catalog/index@{digest}", packages=(PackageSpec(name="baz"),))

    plan = plan_catalog(spec, registries=regs, layout=layout, copier=copier)

    cat = plan.catalog_image
    assert cat.target_repository == "cat-dig/catalog/index"
    assert cat.target_tag == digest_tag(str(cat.digest)) and cat.digest != digest
    assert json.loads(json.dumps(plan.report.to_json()))["target"] == f"cat-dig/catalog/index:{cat.target_tag}"
    unfiltered = plan_catalog(CatalogSpec(catalog=f"{base}/catalog/index@{digest}"), registries=regs, layout=layout, copier=copier)
    assert unfiltered.catalog_image.target_tag == digest_tag(digest)


def test_not_a_catalog(env: Tuple[Registries, Layout, Copier], registry_plain: RegistryServer) -> None:
    regs, layout, copier = env
    push(registry_plain.url, "notcat/app", make_image({"etc/app": "x"}), "v1")
    with pytest.raises(UsageError, match="is not an operator catalog: it has neither"):
        plan_catalog(CatalogSpec(catalog=f"{registry_plain.host}/notcat/app:v1"), registries=regs, layout=layout, copier=copier)


# -- catalogs in a local OCI layout (oc-mirror's oci://) ------------------------------------------------------


def test_catalog_from_a_local_oci_layout(env: Tuple[Registries, Layout, Copier], registry_plain: RegistryServer, skopeo: Any, tmp_path: Path) -> None:
    regs, layout, copier = env
    text, pushed, base = fbc_catalog(registry_plain, "cat-local")
    original = index_image(catalog_files(text), {LABEL_FBC: "/configs"})
    local = write_oci_layout(tmp_path / "My_Filtered.Catalog", [(None, original)])
    spec = CatalogSpec(catalog=f"oci://{local}", layout=local)

    plan = plan_catalog(spec, registries=regs, layout=layout, copier=copier)

    cat = plan.catalog_image
    assert cat.in_layout and cat.kind == "catalog" and cat.digest == original.digest  # carried unchanged, digest-exact
    assert (cat.target_repository, cat.target_tag) == ("my-filtered-catalog", digest_tag(original.digest))
    assert cat.source == f"{LOCAL_LAYOUT_HOST}/my-filtered-catalog@{original.digest}"
    assert cat.facts.catalog == f"oci://{local}" and cat.facts.layout_ref is not None
    assert skopeo.digest(f"oci:{layout.root}:{cat.facts.layout_ref}") == original.digest
    # its bundles and related images come from the registry, as for any catalog
    assert plan.report.bundles == 5 and all(i.kind == "operator" and not i.in_layout for i in plan.images)
    assert all(i.source.startswith(base) and i.digest == pushed[i.annotations["resolved-from"]] for i in plan.images if "resolved-from" in i.annotations)

    filtered = plan_catalog(
        CatalogSpec(catalog=f"oci://{local}", layout=local, packages=(PackageSpec(name="foo"),), target_tag="v1"),
        registries=regs, layout=layout, copier=copier,
    )
    pruned = filtered.catalog_image
    assert pruned.in_layout and pruned.facts.pruned and pruned.digest != original.digest
    assert pruned.source == f"{LOCAL_LAYOUT_HOST}/my-filtered-catalog:v1"
    assert (pruned.target_repository, pruned.target_tag) == ("my-filtered-catalog", "v1")
    assert pruned.facts.layout_ref is not None and str(layout.resolve(pruned.facts.layout_ref).digest) == pruned.digest

    with pytest.raises(UsageError, match="not an OCI layout"):
        plan_catalog(CatalogSpec(catalog=f"oci://{tmp_path}", layout=tmp_path), registries=regs, layout=layout, copier=copier)
    two = write_oci_layout(tmp_path / "two", [("a", original), ("b", make_image(seed="other"))])
    with pytest.raises(UsageError, match="holds 2 images, not one"):
        plan_catalog(CatalogSpec(catalog=f"oci://{two}", layout=two), registries=regs, layout=layout, copier=copier)

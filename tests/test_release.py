"""Release payload planning: explicit images, channels through a loopback update graph, signatures, errors.

Synthetic releases (tests/infra/openshift_images.py) copy the shape of the real 4.8 image-references and
4.15 release-metadata fixtures, with components pushed by digest to the loopback registry.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest

from bundler.openshift.cincinnati import (
    GraphNode,
    HttpFetcher,
    UpdateGraph,
    fetch_graph,
    parse_graph,
    select_releases,
)
from bundler.base.errors import (
    ExitCode,
    ImageNotFoundError,
    IntegrityError,
    RegistryError,
    UsageError,
)
from bundler.openshift.image_set import ChannelSpec, ReleaseSpec, Version
from bundler.layout.store import Layout
from bundler.registry.client import Registries, TransportOptions
from bundler.openshift.release import check_components, plan_releases, read_release
from bundler.openshift.release_signatures import as_release_signatures, fetch_signatures
from bundler.transfer.transports import LayoutImage
from tests.infra.images import make_image, push, write_oci_layout
from tests.infra.openshift_images import (
    IMAGE_REFERENCES_FIXTURE,
    SIGNATURE_FIXTURE,
    SIGNATURE_FIXTURE_DIGEST,
    GraphServer,
    ReleaseFixture,
    build_release,
    fixtures_available,
    graph_document,
    signature_store,
)
from tests.infra.registry import RegistryServer

pytestmark = pytest.mark.skipif(not fixtures_available(), reason="shared fixtures not found (set BUNDLER_FIXTURES)")

REPO = "t-release/ocp-release"
COMPONENT_REPO = "t-release/ocp-v4.0-art-dev"


@pytest.fixture(scope="module")
def registries(registry_plain: RegistryServer) -> Iterator[Registries]:
    r = Registries(options=TransportOptions(insecure_hosts=frozenset({registry_plain.host}), max_attempts=2, backoff_base=0.01))
    yield r
    r.close()


@pytest.fixture(scope="module")
def rel48(registry_plain: RegistryServer) -> ReleaseFixture:
    return build_release(registry_plain.url, version="4.8.0", components=20, repo=REPO, component_repo=COMPONENT_REPO)


@pytest.fixture(scope="module")
def channel_releases(registry_plain: RegistryServer) -> Dict[str, ReleaseFixture]:
    out = {}
    for v in ("4.8.0", "4.8.1", "4.8.2", "4.8.3", "4.9.0"):
        out[v] = build_release(registry_plain.url, version=v, components=5, repo="t-channel/ocp-release", component_repo="t-channel/art")
    return out


def _fixture_tags() -> Dict[str, Dict[str, object]]:
    return {t["name"]: t for t in json.loads(IMAGE_REFERENCES_FIXTURE.read_text())["spec"]["tags"]}


# --------------------------------------------------------------------------------------------------
# explicit releases
# --------------------------------------------------------------------------------------------------


def test_explicit_release_plans_release_and_every_component(rel48: ReleaseFixture, registries: Registries) -> None:
    plan = plan_releases(ReleaseSpec(images=(rel48.release_ref,), signatures=False), registries=registries)
    assert len(plan.releases) == 1
    info = plan.releases[0]
    assert (info.version, info.arch, info.digest) == ("4.8.0", "x86_64", rel48.digest)
    assert info.source == rel48.pinned_ref
    assert info.requested == rel48.release_ref
    assert dict(info.components) == rel48.components
    assert info.component_count == 20
    assert info.samples_operator == rel48.components["cluster-samples-operator"]
    assert set(info.components) <= set(_fixture_tags())  # real component names

    release = [p for p in plan.images if p.kind == "release"]
    components = [p for p in plan.images if p.kind == "release-component"]
    assert len(release) == 1 and len(components) == 20 and len(plan.images) == 21
    r = release[0]
    assert (r.source, r.target_repository, r.target_tag, r.digest) == (rel48.pinned_ref, "ocp4/openshift4", "4.8.0-x86_64", rel48.digest)
    assert r.annotations["version"] == "4.8.0" and r.annotations["arch"] == "x86_64"
    by_component = {p.annotations["component"]: p for p in components}
    assert set(by_component) == set(rel48.components)
    etcd_like = by_component["cluster-samples-operator"]
    assert etcd_like.source == rel48.components["cluster-samples-operator"]
    assert etcd_like.target_repository == "ocp4/openshift4"
    assert etcd_like.target_tag == "4.8.0-x86_64-cluster-samples-operator"
    assert etcd_like.digest == rel48.components["cluster-samples-operator"].split("@", 1)[1]
    # the component repository is the one written in image-references (the loopback one), never quay.io
    assert all(p.source.startswith(f"{rel48.host}/{COMPONENT_REPO}@sha256:") for p in components)
    assert plan.signatures == {} and plan.warnings == ()


def test_release_by_digest_custom_repository_and_single_manifest(registry_plain: RegistryServer, rel48: ReleaseFixture, registries: Registries) -> None:
    plan = plan_releases(ReleaseSpec(images=(rel48.pinned_ref,), signatures=False, repository="mirror/release"), registries=registries)
    assert plan.releases[0].digest == rel48.digest
    assert {p.target_repository for p in plan.images} == {"mirror/release"}

    single = build_release(
        registry_plain.url, version="4.8.7", components=5, repo="t-release/single", component_repo=COMPONENT_REPO, as_list=False, arch="aarch64"
    )
    info = plan_releases(ReleaseSpec(images=(single.release_ref,), signatures=False), registries=registries).releases[0]
    assert (info.version, info.arch, info.digest) == ("4.8.7", "aarch64", single.digest)  # arch from the image config
    assert info.target_tag == "4.8.7-aarch64"


def test_same_release_named_twice_is_planned_once(rel48: ReleaseFixture, registries: Registries) -> None:
    plan = plan_releases(ReleaseSpec(images=(rel48.release_ref, rel48.pinned_ref), signatures=False), registries=registries)
    assert len(plan.releases) == 1 and len(plan.images) == 21


def test_multi_arch_release(registry_plain: RegistryServer, registries: Registries) -> None:
    multi = build_release(registry_plain.url, version="4.13.0", arch="multi", components=5, repo="t-release/multi", component_repo=COMPONENT_REPO)
    plan = plan_releases(ReleaseSpec(images=(multi.release_ref,), signatures=False), registries=registries)
    info = plan.releases[0]
    assert (info.arch, info.digest, info.target_tag) == ("multi", multi.digest, "4.13.0-multi")
    assert {p.target_tag for p in plan.images if p.kind == "release-component"} == {f"4.13.0-multi-{c}" for c in multi.components}


def test_release_read_from_a_layout(tmp_path: Path, rel48: ReleaseFixture) -> None:
    assert rel48.image is not None
    write_oci_layout(tmp_path / "oci", [("release", rel48.image)])
    info = read_release(LayoutImage(Layout(tmp_path / "oci", create=False), "release"), reference=rel48.release_ref)
    assert (info.version, info.arch, info.digest) == ("4.8.0", "x86_64", rel48.digest)
    assert dict(info.components) == rel48.components


# --------------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------------


def test_release_that_does_not_exist(registry_plain: RegistryServer, registries: Registries) -> None:
    ref = f"{registry_plain.host}/t-release/ocp-release:9.9.9-x86_64"
    with pytest.raises(ImageNotFoundError) as info:
        plan_releases(ReleaseSpec(images=(ref,), signatures=False), registries=registries)
    assert ref in str(info.value)
    assert info.value.exit_code is ExitCode.USAGE and int(info.value.exit_code) == 2


def test_image_references_that_is_not_an_imagestream(registry_plain: RegistryServer, registries: Registries) -> None:
    bad = build_release(
        registry_plain.url, version="4.8.9", components=5, repo="t-release/bad", component_repo=COMPONENT_REPO,
        references_override=json.dumps({"kind": "ConfigMap", "apiVersion": "v1", "data": {}}).encode(),
    )
    with pytest.raises(IntegrityError) as info:
        plan_releases(ReleaseSpec(images=(bad.release_ref,), signatures=False), registries=registries)
    message = str(info.value)
    assert bad.release_ref in message and "ConfigMap" in message and "image.openshift.io/v1 ImageStream" in message
    assert info.value.exit_code is ExitCode.INTEGRITY and int(info.value.exit_code) == 3

    garbage = build_release(
        registry_plain.url, version="4.8.10", components=5, repo="t-release/bad", component_repo=COMPONENT_REPO,
        references_override=b"{not json: [",
    )
    with pytest.raises(IntegrityError, match="neither JSON nor YAML"):
        plan_releases(ReleaseSpec(images=(garbage.release_ref,), signatures=False), registries=registries)

    unpinned = json.dumps(
        {"kind": "ImageStream", "apiVersion": "image.openshift.io/v1", "metadata": {"name": "4.8.11"},
         "spec": {"tags": [{"name": "etcd", "from": {"kind": "DockerImage", "name": "quay.io/x/y:latest"}}]}}
    ).encode()
    loose = build_release(
        registry_plain.url, version="4.8.11", components=5, repo="t-release/bad", component_repo=COMPONENT_REPO, references_override=unpinned
    )
    with pytest.raises(IntegrityError, match="etcd.*not pinned by digest"):
        plan_releases(ReleaseSpec(images=(loose.release_ref,), signatures=False), registries=registries)


def test_an_image_that_is_not_a_release(registry_plain: RegistryServer, registries: Registries) -> None:
    push(registry_plain.url, "t-release/not-a-release", make_image({"etc/hello": b"hi"}, docker=True), tag="v1")
    ref = f"{registry_plain.host}/t-release/not-a-release:v1"
    with pytest.raises(UsageError, match="is not a release image") as info:
        plan_releases(ReleaseSpec(images=(ref,), signatures=False), registries=registries)
    assert info.value.exit_code == 2


def test_check_components_reports_every_missing_one(registry_plain: RegistryServer, rel48: ReleaseFixture, registries: Registries) -> None:
    plan = plan_releases(ReleaseSpec(images=(rel48.release_ref,), signatures=False), registries=registries)
    assert check_components(plan, registries=registries) == 20

    broken = build_release(
        registry_plain.url, version="4.8.12", components=8, repo="t-release/broken", component_repo="t-release/broken-art",
        unpushed_components=("cli", "aws-ebs-csi-driver"),
    )
    plan = plan_releases(ReleaseSpec(images=(broken.release_ref,), signatures=False), registries=registries)  # planning does not HEAD
    with pytest.raises(ImageNotFoundError) as info:
        check_components(plan, registries=registries)
    message = str(info.value)
    assert "2 of 8" in message
    assert broken.components["cli"] in message and broken.components["aws-ebs-csi-driver"] in message
    assert broken.components["installer"] not in message


# --------------------------------------------------------------------------------------------------
# channels
# --------------------------------------------------------------------------------------------------


def _graph(releases: Dict[str, ReleaseFixture]) -> Dict[str, object]:
    # deliberately unordered; 4.7.9 has a payload that does not exist (never selected, never read)
    order = ["4.8.1", "4.8.0", "4.9.0", "4.7.9", "4.8.3", "4.8.2"]
    idx = {v: i for i, v in enumerate(order)}
    payload = {v: (releases[v].pinned_ref if v in releases else "127.0.0.1:1/none/none@sha256:" + "0" * 64) for v in order}
    edges = [("4.7.9", "4.8.0"), ("4.8.0", "4.8.1"), ("4.8.1", "4.8.2"), ("4.8.2", "4.8.3"), ("4.8.3", "4.9.0"), ("4.8.0", "4.8.2"), ("4.8.2", "4.9.0"), ("4.8.1", "4.9.0")]
    return graph_document([(v, payload[v]) for v in order], [(idx[a], idx[b]) for a, b in edges])


@pytest.fixture(scope="module")
def graph_server(channel_releases: Dict[str, ReleaseFixture]) -> Iterator[GraphServer]:
    with GraphServer({"stable-4.8": _graph(channel_releases)}) as server:
        yield server  # type: ignore[misc]


def _versions(plan_releases_result: object) -> List[Tuple[str, str]]:
    return [(r.version, r.arch) for r in plan_releases_result.releases]  # type: ignore[attr-defined]


def test_channel_head_by_default(graph_server: GraphServer, channel_releases: Dict[str, ReleaseFixture], registries: Registries) -> None:
    spec = ReleaseSpec(channels=(ChannelSpec(name="stable-4.8"),), signatures=False, graph_url=graph_server.url)
    plan = plan_releases(spec, registries=registries)
    assert _versions(plan) == [("4.9.0", "x86_64")]
    assert plan.releases[0].digest == channel_releases["4.9.0"].digest
    assert plan.releases[0].channels == ("stable-4.8",)
    path, headers = graph_server.requests[-1]
    assert "channel=stable-4.8" in path and "arch=amd64" in path
    assert headers.get("Accept") == "application/json"


def test_channel_min_max_range(graph_server: GraphServer, registries: Registries) -> None:
    spec = ReleaseSpec(channels=(ChannelSpec(name="stable-4.8", min_version="4.8.1", max_version="4.8.3"),), signatures=False)
    plan = plan_releases(spec, registries=registries, graph_url=graph_server.url)  # the argument wins over the spec
    assert _versions(plan) == [("4.8.1", "x86_64"), ("4.8.2", "x86_64"), ("4.8.3", "x86_64")]
    assert len(plan.images) == 3 * 6
    assert sorted({p.target_tag for p in plan.images if p.kind == "release"}) == ["4.8.1-x86_64", "4.8.2-x86_64", "4.8.3-x86_64"]


def test_channel_shortest_path(graph_server: GraphServer, registries: Registries) -> None:
    spec = ReleaseSpec(
        channels=(ChannelSpec(name="stable-4.8", min_version="4.8.0", max_version="4.9.0", shortest_path=True),), signatures=False
    )
    plan = plan_releases(spec, registries=registries, graph_url=graph_server.url)
    # 4.8.0 -> 4.8.2 -> 4.9.0 (two hops; 4.8.0 -> 4.8.1 -> 4.9.0 is as short, 4.8.2 is newer)
    assert _versions(plan) == [("4.8.0", "x86_64"), ("4.8.2", "x86_64"), ("4.9.0", "x86_64")]


def test_unknown_channel_is_a_registry_error(graph_server: GraphServer, registries: Registries) -> None:
    spec = ReleaseSpec(channels=(ChannelSpec(name="stable-9.9"),), signatures=False, graph_url=graph_server.url)
    with pytest.raises(RegistryError, match="HTTP 404.*stable-9.9") as info:
        plan_releases(spec, registries=registries)
    assert info.value.exit_code == 5


def test_graph_and_payload_disagree(channel_releases: Dict[str, ReleaseFixture], registries: Registries) -> None:
    doc = graph_document([("4.8.5", channel_releases["4.8.0"].pinned_ref)])
    with GraphServer({"stable-4.8": doc}) as server:
        spec = ReleaseSpec(channels=(ChannelSpec(name="stable-4.8"),), signatures=False, graph_url=server.url)
        with pytest.raises(IntegrityError, match="is version 4.8.0, but the update graph announced 4.8.5"):
            plan_releases(spec, registries=registries)


def test_graph_selection_rules_offline() -> None:
    doc = _graph({})
    graph = parse_graph(json.dumps(doc).encode(), channel="stable-4.8", arch="amd64")

    def v(nodes: List[GraphNode]) -> List[str]:
        return [str(n.version) for n in nodes]

    assert v(select_releases(graph, ChannelSpec(name="stable-4.8"))) == ["4.9.0"]
    assert v(select_releases(graph, ChannelSpec(name="stable-4.8", full=True))) == ["4.7.9", "4.8.0", "4.8.1", "4.8.2", "4.8.3", "4.9.0"]
    assert v(select_releases(graph, ChannelSpec(name="stable-4.8", min_version="4.8.2"))) == ["4.8.2", "4.8.3", "4.9.0"]
    assert v(select_releases(graph, ChannelSpec(name="stable-4.8", max_version="4.8.0"))) == ["4.7.9", "4.8.0"]
    assert v(select_releases(graph, ChannelSpec(name="stable-4.8", min_version="4.7.9", max_version="4.8.3", shortest_path=True))) == [
        "4.7.9", "4.8.0", "4.8.2", "4.8.3"
    ]
    with pytest.raises(UsageError, match="no upgrade path from 4.9.0 to 4.8.0"):
        graph.shortest_path(Version.parse("4.9.0"), Version.parse("4.8.0"))
    with pytest.raises(UsageError, match="has no release 4.8.99"):
        select_releases(graph, ChannelSpec(name="stable-4.8", min_version="4.8.0", max_version="4.8.99", shortest_path=True))
    with pytest.raises(UsageError, match="greater than maxVersion"):
        select_releases(graph, ChannelSpec(name="stable-4.8", min_version="4.9.0", max_version="4.8.0"))
    with pytest.raises(UsageError, match="no release between"):
        select_releases(graph, ChannelSpec(name="stable-4.8", min_version="5.0.0", max_version="5.1.0"))
    with pytest.raises(UsageError, match="no releases"):
        select_releases(UpdateGraph("empty", "amd64", (), ()), ChannelSpec(name="empty"))
    with pytest.raises(RegistryError, match="not an update graph"):
        parse_graph(b'{"versions": []}', channel="c", arch="amd64")
    with pytest.raises(RegistryError, match="outside"):
        parse_graph(b'{"nodes": [{"version": "4.8.0", "payload": "x"}], "edges": [[0, 5]]}', channel="c", arch="amd64")


def test_graph_multi_arch_query(channel_releases: Dict[str, ReleaseFixture]) -> None:
    with GraphServer({("stable-4.8", "multi"): graph_document([("4.8.0", "x")])}) as server:
        with HttpFetcher() as http:
            graph = fetch_graph("stable-4.8", "multi", url=server.url, fetcher=http)
        assert graph.arch == "multi" and len(graph.nodes) == 1
        assert "arch=multi" in server.requests[-1][0]


# --------------------------------------------------------------------------------------------------
# signatures
# --------------------------------------------------------------------------------------------------


def test_release_signatures_from_a_store(rel48: ReleaseFixture, channel_releases: Dict[str, ReleaseFixture], registries: Registries) -> None:
    real = SIGNATURE_FIXTURE.read_bytes()
    server, store = signature_store({rel48.digest: [real, b"second signature"], SIGNATURE_FIXTURE_DIGEST: [real]})
    try:
        spec = ReleaseSpec(images=(rel48.release_ref, channel_releases["4.8.3"].release_ref), signatures=True)
        plan = plan_releases(spec, registries=registries, signature_store=store)
        assert plan.signatures[rel48.digest] == [real, b"second signature"]
        assert plan.signatures[channel_releases["4.8.3"].digest] == []
        assert len(plan.warnings) == 1 and "4.8.3" in plan.warnings[0]
        sigs = as_release_signatures(plan.signatures)
        assert [(s.digest, s.index) for s in sigs] == [(rel48.digest, 1), (rel48.digest, 2)]
        assert fetch_signatures(SIGNATURE_FIXTURE_DIGEST, store=store) == [real]
        # the store is asked at <store>/sha256=<hex>/signature-N until the first 404
        paths = [p for p, _ in server.requests if rel48.digest.split(":")[1] in p]
        assert paths[-1].endswith("/signature-3")
        assert f"/sha256={rel48.digest.split(':')[1]}/signature-1" in paths[0]
    finally:
        server.close()


# --------------------------------------------------------------------------------------------------
# layering
# --------------------------------------------------------------------------------------------------


def test_library_modules_do_not_import_click_or_tqdm() -> None:
    code = (
        "import sys; import bundler.openshift.release, bundler.openshift.samples, bundler.openshift.extract, bundler.openshift.cincinnati, bundler.openshift.release_signatures; "
        "print(sorted(m for m in ('click', 'tqdm') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).parent.parent)
    assert out.stdout.strip() == "[]"

"""Sample imagestream images: from the release's samples operator (both paths), a directory, a list.

The imagestreams are the real ones from the cluster-samples-operator repository (shared fixtures); the
expected images are computed here straight from the JSON, independently of `bundler.openshift.samples`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import AbstractSet, Iterator, Set, Tuple

import pytest

from bundler.base.errors import ConfigError, UsageError
from bundler.openshift.image_set import ReleaseSpec, SamplesSpec
from bundler.layout.store import Layout
from bundler.oci.planned import digest_tag
from bundler.registry.client import Registries, TransportOptions
from bundler.openshift.release import ReleaseInfo, ReleasePlan, plan_releases
from bundler.openshift.samples import plan_samples, read_operator_imagestreams, sample_target
from bundler.transfer.transports import LayoutImage
from tests.infra.images import make_image, make_layer, write_oci_layout
from tests.infra.openshift_images import (
    SAMPLES_FIXTURE_DIR,
    ReleaseFixture,
    build_release,
    fixtures_available,
    samples_operator_image,
)
from tests.infra.registry import RegistryServer

pytestmark = pytest.mark.skipif(not fixtures_available(), reason="shared fixtures not found (set BUNDLER_FIXTURES)")

IMAGESTREAMS = SAMPLES_FIXTURE_DIR / "imagestreams"


def expected_targets(exclude_streams: AbstractSet[str] = frozenset(), exclude_tags: AbstractSet[str] = frozenset()) -> Set[Tuple[str, str, str]]:
    """(source, org/repo, tag) for every DockerImage tag of the fixture imagestreams, by plain string work."""
    out = set()
    for path in IMAGESTREAMS.glob("*.json"):
        doc = json.loads(path.read_text())
        name = doc["metadata"]["name"]
        if name in exclude_streams:
            continue
        for tag in doc["spec"]["tags"]:
            if tag["from"]["kind"] != "DockerImage" or f"{name}:{tag['name']}" in exclude_tags:
                continue
            text = tag["from"]["name"]
            host, _, rest = text.partition("/")
            repo, _, t = rest.partition(":")
            out.add((f"{host}/{repo}:{t or 'latest'}", repo, t or "latest"))
    return out


def planned_targets(plan: object) -> Set[Tuple[str, str, str]]:
    return {(p.source, p.target_repository, p.target_tag) for p in plan.images}  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def registries(registry_plain: RegistryServer) -> Iterator[Registries]:
    r = Registries(options=TransportOptions(insecure_hosts=frozenset({registry_plain.host}), max_attempts=2, backoff_base=0.01))
    yield r
    r.close()


@pytest.fixture(scope="module")
def release(registry_plain: RegistryServer) -> ReleaseFixture:
    return build_release(registry_plain.url, version="4.8.0", components=6, repo="t-samples/ocp-release", component_repo="t-samples/art")


def test_fixture_expectations_are_what_we_think() -> None:
    targets = expected_targets()
    assert len(targets) == 28
    assert ("registry.redhat.io/ubi8/ruby-25:latest", "ubi8/ruby-25", "latest") in targets
    assert ("registry.access.redhat.com/ubi9/dotnet-100:latest", "ubi9/dotnet-100", "latest") in targets  # no tag upstream


def test_samples_from_the_release_operator_image(release: ReleaseFixture, registries: Registries) -> None:
    release_plan = plan_releases(ReleaseSpec(images=(release.release_ref,), signatures=False), registries=registries)
    plan = plan_samples(SamplesSpec(from_release=True), registries=registries, release_plan=release_plan)
    assert planned_targets(plan) == expected_targets()
    assert {p.kind for p in plan.images} == {"sample"}
    assert all(p.digest is None for p in plan.images)  # tag references: resolved when pulled
    assert plan.organisations == ("fuse7", "jboss-eap-7", "ocp-tools-4", "openjdk", "redhat-openjdk-18", "ubi10", "ubi8", "ubi9")
    assert "quay.io/okd-only/never:1" not in {p.source for p in plan.images}  # okd-* directories are not read
    report = plan.report
    assert set(report.imagestreams) == {"dotnet", "fuse7-java-openshift", "java", "jboss-eap74-openjdk11-openshift", "jenkins", "ruby"}
    assert len(report.sources) == 1
    assert "/opt/openshift/operator/ocp-x86_64" in report.sources[0] and "/opt/openshift/operator/x86_64" in report.sources[0]
    assert report.conflicts == ()
    ruby = next(p for p in plan.images if p.target_repository == "ubi9/ruby-33")
    assert ruby.annotations["imagestream"] == "ruby" and ruby.annotations["tag"] == "3.3-ubi9"


@pytest.mark.parametrize("directories", [("x86_64",), ("ocp-x86_64",)], ids=["4.6+", "4.4-4.5"])
def test_either_operator_path_alone(tmp_path: Path, directories: Tuple[str, ...]) -> None:
    write_oci_layout(tmp_path / "oci", [("samples", samples_operator_image(directories=directories))])
    source = LayoutImage(Layout(tmp_path / "oci", create=False), "samples")
    streams, skipped, dirs = read_operator_imagestreams(source, arch="x86_64", description="samples")
    assert dirs == [f"/opt/openshift/operator/{directories[0]}"]
    assert len(streams) == 6
    raw_names = {
        t["from"]["name"]
        for p in IMAGESTREAMS.glob("*.json")
        for t in json.loads(p.read_text())["spec"]["tags"]
        if t["from"]["kind"] == "DockerImage"
    }
    assert {text for s in streams for _, text in s.tags} == raw_names


def test_operator_image_whiteout_hides_an_imagestream(tmp_path: Path, release: ReleaseFixture, registries: Registries) -> None:
    base = samples_operator_image(directories=("x86_64",))
    hide = make_layer({"opt/openshift/operator/x86_64/ruby/imagestreams/.wh.ruby-rhel.json": b""}, docker=True)
    image = make_image(base_layers=[*base.layers, hide], docker=True)
    write_oci_layout(tmp_path / "oci", [("samples", image)])
    info = ReleaseInfo(
        version="4.8.0", arch="x86_64", digest="sha256:" + "1" * 64, source="example.com/r@sha256:" + "1" * 64, requested="r",
        components={"cluster-samples-operator": "example.com/samples@" + image.digest},
    )
    plan = plan_samples(
        SamplesSpec(from_release=True),
        registries=registries,
        release_plan=ReleasePlan(images=(), releases=(info,)),
        operator_sources={info.components["cluster-samples-operator"]: LayoutImage(Layout(tmp_path / "oci", create=False), "samples")},
    )
    assert planned_targets(plan) == expected_targets(exclude_streams={"ruby"})


def test_samples_from_a_directory_with_exclusions(registries: Registries) -> None:
    spec = SamplesSpec(directory=SAMPLES_FIXTURE_DIR, exclude=("jenkins", "ruby:3.3-ubi10", "java:8"))
    plan = plan_samples(spec, registries=registries)
    expected = expected_targets(exclude_streams={"jenkins"}, exclude_tags={"ruby:3.3-ubi10", "java:8"})
    assert planned_targets(plan) == expected
    # java:8 and java:openjdk-8-el7 name the same image: excluding one tag keeps the image for the other
    assert ("registry.redhat.io/redhat-openjdk-18/openjdk18-openshift:latest", "redhat-openjdk-18/openjdk18-openshift", "latest") in expected
    assert set(plan.report.excluded) == {"jenkins", "ruby:3.3-ubi10", "java:8"}
    assert "ocp-tools-4" not in plan.organisations and "ubi10" not in plan.organisations
    assert any("Template" in s for s in plan.report.skipped)  # templates/ are read and skipped


def test_samples_from_a_list_and_conflicts(tmp_path: Path, registries: Registries) -> None:
    streams = {
        "kind": "List",
        "apiVersion": "v1",
        "items": [
            {"kind": "ImageStream", "apiVersion": "image.openshift.io/v1", "metadata": {"name": "a"},
             "spec": {"tags": [{"name": "1", "from": {"kind": "DockerImage", "name": "registry.redhat.io/org/app:1"}},
                               {"name": "latest", "from": {"kind": "ImageStreamTag", "name": "1"}}]}},
            {"kind": "ImageStream", "apiVersion": "image.openshift.io/v1", "metadata": {"name": "b"},
             "spec": {"tags": [{"name": "1", "from": {"kind": "DockerImage", "name": "quay.io/org/app:1"}}]}},
        ],
    }
    (tmp_path / "streams.yaml").write_text(json.dumps(streams))
    digest = "sha256:" + "ab" * 32
    spec = SamplesSpec(directory=tmp_path, images=("registry.example.com/extra/tool:2", f"registry.example.com/extra/pinned@{digest}"))
    plan = plan_samples(spec, registries=registries)
    assert planned_targets(plan) == {
        ("registry.redhat.io/org/app:1", "org/app", "1"),
        ("registry.example.com/extra/tool:2", "extra/tool", "2"),
        (f"registry.example.com/extra/pinned@{digest}", "extra/pinned", digest_tag(digest)),
    }
    assert len(plan.report.conflicts) == 1 and "quay.io/org/app:1" in plan.report.conflicts[0]
    assert plan.organisations == ("extra", "org")


def test_sample_target_keeps_the_path_as_written() -> None:
    assert sample_target("registry.redhat.io/ubi8/ruby-25:latest") == ("registry.redhat.io/ubi8/ruby-25:latest", "ubi8/ruby-25", "latest")
    assert sample_target("registry.access.redhat.com/ubi9/dotnet-100") == ("registry.access.redhat.com/ubi9/dotnet-100:latest", "ubi9/dotnet-100", "latest")
    assert sample_target("docker.io/centos/ruby-27-centos7:2.7")[1:] == ("centos/ruby-27-centos7", "2.7")
    assert sample_target("localhost:5000/a/b/c:3")[1:] == ("a/b/c", "3")


def test_samples_errors(tmp_path: Path, registries: Registries) -> None:
    with pytest.raises(UsageError, match="needs a release"):
        plan_samples(SamplesSpec(from_release=True), registries=registries, release_plan=None)
    info = ReleaseInfo(version="4.8.0", arch="x86_64", digest="sha256:" + "1" * 64, source="x", requested="x", components={"etcd": "x"})
    with pytest.raises(UsageError, match="no cluster-samples-operator component"):
        plan_samples(SamplesSpec(from_release=True), registries=registries, release_plan=ReleasePlan(images=(), releases=(info,)))
    with pytest.raises(ConfigError, match="does not exist"):
        plan_samples(SamplesSpec(directory=tmp_path / "missing"), registries=registries)
    (tmp_path / "bad.json").write_text("{nope: [")
    with pytest.raises(ConfigError, match="bad.json"):
        plan_samples(SamplesSpec(directory=tmp_path), registries=registries)


def test_operator_image_without_imagestreams(tmp_path: Path, registries: Registries) -> None:
    image = make_image({"usr/bin/cluster-samples-operator": b"x"}, docker=True)
    write_oci_layout(tmp_path / "oci", [("samples", image)])
    info = ReleaseInfo(
        version="4.8.0", arch="x86_64", digest="sha256:" + "1" * 64, source="x", requested="x",
        components={"cluster-samples-operator": "example.com/samples@" + image.digest},
    )
    with pytest.raises(UsageError, match=r"holds no imagestreams under /opt/openshift/operator/\{x86_64,ocp-x86_64\}"):
        plan_samples(
            SamplesSpec(from_release=True),
            registries=registries,
            release_plan=ReleasePlan(images=(), releases=(info,)),
            operator_sources={info.components["cluster-samples-operator"]: LayoutImage(Layout(tmp_path / "oci", create=False), "samples")},
        )

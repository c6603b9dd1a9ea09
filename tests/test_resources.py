"""Tests for bundler.openshift.resources (PROTOCOL-NOTES §5 "Cluster resources") and the CRD validator it relies on.

Everything generated is validated against the real CRDs in the shared fixtures; the release payload is the
real 4.8 nightly image-references (135 components).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from bundler.base.errors import InvalidReferenceError, UsageError
from bundler.oci.reference import Reference
from bundler.openshift.resources import (
    CatalogInfo,
    MirroredImage,
    ReleaseSignature,
    ResourcesOptions,
    ResourcesResult,
    write_cluster_resources,
)
from tests.crdschema import SchemaIndex, load_crds, validate_metadata, validate_object, validate_schema

FIXTURES = Path(os.environ.get("BUNDLER_FIXTURES", "/work/shared/fixtures"))
CLUSTER_FIXTURES = FIXTURES / "cluster-resources"
IMAGE_REFERENCES = FIXTURES / "release-payload" / "image-references.4.8.0-0.nightly-2021-05-25.json"
SIGNATURE = FIXTURES / "release-payload" / "signature-1.ocp-release-4.15.0-x86_64.gpg"

if not (CLUSTER_FIXTURES / "crds").is_dir() or not IMAGE_REFERENCES.is_file():
    pytest.skip(f"shared fixtures not found under {FIXTURES} (set BUNDLER_FIXTURES)", allow_module_level=True)

REGISTRY = "mirror.example.com:8443"
RELEASE_REPO = f"{REGISTRY}/ocp4/openshift4"
SIGNATURE_KEY = re.compile(r"^sha256-[0-9a-f]{64}-[1-9][0-9]*$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
MIRROR_SET_KEYS = ("imageDigestMirrors", "imageTagMirrors", "repositoryDigestMirrors")


def fake_digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture(scope="module")
def crds() -> SchemaIndex:
    index = load_crds(sorted((CLUSTER_FIXTURES / "crds").glob("*.yaml")))
    assert ("config.openshift.io/v1", "ImageDigestMirrorSet") in index
    assert ("config.openshift.io/v1", "ImageTagMirrorSet") in index
    assert ("operator.openshift.io/v1alpha1", "ImageContentSourcePolicy") in index
    assert ("operators.coreos.com/v1alpha1", "CatalogSource") in index
    return index


# --- realistic inputs ---------------------------------------------------------------------------------


def release_images() -> list[MirroredImage]:
    """The release and its components as `oc adm release mirror --to=<RELEASE_REPO>` tags them."""
    references = json.loads(IMAGE_REFERENCES.read_text())
    version = references["metadata"]["name"]
    release_digest = fake_digest(version)
    images = [
        MirroredImage(
            source=f"quay.io/openshift-release-dev/ocp-release@{release_digest}",
            target=f"{RELEASE_REPO}:{version}-x86_64",
            kind="release",
            digest=release_digest,
        )
    ]
    for tag in references["spec"]["tags"]:
        pull_spec = tag["from"]["name"]
        images.append(
            MirroredImage(
                source=pull_spec,
                target=f"{RELEASE_REPO}:{version}-x86_64-{tag['name']}",
                kind="release-component",
                digest=pull_spec.split("@", 1)[1],
            )
        )
    return images


SAMPLE_SOURCES = [
    "registry.redhat.io/rhscl/ruby-25-rhel7:latest",
    "registry.redhat.io/rhscl/ruby-25-rhel7:2.5",
    "registry.redhat.io/ubi8/ruby-27:latest",
    "registry.redhat.io/rhscl/nodejs-12-rhel7:latest",
    "registry.redhat.io/jboss-eap-7/eap73-openjdk11-openshift-rhel8:7.3.0",
    "registry.redhat.io/ubi8/openjdk-11:1.3",
]


def sample_images() -> list[MirroredImage]:
    images = []
    for source in SAMPLE_SOURCES:
        host_path, tag = source.rsplit(":", 1)
        path = host_path.split("/", 1)[1]
        images.append(
            MirroredImage(
                source=source,
                target=f"{REGISTRY}/{path}:{tag}",
                kind="sample",
                digest=fake_digest(source),
                tag=tag,
            )
        )
    return images


OPERATOR_REPOS = [
    "registry.redhat.io/openshift-logging/cluster-logging-rhel8-operator",
    "registry.redhat.io/openshift-logging/elasticsearch6-rhel8",
    "registry.redhat.io/openshift4/ose-kube-rbac-proxy",
    "registry.redhat.io/rhacm2/multicluster-operators-subscription-rhel8",
]


def operator_images() -> list[MirroredImage]:
    images = []
    for repo in OPERATOR_REPOS:
        for n in range(2):
            digest = fake_digest(f"{repo}-{n}")
            images.append(
                MirroredImage(
                    source=f"{repo}@{digest}",
                    target=f"{REGISTRY}/{repo.split('/', 1)[1]}:{digest[7:23]}",
                    kind="operator",
                    digest=digest,
                )
            )
    return images


CATALOG_SOURCE = "registry.redhat.io/redhat/redhat-operator-index:v4.8"
CATALOG_TARGET = f"{REGISTRY}/redhat/redhat-operator-index:v4.8"


def catalog_images() -> list[MirroredImage]:
    return [MirroredImage(source=CATALOG_SOURCE, target=CATALOG_TARGET, kind="catalog", digest=fake_digest("index"))]


def catalogs() -> list[CatalogInfo]:
    return [
        CatalogInfo(
            name="redhat-operators",
            source=CATALOG_SOURCE,
            target=CATALOG_TARGET,
            display_name="Red Hat Operators (mirror)",
        ),
        CatalogInfo(
            name="certified-operators",
            source="registry.redhat.io/redhat/certified-operator-index:v4.8",
            target=f"{REGISTRY}/redhat/certified-operator-index@{fake_digest('certified')}",
            display_name="Certified Operators",
        ),
    ]


def additional_images() -> list[MirroredImage]:
    busybox = fake_digest("busybox")
    return [
        MirroredImage(
            source="registry.redhat.io/ubi8/ubi:8.4",
            target=f"{REGISTRY}/ubi8/ubi:8.4",
            kind="additional",
            digest=fake_digest("ubi"),
            tag="8.4",
        ),
        MirroredImage(
            source=f"quay.io/prometheus/busybox@{busybox}",
            target=f"{REGISTRY}/prometheus/busybox:{busybox[7:23]}",
            kind="additional",
            digest=busybox,
        ),
        # Docker Hub short name: the source repository becomes docker.io/library/nginx.
        MirroredImage(
            source="nginx:1.21",
            target=f"{REGISTRY}/library/nginx:1.21",
            kind="additional",
            digest=fake_digest("nginx"),
        ),
    ]


def all_images() -> list[MirroredImage]:
    return release_images() + sample_images() + operator_images() + catalog_images() + additional_images()


def signatures() -> list[ReleaseSignature]:
    data = SIGNATURE.read_bytes()
    release_digest = release_images()[0].digest
    return [
        ReleaseSignature(digest=release_digest, index=1, data=data),
        ReleaseSignature(digest=release_digest, index=2, data=data[::-1]),
        ReleaseSignature(digest=fake_digest("another release"), index=1, data=b"second release"),
    ]


def write(out_dir: Path, images: list[MirroredImage] | None = None, **options: Any) -> ResourcesResult:
    return write_cluster_resources(
        all_images() if images is None else images,
        catalogs(),
        signatures(),
        ResourcesOptions(registry=REGISTRY, out_dir=out_dir, **options),
    )


def load(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


def mirror_entries(out_dir: Path, stem: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    for path in sorted(out_dir.glob(f"{stem}-*.yaml")):
        for document in load(path):
            for key in MIRROR_SET_KEYS:
                entries.extend(document["spec"].get(key, []))
    return entries


def as_map(entries: list[dict[str, Any]]) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for entry in entries:
        assert entry["source"] not in result, f"duplicate source {entry['source']}"
        result[entry["source"]] = entry["mirrors"]
    return result


def repository(reference: str) -> str:
    name = reference.split("@", 1)[0]
    head, _, last = name.rpartition("/")
    return f"{head}/{last.split(':', 1)[0]}"


def assert_repository_only(reference: str) -> None:
    assert "@" not in reference, reference
    assert ":" not in reference.split("/", 1)[1], f"{reference} carries a tag"


# --- the validator itself -----------------------------------------------------------------------------


def test_validator_accepts_real_fixtures(crds: SchemaIndex) -> None:
    checked = 0
    for name in [
        "oc-mirror-v1-output.catalogSource-cs-my-redhat-catalog.yaml",
        "oc-mirror-v1-output.platformv414-imageContentSourcePolicy.yaml",
        "oc-mirror-v1-output.redhatv414-imageContentSourcePolicy.yaml",
        "oc-testdata-idmsFile64921.yaml",
    ]:
        for document in load(CLUSTER_FIXTURES / name):
            assert validate_object(document, crds) == [], name
            checked += 1
    # The openshift/api "minimal object" tests: no metadata (the harness generates names).
    for path in sorted((CLUSTER_FIXTURES / "crds").glob("*_tests_*.yaml")):
        for test in load(path)[0]["tests"]["onCreate"]:
            assert validate_object(yaml.safe_load(test["initial"]), crds, require_name=False) == [], path.name
            checked += 1
    assert checked >= 8


def test_validator_catches_broken_objects(crds: SchemaIndex) -> None:
    good = {
        "apiVersion": "config.openshift.io/v1",
        "kind": "ImageDigestMirrorSet",
        "metadata": {"name": "ok"},
        "spec": {"imageDigestMirrors": [{"source": "quay.io/a/b", "mirrors": ["mirror:5000/a/b"]}]},
    }
    assert validate_object(good, crds) == []

    def broken(mutate: Any) -> list[str]:
        document = json.loads(json.dumps(good))
        mutate(document)
        return validate_object(document, crds)

    def entry(document: dict[str, Any]) -> dict[str, Any]:
        first: dict[str, Any] = document["spec"]["imageDigestMirrors"][0]
        return first

    cases = {
        "tag in source": lambda d: entry(d).update(source="quay.io/a/b:latest"),
        "digest in mirror": lambda d: entry(d).update(mirrors=["mirror:5000/a/b@sha256:" + "0" * 64]),
        "upper case path": lambda d: entry(d).update(source="quay.io/A/b"),
        "enum": lambda d: entry(d).update(mirrorSourcePolicy="Sometimes"),
        "required source": lambda d: entry(d).pop("source"),
        "unknown field": lambda d: d["spec"].update(imageDigestMirror=[]),
        "wrong type": lambda d: entry(d).update(mirrors="mirror:5000/a/b"),
        "required spec": lambda d: d.pop("spec"),
        "bad name": lambda d: d["metadata"].update(name="Bad_Name"),
        "missing name": lambda d: d["metadata"].pop("name"),
        "namespace on cluster-scoped": lambda d: d["metadata"].update(namespace="default"),
        "unknown kind": lambda d: d.update(kind="ImageDigestMirrorSets"),
    }
    for what, mutate in cases.items():
        assert broken(mutate), f"validator missed: {what}"

    catalog = {
        "apiVersion": "operators.coreos.com/v1alpha1",
        "kind": "CatalogSource",
        "metadata": {"name": "c"},
        "spec": {"image": "x"},
    }
    errors = validate_object(catalog, crds)
    assert any("namespace" in e for e in errors) and any("sourceType" in e for e in errors)
    catalog["spec"] = {"sourceType": "grpc", "priority": "high"}  # priority is an integer
    catalog["metadata"] = {"name": "c", "namespace": "openshift-marketplace"}
    assert any("spec.priority" in e for e in validate_object(catalog, crds))

    # Keywords the fixture CRDs use rarely or not at all.
    schema = {
        "type": "object",
        "properties": {
            "s": {"type": "string", "minLength": 2, "maxLength": 3},
            "l": {"type": "array", "minItems": 1, "maxItems": 2, "items": {"type": "integer"}},
            "q": {"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": True},
            "m": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    }
    assert validate_schema({"s": "ab", "l": [1], "q": "1Gi", "m": {"a": "b"}}, schema) == []
    assert len(validate_schema({"s": "a", "l": [], "q": 1.5, "m": {"a": 1}}, schema)) == 4
    assert len(validate_schema({"s": "abcd", "l": [1, 2, True]}, schema)) == 3
    assert validate_metadata({"name": "a" * 254}, namespaced=None)


# --- mirror sets ---------------------------------------------------------------------------------------


def test_generated_objects_validate_against_crds(tmp_path: Path, crds: SchemaIndex) -> None:
    result = write(tmp_path)
    assert result.files == tuple(sorted(result.files))
    assert {p.name for p in tmp_path.iterdir()} == {p.name for p in result.files}
    kinds = set()
    for path in result.files:
        if path.suffix != ".yaml" or path.name.startswith("install-config") or path.name.startswith("samples"):
            continue
        for document in load(path):
            kinds.add(document["kind"])
            if document["kind"] == "ConfigMap":
                assert validate_metadata(document["metadata"], namespaced=True) == []
            else:
                assert validate_object(document, crds) == [], path.name
    assert kinds == {"ImageDigestMirrorSet", "ImageTagMirrorSet", "CatalogSource", "ConfigMap"}


def test_mirror_sets_are_scoped_by_repository(tmp_path: Path) -> None:
    images = all_images()
    result = write(tmp_path)
    assert not list(tmp_path.glob("imageContentSourcePolicy*"))
    digest = as_map(mirror_entries(tmp_path, "imageDigestMirrorSet"))
    tags = as_map(mirror_entries(tmp_path, "imageTagMirrorSet"))
    for source, mirrors in list(digest.items()) + list(tags.items()):
        assert_repository_only(source)
        for mirror in mirrors:
            assert_repository_only(mirror)
            assert mirror.startswith(REGISTRY + "/")
        assert mirrors == sorted(set(mirrors))

    # Release payload: both upstream repositories map to the one release repository, as oc prints it.
    assert digest["quay.io/openshift-release-dev/ocp-release"] == [RELEASE_REPO]
    assert digest["quay.io/openshift-release-dev/ocp-v4.0-art-dev"] == [RELEASE_REPO]
    assert len([s for s in digest if s.startswith("quay.io/openshift-release-dev/")]) == 2

    # Every image's repository is covered by digest mirrors, nothing else is.
    expected = {repository(image.source) for image in images if image.source != "nginx:1.21"}
    expected.add("docker.io/library/nginx")
    assert set(digest) == expected
    assert digest["docker.io/library/nginx"] == [f"{REGISTRY}/library/nginx"]
    assert digest["registry.redhat.io/rhscl/ruby-25-rhel7"] == [f"{REGISTRY}/rhscl/ruby-25-rhel7"]

    # Tag mirrors only for what was mirrored by tag: samples and additional images by tag.
    tagged = {repository(s) for s in SAMPLE_SOURCES} | {"registry.redhat.io/ubi8/ubi", "docker.io/library/nginx"}
    assert set(tags) == tagged
    assert result.digest_mirror_sources == len(digest) and result.tag_mirror_sources == len(tags)
    assert result.warnings == ()


def test_digest_mirrors_for_tagged_can_be_turned_off(tmp_path: Path) -> None:
    write(tmp_path, digest_mirrors_for_tagged=False)
    digest = as_map(mirror_entries(tmp_path, "imageDigestMirrorSet"))
    tags = as_map(mirror_entries(tmp_path, "imageTagMirrorSet"))
    assert not set(digest) & set(tags)
    assert CATALOG_SOURCE.rsplit(":", 1)[0] in digest  # catalogs are digest-only even when selected by tag


def test_icsp_mode_excludes_idms_and_itms(tmp_path: Path, crds: SchemaIndex) -> None:
    first = write(tmp_path)
    stale = {p for p in first.files if p.name.startswith(("imageDigestMirrorSet", "imageTagMirrorSet"))}
    assert stale

    result = write(tmp_path, icsp=True)
    assert set(result.removed) == stale
    assert not list(tmp_path.glob("imageDigestMirrorSet*")) and not list(tmp_path.glob("imageTagMirrorSet*"))
    icsp_files = sorted(tmp_path.glob("imageContentSourcePolicy-*.yaml"))
    assert icsp_files
    for path in icsp_files:
        for document in load(path):
            assert document["apiVersion"] == "operator.openshift.io/v1alpha1"
            assert validate_object(document, crds) == []
    entries = as_map(mirror_entries(tmp_path, "imageContentSourcePolicy"))
    assert entries["quay.io/openshift-release-dev/ocp-release"] == [RELEASE_REPO]
    assert entries["quay.io/openshift-release-dev/ocp-v4.0-art-dev"] == [RELEASE_REPO]
    assert "registry.redhat.io/ubi8/ubi" in entries  # tag-mirrored images are still digest-pullable
    assert result.tag_mirror_sources == 0

    back = write(tmp_path)
    assert {p.name for p in back.removed} == {p.name for p in icsp_files}
    assert "imageContentSourcePolicy-" not in (tmp_path / "README.txt").read_text()

    with pytest.raises(UsageError, match="mirror source policy"):
        write(tmp_path, icsp=True, mirror_source_policy="NeverContactSource")


def test_mirror_source_policy(tmp_path: Path, crds: SchemaIndex) -> None:
    write(tmp_path, mirror_source_policy="NeverContactSource")
    entries = mirror_entries(tmp_path, "imageDigestMirrorSet") + mirror_entries(tmp_path, "imageTagMirrorSet")
    assert entries and all(e["mirrorSourcePolicy"] == "NeverContactSource" for e in entries)
    for path in tmp_path.glob("image*MirrorSet-*.yaml"):
        assert validate_object(load(path)[0], crds) == []
    with pytest.raises(UsageError):
        write(tmp_path, mirror_source_policy="Never")


def many_operator_images(count: int) -> list[MirroredImage]:
    images = []
    for i in range(count):
        repo = f"registry.example.com/team-{i:05d}/an-operator-image-with-a-realistically-long-name-{i:05d}"
        digest = fake_digest(repo)
        images.append(
            MirroredImage(
                source=f"{repo}@{digest}",
                target=f"{REGISTRY}/{repo.split('/', 1)[1]}:{digest[7:23]}",
                kind="operator",
                digest=digest,
            )
        )
    return images


@pytest.mark.parametrize("icsp", [False, True])
def test_split_under_max_bytes_loses_nothing(tmp_path: Path, crds: SchemaIndex, icsp: bool) -> None:
    images = all_images() + many_operator_images(2500)
    result = write(tmp_path, images=images, icsp=icsp)
    stem = "imageContentSourcePolicy" if icsp else "imageDigestMirrorSet"
    paths = sorted(tmp_path.glob(f"{stem}-*.yaml"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
    assert len(paths) >= 2, "2500 repositories must not fit into one 250,000-byte object"
    assert [p.name for p in paths] == [f"{stem}-{i}.yaml" for i in range(len(paths))]
    names = []
    for path in paths:
        assert path.stat().st_size <= 250_000
        (document,) = load(path)
        assert validate_object(document, crds) == []
        names.append(document["metadata"]["name"])
    assert names == [f"ocp-bundler-{i}" for i in range(len(paths))]
    assert all(DNS1123_SUBDOMAIN.match(n) for n in names)

    entries = mirror_entries(tmp_path, stem)
    sources = [e["source"] for e in entries]
    assert sources == sorted(sources), "entries are sorted across files"
    expected = {repository(i.source) for i in images if i.source != "nginx:1.21"} | {"docker.io/library/nginx"}
    assert set(as_map(entries)) == expected
    assert result.digest_mirror_sources == len(expected)
    # Greedy packing: each full file could not have taken the next entry.
    sizes = [p.stat().st_size for p in paths]
    assert all(size > 250_000 - 1_000 for size in sizes[:-1])


def test_small_max_bytes_splits_every_kind(tmp_path: Path, crds: SchemaIndex) -> None:
    options = ResourcesOptions(registry=REGISTRY, out_dir=tmp_path, max_bytes=700)
    result = write_cluster_resources(all_images(), catalogs(), [], options)
    idms = sorted(tmp_path.glob("imageDigestMirrorSet-*.yaml"))
    itms = sorted(tmp_path.glob("imageTagMirrorSet-*.yaml"))
    assert len(idms) > 3 and len(itms) > 1
    for path in result.files:
        assert path.suffix != ".yaml" or path.stat().st_size <= 700, path.name
    for path in idms + itms:
        assert validate_object(load(path)[0], crds) == []
    assert len(as_map(mirror_entries(tmp_path, "imageDigestMirrorSet"))) == result.digest_mirror_sources
    assert len(as_map(mirror_entries(tmp_path, "imageTagMirrorSet"))) == result.tag_mirror_sources


def test_entry_larger_than_max_bytes_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="max_bytes"):
        write(tmp_path, max_bytes=200)


# --- other files ----------------------------------------------------------------------------------------


def test_release_signature_configmaps(tmp_path: Path) -> None:
    sigs = signatures()
    write(tmp_path)
    paths = sorted(tmp_path.glob("release-signatures-*.yaml"))
    assert len(paths) == 2
    seen = {}
    for path in paths:
        (document,) = load(path)
        assert document["apiVersion"] == "v1" and document["kind"] == "ConfigMap"
        metadata = document["metadata"]
        assert metadata["namespace"] == "openshift-config-managed"
        assert metadata["labels"] == {"release.openshift.io/verification-signatures": ""}
        assert validate_metadata(metadata, namespaced=True) == []
        assert path.name == f"release-signatures-{metadata['name']}.yaml"
        for key, value in document["binaryData"].items():
            assert SIGNATURE_KEY.match(key), key
            assert key.startswith(metadata["name"] + "-")
            seen[key] = base64.b64decode(value, validate=True)
    expected = {f"{s.digest.replace(':', '-')}-{s.index}": s.data for s in sigs}
    assert seen == expected
    assert seen[f"{sigs[0].digest.replace(':', '-')}-1"] == SIGNATURE.read_bytes()


def test_release_signature_errors(tmp_path: Path) -> None:
    digest = fake_digest("r")
    options = ResourcesOptions(registry=REGISTRY, out_dir=tmp_path)
    same = [ReleaseSignature(digest=digest, index=1, data=b"a")] * 2
    write_cluster_resources([], [], same, options)  # identical duplicates collapse
    for bad in (
        [ReleaseSignature(digest=digest, index=1, data=b"a"), ReleaseSignature(digest=digest, index=1, data=b"b")],
        [ReleaseSignature(digest=digest, index=0, data=b"a")],
        [ReleaseSignature(digest="sha256:abc", index=1, data=b"a")],
    ):
        with pytest.raises(UsageError):
            write_cluster_resources([], [], bad, options)


def test_mapping_txt(tmp_path: Path) -> None:
    images = all_images()
    write(tmp_path, images=images + images[:5])  # duplicates collapse
    lines = (tmp_path / "mapping.txt").read_text().splitlines()
    assert lines == sorted(lines)
    assert lines == sorted({f"{i.source}={i.target}" for i in images})
    assert len(lines) == len(images)
    for line in lines:
        _, target = line.split("=")
        assert target.startswith(REGISTRY + "/") and (":" in target.rsplit("/", 1)[1] or "@" in target)
    assert (tmp_path / "mapping.txt").read_bytes().endswith(b"\n")


def test_output_is_deterministic(tmp_path: Path) -> None:
    images = all_images() + many_operator_images(300)
    shuffled = list(images)
    random.Random(7).shuffle(shuffled)
    first = write(tmp_path / "a", images=images, max_bytes=20_000)
    second = write(tmp_path / "b", images=shuffled, max_bytes=20_000)
    names = [p.name for p in first.files]
    assert names == [p.name for p in second.files]
    assert len(names) > 8
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    again = write(tmp_path / "a", images=shuffled, max_bytes=20_000)
    assert again.removed == ()


def test_install_config_snippets(tmp_path: Path) -> None:
    write(tmp_path)
    new = yaml.safe_load((tmp_path / "install-config-snippet.yaml").read_text())
    legacy = yaml.safe_load((tmp_path / "install-config-snippet-legacy.yaml").read_text())
    assert set(new) == {"imageDigestSources"}
    assert set(legacy) == {"imageContentSources"}
    expected = [
        {"mirrors": [RELEASE_REPO], "source": "quay.io/openshift-release-dev/ocp-release"},
        {"mirrors": [RELEASE_REPO], "source": "quay.io/openshift-release-dev/ocp-v4.0-art-dev"},
    ]
    assert new["imageDigestSources"] == expected
    assert legacy["imageContentSources"] == expected

    kept = write(tmp_path, images=sample_images())  # a later bundle without a release keeps the snippet
    assert (tmp_path / "install-config-snippet.yaml").exists() and not kept.removed
    result = write(tmp_path, images=sample_images(), fresh=True)
    assert not (tmp_path / "install-config-snippet.yaml").exists()
    assert {p.name for p in result.removed} >= {"install-config-snippet.yaml", "install-config-snippet-legacy.yaml"}


def test_samples_patch_only_with_samples(tmp_path: Path) -> None:
    write(tmp_path)
    path = tmp_path / "samples-operator-patch.yaml"
    text = path.read_text()
    assert yaml.safe_load(text) == {"spec": {"samplesRegistry": REGISTRY}}
    assert "# " in text and "oc patch configs.samples.operator.openshift.io cluster --type merge" in text
    command = next(line for line in text.splitlines() if "--patch '" in line)
    assert json.loads(command.split("--patch '", 1)[1].rstrip("'")) == {"spec": {"samplesRegistry": REGISTRY}}

    images = [i for i in all_images() if i.kind != "sample"]
    assert not write(tmp_path, images=images).removed and path.exists()  # cumulative: earlier samples stay
    result = write(tmp_path, images=images, fresh=True)
    assert not path.exists() and path in result.removed
    assert "samples" not in (tmp_path / "README.txt").read_text()


def test_sample_not_at_its_own_path_warns(tmp_path: Path) -> None:
    moved = MirroredImage(
        source="registry.redhat.io/ubi8/ruby-27:latest",
        target=f"{REGISTRY}/samples/ruby-27:latest",
        kind="sample",
        digest=fake_digest("moved"),
        tag="latest",
    )
    retagged = MirroredImage(
        source="registry.redhat.io/ubi8/ubi:8.4",
        target=f"{REGISTRY}/ubi8/ubi:8.4-copy",
        kind="additional",
        digest=fake_digest("retagged"),
    )
    result = write(tmp_path, images=[moved, retagged])
    assert len(result.warnings) == 2
    assert any("samplesRegistry" in w for w in result.warnings)
    tags = as_map(mirror_entries(tmp_path, "imageTagMirrorSet"))
    assert "registry.redhat.io/ubi8/ubi" not in tags  # a tag mirror would look for :8.4, which is not there


def test_catalog_sources(tmp_path: Path, crds: SchemaIndex) -> None:
    write(tmp_path)
    for catalog in catalogs():
        (document,) = load(tmp_path / f"catalogSource-{catalog.name}.yaml")
        assert validate_object(document, crds) == []
        assert document["metadata"] == {"name": catalog.name, "namespace": "openshift-marketplace"}
        assert document["spec"] == {
            "sourceType": "grpc",
            "image": catalog.target,
            "displayName": catalog.display_name,
            "publisher": "ocp-bundler",
        }
    bad_name = CatalogInfo(name="Red_Hat", source=CATALOG_SOURCE, target=CATALOG_TARGET, display_name="x")
    options = ResourcesOptions(registry=REGISTRY, out_dir=tmp_path)
    with pytest.raises(UsageError, match="DNS-1123"):
        write_cluster_resources([], [bad_name], [], options)
    twice = [catalogs()[0], catalogs()[0]]
    with pytest.raises(UsageError, match="two catalogs"):
        write_cluster_resources([], twice, [], options)
    elsewhere = CatalogInfo(name="x", source=CATALOG_SOURCE, target="other.example.com/x:1", display_name="x")
    with pytest.raises(UsageError, match="not in the mirror registry"):
        write_cluster_resources([], [elsewhere], [], options)


def test_readme_lists_what_to_apply(tmp_path: Path) -> None:
    result = write(tmp_path)
    readme = (tmp_path / "README.txt").read_text()
    for path in result.files:
        if path.name != "README.txt":
            assert path.name in readme
    assert "4.13" in readme and "oc apply -f imageDigestMirrorSet-0.yaml" in readme
    write(tmp_path, icsp=True)
    readme = (tmp_path / "README.txt").read_text()
    assert "oc apply -f imageContentSourcePolicy-0.yaml" in readme and "4.4 to 4.12" in readme


def test_no_temp_files_and_modes(tmp_path: Path) -> None:
    result = write(tmp_path)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    for path in result.files:
        assert path.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize(
    "image, message",
    [
        (MirroredImage(source="quay.io/a/b@" + fake_digest("x"), target=f"{REGISTRY}/a/b:1", kind="thing",
                       digest=fake_digest("x")), "unknown kind"),
        (MirroredImage(source="quay.io/a/b@" + fake_digest("x"), target="other.example.com/a/b:1", kind="operator",
                       digest=fake_digest("x")), "not in the mirror registry"),
        (MirroredImage(source="quay.io/a/b@" + fake_digest("x"), target=f"{REGISTRY}/a/b", kind="operator",
                       digest=fake_digest("x")), "neither tag nor digest"),
        (MirroredImage(source="quay.io/a/b@" + fake_digest("x"), target=f"{REGISTRY}/a/b:1", kind="operator",
                       digest=fake_digest("y")), "source digest differs"),
        (MirroredImage(source="quay.io/a/b:1", target=f"{REGISTRY}/a/b:1", kind="operator",
                       digest="sha256:1234"), "digest"),
        (MirroredImage(source="quay.io/a/b:1", target=f"{REGISTRY}/a/b:1", kind="sample",
                       digest=fake_digest("x"), tag="2"), "differs from the source's tag"),
    ],
)  # fmt: skip
def test_rejects_bad_images(tmp_path: Path, image: MirroredImage, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        write_cluster_resources([image], [], [], ResourcesOptions(registry=REGISTRY, out_dir=tmp_path))
    assert not tmp_path.exists() or not list(tmp_path.iterdir()), "nothing is written on error"


def test_rejects_bad_references_and_options(tmp_path: Path) -> None:
    digest = fake_digest("x")
    upper = MirroredImage(source=f"quay.io/A/b@{digest}", target=f"{REGISTRY}/a/b:1", kind="operator", digest=digest)
    with pytest.raises(InvalidReferenceError):
        write_cluster_resources([upper], [], [], ResourcesOptions(registry=REGISTRY, out_dir=tmp_path))
    for registry in ("https://mirror.example.com", "mirror.example.com:8443/Upper", ""):
        with pytest.raises(UsageError):
            write_cluster_resources([], [], [], ResourcesOptions(registry=registry, out_dir=tmp_path))
    with pytest.raises(UsageError):
        write_cluster_resources([], [], [], ResourcesOptions(registry=REGISTRY, out_dir=tmp_path, name_prefix="X"))


def test_registry_with_path_prefix(tmp_path: Path) -> None:
    digest = fake_digest("x")
    image = MirroredImage(
        source=f"quay.io/a/b@{digest}", target=f"{REGISTRY}/prefix/a/b:1", kind="operator", digest=digest
    )
    write_cluster_resources([image], [], [], ResourcesOptions(registry=f"{REGISTRY}/prefix/", out_dir=tmp_path))
    assert as_map(mirror_entries(tmp_path, "imageDigestMirrorSet")) == {"quay.io/a/b": [f"{REGISTRY}/prefix/a/b"]}


def test_inputs_are_keyword_only(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        MirroredImage("quay.io/a/b:1", f"{REGISTRY}/a/b:1", "additional", fake_digest("x"), None)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        ResourcesOptions(REGISTRY, tmp_path)  # type: ignore[call-arg]


# --- day 2: several bundles into one mirror -------------------------------------------------------------


def _apply_in_order(*directories: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """What a cluster holds after `oc apply -f DIR` of each directory in turn: later objects of the same
    kind and name replace earlier ones."""
    cluster: dict[tuple[str, str], dict[str, Any]] = {}
    for directory in directories:
        for path in sorted(directory.glob("*.yaml")):
            for document in load(path):
                if isinstance(document, dict) and "kind" in document:
                    cluster[(document["kind"], document["metadata"]["name"])] = document
    return cluster


def _resolves(cluster: dict[tuple[str, str], dict[str, Any]], image: MirroredImage) -> bool:
    """Whether a pull of `image` by digest finds a mirror repository that holds it."""
    source = Reference.parse(image.source)
    target = Reference.parse(image.target)
    source_repo = f"{source.registry}/{source.repository}"
    target_repo = f"{target.registry}/{target.repository}"
    for (kind, _), document in cluster.items():
        for key in ("imageDigestMirrors", "repositoryDigestMirrors"):
            for entry in document.get("spec", {}).get(key, []) if kind != "CatalogSource" else []:
                if entry["source"] == source_repo and target_repo in entry["mirrors"]:
                    return True
    return False


def _upgrade_images() -> list[MirroredImage]:
    """Bundle 2: a new release (other digest, same repositories) and one new additional image."""
    new_release = fake_digest("4.8.99")
    return [
        MirroredImage(
            source=f"quay.io/openshift-release-dev/ocp-release@{new_release}",
            target=f"{RELEASE_REPO}:4.8.99-x86_64",
            kind="release",
            digest=new_release,
        ),
        MirroredImage(
            source="quay.io/newvendor/tool:1.0",
            target=f"{REGISTRY}/newvendor/tool:1.0",
            kind="additional",
            digest=fake_digest("tool"),
            tag="1.0",
        ),
    ]


def test_a_later_bundle_never_drops_a_mirror_or_catalog_of_an_earlier_one(tmp_path: Path, crds: SchemaIndex) -> None:
    out = tmp_path / "resources"
    first = write(out)
    snapshot = tmp_path / "bundle1"
    snapshot.mkdir()
    for path in out.iterdir():
        (snapshot / path.name).write_bytes(path.read_bytes())
    upgrade_catalog = CatalogInfo(
        name="redhat-operators",
        source=CATALOG_SOURCE,
        target=f"{REGISTRY}/redhat/redhat-operator-index@{fake_digest('index v2')}",
        display_name="Red Hat Operators (mirror)",
    )
    second = write_cluster_resources(
        _upgrade_images(), [upgrade_catalog], [], ResourcesOptions(registry=REGISTRY, out_dir=out)
    )
    assert second.removed == ()
    assert second.changes.mirrors_removed == 0
    assert second.changes.mirrors_added == 2  # the new tool repository: a digest and a tag mirror
    assert second.changes.mirrors_unchanged > 20
    assert second.changes.catalogs_updated == ("redhat-operators",)
    assert second.changes.catalogs_unchanged == ("certified-operators",)
    assert "0 removed" in second.changes.summary()

    cluster = _apply_in_order(snapshot, out)
    for image in all_images() + _upgrade_images():
        assert _resolves(cluster, image), image.source
    catalogs_now = {name: doc["spec"]["image"] for (kind, name), doc in cluster.items() if kind == "CatalogSource"}
    assert set(catalogs_now) == {"redhat-operators", "certified-operators"}
    assert catalogs_now["redhat-operators"] == upgrade_catalog.target
    for (kind, _), document in cluster.items():
        if kind != "ConfigMap":  # release signatures: a core kind, no CRD to check against
            assert validate_object(document, crds) == []
    # nothing of bundle 1 was deleted from the directory: its signatures, samples patch and mapping stay
    assert {p.name for p in first.files} <= {p.name for p in out.iterdir()}
    mapping = (out / "mapping.txt").read_text()
    assert all(f"{i.source}={i.target}" in mapping for i in all_images() + _upgrade_images())
    again = write_cluster_resources(
        _upgrade_images(), [upgrade_catalog], [], ResourcesOptions(registry=REGISTRY, out_dir=out)
    )
    assert again.changes.mirrors_added == 0 and again.changes.catalogs_updated == ()


def test_a_fresh_set_drops_earlier_content_and_says_so(tmp_path: Path) -> None:
    write(tmp_path)
    result = write_cluster_resources(
        _upgrade_images(), [], [], ResourcesOptions(registry=REGISTRY, out_dir=tmp_path, fresh=True)
    )
    assert result.changes.mirrors_removed > 20
    assert result.changes.catalogs_removed == ("certified-operators", "redhat-operators")
    assert not list(tmp_path.glob("catalogSource-*.yaml"))
    digest = as_map(mirror_entries(tmp_path, "imageDigestMirrorSet"))
    assert set(digest) == {"quay.io/openshift-release-dev/ocp-release", "quay.io/newvendor/tool"}


def test_resources_of_another_mirror_in_the_directory_are_refused(tmp_path: Path) -> None:
    write_cluster_resources(
        all_images(), [], [], ResourcesOptions(registry=REGISTRY, out_dir=tmp_path)
    )
    other = [
        MirroredImage(
            source=i.source, target=i.target.replace(REGISTRY, "other.example.com:5000"), kind=i.kind,
            digest=i.digest, tag=i.tag,
        )
        for i in _upgrade_images()
    ]
    with pytest.raises(UsageError, match="another mirror") as caught:
        write_cluster_resources(other, [], [], ResourcesOptions(registry="other.example.com:5000", out_dir=tmp_path))
    assert "--resources-fresh" in (caught.value.hint or "")
    (tmp_path / "imageDigestMirrorSet-0.yaml").write_text("spec: [1, 2]\n")
    with pytest.raises(UsageError, match="not a cluster resource file"):
        write_cluster_resources(_upgrade_images(), [], [], ResourcesOptions(registry=REGISTRY, out_dir=tmp_path))

"""Tests for bundler.openshift.image_set: both config formats, the examples, and every kind of error message."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

from bundler.base.errors import ConfigError, ExitCode
from bundler.openshift.image_set import (
    API_VERSION,
    DEFAULT_POSTGRES_IMAGE,
    DEFAULT_QUAY_IMAGE,
    DEFAULT_REDIS_IMAGE,
    OC_MIRROR_V1ALPHA2,
    OC_MIRROR_V2ALPHA1,
    CatalogSpec,
    ChannelFilter,
    ChannelSpec,
    ImageSet,
    PackageSpec,
    RegistryImagesSpec,
    ReleaseSpec,
    SamplesSpec,
    TargetSpec,
    Version,
    load_image_set,
    parse_image_set,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "manifests" / "examples"

OWN_HEADER = "apiVersion: ocp-bundler.io/v1alpha1\nkind: ImageSet\n"
V1ALPHA2_HEADER = "apiVersion: mirror.openshift.io/v1alpha2\nkind: ImageSetConfiguration\n"
V2ALPHA1_HEADER = "apiVersion: mirror.openshift.io/v2alpha1\nkind: ImageSetConfiguration\n"

CATALOG = "registry.redhat.io/redhat/redhat-operator-index:v4.14"
DIGEST = "sha256:" + "ab" * 32


def parse(text: str, header: str = OWN_HEADER) -> ImageSet:
    return parse_image_set(header + textwrap.dedent(text), source_name="config.yaml")


def error_of(text: str, header: str = OWN_HEADER) -> str:
    with pytest.raises(ConfigError) as info:
        parse(text, header)
    assert info.value.exit_code == ExitCode.USAGE
    return str(info.value)


# --------------------------------------------------------------------------------------------------
# Examples
# --------------------------------------------------------------------------------------------------


def test_every_example_parses() -> None:
    examples = sorted(EXAMPLES.glob("*.yaml"))
    assert {p.name for p in examples} >= {
        "ocp-4.4.5-classic.yaml",
        "oc-mirror-v1alpha2.yaml",
        "oc-mirror-v2alpha1.yaml",
        "additional-images.yaml",
    }
    for path in examples:
        image_set = load_image_set(path)
        assert not image_set.is_empty(), path
        assert image_set.source_name == str(path)


def test_classic_example() -> None:
    image_set = load_image_set(EXAMPLES / "ocp-4.4.5-classic.yaml")
    assert image_set.source_format == API_VERSION
    assert image_set.releases == ReleaseSpec(
        images=("quay.io/openshift-release-dev/ocp-release:4.4.5-x86_64",),
        signatures=True,
        repository="ocp4/openshift4",
    )
    assert image_set.samples == SamplesSpec(from_release=True)
    assert image_set.target == TargetSpec(
        registry="registry.openshift4.example.com", release_repository="ocp4/openshift4"
    )
    (catalog,) = image_set.operators
    assert catalog.catalog == "registry.redhat.io/redhat/redhat-operator-index:v4.6"  # v4.4 was never published
    assert [p.name for p in catalog.packages] == ["local-storage-operator", "cluster-logging", "elasticsearch-operator"]
    assert all(p.channels == (ChannelFilter(name="4.6"),) for p in catalog.packages)
    assert image_set.registry_images == RegistryImagesSpec(enabled=True)
    assert image_set.registry_images.images() == (DEFAULT_QUAY_IMAGE, DEFAULT_POSTGRES_IMAGE, DEFAULT_REDIS_IMAGE)
    assert image_set.additional_images == ()
    assert image_set.warnings == ()


def test_additional_images_example() -> None:
    image_set = load_image_set(EXAMPLES / "additional-images.yaml")
    assert image_set.additional_images == (
        "registry.access.redhat.com/ubi9/ubi-minimal:9.4",
        "docker.io/library/busybox:1.36",
    )
    assert image_set.releases.is_empty()
    assert image_set.samples.is_empty()
    assert image_set.operators == ()
    assert image_set.registry_images.images() == ()


def test_oc_mirror_v1alpha2_example() -> None:
    image_set = load_image_set(EXAMPLES / "oc-mirror-v1alpha2.yaml")
    assert image_set.source_format == OC_MIRROR_V1ALPHA2
    assert image_set.releases.channels == (
        ChannelSpec(name="stable-4.14", type="ocp", min_version="4.14.10", max_version="4.14.12", shortest_path=True),
    )
    assert image_set.releases.architectures == ("amd64",)
    assert image_set.releases.graph_data is True
    assert image_set.releases.repository == "ocp4/openshift4"
    first, second = image_set.operators
    assert first.target_catalog == "my-org/vendors/redhat-operator-index"
    assert first.target_tag == "v4.14.0"
    assert first.packages[0] == PackageSpec(
        name="rhacs-operator", channels=(ChannelFilter(name="rhacs-4.5", min_version="4.5.5", max_version="4.5.5"),)
    )
    assert first.packages[2].min_version == "5.8.1"
    assert second.packages == (PackageSpec(name="gpu-operator-certified", channels=(ChannelFilter(name="v23.9"),)),)
    assert len(image_set.additional_images) == 2
    assert image_set.volume_size_hint == 4 * 1024**3
    assert len(image_set.warnings) == 1 and "storageConfig" in image_set.warnings[0]
    assert image_set.registry_images.enabled is False


def test_oc_mirror_v2alpha1_example() -> None:
    image_set = load_image_set(EXAMPLES / "oc-mirror-v2alpha1.yaml")
    assert image_set.source_format == OC_MIRROR_V2ALPHA1
    assert [c.name for c in image_set.releases.channels] == ["stable-4.18", "eus-4.16"]
    assert image_set.releases.architectures == ("amd64", "arm64")
    (catalog,) = image_set.operators
    odf = catalog.packages[-1]
    assert odf.default_channel == "stable-4.18"
    assert odf.channels == (ChannelFilter(name="stable-4.18", min_version="4.18.0-rhodf"),)
    assert image_set.volume_size_hint == 8 * 1024**3
    assert image_set.warnings == ()


# --------------------------------------------------------------------------------------------------
# Our format
# --------------------------------------------------------------------------------------------------


def test_own_format_all_fields(tmp_path: Path) -> None:
    config = tmp_path / "set.yaml"
    config.write_text(
        OWN_HEADER
        + textwrap.dedent(
            f"""\
            target:
              registry: mirror.example.com:8443
              releaseRepository: openshift/release
              prefix: mirror/ocp
            releases:
              images:
                - quay.io/openshift-release-dev/ocp-release@{DIGEST}
              channels:
                - name: stable-4.14
                  type: ocp
                  minVersion: 4.14.0-rc.1
                  maxVersion: 4.14.3
                  shortestPath: true
                - name: stable-4
                  type: okd
                  full: true
              architectures: [x86_64, aarch64, amd64, multi]
              graphURL: https://updates.example.com/api/upgrades_info/v1/graph
              graphData: true
              signatures: false
            samples:
              fromRelease: true
              directory: imagestreams
              images: [registry.redhat.io/ubi9/python-311:latest]
              exclude: [jenkins, "dotnet:3.1"]
            operators:
              - catalog: {CATALOG}
                full: true
                skipDependencies: true
                targetCatalog: olm/redhat-operators
                targetTag: v4.14-mirror
                packages:
                  - name: odf-operator
                    minVersion: 4.14.0
                    maxVersion: 4.14.5
                    defaultChannel: stable-4.14
                    channels:
                      - name: stable-4.14
                        minVersion: 4.14.1
            additionalImages:
              - quay.io/a/b:1
              - name: docker://quay.io/c/d:2
            registryImages:
              enabled: true
              quay: quay.example.com/quay/quay:v3.13.0
              postgres: quay.example.com/db/postgres:15
              redis: quay.example.com/db/redis:7
            volumeSizeGiB: 2
            """
        )
    )
    image_set = load_image_set(config)
    assert image_set.target == TargetSpec(
        registry="mirror.example.com:8443", release_repository="openshift/release", prefix="mirror/ocp"
    )
    assert image_set.releases == ReleaseSpec(
        images=(f"quay.io/openshift-release-dev/ocp-release@{DIGEST}",),
        channels=(
            ChannelSpec(
                name="stable-4.14", type="ocp", min_version="4.14.0-rc.1", max_version="4.14.3", shortest_path=True
            ),
            ChannelSpec(name="stable-4", type="okd", full=True),
        ),
        architectures=("amd64", "arm64", "multi"),
        graph_url="https://updates.example.com/api/upgrades_info/v1/graph",
        graph_data=True,
        signatures=False,
        repository="openshift/release",
    )
    assert image_set.samples == SamplesSpec(
        from_release=True,
        directory=tmp_path / "imagestreams",
        images=("registry.redhat.io/ubi9/python-311:latest",),
        exclude=("jenkins", "dotnet:3.1"),
    )
    assert image_set.operators == (
        CatalogSpec(
            catalog=CATALOG,
            full=True,
            skip_dependencies=True,
            target_catalog="olm/redhat-operators",
            target_tag="v4.14-mirror",
            packages=(
                PackageSpec(
                    name="odf-operator",
                    min_version="4.14.0",
                    max_version="4.14.5",
                    default_channel="stable-4.14",
                    channels=(ChannelFilter(name="stable-4.14", min_version="4.14.1"),),
                ),
            ),
        ),
    )
    assert image_set.additional_images == ("quay.io/a/b:1", "quay.io/c/d:2")
    assert image_set.registry_images.images() == (
        "quay.example.com/quay/quay:v3.13.0",
        "quay.example.com/db/postgres:15",
        "quay.example.com/db/redis:7",
    )
    assert image_set.volume_size_hint == 2 * 1024**3
    assert image_set.warnings == ()


def test_defaults() -> None:
    image_set = parse("additionalImages: [quay.io/a/b:1]\n")
    assert image_set.releases == ReleaseSpec()
    assert image_set.releases.architectures == ("amd64",)
    assert image_set.releases.signatures is True
    assert image_set.target == TargetSpec(registry=None, release_repository="ocp4/openshift4", prefix=None)
    assert image_set.registry_images == RegistryImagesSpec(
        enabled=False, quay=DEFAULT_QUAY_IMAGE, postgres=DEFAULT_POSTGRES_IMAGE, redis=DEFAULT_REDIS_IMAGE
    )
    assert image_set.volume_size_hint is None
    assert image_set.samples == SamplesSpec()


def test_null_values_count_as_absent() -> None:
    image_set = parse("releases:\noperators:\nadditionalImages: [quay.io/a/b:1]\n")
    assert image_set.releases == ReleaseSpec()
    assert image_set.operators == ()


def test_empty_config_warns_and_is_empty() -> None:
    image_set = parse("")
    assert image_set.is_empty()
    assert any("selects no content" in w for w in image_set.warnings)
    assert ImageSet().is_empty()


def test_registry_images_alone_are_content() -> None:
    assert not parse("registryImages: {enabled: true}\n").is_empty()


def test_duplicates_are_carried_once_with_a_warning() -> None:
    image_set = parse("additionalImages: [quay.io/a/b:1, {name: quay.io/a/b:1}]\n")
    assert image_set.additional_images == ("quay.io/a/b:1",)
    assert any("listed more than once" in w for w in image_set.warnings)


def test_values_are_frozen_and_keyword_only() -> None:
    image_set = parse("additionalImages: [quay.io/a/b:1]\n")
    with pytest.raises(dataclasses.FrozenInstanceError):
        image_set.additional_images = ()  # type: ignore[misc]
    with pytest.raises(TypeError, match="keyword"):
        ChannelFilter("stable")
    assert ChannelFilter(name="stable").name == "stable"
    assert dataclasses.replace(image_set, additional=()).is_empty()


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    config = tmp_path / "bom.yaml"
    config.write_bytes(b"\xef\xbb\xbf" + (OWN_HEADER + "additionalImages: [quay.io/a/b:1]\n").encode())
    assert load_image_set(config).additional_images == ("quay.io/a/b:1",)


# --------------------------------------------------------------------------------------------------
# oc-mirror formats
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("header", [V1ALPHA2_HEADER, V2ALPHA1_HEADER])
def test_oc_mirror_platform_operators_and_images(header: str) -> None:
    image_set = parse(
        f"""\
        archiveSize: 1
        mirror:
          platform:
            architectures: [amd64, s390x]
            channels:
              - name: stable-4.9
                minVersion: 4.9.13
                maxVersion: 4.9.26
              - name: fast-4.10
                type: ocp
                full: true
              - name: stable-4
                type: okd
            graph: false
          operators:
            - catalog: {CATALOG}
              full: true
              skipDependencies: true
              targetCatalog: my-org/vendors/redhat-operator-index
              targetTag: v4.14.0
              packages:
                - name: elasticsearch-operator
                  minVersion: '5.3.2-20'
                  channels:
                    - name: stable
                - name: rhacs-operator
                  channels:
                    - name: rhacs-4.5
                      minVersion: 4.5.5
                      maxVersion: 4.5.5
          additionalImages:
            - name: registry.redhat.io/ubi8/ubi:latest
            - name: quay.io/x/y@{DIGEST}
        """,
        header,
    )
    assert image_set.releases.channels == (
        ChannelSpec(name="stable-4.9", min_version="4.9.13", max_version="4.9.26"),
        ChannelSpec(name="fast-4.10", full=True),
        ChannelSpec(name="stable-4", type="okd"),
    )
    assert image_set.releases.architectures == ("amd64", "s390x")
    assert image_set.releases.graph_data is False
    assert image_set.releases.signatures is True
    (catalog,) = image_set.operators
    assert catalog == CatalogSpec(
        catalog=CATALOG,
        full=True,
        skip_dependencies=True,
        target_catalog="my-org/vendors/redhat-operator-index",
        target_tag="v4.14.0",
        packages=(
            PackageSpec(
                name="elasticsearch-operator", min_version="5.3.2-20", channels=(ChannelFilter(name="stable"),)
            ),
            PackageSpec(
                name="rhacs-operator",
                channels=(ChannelFilter(name="rhacs-4.5", min_version="4.5.5", max_version="4.5.5"),),
            ),
        ),
    )
    assert image_set.additional_images == ("registry.redhat.io/ubi8/ubi:latest", f"quay.io/x/y@{DIGEST}")
    assert image_set.volume_size_hint == 1024**3
    assert image_set.samples == SamplesSpec()
    assert image_set.registry_images.enabled is False


def test_oc_mirror_v2alpha1_release_image() -> None:
    image_set = parse(
        "mirror:\n  platform:\n    release: quay.io/openshift-release-dev/ocp-release:4.18.1-x86_64\n",
        V2ALPHA1_HEADER,
    )
    assert image_set.releases.images == ("quay.io/openshift-release-dev/ocp-release:4.18.1-x86_64",)


def test_oc_mirror_v1alpha2_storage_config_is_ignored_with_a_warning() -> None:
    image_set = parse(
        "storageConfig:\n  local:\n    path: /tmp/mirror\nmirror:\n  additionalImages: [{name: quay.io/a/b:1}]\n",
        V1ALPHA2_HEADER,
    )
    assert image_set.warnings == (
        "config.yaml: storageConfig: ignored: oc-mirror keeps its metadata there; "
        "ocp-bundler keeps its own state in the bundle",
    )


def test_oc_mirror_v2alpha1_storage_config_is_an_error() -> None:
    message = error_of("storageConfig:\n  local: {path: /tmp}\n", V2ALPHA1_HEADER)
    assert "storageConfig" in message and "v1alpha2" in message


def test_oc_mirror_v1alpha2_target_name_becomes_target_catalog() -> None:
    image_set = parse(
        f"mirror:\n  operators:\n    - catalog: {CATALOG}\n      targetName: my-index\n      originalRef: x\n",
        V1ALPHA2_HEADER,
    )
    assert image_set.operators[0].target_catalog == "redhat/my-index"
    assert any("targetName" in w and "deprecated" in w for w in image_set.warnings)
    assert any("originalRef" in w for w in image_set.warnings)


def test_oc_mirror_target_catalog_wins_over_target_name() -> None:
    image_set = parse(
        f"mirror:\n  operators:\n    - catalog: {CATALOG}\n      targetName: a\n      targetCatalog: b/c\n",
        V1ALPHA2_HEADER,
    )
    assert image_set.operators[0].target_catalog == "b/c"
    assert any("takes precedence" in w for w in image_set.warnings)


def test_oc_mirror_target_name_is_not_v2alpha1() -> None:
    message = error_of(f"mirror:\n  operators:\n    - catalog: {CATALOG}\n      targetName: a\n", V2ALPHA1_HEADER)
    assert "unknown field 'targetName'" in message


def test_oc_mirror_empty_unsupported_fields_are_accepted() -> None:
    image_set = parse(
        "mirror:\n  helm: {}\n  blockedImages: []\n  platform:\n    kubeVirtContainer: false\n"
        "  additionalImages: [{name: quay.io/a/b:1}]\n",
        V2ALPHA1_HEADER,
    )
    assert image_set.additional_images == ("quay.io/a/b:1",)


def test_oc_mirror_helm_is_read() -> None:
    image_set = parse(
        "mirror:\n  helm:\n    repositories:\n      - name: podinfo\n        url: https://stefanprodan.github.io/podinfo\n"
        "        charts:\n          - name: podinfo\n            version: 5.0.0\n            imagepaths: ['{.spec.engine.image}']\n"
        "    local:\n      - name: mine\n        path: /charts/mine-1.0.0.tgz\n        platforms: [{os: linux, architecture: arm64}]\n",
        V1ALPHA2_HEADER,
    )
    [repo] = image_set.helm.repositories
    assert (repo.name, repo.url, repo.charts[0].name, repo.charts[0].version, repo.charts[0].image_paths) == (
        "podinfo", "https://stefanprodan.github.io/podinfo", "podinfo", "5.0.0", ("{.spec.engine.image}",)
    )
    assert [(c.name, str(c.path), c.platforms) for c in image_set.helm.local] == [("mine", "/charts/mine-1.0.0.tgz", ("linux/arm64",))]
    message = error_of("mirror:\n  helm:\n    local:\n      - name: a\n        path: /a.tgz\n        imagePaths: ['{range .items[*]}{.image}{end}']\n", V2ALPHA1_HEADER)
    assert "mirror.helm.local[0].imagePaths[0]: not a supported image path" in message
    message = error_of("mirror:\n  helm:\n    repositories:\n      - name: a\n        url: oci://quay.io/charts\n", V2ALPHA1_HEADER)
    assert "mirror.helm.repositories[0].url: 'oci://quay.io/charts': oci:// chart repositories are not supported yet" in message


def test_oc_mirror_additional_images_need_name_mappings() -> None:
    message = error_of("mirror:\n  additionalImages:\n    - quay.io/a/b:1\n", V2ALPHA1_HEADER)
    assert "mirror.additionalImages[0]: expected a mapping" in message


# --------------------------------------------------------------------------------------------------
# Unknown and unsupported fields
# --------------------------------------------------------------------------------------------------

UNKNOWN_FIELD_CASES = [
    # (header, document, expected path, suggested field)
    (OWN_HEADER, "relases: {}\n", "top level: unknown field 'relases'", "releases"),
    (OWN_HEADER, "target:\n  registy: a.example.com\n", "target: unknown field 'registy'", "registry"),
    (OWN_HEADER, "releases:\n  image: []\n", "releases: unknown field 'image'", "images"),
    (
        OWN_HEADER,
        "releases:\n  channels:\n    - name: a\n      maxversion: 4.1.0\n",
        "releases.channels[0]:",
        "maxVersion",
    ),
    (OWN_HEADER, "samples:\n  fromrelease: true\n", "samples: unknown field 'fromrelease'", "fromRelease"),
    (OWN_HEADER, f"operators:\n  - catalog: {CATALOG}\n    pakages: []\n", "operators[0]: unknown field", "packages"),
    (
        OWN_HEADER,
        f"operators:\n  - catalog: {CATALOG}\n    packages:\n      - name: a\n        defaultChanel: x\n",
        "operators[0].packages[0]: unknown field 'defaultChanel'",
        "defaultChannel",
    ),
    (
        OWN_HEADER,
        f"operators:\n  - catalog: {CATALOG}\n    packages:\n      - name: a\n        channels:\n"
        "          - name: b\n            minVerison: 1.0.0\n",
        "operators[0].packages[0].channels[0]: unknown field 'minVerison'",
        "minVersion",
    ),
    (OWN_HEADER, "additionalImages:\n  - nmae: quay.io/a/b:1\n", "additionalImages[0]: unknown field", "name"),
    (OWN_HEADER, "registryImages:\n  enable: true\n", "registryImages: unknown field 'enable'", "enabled"),
    (V1ALPHA2_HEADER, "mirorr: {}\n", "top level: unknown field 'mirorr'", "mirror"),
    (V1ALPHA2_HEADER, "mirror:\n  platfrom: {}\n", "mirror: unknown field 'platfrom'", "platform"),
    (OWN_HEADER, "additionalimages: []\n", "top level: unknown field 'additionalimages'", "additionalImages"),
    (
        V2ALPHA1_HEADER,
        "mirror:\n  platform:\n    chanels: []\n",
        "mirror.platform: unknown field 'chanels'",
        "channels",
    ),
    (
        V2ALPHA1_HEADER,
        "mirror:\n  platform:\n    channels:\n      - name: a\n        shortestpaht: true\n",
        "mirror.platform.channels[0]: unknown field 'shortestpaht'",
        "shortestPath",
    ),
    (
        V2ALPHA1_HEADER,
        f"mirror:\n  operators:\n    - catalog: {CATALOG}\n      skipDependancies: true\n",
        "mirror.operators[0]: unknown field 'skipDependancies'",
        "skipDependencies",
    ),
    (
        V1ALPHA2_HEADER,
        f"mirror:\n  operators:\n    - catalog: {CATALOG}\n      packages:\n        - name: a\n"
        "          startingVersion: 1.0.0\n",
        "mirror.operators[0].packages[0]: unknown field 'startingVersion'",
        "minVersion",
    ),
    (
        V1ALPHA2_HEADER,
        f"mirror:\n  operators:\n    - catalog: {CATALOG}\n      headsOnly: false\n",
        "mirror.operators[0]: unknown field 'headsOnly'",
        "full",
    ),
]


@pytest.mark.parametrize("header, document, where, suggestion", UNKNOWN_FIELD_CASES)
def test_unknown_field_names_path_and_suggests(header: str, document: str, where: str, suggestion: str) -> None:
    message = error_of(document, header)
    assert message.startswith("config.yaml: ")
    assert where in message
    assert f"(did you mean '{suggestion}'?" in message


def test_unknown_field_message_format() -> None:
    message = error_of(
        f"""\
        mirror:
          operators:
            - catalog: {CATALOG}
              packages:
                - name: a
                - name: b
                  chanels:
                    - name: stable
        """,
        V1ALPHA2_HEADER,
    )
    assert message == (
        "config.yaml: mirror.operators[0].packages[1]: unknown field 'chanels' (did you mean 'channels'?) [line 9]"
    )


def test_unknown_field_without_close_match_has_no_suggestion() -> None:
    message = error_of("zzzzzz: 1\n")
    assert message == "config.yaml: top level: unknown field 'zzzzzz' [line 3]"


UNSUPPORTED_CASES = [
    (V1ALPHA2_HEADER, "mirror:\n  samples:\n    - name: quay.io/a/b:1\n", "mirror.samples", "samples"),
    (
        V1ALPHA2_HEADER,
        "mirror:\n  platform:\n    kubeVirtContainer: true\n",
        "mirror.platform.kubeVirtContainer",
        "kubeVirtContainer",
    ),
    (
        V1ALPHA2_HEADER,
        f"mirror:\n  operators:\n    - catalog: {CATALOG}\n      packages:\n        - name: a\n"
        "          minBundle: a.v1\n",
        "mirror.operators[0].packages[0].minBundle",
        "minBundle",
    ),
    (
        V2ALPHA1_HEADER,
        f"mirror:\n  operators:\n    - catalog: {CATALOG}\n      packages:\n        - name: a\n"
        "          bundles:\n            - name: a.v1\n",
        "mirror.operators[0].packages[0].bundles",
        "bundles",
    ),
    (
        V2ALPHA1_HEADER,
        f"mirror:\n  operators:\n    - catalog: {CATALOG}\n      targetCatalogSourceTemplate: /tmp/cs.yaml\n",
        "mirror.operators[0].targetCatalogSourceTemplate",
        "targetCatalogSourceTemplate",
    ),
]


@pytest.mark.parametrize("header, document, where, field_name", UNSUPPORTED_CASES)
def test_unsupported_oc_mirror_field_is_an_error_naming_it(
    header: str, document: str, where: str, field_name: str
) -> None:
    message = error_of(document, header)
    assert f"config.yaml: {where}: '{field_name}' is not supported yet by ocp-bundler: " in message


def test_delete_image_set_configuration_is_refused() -> None:
    message = error_of("", "apiVersion: mirror.openshift.io/v2alpha1\nkind: DeleteImageSetConfiguration\n")
    assert "kind: kind 'DeleteImageSetConfiguration' is not supported" in message


def test_oci_catalog_names_a_local_layout(tmp_path: Path) -> None:
    image_set = parse("mirror:\n  operators:\n    - catalog: oci:///home/user/catalog\n      targetCatalog: mine\n", V2ALPHA1_HEADER)
    (spec,) = image_set.operators
    assert spec.catalog == "oci:///home/user/catalog" and spec.layout == Path("/home/user/catalog")
    assert spec.target_catalog == "mine"
    config = tmp_path / "isc.yaml"
    config.write_text(V2ALPHA1_HEADER + "mirror:\n  operators:\n    - catalog: oci://catalogs/filtered\n")
    (relative,) = load_image_set(config).operators
    assert relative.layout == tmp_path / "catalogs" / "filtered"  # relative to the config file, as oc-mirror does
    assert parse(f"mirror:\n  operators:\n    - catalog: {CATALOG}\n", V2ALPHA1_HEADER).operators[0].layout is None
    message = error_of("mirror:\n  operators:\n    - catalog: 'oci://'\n", V2ALPHA1_HEADER)
    assert "mirror.operators[0].catalog" in message and "oci:///path/to/layout" in message


# --------------------------------------------------------------------------------------------------
# Document-level errors
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n...\n"])
def test_empty_file(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^config\.yaml: the file is empty"):
        parse_image_set(text, source_name="config.yaml")


def test_empty_file_on_disk(tmp_path: Path) -> None:
    config = tmp_path / "empty.yaml"
    config.write_text("")
    with pytest.raises(ConfigError, match="empty.yaml: the file is empty"):
        load_image_set(config)


def test_list_instead_of_mapping() -> None:
    with pytest.raises(ConfigError) as info:
        parse_image_set("- apiVersion: ocp-bundler.io/v1alpha1\n- kind: ImageSet\n", source_name="config.yaml")
    assert str(info.value) == (
        "config.yaml: top level: expected a mapping with apiVersion and kind at the top of the document, "
        "got a list [line 1]"
    )


def test_scalar_document() -> None:
    with pytest.raises(ConfigError, match="top level: expected a mapping.*got a string"):
        parse_image_set("just text\n", source_name="config.yaml")


@pytest.mark.parametrize(
    "text, line, column",
    [
        ("apiVersion: ocp-bundler.io/v1alpha1\nkind: [ImageSet\n  releases: {}\n", 3, 11),
        ("apiVersion: ocp-bundler.io/v1alpha1\nkind: ImageSet\n  target: x\n", 3, 9),
        ("apiVersion: ocp-bundler.io/v1alpha1\nkind: ImageSet\ntarget:\n\tregistry: x\n", 4, 1),
        ('apiVersion: "ocp-bundler.io/v1alpha1\n', 2, 1),
    ],
)
def test_malformed_yaml_gives_line_and_column(text: str, line: int, column: int) -> None:
    with pytest.raises(ConfigError) as info:
        parse_image_set(text, source_name="config.yaml")
    message = str(info.value)
    assert message.startswith(f"config.yaml: line {line}, column {column}: invalid YAML: "), message


def test_malformed_yaml_from_file_names_the_file(tmp_path: Path) -> None:
    config = tmp_path / "broken.yaml"
    config.write_text("a: b\n  c: d\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: line 2, column 4: invalid YAML: mapping values"):
        load_image_set(config)


def test_duplicate_key_is_an_error() -> None:
    with pytest.raises(ConfigError) as info:
        parse("releases: {}\nreleases: {}\n")
    assert "line 4, column 1: invalid YAML: found duplicate key 'releases' (first at line 3)" in str(info.value)


def test_merge_keys_may_be_overridden() -> None:
    image_set = parse("registryImages:\n  <<: {enabled: false}\n  enabled: true\n")
    assert image_set.registry_images.enabled is True


def test_several_documents_are_refused() -> None:
    with pytest.raises(ConfigError, match="holds 2 YAML documents"):
        parse_image_set(OWN_HEADER + "---\n" + OWN_HEADER, source_name="config.yaml")


def test_missing_and_unknown_api_version() -> None:
    assert "missing required field 'apiVersion'" in error_of("", "kind: ImageSet\n")
    message = error_of("", "apiVersion: mirror.openshift.io/v1alpha3\nkind: ImageSetConfiguration\n")
    assert "apiVersion: unsupported apiVersion 'mirror.openshift.io/v1alpha3'" in message
    assert "did you mean 'mirror.openshift.io/v1alpha2'?" in message


def test_kind_must_match_api_version() -> None:
    assert "missing required field 'kind'" in error_of("", "apiVersion: ocp-bundler.io/v1alpha1\n")
    message = error_of("", "apiVersion: ocp-bundler.io/v1alpha1\nkind: ImageSetConfiguration\n")
    assert "expected kind ImageSet for ocp-bundler.io/v1alpha1" in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_image_set(tmp_path / "nope.yaml")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load_image_set(tmp_path)


def test_binary_file(tmp_path: Path) -> None:
    config = tmp_path / "bin.yaml"
    config.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_image_set(config)


# --------------------------------------------------------------------------------------------------
# Value errors: types, versions, ranges, references
# --------------------------------------------------------------------------------------------------

WRONG_TYPE_CASES = [
    ("releases: [a]\n", "releases: expected a mapping", "got a list"),
    ("releases:\n  images: quay.io/a/b:1\n", "releases.images: expected a list", "got a string"),
    ("releases:\n  signatures: 'yes'\n", "releases.signatures: expected true or false", "got a string ('yes')"),
    ("releases:\n  signatures: 1\n", "releases.signatures: expected true or false", "got a number (1)"),
    ("samples:\n  fromRelease: 'true'\n", "samples.fromRelease: expected true or false", "got a string"),
    ("samples:\n  directory: 3\n", "samples.directory: expected a directory path", "got a number (3)"),
    (
        f"operators:\n  - catalog: {CATALOG}\n    packages:\n      - name: a\n"
        "        channels:\n          - name: 4.4\n",
        "operators[0].packages[0].channels[0].name: expected a channel name",
        "got a number (4.4); quote it",
    ),
    (
        f"operators:\n  - catalog: {CATALOG}\n    targetTag: 4.10\n",
        "operators[0].targetTag: expected an image tag",
        "quote it",
    ),
    ("operators:\n  - packages: []\n", "operators[0]: missing required field 'catalog'", ""),
    ("operators: {}\n", "operators: expected a list of operator catalogs", "got a mapping"),
    ("additionalImages:\n  - [quay.io/a/b:1]\n", "additionalImages[0]: expected an image reference", "got a list"),
    ("registryImages:\n  enabled: on-demand\n", "registryImages.enabled: expected true or false", ""),
    ("volumeSizeGiB: 0\n", "volumeSizeGiB: expected a volume size in GiB", "got a number (0)"),
    ("volumeSizeGiB: 1.5\n", "volumeSizeGiB: expected a volume size in GiB", "got a number (1.5)"),
    ("volumeSizeGiB: true\n", "volumeSizeGiB: expected a volume size in GiB", "got a boolean (true)"),
    (
        "target:\n  registry: https://mirror.example.com\n",
        "target.registry: expected a registry host",
        "without a scheme",
    ),
    ("target:\n  registry: mirror.example.com/ocp4\n", "target.registry", "target.prefix"),
    ("target:\n  releaseRepository: OCP4/OpenShift4\n", "target.releaseRepository: expected a repository path", ""),
    ("releases:\n  graphURL: ftp://x.example.com/graph\n", "releases.graphURL: expected an http(s) URL", ""),
    ("releases:\n  architectures: [amd46]\n", "releases.architectures[0]: unknown architecture 'amd46'", "amd64"),
    (
        "releases:\n  channels:\n    - name: stable-4\n      type: odk\n",
        "releases.channels[0].type",
        "did you mean 'okd'?",
    ),
    ("samples:\n  exclude: ['Jenkins!']\n", "samples.exclude[0]: expected an imagestream name", ""),
    ("1: 2\n", "top level: field names must be strings", "got a number (1)"),
]


@pytest.mark.parametrize("document, where, detail", WRONG_TYPE_CASES)
def test_wrong_types_and_values(document: str, where: str, detail: str) -> None:
    message = error_of(document)
    assert message.startswith(f"config.yaml: {where}"), message
    assert detail in message


def test_oc_mirror_wrong_types() -> None:
    assert "archiveSize: expected an archive size in GiB" in error_of("archiveSize: '4G'\n", V1ALPHA2_HEADER)
    assert "mirror.platform.graph: expected true or false" in error_of(
        "mirror:\n  platform:\n    graph: sure\n", V2ALPHA1_HEADER
    )
    assert "mirror.platform.channels[0]: missing required field 'name'" in error_of(
        "mirror:\n  platform:\n    channels:\n      - minVersion: 4.14.1\n", V2ALPHA1_HEADER
    )


@pytest.mark.parametrize("bad", ["'4.14'", "4.14.x", "v4.14.0", "'4'", "4.14.0-", "latest"])
def test_bad_versions(bad: str) -> None:
    message = error_of(f"releases:\n  channels:\n    - name: stable-4.14\n      minVersion: {bad}\n")
    assert message.startswith("config.yaml: releases.channels[0].minVersion: expected a version like 4.8.0")


def test_unquoted_two_part_version_is_explained() -> None:
    message = error_of("releases:\n  channels:\n    - name: stable-4.14\n      maxVersion: 4.14\n")
    assert "got a number (4.14); quote it" in message


@pytest.mark.parametrize(
    "header, document, where",
    [
        (
            OWN_HEADER,
            "releases:\n  channels:\n    - name: a\n      minVersion: 4.14.3\n      maxVersion: 4.14.0\n",
            "releases.channels[0].maxVersion",
        ),
        (
            OWN_HEADER,
            "releases:\n  channels:\n    - name: a\n      minVersion: 4.14.0\n      maxVersion: 4.14.0-rc.1\n",
            "releases.channels[0].maxVersion",
        ),
        (
            V2ALPHA1_HEADER,
            "mirror:\n  platform:\n    channels:\n      - name: a\n"
            "        minVersion: 4.9.26\n        maxVersion: 4.9.13\n",
            "mirror.platform.channels[0].maxVersion",
        ),
        (
            V1ALPHA2_HEADER,
            f"mirror:\n  operators:\n    - catalog: {CATALOG}\n      packages:\n        - name: p\n"
            "          minVersion: 2.0.0\n          maxVersion: 1.9.9\n",
            "mirror.operators[0].packages[0].maxVersion",
        ),
        (
            V1ALPHA2_HEADER,
            f"mirror:\n  operators:\n    - catalog: {CATALOG}\n      packages:\n        - name: p\n"
            "          channels:\n            - name: c\n              minVersion: 1.10.0\n"
            "              maxVersion: 1.9.0\n",
            "mirror.operators[0].packages[0].channels[0].maxVersion",
        ),
    ],
)
def test_min_greater_than_max(header: str, document: str, where: str) -> None:
    message = error_of(document, header)
    assert message.startswith(f"config.yaml: {where}: minVersion ")
    assert "is greater than maxVersion" in message


def test_equal_min_and_max_are_fine() -> None:
    image_set = parse("releases:\n  channels:\n    - name: a\n      minVersion: 4.14.3\n      maxVersion: 4.14.3\n")
    assert image_set.releases.channels[0].min_version == "4.14.3"


@pytest.mark.parametrize(
    "reference, detail",
    [
        ("ubuntu:22.04", "names no registry host: write it in full, e.g. docker.io/library/ubuntu:22.04"),
        ("library/ubuntu:22.04", "e.g. docker.io/library/ubuntu:22.04"),
        ("quay.io/foo/bar", "has neither a tag nor a digest"),
        ("quay.io/Foo/bar:1", "repository paths must be lowercase"),
        ("quay.io/foo/bar@sha256:1234", "a digest is sha256: followed by 64 lowercase hex digits"),
        ("quay.io/foo/bar:bad tag", "expected an image reference"),
        ("quay.io/foo//bar:1", "expected an image reference"),
        ("quay.io/foo/bar:-x", "expected an image reference"),
        ("https://quay.io/foo/bar:1", "expected an image reference"),
        ("dir:/tmp/layout", "images on disk are not supported"),
        ("oci:///tmp/layout:bad ref", "expected oci:///path/to/layout[:REF|@sha256:DIGEST]"),
        ("oci:///tmp/layout@sha256:12", "is not a digest"),
    ],
)
def test_bad_references(reference: str, detail: str) -> None:
    message = error_of(f"additionalImages:\n  - {reference!r}\n")
    assert message.startswith("config.yaml: additionalImages[0]: "), message
    assert detail in message


def test_additional_images_from_local_oci_layouts(tmp_path: Path) -> None:
    config = tmp_path / "isc.yaml"
    config.write_text(V2ALPHA1_HEADER + textwrap.dedent(f"""\
        mirror:
          additionalImages:
          - name: oci://layouts/app
          - name: oci:///data/tools:v2
            targetRepo: mirror/tools
            targetTag: "2.0"
          - name: oci:{tmp_path}/multi@{DIGEST}
        """))
    images = load_image_set(config).additional
    assert [i.name for i in images] == [f"oci://{tmp_path}/layouts/app", "oci:///data/tools:v2", f"oci://{tmp_path}/multi@{DIGEST}"]
    assert (images[1].target_repository, images[1].target_tag) == ("mirror/tools", "2.0")
    assert parse("additionalImages:\n  - oci:///data/app:latest\n").additional[0].name == "oci:///data/app:latest"


@pytest.mark.parametrize(
    "text, header",
    [
        ("mirror:\n  platform:\n    release: oci:///data/release\n", V2ALPHA1_HEADER),
        ("releases:\n  images:\n  - oci:///data/release:4.18.1\n", OWN_HEADER),
    ],
)
def test_a_release_from_a_layout_is_refused_with_the_reason(text: str, header: str) -> None:
    message = error_of(text, header)
    assert "a release cannot come from a local OCI layout" in message and "registry" in message


@pytest.mark.parametrize(
    "reference",
    [
        "quay.io/openshift-release-dev/ocp-release:4.4.5-x86_64",
        f"quay.io/openshift-release-dev/ocp-v4.0-art-dev@{DIGEST}",
        f"registry.example.com:5000/a/b/c:v1@{DIGEST}",
        "localhost:5000/repo:tag",
        "localhost/repo:tag",
        "[::1]:5000/repo:tag",
        "docker.io/library/busybox:1.36",
        "registry.redhat.io/rhel9/postgresql-15:latest",
        "quay.io/a/b__c.d-e:TAG_1.2",
    ],
)
def test_good_references(reference: str) -> None:
    assert parse(f"additionalImages:\n  - {reference!r}\n").additional_images == (reference,)


def test_bad_reference_in_release_and_catalog() -> None:
    assert "releases.images[0]: 'ocp-release:4.4.5' names no registry host" in error_of(
        "releases:\n  images: [ocp-release:4.4.5]\n"
    )
    assert "operators[0].catalog: 'quay.io/x/index' has neither a tag nor a digest" in error_of(
        "operators:\n  - catalog: quay.io/x/index\n"
    )
    assert "mirror.platform.release: 'quay.io/x/release' has neither" in error_of(
        "mirror:\n  platform:\n    release: quay.io/x/release\n", V2ALPHA1_HEADER
    )


def test_samples_from_release_needs_a_release() -> None:
    message = error_of("samples:\n  fromRelease: true\n")
    assert message.startswith("config.yaml: samples.fromRelease: needs a release")


def test_duplicate_package_and_channel_names() -> None:
    message = error_of(
        f"operators:\n  - catalog: {CATALOG}\n    packages:\n      - name: a\n      - name: b\n      - name: a\n"
    )
    assert message == "config.yaml: operators[0].packages[2]: package 'a' is listed twice (also at index 0) [line 8]"
    message = error_of(
        f"operators:\n  - catalog: {CATALOG}\n    packages:\n      - name: a\n"
        "        channels: [{name: x}, {name: x}]\n"
    )
    assert "operators[0].packages[0].channels[1]: channel 'x' is listed twice" in message


def test_errors_carry_the_line() -> None:
    message = error_of("releases:\n  channels:\n    - name: a\n\n      minVersion: nope\n")
    assert message.endswith("[line 7]")


# --------------------------------------------------------------------------------------------------
# Version
# --------------------------------------------------------------------------------------------------


def test_version_ordering() -> None:
    ordered = ["4.8.0", "4.14.0-rc.1", "4.14.0-rc.2", "4.14.0-rc.10", "4.14.0", "4.14.1", "4.14.10", "5.0.0"]
    parsed = [Version.parse(v) for v in ordered]
    assert sorted(reversed(parsed)) == parsed
    assert Version.parse("1.0.0-alpha") < Version.parse("1.0.0-alpha.1") < Version.parse("1.0.0-beta")
    assert Version.parse("1.0.0+build.1") == Version.parse("1.0.0")
    assert str(Version.parse("4.14.0-rc.1+x")) == "4.14.0-rc.1+x"
    with pytest.raises(ValueError):
        Version.parse("4.14")

"""Filters and naming from the image-set config: `blockedImages` (exact and regex, on synthetic images and on
the real FBC fixture's operator images), `additionalImages[].targetRepo/targetTag` (pushed there digest-exact,
skopeo as the oracle), `platforms` (a list carried whole, a foreign single image left out), oc-mirror's
case-insensitive field names, and the "not supported yet" refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List

import pytest

from bundler.base.errors import ConfigError
from bundler.flows.pack import PackOptions, pack
from bundler.flows.unpack import UnpackOptions, unpack_bundle
from bundler.openshift.image_set import parse_image_set
from bundler.registry.client import Registries, TransportOptions
from tests.infra.catalog_images import LABEL_FBC, catalog_files, fbc_catalog, index_image
from tests.infra.images import make_image, make_index, push
from tests.infra.registry import RegistryServer

V2 = "apiVersion: mirror.openshift.io/v2alpha1\nkind: ImageSetConfiguration\n"


def _parse(text: str) -> Any:
    return parse_image_set(text, source_name="isc.yaml")


def test_oc_mirror_fields_are_read() -> None:
    image_set = _parse(
        V2 + "mirror:\n"
        "  platform:\n    release: quay.io/openshift-release-dev/ocp-release:4.21.0-multi\n    kubeVirtContainer: true\n"
        "    platforms:\n      - {os: linux, architecture: amd64}\n      - {os: linux, architecture: arm64}\n"
        "  additionalImages:\n"
        "    - name: registry.redhat.io/ubi9/ubi:latest\n      targetRepo: mirror/ubi\n      targetTag: v9\n"
        "    - name: quay.io/a/b:1\n      platforms:\n        - {os: linux, architecture: arm64}\n"
        "  blockedImages:\n    - name: quay.io/a/blocked:1\n    - name: '^.*/debug-.*$'\n"
    )
    assert image_set.blocked_images == ("quay.io/a/blocked:1", "^.*/debug-.*$")
    ubi, ab = image_set.additional
    assert (ubi.name, ubi.target_repository, ubi.target_tag, ubi.platforms) == ("registry.redhat.io/ubi9/ubi:latest", "mirror/ubi", "v9", ())
    assert (ab.name, ab.platforms) == ("quay.io/a/b:1", ("linux/arm64",))
    assert image_set.additional_images == ("registry.redhat.io/ubi9/ubi:latest", "quay.io/a/b:1")
    assert image_set.releases.kubevirt_container and image_set.releases.architectures == ("multi",)


def test_field_names_match_case_insensitively_with_a_warning() -> None:
    image_set = _parse(V2 + "mirror:\n  additionalimages:\n    - name: quay.io/a/b:1\n")
    assert image_set.additional_images == ("quay.io/a/b:1",)
    assert any("'additionalimages' read as 'additionalImages'" in w for w in image_set.warnings)


def test_refusals_name_the_field_and_what_to_do() -> None:
    with pytest.raises(ConfigError, match=r"blockedImages\[0\].name: .*not a valid regular expression"):
        _parse(V2 + "mirror:\n  blockedImages:\n    - name: 'quay.io/a/(b'\n")
    with pytest.raises(ConfigError, match=r"unknown field 'frobnicate'"):
        _parse(V2 + "mirror:\n  frobnicate: true\n")
    with pytest.raises(ConfigError, match=r"platforms\[0\]: expected .*os/architecture"):
        _parse(V2 + "mirror:\n  additionalImages:\n    - name: quay.io/a/b:1\n      platforms: [linux]\n")


def _registries(*hosts: str) -> Registries:
    return Registries(options=TransportOptions(insecure_hosts=frozenset(hosts)))


def test_blocked_target_and_platforms_when_packing(registry_plain: RegistryServer, fresh_registry_plain: RegistryServer, tmp_path: Path, skopeo: Any) -> None:
    host = registry_plain.host
    url = registry_plain.url
    app = make_image(seed="flt-app")
    app_digest = push(url, "flt/app", app, "v1")
    push(url, "flt/blocked", make_image(seed="flt-blocked"), "v1")
    push(url, "flt/debug-tools", make_image(seed="flt-debug"), "v1")
    both = make_index([make_image(seed="flt-amd"), make_image(seed="flt-arm", architecture="arm64")])
    push(url, "flt/both", both, "v1")
    push(url, "flt/armonly", make_image(seed="flt-armonly", architecture="arm64"), "v1")
    config = tmp_path / "isc.yaml"
    config.write_text(
        V2 + "mirror:\n  additionalImages:\n"
        f"    - name: {host}/flt/app@{app_digest}\n      targetRepo: mirror/renamed-app\n      targetTag: v9\n"
        f"    - name: {host}/flt/blocked:v1\n    - name: {host}/flt/debug-tools:v1\n"
        f"    - name: {host}/flt/both:v1\n      platforms: [{{os: linux, architecture: arm64}}]\n"
        f"    - name: {host}/flt/armonly:v1\n      platforms: [{{os: linux, architecture: amd64}}]\n"
        f"  blockedImages:\n    - name: {host}/flt/blocked:v1\n    - name: '.*/debug-[a-z]+:'\n"
    )
    result = pack(PackOptions(config=config, out_dir=tmp_path / "b", work_dir=tmp_path / "w"), registries=_registries(host))
    targets = sorted(f"{i.planned.target_repository}:{i.planned.target_tag}" for i in result.images)
    assert targets == ["flt/both:v1", "mirror/renamed-app:v9"]
    warnings = "\n".join(result.plan.warnings)
    assert "flt/blocked:v1 is blocked by blockedImages entry" in warnings and "flt/debug-tools:v1 is blocked" in warnings
    assert "flt/armonly:v1: a linux/arm64 image, not listed in platforms: not carried" in warnings
    assert "flt/both:v1: a manifest list carried whole (digest-exact), including 1 child(ren) outside platforms" in warnings
    mirror = fresh_registry_plain
    unpack_bundle(tmp_path / "b", options=UnpackOptions(registry=mirror.host, transport=TransportOptions(insecure_hosts=frozenset({mirror.host})), write_resources=False))
    assert skopeo.digest(f"{mirror.host}/mirror/renamed-app:v9") == app_digest
    assert skopeo.digest(f"{mirror.host}/flt/both:v1") == both.digest


def test_blocked_operator_images_of_the_real_catalog_fixture(registry_plain: RegistryServer, tmp_path: Path) -> None:
    text, pushed, base = fbc_catalog(registry_plain, "flt-cat")
    push(registry_plain.url, "flt-cat/catalog/index", index_image(catalog_files(text), {LABEL_FBC: "/configs"}), "v1")
    config = tmp_path / "isc.yaml"
    config.write_text(
        V2 + f"mirror:\n  operators:\n    - catalog: {base}/catalog/index:v1\n      full: true\n      packages:\n        - name: bar\n"
        "  blockedImages:\n    - name: 'bar-operator/bar:v0\\.'\n"
    )
    result = pack(PackOptions(config=config, out_dir=tmp_path / "b", work_dir=tmp_path / "w", dry_run=True), registries=_registries(registry_plain.host))
    carried: List[str] = sorted(f"{i.planned.target_repository}:{i.planned.target_tag}" for i in result.images if i.planned.kind == "operator")
    assert "flt-cat/bar-operator/bar:v1.0.0" in carried and "flt-cat/bar-operator/bar-bundle:v0.1.0" in carried
    assert "flt-cat/bar-operator/bar:v0.1.0" not in carried and "flt-cat/bar-operator/bar:v0.2.0" not in carried
    assert sum("blocked by blockedImages" in w for w in result.plan.warnings) == 2

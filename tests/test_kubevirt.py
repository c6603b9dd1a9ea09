"""`kubeVirtContainer`: the KubeVirt container disk a release names in its boot-images ConfigMap is planned
as a release component (`<version>-<arch>-kube-virt-container`), digest-pinned."""

from __future__ import annotations

import pytest

from bundler.base.errors import IntegrityError
from bundler.openshift.image_set import ReleaseSpec
from bundler.openshift.release import parse_kubevirt, plan_releases
from bundler.registry.client import Registries, TransportOptions
from tests.infra.images import make_image, push
from tests.infra.openshift_images import boot_images, build_release
from tests.infra.registry import RegistryServer


def test_kubevirt_container_is_planned_from_the_boot_images(registry_plain: RegistryServer) -> None:
    disk = make_image(seed="kubevirt-disk", random_layers=[4000])
    disk_digest = push(registry_plain.url, "kv/art-dev", disk)
    s390 = make_image(seed="kubevirt-disk-s390x", architecture="s390x")
    s390_digest = push(registry_plain.url, "kv/art-dev", s390)
    host = registry_plain.host
    refs = {"x86_64": f"{host}/kv/art-dev@{disk_digest}", "s390x": f"{host}/kv/art-dev@{s390_digest}"}
    rel = build_release(registry_plain.url, version="4.21.0", components=5, repo="kv/release", component_repo="kv/art-dev", seed="kv",
                        extra_files={"release-manifests/0000_50_installer_coreos-bootimages.yaml": boot_images(refs)})
    registries = Registries(options=TransportOptions(insecure_hosts=frozenset({host})))
    try:
        plain = plan_releases(ReleaseSpec(images=(rel.release_ref,), signatures=False), registries=registries)
        assert not [i for i in plain.images if "kube-virt" in i.target_tag], "only when asked for"
        plan = plan_releases(ReleaseSpec(images=(rel.release_ref,), signatures=False), registries=registries, kubevirt=True)
    finally:
        registries.close()
    [kv] = [i for i in plan.images if "kube-virt" in i.target_tag]
    assert (kv.kind, kv.target_repository, kv.target_tag, kv.digest, kv.source) == (
        "release-component", "ocp4/openshift4", "4.21.0-x86_64-kube-virt-container", disk_digest, refs["x86_64"]
    )
    assert plan.releases[0].kubevirt == refs
    assert not plan.warnings


def test_boot_images_shapes() -> None:
    assert parse_kubevirt(boot_images({}), image="r") == {}
    with pytest.raises(IntegrityError, match="not pinned by digest"):
        parse_kubevirt(boot_images({"x86_64": "quay.io/a/b:latest"}), image="r")
    with pytest.raises(IntegrityError, match="no data.stream"):
        parse_kubevirt(b"apiVersion: v1\nkind: ConfigMap\n", image="r")

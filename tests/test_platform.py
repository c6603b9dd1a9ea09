"""The one architecture-name map and the one rule for choosing a platform's child of an index."""

from __future__ import annotations

from bundler.oci.digest import Digest
from bundler.oci.media import Descriptor
from bundler.oci.platform import Platform, choose_child, go_arch, linux_platform, release_arch
from bundler.openshift.image_set.model import ARCHITECTURE_ALIASES


def _child(n: int, platform: Platform) -> Descriptor:
    return Descriptor("application/vnd.oci.image.manifest.v1+json", Digest.parse("sha256:" + f"{n:064x}"), 1, platform)


def test_both_spellings_convert_and_round_trip() -> None:
    for go, release in (("amd64", "x86_64"), ("arm64", "aarch64"), ("ppc64le", "ppc64le"), ("s390x", "s390x"), ("multi", "multi")):
        assert release_arch(go) == release and go_arch(release) == go
        assert go_arch(go) == go and release_arch(release) == release
        assert ARCHITECTURE_ALIASES[go] == go and ARCHITECTURE_ALIASES[release] == go
    assert linux_platform("x86_64") == "linux/amd64" and linux_platform("multi") == "linux/amd64"
    assert Platform.parse("linux/aarch64/v8") == Platform("linux", "arm64", "v8")


def test_choose_child_prefers_the_asked_variant_else_one_without() -> None:
    plain, v7, v8 = _child(1, Platform("linux", "arm64")), _child(2, Platform("linux", "arm", "v7")), _child(3, Platform("linux", "arm64", "v8"))
    children = [v7, plain, v8]
    assert choose_child(children, Platform("linux", "arm64", "v8")) is v8
    assert choose_child(children, Platform("linux", "arm64", "v9")) is plain
    assert choose_child(children, Platform("linux", "arm64")) is plain
    assert choose_child(children, Platform("linux", "amd64")) is None
    assert choose_child([v8], Platform("linux", "arm64")) is v8

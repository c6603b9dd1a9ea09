"""`extract`: openshift-install / oc out of release components, stamped byte for byte as oc stamps them."""

from __future__ import annotations

import gzip
import hashlib
import io
import random
import stat
import sys
import tarfile
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping

import pytest

from bundler.base.errors import ImageNotFoundError, UsageError
from bundler.openshift.extract import (
    RELEASE_IMAGE_MARKER,
    RELEASE_VERSION_MARKER,
    ReleaseIdentity,
    Replacement,
    ReplacingWriter,
    choose_release,
    extract_command,
    mirror_pull_spec,
)
from bundler.layout.store import Layout
from bundler.oci.digest import Digest
from bundler.transfer.transports import ImageSource, LayoutImage
from tests.infra import openshift_images as oi
from tests.infra.images import make_image, make_layer, write_oci_layout
from tests.infra.registry import RegistryServer
from tests.conftest import cli_runner

DIGEST = "sha256:" + "d" * 64
RELEASE = ReleaseIdentity(version="4.8.0", arch="x86_64", digest=DIGEST, source="quay.io/openshift-release-dev/ocp-release:4.8.0-x86_64")
MIRROR_SPEC = "mirror.example.com:8443/ocp4/openshift4@" + DIGEST


def test_markers_match_the_test_builders() -> None:
    assert RELEASE_IMAGE_MARKER == oi.RELEASE_IMAGE_MARKER and len(RELEASE_IMAGE_MARKER) == 327
    assert RELEASE_VERSION_MARKER == oi.RELEASE_VERSION_MARKER and len(RELEASE_VERSION_MARKER) == 93


@pytest.fixture(scope="module")
def components(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, object]:
    images = {
        "installer": oi.installer_image(),
        "installer-artifacts": oi.installer_artifacts_image(),
        "cli": oi.cli_image(),
        "cli-artifacts": oi.cli_artifacts_image(),
        "no-marker": make_image({"usr/bin/openshift-install": b"\x7fELF no marker here"}, docker=True),
        "deleted": make_image(
            base_layers=[make_layer({"usr/bin/openshift-install": oi.fake_binary("openshift-install")}), make_layer({"usr/bin/.wh.openshift-install": b""})],
            docker=True,
        ),
    }
    root = tmp_path_factory.mktemp("components") / "oci"
    write_oci_layout(root, list(images.items()))
    return {"root": root, "images": images}


def finder(components: Mapping[str, object], alias: Mapping[str, str] = {}) -> Callable[[str], ImageSource]:
    layout = Layout(components["root"], create=False)  # type: ignore[arg-type]
    names = set(components["images"])  # type: ignore[call-overload]

    def find(name: str) -> ImageSource:
        name = alias.get(name, name)
        if name not in names:
            raise ImageNotFoundError(f"no component {name}")
        return LayoutImage(layout, name)

    return find


def _file(components: Mapping[str, object], component: str, path: str) -> bytes:
    image = components["images"][component]  # type: ignore[index]
    for layer in reversed(image.layers):
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer.raw))) as tar:
            try:
                return tar.extractfile(path).read()  # type: ignore[union-attr]
            except KeyError:
                continue
    raise AssertionError(path)


def test_openshift_install_stamped_with_the_mirror_pull_spec(tmp_path: Path, components: Dict[str, object]) -> None:
    result = extract_command(finder(components), RELEASE, command="openshift-install", to=tmp_path / "bin", release_pull_spec=MIRROR_SPEC)
    original = _file(components, "installer", "usr/bin/openshift-install")
    expected = oi.stamped(oi.stamped(original, oi.RELEASE_IMAGE_MARKER, MIRROR_SPEC), oi.RELEASE_VERSION_MARKER, "4.8.0")
    data = result.path.read_bytes()
    assert data == expected and data != original and len(data) == len(original)
    assert result.path == tmp_path / "bin" / "openshift-install"
    assert stat.S_IMODE(result.path.stat().st_mode) == 0o755
    assert (result.component, result.source_path, result.platform) == ("installer", "usr/bin/openshift-install", "linux/amd64")
    assert result.sha256 == hashlib.sha256(data).hexdigest() and result.size == len(data)
    assert result.stamped == ("release image", "release version") and result.not_stamped == ()
    assert result.release_pull_spec == MIRROR_SPEC
    # exactly oc's layout: value, one NUL, then the rest of the marker as it was
    at = original.index(oi.RELEASE_IMAGE_MARKER)
    assert data[at : at + len(MIRROR_SPEC) + 2] == MIRROR_SPEC.encode() + b"\x00X"
    assert data[at + len(oi.RELEASE_IMAGE_MARKER) - 1 : at + len(oi.RELEASE_IMAGE_MARKER)] == b"\x00"
    assert not list((tmp_path / "bin").glob(".*partial"))


def test_without_registry_the_upstream_digest_is_stamped(tmp_path: Path, components: Dict[str, object]) -> None:
    result = extract_command(finder(components), RELEASE, command="openshift-install", to=tmp_path)
    assert result.release_pull_spec == "quay.io/openshift-release-dev/ocp-release@" + DIGEST
    assert (result.release_pull_spec.encode() + b"\x00") in result.path.read_bytes()


def test_pull_spec_length_limit(tmp_path: Path, components: Dict[str, object]) -> None:
    longest = "r.example/" + "a" * (326 - len("r.example/@" + DIGEST)) + "@" + DIGEST
    assert len(longest) == 326
    result = extract_command(finder(components), RELEASE, command="openshift-install", to=tmp_path / "ok", release_pull_spec=longest)
    data = result.path.read_bytes()
    at = _file(components, "installer", "usr/bin/openshift-install").index(oi.RELEASE_IMAGE_MARKER)
    assert data[at : at + 327] == longest.encode() + b"\x00"

    too_long = "r.example/" + "a" * 400 + "@" + DIGEST
    with pytest.raises(UsageError, match=r"has \d+ bytes, but the maximum replacement length is 326") as info:
        extract_command(finder(components), RELEASE, command="openshift-install", to=tmp_path / "bad", release_pull_spec=too_long)
    assert info.value.exit_code == 2
    assert not (tmp_path / "bad").exists()  # refused before anything is downloaded or written


def test_oc_gets_the_version_only(tmp_path: Path, components: Dict[str, object]) -> None:
    result = extract_command(finder(components), RELEASE, command="oc", to=tmp_path, release_pull_spec=MIRROR_SPEC)
    original = _file(components, "cli", "usr/bin/oc")
    assert result.path.read_bytes() == oi.stamped(original, oi.RELEASE_VERSION_MARKER, "4.8.0")
    assert result.release_pull_spec is None and result.stamped == ("release version",)


@pytest.mark.parametrize(
    "command,platform,component,path,name",
    [
        ("openshift-install", "darwin/arm64", "installer-artifacts", "usr/share/openshift/mac_arm64/openshift-install", "openshift-install"),
        ("openshift-install", "mac/amd64", "installer-artifacts", "usr/share/openshift/mac/openshift-install", "openshift-install"),
        ("openshift-install", "linux/arm64", "installer-artifacts", "usr/share/openshift/linux_arm64/openshift-install", "openshift-install"),
        ("openshift-install", "linux/x86_64", "installer", "usr/bin/openshift-install", "openshift-install"),
        ("oc", "windows/amd64", "cli-artifacts", "usr/share/openshift/windows/oc.exe", "oc.exe"),
        ("oc", "linux/arm64", "cli-artifacts", "usr/share/openshift/linux_arm64/oc", "oc"),
    ],
)
def test_other_platforms_come_from_the_artifacts_images(
    tmp_path: Path, components: Dict[str, object], command: str, platform: str, component: str, path: str, name: str
) -> None:
    result = extract_command(finder(components), RELEASE, command=command, platform=platform, to=tmp_path, release_pull_spec=MIRROR_SPEC)
    assert (result.component, result.source_path, result.path.name) == (component, path, name)
    original = _file(components, component, path)
    expected = oi.stamped(original, oi.RELEASE_VERSION_MARKER, "4.8.0")
    if command == "openshift-install":
        expected = oi.stamped(expected, oi.RELEASE_IMAGE_MARKER, MIRROR_SPEC)
    assert result.path.read_bytes() == expected


def test_arm_release_uses_its_own_installer_for_linux_arm64(tmp_path: Path, components: Dict[str, object]) -> None:
    arm = ReleaseIdentity(version="4.8.0", arch="aarch64", digest=DIGEST, source="quay.io/x/y@" + DIGEST)
    result = extract_command(finder(components), arm, command="openshift-install", to=tmp_path, platform="linux/arm64")
    assert result.component == "installer"
    with pytest.raises(UsageError, match="not available for linux/s390x"):
        extract_command(finder(components), RELEASE, command="oc", to=tmp_path, platform="linux/s390x")
    with pytest.raises(UsageError, match="unknown command"):
        extract_command(finder(components), RELEASE, command="kubectl", to=tmp_path)


def test_missing_marker_is_reported_and_whiteouts_are_honoured(tmp_path: Path, components: Dict[str, object]) -> None:
    result = extract_command(finder(components, {"installer": "no-marker"}), RELEASE, command="openshift-install", to=tmp_path / "a")
    assert result.path.read_bytes() == b"\x7fELF no marker here"
    assert result.not_stamped == ("release image", "release version")

    with pytest.raises(UsageError, match="does not contain usr/bin/openshift-install"):
        extract_command(finder(components, {"installer": "deleted"}), RELEASE, command="openshift-install", to=tmp_path / "b")
    assert not (tmp_path / "b" / "openshift-install").exists()
    assert not list((tmp_path / "b").glob(".*"))  # the temp file is gone too

    with pytest.raises(ImageNotFoundError, match="no component absent"):
        extract_command(finder(components, {"installer": "absent"}), RELEASE, command="openshift-install", to=tmp_path / "c")


def test_replacing_writer_finds_markers_across_any_chunking() -> None:
    binary = oi.fake_binary("openshift-install", size=10_000)
    expected = oi.stamped(oi.stamped(binary, oi.RELEASE_IMAGE_MARKER, MIRROR_SPEC), oi.RELEASE_VERSION_MARKER, "4.99.0")
    rng = random.Random(7)
    for chunking in ("bytes", "random", "whole"):
        out = io.BytesIO()
        w = ReplacingWriter(
            out, [Replacement("release image", RELEASE_IMAGE_MARKER, MIRROR_SPEC.encode()), Replacement("release version", RELEASE_VERSION_MARKER, b"4.99.0")]
        )
        i = 0
        while i < len(binary):
            n = 1 if chunking == "bytes" else rng.randint(1, 700) if chunking == "random" else len(binary)
            w.write(binary[i : i + n])
            i += n
        w.close()
        assert out.getvalue() == expected, chunking
        assert w.missing == []
    # only the first occurrence is replaced, as oc does
    twice = b"a" + RELEASE_VERSION_MARKER + b"b" + RELEASE_VERSION_MARKER
    out = io.BytesIO()
    w = ReplacingWriter(out, [Replacement("release version", RELEASE_VERSION_MARKER, b"4.1.0")])
    w.write(twice)
    w.close()
    assert out.getvalue() == oi.stamped(twice, RELEASE_VERSION_MARKER, "4.1.0") and out.getvalue().endswith(RELEASE_VERSION_MARKER)


def test_mirror_pull_spec() -> None:
    assert mirror_pull_spec("mirror:8443", "ocp4/openshift4", DIGEST) == "mirror:8443/ocp4/openshift4@" + DIGEST
    assert mirror_pull_spec("mirror:8443/", "ocp4/openshift4", DIGEST, prefix="/disc/") == "mirror:8443/disc/ocp4/openshift4@" + DIGEST


# --------------------------------------------------------------------------------------------------
# The CLI over a bundle (a stand-in `bundler.bundle.volumes` honouring the agreed contract)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FakeBundleImage:
    source: str
    digest: Digest
    kind: str
    target_repository: str
    target_tag: str
    annotations: Mapping[str, str] = field(default_factory=dict)


def _fake_bundle_module(root: Path, images: List[FakeBundleImage]) -> types.ModuleType:
    module = types.ModuleType("bundler.bundle.volumes")

    class Bundle:
        def __init__(self) -> None:
            self.manifest = types.SimpleNamespace(images=images)

        @classmethod
        def open(cls, directory: Path) -> "Bundle":
            assert Path(directory) == root
            return cls()

        def image_source(self, image: FakeBundleImage) -> ImageSource:
            return LayoutImage(Layout(root / "oci", create=False), image.annotations["component"])

    module.Bundle = Bundle  # type: ignore[attr-defined]
    return module


def _carried(components: Dict[str, object], version: str = "4.8.0") -> List[FakeBundleImage]:
    rel_digest = DIGEST
    images = [FakeBundleImage("quay.io/openshift-release-dev/ocp-release@" + rel_digest, Digest.parse(rel_digest), "release", "ocp4/openshift4", f"{version}-x86_64", {"version": version, "arch": "x86_64"})]
    for name, image in components["images"].items():  # type: ignore[attr-defined]
        images.append(
            FakeBundleImage(
                f"quay.io/openshift-release-dev/ocp-v4.0-art-dev@{image.digest}", Digest.parse(str(image.digest)), "release-component", "ocp4/openshift4",
                f"{version}-x86_64-{name}", {"version": version, "arch": "x86_64", "component": name, "release": rel_digest},
            )
        )
    return images


def test_cli_extract_from_a_bundle(tmp_path: Path, components: Dict[str, object], monkeypatch: pytest.MonkeyPatch) -> None:
    from bundler.cli import main

    bundle_dir = tmp_path / "bundle"
    bundle_dir.mkdir()
    (bundle_dir / "oci").symlink_to(components["root"])  # type: ignore[arg-type]
    monkeypatch.setitem(sys.modules, "bundler.bundle.volumes", _fake_bundle_module(bundle_dir, _carried(components)))
    monkeypatch.setenv("OCPB_DEBUG_LOG", str(tmp_path / "debug.log"))
    runner = cli_runner()
    out = tmp_path / "out"
    res = runner.invoke(
        main, ["extract", str(bundle_dir), "--command", "openshift-install", "--to", str(out), "--registry", "mirror.example.com:8443", "--prefix", "disc", "--json"]
    )
    assert res.exit_code == 0, res.output
    spec = "mirror.example.com:8443/disc/ocp4/openshift4@" + DIGEST
    assert f'"releasePullSpec": "{spec}"' in res.output
    data = (out / "openshift-install").read_bytes()
    assert data == oi.stamped(oi.stamped(_file(components, "installer", "usr/bin/openshift-install"), oi.RELEASE_IMAGE_MARKER, spec), oi.RELEASE_VERSION_MARKER, "4.8.0")

    too_long = "m" * 300 + ".example.com"
    res = runner.invoke(main, ["extract", str(bundle_dir), "--command", "openshift-install", "--to", str(out), "--registry", too_long])
    assert res.exit_code == 2 and "maximum replacement length is 326" in res.output

    res = runner.invoke(main, ["extract", str(bundle_dir), "--command", "oc", "--to", str(out), "--release", "4.9.9"])
    assert res.exit_code == 2 and "no release 4.9.9" in res.output


def test_choose_release_among_several() -> None:
    a = FakeBundleImage("q/r@" + DIGEST, Digest.parse(DIGEST), "release", "ocp4/openshift4", "4.8.0-x86_64", {"version": "4.8.0", "arch": "x86_64"})
    b = FakeBundleImage("q/r@" + DIGEST, Digest.parse(DIGEST), "release", "ocp4/openshift4", "4.8.1-x86_64", {"version": "4.8.1", "arch": "x86_64"})
    with pytest.raises(UsageError, match="carries 2 releases") as info:
        choose_release([a, b])
    assert "4.8.0-x86_64, 4.8.1-x86_64" in str(info.value)
    assert choose_release([a, b], "4.8.1") is b
    assert choose_release([a, b], "4.8.0-x86_64") is a
    with pytest.raises(UsageError, match="no release payload"):
        choose_release([])


def test_extract_from_a_packed_bundle(tmp_path: Path, registry_plain: RegistryServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real thing: pack a synthetic release (with its samples) into a bundle, then extract from it."""
    pack_module = pytest.importorskip("bundler.flows.pack")
    pytest.importorskip("bundler.bundle.volumes")
    from bundler.cli import main
    from bundler.registry.client import Registries, TransportOptions

    rel = oi.build_release(
        registry_plain.url, version="4.8.0", components=6, repo="t-extract/ocp-release", component_repo="t-extract/art",
        samples_registry=registry_plain.url,
    )
    config = tmp_path / "image-set.yaml"
    config.write_text(
        "apiVersion: ocp-bundler.io/v1alpha1\nkind: ImageSet\n"
        f"releases:\n  images: [\"{rel.release_ref}\"]\n  signatures: false\n"
        "samples:\n  fromRelease: true\n"
    )
    registries = Registries(options=TransportOptions(insecure_hosts=frozenset({registry_plain.host}), max_attempts=2, backoff_base=0.01))
    try:
        result = pack_module.pack(pack_module.PackOptions(config=config, out_dir=tmp_path / "bundle"), registries=registries)
    finally:
        registries.close()
    kinds = [p.planned.kind for p in result.images]
    assert kinds.count("release") == 1 and kinds.count("release-component") == 6 and kinds.count("sample") == 28

    monkeypatch.setenv("OCPB_DEBUG_LOG", str(tmp_path / "debug.log"))
    res = cli_runner().invoke(
        main, ["extract", str(tmp_path / "bundle"), "--command", "openshift-install", "--to", str(tmp_path / "bin"), "--registry", "mirror.example.com:8443"]
    )
    assert res.exit_code == 0, res.output
    spec = f"mirror.example.com:8443/ocp4/openshift4@{rel.digest}"
    installer = rel.component_images["installer"]
    original = _file({"images": {"installer": installer}}, "installer", "usr/bin/openshift-install")
    expected = oi.stamped(oi.stamped(original, oi.RELEASE_IMAGE_MARKER, spec), oi.RELEASE_VERSION_MARKER, "4.8.0")
    assert (tmp_path / "bin" / "openshift-install").read_bytes() == expected
    assert spec in res.output

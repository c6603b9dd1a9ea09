"""`oci://` additional images end to end: images copied by skopeo from the real test registry into local OCI
layouts (`skopeo copy docker://… oci:DIR:TAG`) are packed digest-exact, unpacked into another registry under
the documented names (skopeo reads the digests back on both sides), listed in mapping.txt and left out of
the mirror sets (nothing pulls from a layout); an ambiguous layout, a missing image name and a layout with
a missing blob are refused before anything is pulled, with what to do."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from bundler.base.errors import ExitCode
from bundler.cli.main import main
from bundler.flows.pack import PackOptions, pack
from bundler.flows.unpack import UnpackOptions, unpack_bundle
from bundler.oci.planned import LOCAL_LAYOUT_HOST
from bundler.registry.client import Registries, TransportOptions
from tests.conftest import cli_runner
from tests.infra.images import make_image, make_index, push
from tests.infra.registry import RegistryServer

V2 = "apiVersion: mirror.openshift.io/v2alpha1\nkind: ImageSetConfiguration\n"


def _layouts(registry: RegistryServer, tmp_path: Path, skopeo: Any) -> Path:
    """layouts/app: one multi-arch OCI index (tag v1); layouts/shared: two images (tags 2.0 and latest)."""
    host = registry.host
    app = make_index([make_image(seed="oci-app-amd64"), make_image(seed="oci-app-arm64", architecture="arm64")])
    push(registry.url, "oci-src/app", app, "v1")
    push(registry.url, "oci-src/tool", make_image(seed="oci-tool", docker=True, random_layers=[4096]), "2.0")
    push(registry.url, "oci-src/tool", make_image(seed="oci-tool-old"), "latest")
    root = tmp_path / "layouts"
    root.mkdir()
    skopeo.copy(f"docker://{host}/oci-src/app:v1", f"oci:{root}/app:v1", "--all", "--preserve-digests")
    skopeo.copy(f"docker://{host}/oci-src/tool:2.0", f"oci:{root}/shared:2.0")
    skopeo.copy(f"docker://{host}/oci-src/tool:latest", f"oci:{root}/shared:latest")
    return root


def test_additional_images_from_local_layouts_are_carried_digest_exact(
    registry_plain: RegistryServer, fresh_registry_plain: RegistryServer, tmp_path: Path, skopeo: Any
) -> None:
    root = _layouts(registry_plain, tmp_path, skopeo)
    plain = make_image(seed="oci-test-registry-image")
    push(registry_plain.url, "oci-src/plain", plain, "v9")
    config = tmp_path / "isc.yaml"
    config.write_text(V2 + f"""mirror:
  additionalImages:
  - name: oci://layouts/app
  - name: oci://{root}/shared:2.0
    targetRepo: mirror/tools
    targetTag: stable
  - name: {registry_plain.host}/oci-src/plain:v9
""")
    app_digest = skopeo.digest(f"oci:{root}/app:v1")
    tool_digest = skopeo.digest(f"oci:{root}/shared:2.0")

    registries = Registries(options=TransportOptions(insecure_hosts=frozenset({registry_plain.host})))
    result = pack(PackOptions(config=config, out_dir=tmp_path / "b", work_dir=tmp_path / "w"), registries=registries)
    by_repo = {i.planned.target_repository: i for i in result.images}
    assert (by_repo["app"].planned.target_tag, by_repo["app"].digest) == ("v1", app_digest)
    assert by_repo["app"].planned.source == f"{LOCAL_LAYOUT_HOST}/app:v1"
    assert (by_repo["mirror/tools"].planned.target_tag, by_repo["mirror/tools"].digest) == ("stable", tool_digest)
    assert not any(i.planned.kind == "signature" for i in result.images)

    mirror = fresh_registry_plain
    resources = tmp_path / "resources"
    unpack_bundle(
        tmp_path / "b",
        options=UnpackOptions(registry=mirror.host, transport=TransportOptions(insecure_hosts=frozenset({mirror.host})), resources_dir=resources),
    )
    assert skopeo.digest(f"{mirror.host}/app:v1") == app_digest
    assert skopeo.digest(f"{mirror.host}/mirror/tools:stable") == tool_digest
    assert skopeo.digest(f"{mirror.host}/oci-src/plain:v9") == plain.digest
    for child in ("linux/amd64", "linux/arm64"):  # every child of the index came along
        os_, arch = child.split("/")
        assert skopeo.run("inspect", "--tls-verify=false", f"--override-os={os_}", f"--override-arch={arch}", f"docker://{mirror.host}/app:v1").returncode == 0

    mapping = (resources / "mapping.txt").read_text().splitlines()
    assert f"{LOCAL_LAYOUT_HOST}/app:v1={mirror.host}/app:v1" in mapping
    assert f"{LOCAL_LAYOUT_HOST}/mirror/tools:stable={mirror.host}/mirror/tools:stable" in mapping
    mirror_sets = "".join(p.read_text() for p in resources.glob("image*MirrorSet*.yaml"))
    assert LOCAL_LAYOUT_HOST not in mirror_sets
    documents = [d for p in resources.glob("image*MirrorSet*.yaml") for d in yaml.safe_load_all(p.read_text()) if d]
    sources = [m["source"] for d in documents for m in d["spec"].get("imageDigestMirrors", []) + d["spec"].get("imageTagMirrors", [])]
    assert f"{registry_plain.host}/oci-src/plain" in sources


def test_ambiguous_or_incomplete_layouts_are_refused_with_what_to_do(registry_plain: RegistryServer, tmp_path: Path, skopeo: Any) -> None:
    root = _layouts(registry_plain, tmp_path, skopeo)
    runner = cli_runner()

    def dry_run(name: str) -> Any:
        config = tmp_path / "isc.yaml"
        config.write_text(V2 + f"mirror:\n  additionalImages:\n  - name: {name}\n")
        return runner.invoke(main, ["pack", "--config", str(config), "--out", str(tmp_path / "out"), "--dry-run"])

    result = dry_run(f"oci://{root}/shared")
    assert result.exit_code == ExitCode.USAGE, result.output
    assert "holds 2 images, not one: 2.0 (sha256:" in result.stderr and "name one by its org.opencontainers.image.ref.name" in result.stderr

    result = dry_run(f"oci://{root}/shared:nope")
    assert result.exit_code == ExitCode.USAGE and "has no image named 'nope'" in result.stderr

    result = dry_run(f"oci://{root}/shared@{skopeo.digest(f'oci:{root}/shared:latest')}")
    assert result.exit_code == 0, result.output
    assert "shared" in result.stdout

    tool = json.loads(skopeo.inspect_raw(f"oci:{root}/shared:2.0"))
    os.remove(root / "shared" / "blobs" / "sha256" / tool["layers"][0]["digest"].split(":")[1])
    result = dry_run(f"oci://{root}/shared:2.0")
    assert result.exit_code == ExitCode.USAGE, result.output
    assert f"image oci://{root}/shared:2.0: the OCI layout is incomplete: 1 blob(s)" in result.stderr and tool["layers"][0]["digest"] in result.stderr
    assert "Traceback" not in result.output
    child = json.loads(skopeo.inspect_raw(f"oci:{root}/app:v1"))["manifests"][1]["digest"]
    os.remove(root / "app" / "blobs" / "sha256" / child.split(":")[1])
    result = dry_run(f"oci://{root}/app")
    assert result.exit_code == ExitCode.USAGE, result.output
    assert "the OCI layout is incomplete" in result.stderr and child in result.stderr


def test_layout_source_forms() -> None:
    from bundler.base.errors import UsageError
    from bundler.transfer.transports import parse_layout_source, parse_location

    digest = "sha256:" + "ab" * 32
    assert parse_layout_source("oci:///data/app").directory == Path("/data/app")
    loc = parse_layout_source("oci:///data/app:quay.io/org/app:v1")  # our copy names images by full reference
    assert (loc.directory, loc.ref_name, loc.digest) == (Path("/data/app"), "quay.io/org/app:v1", None)
    loc = parse_layout_source(f"oci:relative/app@{digest}")
    assert (loc.directory, loc.ref_name, str(loc.digest)) == (Path("relative/app"), None, digest)
    assert str(parse_location(f"oci:/data/app@{digest}")) == f"oci:/data/app@{digest}"
    for bad in ("oci://", "oci:///data/app@sha256:12", "oci:///data/my app"):
        try:
            parse_layout_source(bad)
        except UsageError:
            continue
        raise AssertionError(bad)


def test_platforms_filter_a_layout_image_like_a_registry_image(registry_plain: RegistryServer, tmp_path: Path, skopeo: Any) -> None:
    root = _layouts(registry_plain, tmp_path, skopeo)
    config = tmp_path / "isc.yaml"
    config.write_text(V2 + f"""mirror:
  additionalImages:
  - name: oci://{root}/app
    platforms: [linux/arm64]
  - name: oci://{root}/shared:2.0
    targetRepo: tools
    platforms: [linux/s390x]
""")
    result = pack(PackOptions(config=config, out_dir=tmp_path / "b", work_dir=tmp_path / "w", dry_run=True), registries=Registries())
    assert [i.planned.target_repository for i in result.images] == ["app"]
    assert any("a manifest list carried whole (digest-exact), including 1 child(ren) outside platforms" in w for w in result.plan.warnings)
    assert any("a linux/amd64 image, not listed in platforms: not carried" in w for w in result.plan.warnings)

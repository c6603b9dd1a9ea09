"""Bundle writer and reader on real files: a pack-like round trip through volumes and back.

The layout holds an OCI image, an OCI index and a Docker manifest list with shared layers, an uncompressed
compressible layer (stored zstd), an uncompressed random layer (stored raw: compression does not pay) and a
layer larger than a volume (split over 4 volumes). Checked: volume sizes, tar-readability with the standard
tools, the manifest against its JSON schema, every blob read back in place with the right digest, the copy
engine reproducing identical digests from the bundle, incremental bundles, free-space and ENOSPC errors,
and a writer killed with SIGKILL half-way then rerun.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

from bundler.bundle.volumes import Bundle, BundleWriteOptions, BundleWriteResult, plan_bundle, write_bundle
from bundler.bundle.manifest import MANIFEST_NAME, SIGNATURE_NAME, BundleImage, BundleManifest
from bundler.transfer.copy import Copier
from bundler.oci.digest import Digest
from bundler.base.errors import DiskSpaceError, ExitCode, ImageNotFoundError, IntegrityError, UsageError
from bundler.layout.store import Layout
from bundler.oci.media import parse_manifest
from bundler.oci.planned import ImageFacts
from bundler.base.progress import CountingProgress
from bundler.bundle.signing import generate_keypair
from bundler.transfer.transports import LayoutImage
from bundler.bundle.verify import verify_bundle
from tests.infra.images import make_image, make_index, random_layer, write_oci_layout

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "manifests" / "bundle-manifest.schema.json"
VOLUME_SIZE = 256 * 1024
BIG_LAYER = 700_000  # > 2 volumes: spans 4 volumes of 256 KiB


# --------------------------------------------------------------------------------------------------------
# fixtures shared with test_verify.py
# --------------------------------------------------------------------------------------------------------


def build_layout(root: Path) -> Tuple[Layout, Dict[str, Any]]:
    """A work layout like pack leaves it, and the synthetic objects in it by name."""
    shared = random_layer(60_000, seed="shared")
    a = make_image(random_layers=[100_000], base_layers=[shared], seed="a")
    b = make_image(files={"etc/big.txt": "hello bundle\n" * 20_000}, base_layers=[shared], seed="b", compressed=False, architecture="arm64")
    # 59392 random bytes fill the tar exactly (no record padding): compression cannot pay
    b_rand = make_image(random_layers=[59_392], seed="b-rand", compressed=False, architecture="s390x")
    c = make_image(random_layers=[BIG_LAYER], base_layers=[shared], seed="c", docker=True)
    d = make_image(seed="d", docker=True, architecture="arm64")
    docker_list = make_index([c, d], docker=True)
    oci_index = make_index([a, b, b_rand])
    single = make_image(random_layers=[30_000], seed="single")
    objs = {"single": single, "docker-list": docker_list, "oci-index": oci_index, "a": a, "b": b, "b_rand": b_rand, "c": c, "d": d, "shared": shared}
    write_oci_layout(root, [("quay.io/t/single:v1", single), ("quay.io/t/list:v1", docker_list), ("quay.io/t/index:v1", oci_index)])
    return Layout(root), objs


def bundle_images(objs: Dict[str, Any], names: Tuple[str, ...] = ("single", "docker-list", "oci-index")) -> List[BundleImage]:
    kinds = {"single": "additional", "docker-list": "release", "oci-index": "operator"}
    out = []
    for n in names:
        o = objs[n]
        out.append(
            BundleImage(
                source=f"quay.io/t/{n}:v1",
                digest=Digest.parse(o.digest),
                media_type=o.media_type,
                size=o.size,
                kind=kinds[n],
                target_repository=f"t/{n}",
                target_tag="v1",
                annotations={"component": n},
            )
        )
    return out


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Tuple[Path, Path]:
    d = tmp_path_factory.mktemp("keys")
    generate_keypair(d / "bundle.key", d / "bundle.pub")
    return d / "bundle.key", d / "bundle.pub"


@pytest.fixture(scope="session")
def layout_objs(tmp_path_factory: pytest.TempPathFactory) -> Tuple[Layout, Dict[str, Any]]:
    return build_layout(tmp_path_factory.mktemp("layout") / "oci")


FILES = {"reports/pack-report.json": json.dumps({"report": list(range(2000))}).encode(), "signatures/sha256-abc-1": os.urandom(600), "empty": b""}


@pytest.fixture(scope="session")
def signed_bundle(tmp_path_factory: pytest.TempPathFactory, layout_objs: Tuple[Layout, Dict[str, Any]], keys: Tuple[Path, Path]) -> Tuple[Path, BundleWriteResult]:
    layout, objs = layout_objs
    out = tmp_path_factory.mktemp("bundle") / "usb"
    result = write_bundle(layout, bundle_images(objs), options=BundleWriteOptions(out_dir=out, volume_size=VOLUME_SIZE, sign_key=keys[0], files=FILES))
    return out, result


@pytest.fixture
def bundle_copy(signed_bundle: Tuple[Path, BundleWriteResult], tmp_path: Path) -> Path:
    """A private copy of the signed bundle, to damage."""
    dst = tmp_path / "copy"
    shutil.copytree(signed_bundle[0], dst)
    return dst


def read_all(r: Any) -> bytes:
    out: List[bytes] = []
    while True:
        chunk = r.read(1 << 16)
        if not chunk:
            return b"".join(out)
        out.append(chunk)


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------------------------
# round trip
# --------------------------------------------------------------------------------------------------------


def test_volumes_are_bounded_tar_files_with_the_recorded_members(signed_bundle: Tuple[Path, BundleWriteResult]) -> None:
    out, result = signed_bundle
    m = result.manifest
    assert len(m.volumes) >= 4
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([v.name for v in m.volumes] + [MANIFEST_NAME, SIGNATURE_NAME])  # no temp or state files left
    for v in m.volumes:
        path = out / v.name
        assert path.stat().st_size == v.size <= VOLUME_SIZE
        assert sha(path.read_bytes()) == v.sha256
        with tarfile.open(path) as tf:  # Python's tar reader sees exactly the recorded members
            members = {(ti.name, ti.offset_data, ti.size) for ti in tf.getmembers()}
            assert all(ti.isreg() for ti in tf.getmembers())
        recorded = {(p.member, p.offset, p.length) for item in list(m.blobs) + list(m.files) for p in item.parts if p.volume == v.name}
        assert members == recorded
    if shutil.which("tar"):
        listing = subprocess.run(["tar", "-tvf", str(out / m.volumes[0].name)], capture_output=True, text=True, check=True).stdout
        assert "blobs/sha256/" in listing and "files/reports/pack-report.json" in listing


def test_big_blob_is_split_and_parts_concatenate_to_it(signed_bundle: Tuple[Path, BundleWriteResult], layout_objs: Tuple[Layout, Dict[str, Any]]) -> None:
    out, result = signed_bundle
    _, objs = layout_objs
    big = objs["c"].layers[-1]
    entry = next(b for b in result.manifest.blobs if str(b.digest) == big.digest)
    assert entry.encoding == "raw" and len({p.volume for p in entry.parts}) >= 3
    assert [p.member.rsplit(".", 1)[1] for p in entry.parts] == [f"{i:03d}" for i in range(1, len(entry.parts) + 1)]
    data = b""
    for p in entry.parts:
        with open(out / p.volume, "rb") as f:
            f.seek(p.offset)
            data += f.read(p.length)
    assert data == big.raw


def test_compression_only_where_it_pays(signed_bundle: Tuple[Path, BundleWriteResult], layout_objs: Tuple[Layout, Dict[str, Any]]) -> None:
    _, result = signed_bundle
    _, objs = layout_objs
    by = {str(b.digest): b for b in result.manifest.blobs}
    text_layer = objs["b"].layers[-1]  # uncompressed, repetitive
    random_tar = objs["b_rand"].layers[0]  # uncompressed, random
    gz = objs["a"].layers[-1]
    assert by[text_layer.digest].encoding == "zstd" and by[text_layer.digest].stored_size < text_layer.size // 10
    assert by[text_layer.digest].parts[0].member.endswith(".zst")
    assert by[random_tar.digest].encoding == "raw"
    assert by[gz.digest].encoding == "raw" and by[gz.digest].stored_size == gz.size
    report = next(f for f in result.manifest.files if f.name == "reports/pack-report.json")
    assert report.encoding == "zstd"


def test_image_facts_are_annotations_in_the_file(signed_bundle: Tuple[Path, BundleWriteResult]) -> None:
    """The facts pack and unpack act on are typed fields; the file keeps them in the plain annotation map."""
    _, result = signed_bundle
    m = result.manifest
    facts = ImageFacts(catalog="quay.io/t/cat:v1", layout_ref="pruned/t/cat:v1", pruned=True, catalog_name="cat", display_name="Cat")
    img = dataclasses.replace(m.images[0], annotations={"mode": "full"}, facts=facts)
    raw = dataclasses.replace(m, images=(img, *m.images[1:])).to_bytes()
    recorded = json.loads(raw)["images"][0]["annotations"]
    assert recorded == {"catalog": "quay.io/t/cat:v1", "layout-ref": "pruned/t/cat:v1", "pruned": "true", "catalog-name": "cat", "display-name": "Cat", "mode": "full"}
    back = BundleManifest.from_bytes(raw, where="test")
    assert back.images[0] == img and back.images[0].facts.pruned is True and back.to_bytes() == raw
    # a value that is not a fact stays a free-form annotation, and the file reads back the same
    odd = dataclasses.replace(m.images[0], annotations={"pruned": "maybe"}, facts=ImageFacts())
    raw = dataclasses.replace(m, images=(odd, *m.images[1:])).to_bytes()
    back = BundleManifest.from_bytes(raw, where="test")
    assert back.images[0].facts.pruned is None and back.images[0].annotations == {"pruned": "maybe"} and back.to_bytes() == raw


def test_manifest_lists_everything_and_matches_schema(signed_bundle: Tuple[Path, BundleWriteResult], layout_objs: Tuple[Layout, Dict[str, Any]]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    out, result = signed_bundle
    _, objs = layout_objs
    raw = (out / MANIFEST_NAME).read_bytes()
    doc = json.loads(raw)
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(doc, schema)
    assert doc["schemaVersion"] == 1 and doc["kind"] == "ocp-bundler/bundle" and doc["baseId"] is None
    parsed = BundleManifest.from_bytes(raw, where="test")
    assert parsed == result.manifest and parsed.to_bytes() == raw
    expected = set()
    for name in ("single", "docker-list", "oci-index"):
        o = objs[name]
        expected.add(o.digest)
        for img in o.images:
            expected.add(img.digest)
            expected.update(b.digest for b in img.blobs)
    assert {str(b.digest) for b in parsed.blobs} == expected  # every reachable blob, each once
    assert {f.name for f in parsed.files} == set(FILES)
    img = next(i for i in parsed.images if i.kind == "release")
    assert img.target == "t/docker-list:v1" and img.annotations == {"component": "docker-list"}
    assert img.total_size == objs["docker-list"].size + sum(m.size for m in objs["docker-list"].images) + sum(b.size for b in objs["docker-list"].blobs)
    # metadata first: every manifest and config is in the first volume
    first = parsed.volumes[0].name
    for b in parsed.blobs:
        if "manifest" in b.media_type or "config" in b.media_type or "container.image" in b.media_type:
            assert b.parts[0].volume == first
    # the schema rejects what the reader rejects
    bad = json.loads(raw)
    bad["blobs"][0]["encoding"] = "lz4"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    with pytest.raises(IntegrityError, match=r"blobs\[0\]\.encoding"):
        BundleManifest.from_bytes(json.dumps(bad).encode(), where="test")


@pytest.mark.parametrize("workers", [1, 3])
def test_verify_ok_with_progress(signed_bundle: Tuple[Path, BundleWriteResult], keys: Tuple[Path, Path], workers: int) -> None:
    out, result = signed_bundle
    progress = CountingProgress()
    v = verify_bundle(out, key=keys[1], require_signature=True, progress=progress, workers=workers)
    assert v.signed and v.key_id and v.warnings == ()
    assert v.volumes_checked == len(result.manifest.volumes) and v.blobs_checked == len(result.manifest.blobs) and v.files_checked == len(FILES)
    assert v.bytes == result.total_bytes == progress.total == progress.done
    assert sorted(n for n, _ in progress.items) == sorted(v.name for v in result.manifest.volumes)


def test_every_blob_reads_back_in_place(signed_bundle: Tuple[Path, BundleWriteResult], layout_objs: Tuple[Layout, Dict[str, Any]]) -> None:
    out, result = signed_bundle
    layout, _ = layout_objs
    bundle = Bundle.open(out)
    assert bundle.manifest == result.manifest and bundle.is_signed
    seen = 0
    for image in bundle.manifest.images:
        src = bundle.image_source(image)
        top = src.resolve()
        assert top.digest == image.digest and top.media_type == image.media_type
        stack = [top]
        while stack:
            m = stack.pop()
            parsed = parse_manifest(m.raw, m.media_type)
            stack.extend(src.fetch_manifest(c) for c in parsed.children)
            for d in parsed.blobs:
                with src.open_blob(d, 0) as r:
                    data = read_all(r)
                assert sha(data) == str(d.digest) and len(data) == d.size
                seen += 1
    assert seen >= 10
    for name, content in FILES.items():
        assert bundle.read_file(name) == content
    assert bundle.blobs_needed_from_base() == []
    # resuming reads at an offset: raw, split across volumes, and zstd-stored
    for b in bundle.manifest.blobs:
        whole = layout.read_blob(b.digest)
        for offset in {0, 1, b.size // 2, max(0, b.size - 1), b.size}:
            with bundle.open_blob(b.digest, offset) as r:
                assert read_all(r) == whole[offset:], (b.digest, b.encoding, offset)
    with pytest.raises(ImageNotFoundError):
        bundle.open_blob(Digest.parse("sha256:" + "0" * 64)).__enter__()
    with pytest.raises(UsageError):
        bundle.read_file("nope")


def test_copy_engine_reproduces_identical_digests(signed_bundle: Tuple[Path, BundleWriteResult], tmp_path: Path) -> None:
    out, _ = signed_bundle
    bundle = Bundle.open(out)
    target = Layout(tmp_path / "restored")
    with Copier() as copier:
        for image in bundle.manifest.images:
            res = copier.copy(bundle.image_source(image), LayoutImage(target, image.source), expected=image.digest)
            assert res.digest == image.digest and res.status == "copied"
    restored = {str(d): size for d, size in target.iter_blobs()}
    assert set(restored) == {str(b.digest) for b in bundle.manifest.blobs}
    for b in bundle.manifest.blobs:
        assert restored[str(b.digest)] == b.size
        assert sha(target.blob_path(b.digest).read_bytes()) == str(b.digest)


def test_reader_checks_the_tar_header_in_front_of_each_part(bundle_copy: Path) -> None:
    bundle = Bundle.open(bundle_copy)
    b = max(bundle.manifest.blobs, key=lambda b: len(b.parts))
    second = b.parts[1]
    with open(bundle_copy / second.volume, "r+b") as f:  # rename the member in its header
        f.seek(second.offset - 512 + 10)
        f.write(b"X")
    with pytest.raises(IntegrityError, match="damaged tar header|the manifest says"):
        with bundle.open_blob(b.digest) as r:
            read_all(r)
    (bundle_copy / b.parts[-1].volume).unlink()
    with pytest.raises(IntegrityError, match=f"{b.parts[-1].volume} is missing"):
        with bundle.open_blob(b.digest, b.size - 10) as r:
            read_all(r)


def test_plan_bundle_bounds_what_write_bundle_needs(layout_objs: Tuple[Layout, Dict[str, Any]], signed_bundle: Tuple[Path, BundleWriteResult], tmp_path: Path) -> None:
    layout, objs = layout_objs
    _, result = signed_bundle
    plan = plan_bundle(layout, bundle_images(objs), options=BundleWriteOptions(out_dir=tmp_path / "x", volume_size=VOLUME_SIZE, files=FILES))
    assert plan.blobs == len(result.manifest.blobs) and plan.images == 3 and plan.files == len(FILES)
    assert plan.blob_bytes == result.manifest.blob_bytes
    assert plan.volume_count >= len(result.manifest.volumes)
    assert plan.bytes_needed >= result.total_bytes + len((signed_bundle[0] / MANIFEST_NAME).read_bytes())
    assert not (tmp_path / "x").exists()  # planning writes nothing
    assert plan.to_json()["volumeCount"] == plan.volume_count


def test_missing_blob_in_layout_is_a_clear_error(tmp_path: Path) -> None:
    layout, objs = build_layout(tmp_path / "oci")
    os.unlink(layout.blob_path(Digest.parse(objs["a"].layers[-1].digest)))
    with pytest.raises(ImageNotFoundError, match="rerun pack") as e:
        write_bundle(layout, bundle_images(objs), options=BundleWriteOptions(out_dir=tmp_path / "out", volume_size=VOLUME_SIZE))
    assert "quay.io/t/oci-index:v1" in str(e.value) and e.value.exit_code == ExitCode.USAGE
    assert not (tmp_path / "out" / MANIFEST_NAME).exists()


def test_corrupt_layout_blob_is_not_bundled(tmp_path: Path) -> None:
    layout, objs = build_layout(tmp_path / "oci")
    path = layout.blob_path(Digest.parse(objs["a"].layers[-1].digest))
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="does not match its digest"):
        write_bundle(layout, bundle_images(objs), options=BundleWriteOptions(out_dir=tmp_path / "out", volume_size=VOLUME_SIZE))
    assert not (tmp_path / "out" / MANIFEST_NAME).exists()
    assert not list((tmp_path / "out").glob(".*.partial"))


def test_bad_inputs_are_usage_errors(layout_objs: Tuple[Layout, Dict[str, Any]], tmp_path: Path) -> None:
    layout, objs = layout_objs
    with pytest.raises(UsageError, match="too small"):
        write_bundle(layout, bundle_images(objs), options=BundleWriteOptions(out_dir=tmp_path, volume_size=1000))
    with pytest.raises(UsageError, match="bundle file name"):
        write_bundle(layout, bundle_images(objs), options=BundleWriteOptions(out_dir=tmp_path, files={"../etc/passwd": b"x"}))
    imgs = bundle_images(objs)
    from dataclasses import replace

    with pytest.raises(UsageError, match="kind"):
        write_bundle(layout, [replace(imgs[0], kind="bogus")], options=BundleWriteOptions(out_dir=tmp_path))
    with pytest.raises(UsageError, match="does not exist"):
        write_bundle(layout, imgs, options=BundleWriteOptions(out_dir=tmp_path, sign_key=tmp_path / "nokey"))


def test_bundle_open_errors(tmp_path: Path, signed_bundle: Tuple[Path, BundleWriteResult]) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        Bundle.open(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="not a bundle"):
        Bundle.open(tmp_path / "empty")
    shutil.copytree(signed_bundle[0], tmp_path / "nomanifest")
    (tmp_path / "nomanifest" / MANIFEST_NAME).unlink()
    with pytest.raises(IntegrityError, match=f"{MANIFEST_NAME} is missing"):
        Bundle.open(tmp_path / "nomanifest")
    # the manifest file itself is accepted too
    assert Bundle.open(signed_bundle[0] / MANIFEST_NAME).directory == signed_bundle[0]


# --------------------------------------------------------------------------------------------------------
# incremental bundles
# --------------------------------------------------------------------------------------------------------


def test_incremental_bundle_holds_only_new_blobs(layout_objs: Tuple[Layout, Dict[str, Any]], tmp_path: Path) -> None:
    layout, objs = layout_objs
    base = write_bundle(layout, bundle_images(objs, ("single", "docker-list")), options=BundleWriteOptions(out_dir=tmp_path / "base", volume_size=VOLUME_SIZE))
    incr = write_bundle(layout, bundle_images(objs), options=BundleWriteOptions(out_dir=tmp_path / "incr", volume_size=VOLUME_SIZE, base=tmp_path / "base"))
    m = incr.manifest
    assert m.base_id == base.manifest.id != m.id
    base_digests = {str(b.digest) for b in base.manifest.blobs}
    shared = objs["shared"].digest
    assert shared in base_digests
    carried = {str(b.digest) for b in m.blobs}
    # configs and layers the base has are left out; manifests are always carried (the graph must resolve)
    assert shared not in carried and objs["c"].layers[-1].digest not in carried
    assert objs["docker-list"].digest in carried and objs["oci-index"].digest in carried
    for b in m.blobs:
        if str(b.digest) in base_digests:
            assert "manifest" in b.media_type
    assert incr.blobs_skipped_by_base == len(m.base_blobs) and m.base_blobs
    bundle = Bundle.open(tmp_path / "incr")
    assert bundle.blobs_needed_from_base() == [b.digest for b in m.base_blobs]
    assert Digest.parse(shared) in bundle.blobs_needed_from_base()
    assert not bundle.has_blob(Digest.parse(shared)) and bundle.has_blob(Digest.parse(objs["oci-index"].digest))
    with pytest.raises(ImageNotFoundError, match=f"base bundle {base.manifest.id}"):
        with bundle.open_blob(Digest.parse(shared)):
            pass
    # the volumes hold only the new blobs: no member named after a base-only blob
    members: set = set()  # type: ignore[type-arg]
    for v in m.volumes:
        with tarfile.open(tmp_path / "incr" / v.name) as tf:
            members.update(n.split("/")[-1].split(".")[0] for n in tf.getnames())
    assert shared.split(":")[1] not in members
    assert sum(v.size for v in m.volumes) < sum(v.size for v in base.manifest.volumes)
    verify_bundle(tmp_path / "incr")
    # the manifest file works as --base too, and the result is identical
    again = write_bundle(layout, bundle_images(objs), options=BundleWriteOptions(out_dir=tmp_path / "incr2", volume_size=VOLUME_SIZE, base=tmp_path / "base" / MANIFEST_NAME))
    assert again.manifest.id == m.id


# --------------------------------------------------------------------------------------------------------
# disk space, interruption, reruns
# --------------------------------------------------------------------------------------------------------


def test_free_space_is_checked_before_writing(layout_objs: Tuple[Layout, Dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    layout, objs = layout_objs
    import bundler.base.fsutil as fsutil_mod

    monkeypatch.setattr(fsutil_mod.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 5000, 5000))  # type: ignore[attr-defined]
    out = tmp_path / "out"
    with pytest.raises(DiskSpaceError) as e:
        write_bundle(layout, bundle_images(objs), options=BundleWriteOptions(out_dir=out, volume_size=VOLUME_SIZE))
    assert e.value.exit_code == ExitCode.USAGE
    assert "needs" in str(e.value) and "4.9 KiB is free" in str(e.value)
    assert not list(out.glob("bundle-*"))


def test_enospc_while_writing_leaves_no_bundle_and_a_rerun_finishes(layout_objs: Tuple[Layout, Dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    layout, objs = layout_objs
    import bundler.bundle.writer as bundle_mod

    real_open = open
    budget = {"bytes": 2 * VOLUME_SIZE + 1000}

    def fake_open(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        f = real_open(path, mode, *args, **kwargs)
        if "w" in mode and Path(path).name.startswith(".bundle-"):  # volume temp files only
            orig_write = f.write

            def write(data: Any) -> int:
                budget["bytes"] -= len(data)
                if budget["bytes"] < 0:
                    raise OSError(errno.ENOSPC, "No space left on device")
                return orig_write(data)

            f.write = write  # type: ignore[method-assign]
        return f

    monkeypatch.setattr(bundle_mod, "open", fake_open, raising=False)
    out = tmp_path / "out"
    with pytest.raises(DiskSpaceError, match="no space left"):
        write_bundle(layout, bundle_images(objs), options=BundleWriteOptions(out_dir=out, volume_size=VOLUME_SIZE))
    assert not (out / MANIFEST_NAME).exists()
    assert not list(out.glob(".*.partial"))
    assert sorted(p.name for p in out.glob("bundle-*.tar")) == ["bundle-0001.tar", "bundle-0002.tar"]
    with pytest.raises(UsageError, match="unfinished bundle"):
        Bundle.open(out)
    monkeypatch.undo()
    result = write_bundle(layout, bundle_images(objs), options=BundleWriteOptions(out_dir=out, volume_size=VOLUME_SIZE))
    assert result.volumes_reused == 2 and result.bytes_written == result.total_bytes - 2 * VOLUME_SIZE
    verify_bundle(out)


def test_rerun_of_a_finished_bundle_keeps_its_volumes_and_a_smaller_bundle_replaces_a_larger(layout_objs: Tuple[Layout, Dict[str, Any]], tmp_path: Path) -> None:
    layout, objs = layout_objs
    out = tmp_path / "out"
    first = write_bundle(layout, bundle_images(objs), options=BundleWriteOptions(out_dir=out, volume_size=VOLUME_SIZE))
    again = write_bundle(layout, bundle_images(objs), options=BundleWriteOptions(out_dir=out, volume_size=VOLUME_SIZE))
    assert again.manifest == first.manifest and again.bytes_written == 0 and again.volumes_reused == len(first.manifest.volumes)
    small = write_bundle(layout, bundle_images(objs, ("single",)), options=BundleWriteOptions(out_dir=out, volume_size=VOLUME_SIZE))
    assert len(small.manifest.volumes) == 1
    assert sorted(p.name for p in out.iterdir()) == ["bundle-0001.tar", MANIFEST_NAME]  # old volumes and signature gone
    verify_bundle(out)


KILL_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    sys.path.insert(0, {root!r})
    from tests.test_bundle import build_layout, bundle_images
    from bundler.bundle.volumes import BundleWriteOptions, write_bundle
    from bundler.base.progress import NullProgress

    class Slow(NullProgress):
        def item_done(self, name, status):
            print("done", name, flush=True)
            time.sleep(0.3)

    layout, objs = build_layout(Path({layout!r}))
    write_bundle(layout, bundle_images(objs), options=BundleWriteOptions(out_dir=Path({out!r}), volume_size={size}, sign_key=Path({key!r}), progress=Slow()))
    print("finished", flush=True)
    """
)


def test_writer_killed_half_way_then_rerun_verifies(tmp_path: Path, keys: Tuple[Path, Path]) -> None:
    out = tmp_path / "out"
    script = KILL_SCRIPT.format(root=str(ROOT), layout=str(tmp_path / "oci"), out=str(out), size=VOLUME_SIZE, key=str(keys[0]))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stdout is not None
        lines: List[str] = []
        while len(lines) < 2:
            line = proc.stdout.readline()
            assert line, f"writer ended early: {proc.stderr.read() if proc.stderr else ''}"
            lines.append(line.strip())
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert lines == ["done bundle-0001.tar", "done bundle-0002.tar"]
    assert not (out / MANIFEST_NAME).exists() and not (out / SIGNATURE_NAME).exists()
    with pytest.raises(UsageError, match="unfinished"):
        verify_bundle(out)
    layout, objs = build_layout(tmp_path / "oci")
    result = write_bundle(layout, bundle_images(objs), options=BundleWriteOptions(out_dir=out, volume_size=VOLUME_SIZE, sign_key=keys[0]))
    assert result.volumes_reused >= 2
    v = verify_bundle(out, key=keys[1], require_signature=True)
    assert v.signed
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


def test_layering_no_click_below_the_cli() -> None:
    code = "import sys, bundler.bundle.volumes, bundler.bundle.verify, bundler.bundle.signing, bundler.bundle.manifest; print('click' in sys.modules or 'tqdm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout.strip()
    assert out == "False"


@pytest.mark.parametrize("volume_size", [64 * 1024, 4 * 1024**3 - 1, 20 * 1024**3])
def test_member_layout_properties(volume_size: int) -> None:
    """Volumes never exceed the size; parts are block-aligned, contiguous per item, and within ustar limits."""
    import random

    from bundler.bundle.volumes import MEMBER_MAX, assign_volumes, Item

    rng = random.Random(volume_size)
    sizes = [0, 1, 511, 512, 513] + [rng.choice([rng.randint(1, 4096), rng.randint(1, volume_size // 3), rng.randint(volume_size, 3 * volume_size)]) for _ in range(40)]
    if volume_size > MEMBER_MAX:
        sizes.append(MEMBER_MAX + 12345)  # larger than a ustar member: two members in one volume
    items = []
    for i, size in enumerate(sizes):
        d = Digest.of(str(i).encode())
        items.append(Item("blob", str(d), d, size, "application/octet-stream", f"blobs/sha256/{d.encoded}", encoding="raw", stored_size=size))
    plans = assign_volumes(items, volume_size)
    seen: Dict[int, List[Any]] = {}
    for plan in plans:
        assert 0 < plan.size <= volume_size
        pos = 0
        for pl in plan.placements:
            assert pl.data_offset == pos + 512 and pl.length <= MEMBER_MAX
            pos = pl.data_offset + (pl.length + 511) // 512 * 512
            seen.setdefault(id(pl.item), []).append(pl)
        assert plan.size == pos + 1024
    for item in items:
        parts = seen[id(item)]
        assert sum(p.length for p in parts) == item.stored_size
        assert [p.stored_offset for p in parts] == [sum(q.length for q in parts[:i]) for i in range(len(parts))]
        assert len({p.member for p in parts}) == len(parts)

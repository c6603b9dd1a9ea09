"""verify_bundle and the keygen / verify / inspect commands against damaged bundles.

One byte flipped in each kind of member (layer, zstd-stored layer, index, manifest list, manifest, config,
extra file, tar header) and in each volume position (first, middle, last), in the manifest and in its
signature; volumes truncated, deleted, swapped; a wrong key; unsigned bundles with a signature required;
hand-made volumes with `../`, absolute, symlink and device members. Every failure is exit 3 with a message
naming precisely what is wrong, all problems in one error.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from pathlib import Path
from typing import Any, Callable, Dict, Tuple

import pytest

from bundler.bundle.volumes import BundleWriteResult
from bundler.bundle.manifest import MANIFEST_NAME, SIGNATURE_NAME, BundleBlob, BundleManifest, BundleVolume, Part
from bundler.base.errors import ExitCode, IntegrityError, SignatureError, UnsafeArchiveError, UsageError
from bundler.layout.store import Layout
from bundler.bundle.signing import generate_keypair
from bundler.bundle.tarscan import scan_volume
from bundler.bundle.verify import UNSIGNED_WARNING, verify_bundle
from tests.test_bundle import FILES, VOLUME_SIZE, bundle_copy, keys, layout_objs, sha, signed_bundle  # noqa: F401  (fixtures)
from tests.conftest import cli_runner

Fixture = Tuple[Path, BundleWriteResult]


def flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x01]))


def find_blob(m: BundleManifest, objs: Dict[str, Any], what: str) -> Tuple[BundleBlob, Part]:
    """The blob of a kind, and the part to damage."""
    by = {str(b.digest): b for b in m.blobs}
    last = m.volumes[-1].name
    if what == "layer":
        b = by[objs["a"].layers[-1].digest]
    elif what == "zstd-layer":
        b = by[objs["b"].layers[-1].digest]
    elif what == "index":
        b = by[objs["oci-index"].digest]
    elif what == "docker-list":
        b = by[objs["docker-list"].digest]
    elif what == "manifest":
        b = by[objs["c"].digest]
    elif what == "config":
        b = by[objs["d"].config.digest]
    elif what == "split-middle":
        b = by[objs["c"].layers[-1].digest]
        return b, b.parts[1]
    elif what == "last-volume":
        b = next(x for x in m.blobs if len(x.parts) == 1 and x.parts[0].volume == last)
    else:
        raise AssertionError(what)
    return b, b.parts[0]


ROLE = {"layer": "layer", "zstd-layer": "layer", "index": "index", "docker-list": "index", "manifest": "manifest", "config": "config", "split-middle": "layer", "last-volume": ""}


@pytest.mark.parametrize("what", list(ROLE))
def test_flipped_byte_in_a_blob_names_the_blob_and_the_volume(what: str, bundle_copy: Path, signed_bundle: Fixture, layout_objs: Tuple[Layout, Dict[str, Any]], keys: Tuple[Path, Path]) -> None:
    m = signed_bundle[1].manifest
    blob, part = find_blob(m, layout_objs[1], what)
    flip(bundle_copy / part.volume, part.offset + part.length // 2)
    with pytest.raises(IntegrityError) as e:
        verify_bundle(bundle_copy, key=keys[1])
    msg = str(e.value)
    first, *rest = msg.splitlines()
    assert first == f"bundle {bundle_copy} failed verification: 2 problems; re-copy {part.volume} from the source media"
    assert f"{part.volume} is altered" in msg and f"re-copy {part.volume}" in msg
    bad = [line for line in rest if str(blob.digest) in line]
    assert len(bad) == 1 and f"{ROLE[what]} {blob.digest}".strip() in bad[0]
    assert "does not match its digest" in bad[0] or "zstd data is corrupt" in bad[0]
    assert e.value.exit_code == ExitCode.INTEGRITY
    assert [p.category for p in e.value.problems] == ["volume", "blob"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("position", ["first", "middle", "last"])
def test_flipped_byte_in_each_volume_position(position: str, bundle_copy: Path, signed_bundle: Fixture) -> None:
    vols = signed_bundle[1].manifest.volumes
    vol = {"first": vols[0], "middle": vols[len(vols) // 2], "last": vols[-1]}[position]
    flip(bundle_copy / vol.name, vol.size // 2 + 3)
    for workers in (1, 4):
        with pytest.raises(IntegrityError, match=f"re-copy {vol.name} from the source media") as e:
            verify_bundle(bundle_copy, workers=workers)
        assert f"{vol.name} is altered" in str(e.value)


def test_flipped_byte_in_an_extra_file(bundle_copy: Path, signed_bundle: Fixture) -> None:
    f = next(f for f in signed_bundle[1].manifest.files if f.name == "signatures/sha256-abc-1")
    flip(bundle_copy / f.parts[0].volume, f.parts[0].offset + 7)
    with pytest.raises(IntegrityError, match=r"file signatures/sha256-abc-1 \(600 bytes, in bundle-0001.tar\): its content does not match"):
        verify_bundle(bundle_copy)


def test_flipped_byte_in_a_tar_header(bundle_copy: Path, signed_bundle: Fixture) -> None:
    part = signed_bundle[1].manifest.blobs[3].parts[0]
    flip(bundle_copy / part.volume, part.offset - 512 + 20)  # inside the member name
    with pytest.raises(IntegrityError) as e:
        verify_bundle(bundle_copy)
    msg = str(e.value)
    assert f"{part.volume} is altered" in msg and f"{part.volume}: damaged tar header at offset {part.offset - 512}" in msg


def test_tampered_manifest_is_reported_as_such(bundle_copy: Path, keys: Tuple[Path, Path]) -> None:
    raw = (bundle_copy / MANIFEST_NAME).read_bytes()
    doc = json.loads(raw)
    doc["images"][0]["targetRepository"] = "evil/redirect"  # valid JSON, plausible, not what was signed
    (bundle_copy / MANIFEST_NAME).write_bytes(json.dumps(doc, indent=1).encode())
    with pytest.raises(SignatureError) as e:
        verify_bundle(bundle_copy, key=keys[1])
    assert f"{MANIFEST_NAME} does not match its signature {SIGNATURE_NAME}: the manifest was tampered with" in str(e.value)
    assert e.value.exit_code == ExitCode.INTEGRITY
    # a flipped byte that also breaks the JSON: both facts are reported
    broken = bytearray(raw)
    broken[0] ^= 0x01
    (bundle_copy / MANIFEST_NAME).write_bytes(bytes(broken))
    with pytest.raises(IntegrityError) as e2:
        verify_bundle(bundle_copy, key=keys[1])
    assert "tampered with" in str(e2.value) and "is not valid JSON" in str(e2.value)


def test_flipped_byte_in_the_signature(bundle_copy: Path, keys: Tuple[Path, Path]) -> None:
    sig = json.loads((bundle_copy / SIGNATURE_NAME).read_bytes())
    s = sig["signature"]
    sig["signature"] = ("B" if s[5] != "B" else "C").join([s[:5], s[6:]])
    (bundle_copy / SIGNATURE_NAME).write_text(json.dumps(sig))
    with pytest.raises(SignatureError, match="does not match its signature"):
        verify_bundle(bundle_copy, key=keys[1])
    (bundle_copy / SIGNATURE_NAME).write_bytes(b"\x00garbage")
    with pytest.raises(SignatureError, match="signature file is not valid JSON"):
        verify_bundle(bundle_copy, key=keys[1])


def test_wrong_key(signed_bundle: Fixture, tmp_path: Path) -> None:
    generate_keypair(tmp_path / "other.key", tmp_path / "other.pub")
    with pytest.raises(SignatureError) as e:
        verify_bundle(signed_bundle[0], key=tmp_path / "other.pub")
    assert f"or {tmp_path / 'other.pub'} is not the key it was signed with" in str(e.value) and "made with key sha256:" in str(e.value)
    with pytest.raises(UsageError, match="is a private key"):
        verify_bundle(signed_bundle[0], key=tmp_path / "other.key")


def test_signature_policy(bundle_copy: Path, keys: Tuple[Path, Path]) -> None:
    signed_no_key = verify_bundle(bundle_copy)
    assert not signed_no_key.signed and any("NOT checked" in w for w in signed_no_key.warnings)
    with pytest.raises(UsageError, match="needs the public key"):
        verify_bundle(bundle_copy, require_signature=True)
    (bundle_copy / SIGNATURE_NAME).unlink()
    unsigned = verify_bundle(bundle_copy)
    assert unsigned.warnings == (UNSIGNED_WARNING,) and not unsigned.signed
    with pytest.raises(SignatureError, match="not signed"):
        verify_bundle(bundle_copy, key=keys[1], require_signature=True)
    with pytest.raises(SignatureError, match="stripped of its signature"):
        verify_bundle(bundle_copy, key=keys[1])  # a key given: a missing signature is not a downgrade to a warning


def test_truncated_volume(bundle_copy: Path, signed_bundle: Fixture) -> None:
    vol = signed_bundle[1].manifest.volumes[1]
    with open(bundle_copy / vol.name, "r+b") as f:
        f.truncate(vol.size - 1000)
    with pytest.raises(IntegrityError) as e:
        verify_bundle(bundle_copy)
    msg = str(e.value)
    assert f"{vol.name} is truncated: {vol.size - 1000} of {vol.size} bytes: re-copy {vol.name}" in msg
    assert msg.splitlines()[0].endswith(f"1 problem; re-copy {vol.name} from the source media")
    assert "could not be checked" in msg  # the blobs inside are not reported one by one


def test_deleted_volume_and_a_second_problem_are_reported_together(bundle_copy: Path, signed_bundle: Fixture) -> None:
    vols = signed_bundle[1].manifest.volumes
    (bundle_copy / vols[2].name).unlink()
    flip(bundle_copy / vols[0].name, 5000)
    with pytest.raises(IntegrityError) as e:
        verify_bundle(bundle_copy)
    msg = str(e.value)
    assert msg.splitlines()[0].startswith(f"bundle {bundle_copy} failed verification: ")
    assert f"re-copy {vols[0].name}, {vols[2].name} from the source media" in msg.splitlines()[0]
    assert f"{vols[2].name} is missing: copy it from the source media" in msg
    assert f"{vols[0].name} is altered" in msg


def test_swapped_volumes(bundle_copy: Path, signed_bundle: Fixture) -> None:
    vols = signed_bundle[1].manifest.volumes
    a, b = bundle_copy / vols[1].name, bundle_copy / vols[2].name
    os.rename(a, bundle_copy / "tmp")
    os.rename(b, a)
    os.rename(bundle_copy / "tmp", b)
    with pytest.raises(IntegrityError) as e:
        verify_bundle(bundle_copy)
    msg = str(e.value)
    assert f"{vols[1].name} holds the content of {vols[2].name} (volumes swapped or renamed)" in msg
    assert f"{vols[2].name} holds the content of {vols[1].name}" in msg
    assert "does not match its digest" not in msg  # no cascade of blob errors
    # the short last volume swapped with a full one
    shutil.copy(bundle_copy / vols[-1].name, bundle_copy / vols[0].name)
    with pytest.raises(IntegrityError, match=f"{vols[0].name} holds the content of {vols[-1].name}"):
        verify_bundle(bundle_copy)


def test_unlisted_volume_is_a_warning(bundle_copy: Path) -> None:
    (bundle_copy / "bundle-0099.tar").write_bytes(b"")
    v = verify_bundle(bundle_copy)
    assert any("bundle-0099.tar" in w for w in v.warnings)


# --------------------------------------------------------------------------------------------------------
# unsafe archives
# --------------------------------------------------------------------------------------------------------


def evil_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        ok = tarfile.TarInfo("blobs/sha256/" + "a" * 64)
        ok.size = 3
        tf.addfile(ok, io.BytesIO(b"abc"))
        evil = tarfile.TarInfo("../evil")
        evil.size = 4
        tf.addfile(evil, io.BytesIO(b"evil"))
        absolute = tarfile.TarInfo("/etc/cron.d/evil")
        absolute.size = 4
        tf.addfile(absolute, io.BytesIO(b"evil"))
        link = tarfile.TarInfo("blobs/link")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/shadow"
        tf.addfile(link)
        dev = tarfile.TarInfo("blobs/dev")
        dev.type = tarfile.CHRTYPE
        dev.devmajor, dev.devminor = 1, 3
        tf.addfile(dev)
        hard = tarfile.TarInfo("blobs/hard")
        hard.type = tarfile.LNKTYPE
        hard.linkname = "../../etc/passwd"
        tf.addfile(hard)
    return buf.getvalue()


def test_scan_volume_reports_each_unsafe_member(tmp_path: Path) -> None:
    path = tmp_path / "bundle-0001.tar"
    path.write_bytes(evil_tar())
    scanner = scan_volume(path)
    texts = [p.text for p in scanner.problems]
    assert len(texts) == 5 and {p.category for p in scanner.problems} == {"unsafe"}
    assert "unsafe member '../evil' (path with .." in texts[0]
    assert "unsafe member '/etc/cron.d/evil' (absolute path)" in texts[1]
    assert "unsafe member 'blobs/link' -> /etc/shadow (symbolic link" in texts[2]
    assert "unsafe member 'blobs/dev' (character device" in texts[3]
    assert "unsafe member 'blobs/hard' -> ../../etc/passwd (hard link" in texts[4]
    assert scanner.members == [("blobs/sha256/" + "a" * 64, 512, 3)] and scanner.ended


def test_verify_rejects_a_bundle_with_unsafe_members(tmp_path: Path) -> None:
    """A forged, unsigned bundle whose checksums all match: the tar members themselves give it away."""
    data = evil_tar()
    (tmp_path / "bundle-0001.tar").write_bytes(data)
    m = BundleManifest(
        id="forged", created="2020-01-01T00:00:00Z", tool_version="0", base_id=None, images=(), blobs=(),
        volumes=(BundleVolume("bundle-0001.tar", len(data), sha(data)),), files=(), volume_size=len(data),
    )
    (tmp_path / MANIFEST_NAME).write_bytes(m.to_bytes())
    with pytest.raises(UnsafeArchiveError) as e:
        verify_bundle(tmp_path)
    msg = str(e.value)
    for name in ("'../evil'", "'/etc/cron.d/evil'", "'blobs/link'", "'blobs/dev'", "'blobs/hard'"):
        assert name in msg
    assert "do not extract bundle-0001.tar" in msg and e.value.exit_code == ExitCode.INTEGRITY
    assert "member blobs/sha256/" + "a" * 64 + " at offset 512 is not in the manifest" in msg


def test_manifest_with_unsafe_names_is_rejected_before_reading(tmp_path: Path, signed_bundle: Fixture) -> None:
    doc = json.loads((signed_bundle[0] / MANIFEST_NAME).read_bytes())
    doc["volumes"][0]["name"] = "../../etc/passwd"
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(doc))
    with pytest.raises(IntegrityError, match=r"volumes\[0\]\.name is not a volume name"):
        verify_bundle(tmp_path)
    doc = json.loads((signed_bundle[0] / MANIFEST_NAME).read_bytes())
    doc["blobs"][0]["parts"][0]["member"] = "../x"
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(doc))
    with pytest.raises(IntegrityError, match=r"parts\[0\]\.member is not a safe member name"):
        verify_bundle(tmp_path)


# --------------------------------------------------------------------------------------------------------
# the commands
# --------------------------------------------------------------------------------------------------------


@pytest.fixture
def cli() -> Callable[..., Any]:
    from bundler.cli import main

    def run(*args: str) -> Any:
        return cli_runner().invoke(main, [str(a) for a in args], catch_exceptions=False)

    return run


def test_cli_keygen(cli: Callable[..., Any], tmp_path: Path) -> None:
    r = cli("keygen", "--private", tmp_path / "k.key", "--public", tmp_path / "k.pub")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "k.key").stat().st_mode & 0o777 == 0o600
    assert b"PRIVATE KEY" in (tmp_path / "k.key").read_bytes() and b"PUBLIC KEY" in (tmp_path / "k.pub").read_bytes()
    assert "Key id: sha256:" in r.stdout
    again = cli("keygen", "--private", tmp_path / "k.key", "--public", tmp_path / "k2.pub")
    assert again.exit_code == 2 and "already exists" in again.stderr and "Traceback" not in again.output
    assert len(again.stderr.strip().splitlines()) == 1


def test_cli_verify_ok_and_json(cli: Callable[..., Any], signed_bundle: Fixture, keys: Tuple[Path, Path]) -> None:
    r = cli("verify", signed_bundle[0], "--key", keys[1], "--require-signature")
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith(f"OK: bundle {signed_bundle[1].manifest.id}") and "Signature: valid (key sha256:" in r.stdout
    j = cli("verify", signed_bundle[0], "--key", keys[1], "--json")
    doc = json.loads(j.stdout)
    assert j.exit_code == 0 and doc["ok"] and doc["signed"] and doc["volumesChecked"] == len(signed_bundle[1].manifest.volumes)
    loud = cli("verify", signed_bundle[0])
    assert loud.exit_code == 0 and "warning: the bundle is signed but no --key was given" in loud.stderr


def test_cli_verify_failures(cli: Callable[..., Any], bundle_copy: Path, signed_bundle: Fixture, keys: Tuple[Path, Path], tmp_path: Path) -> None:
    vol = signed_bundle[1].manifest.volumes[-1]
    (bundle_copy / vol.name).unlink()
    r = cli("verify", bundle_copy, "--key", keys[1])
    assert r.exit_code == 3 and "Traceback" not in r.output and r.stdout == ""
    assert r.stderr.startswith(f"error: bundle {bundle_copy} failed verification: 1 problem; re-copy {vol.name}")
    assert f"{vol.name} is missing" in r.stderr
    (tmp_path / "empty").mkdir()
    r = cli("verify", tmp_path / "empty")
    assert r.exit_code == 2 and r.stderr.strip().splitlines() == [f"error: {tmp_path / 'empty'} is not a bundle (no {MANIFEST_NAME}): pass the directory pack wrote"]
    r = cli("verify", signed_bundle[0], "--require-signature")
    assert r.exit_code == 2 and "--key" in r.stderr


def test_cli_verify_unsigned_require(cli: Callable[..., Any], bundle_copy: Path, keys: Tuple[Path, Path]) -> None:
    (bundle_copy / SIGNATURE_NAME).unlink()
    r = cli("verify", bundle_copy)
    assert r.exit_code == 0 and "warning: THE BUNDLE IS NOT SIGNED" in r.stderr
    r = cli("verify", bundle_copy, "--key", keys[1], "--require-signature")
    assert r.exit_code == 3 and "not signed" in r.stderr and "Traceback" not in r.output


def test_cli_inspect(cli: Callable[..., Any], signed_bundle: Fixture) -> None:
    m = signed_bundle[1].manifest
    r = cli("inspect", signed_bundle[0])
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert f"Bundle {m.id}" in out and "Complete bundle (no base)" in out and "Signature: present" in out
    assert "release" in out and "t/docker-list:v1" in out and "operator" in out and "t/oci-index:v1" in out
    for v in m.volumes:
        assert v.name in out
    assert f"Totals: 3 images, {len(m.blobs)} blobs" in out
    j = cli("inspect", signed_bundle[0], "--json")
    doc = json.loads(j.stdout)
    assert doc["id"] == m.id and doc["baseId"] is None and doc["signature"] is True
    assert {i["target"] for i in doc["images"]} == {"t/single:v1", "t/docker-list:v1", "t/oci-index:v1"}
    assert all(i["totalSize"] > 0 for i in doc["images"])
    assert doc["totals"]["volumes"] == len(m.volumes) and doc["totals"]["volumeBytes"] == m.stored_bytes
    assert {f["name"] for f in doc["files"]} == set(FILES)

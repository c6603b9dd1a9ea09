"""Sigstore signatures carried digest-exact: cosign `.sig` tags and OCI 1.1 referrers tags found upstream,
packed, unpacked next to their images (skopeo as the oracle), `--remove-signatures`, and the release checks
on the connected side (cosign with an ECDSA P-256 key made here; OpenPGP with gpgv and a key made here, and
the real Red Hat signature from the fixtures)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterator, Tuple

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bundler.base.errors import ExitCode, IntegrityError, SignatureError, UsageError
from bundler.bundle.volumes import Bundle
from bundler.flows.pack import PackOptions, pack
from bundler.flows.unpack import UnpackOptions, unpack_bundle
from bundler.oci.digest import Digest
from bundler.openshift.release_signatures import dearmor, is_openpgp_key, verify_gpg
from bundler.openshift.sigstore import load_public_key, referrers_tag, signature_tag, verify_cosign
from bundler.registry.client import Registries, TransportOptions
from tests.infra.images import (
    cosign_tag,
    make_cosign_signature,
    make_image,
    make_index,
    make_referrer,
    make_referrers_index,
    push,
    simple_signing_payload,
)
from tests.infra.openshift_images import SIGNATURE_FIXTURE, SIGNATURE_FIXTURE_DIGEST, ReleaseFixture, build_release, signature_store
from tests.infra.registry import RegistryServer
from tests.conftest import cli_runner
from bundler.cli.main import main

Key = ec.EllipticCurvePrivateKey


def _pem(key: Key, path: Path) -> Path:
    path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


def _sign(key: Key, digest: str, reference: str) -> Tuple[bytes, bytes]:
    payload = simple_signing_payload(digest, reference)
    return payload, key.sign(payload, ec.ECDSA(hashes.SHA256()))


def test_tag_names_follow_cosign_and_oci_referrers() -> None:
    d = "sha256:" + "ab" * 32
    assert signature_tag(d) == "sha256-" + "ab" * 32 + ".sig" == cosign_tag(d)
    assert referrers_tag(d) == "sha256-" + "ab" * 32


def test_verify_cosign_payloads() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    other = ec.generate_private_key(ec.SECP256R1())
    digest = "sha256:" + "12" * 32
    pub = load_public_key(key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo), name="k")
    good = make_cosign_signature([_sign(other, digest, "r/x"), _sign(key, digest, "r/x")])
    blobs = {b.digest: b.raw for b in good.layers}
    read = lambda d: blobs[str(d)]  # noqa: E731
    assert verify_cosign(good.raw, read_blob=read, signed_digest=digest, key=pub, where="t")
    only_other = make_cosign_signature([_sign(other, digest, "r/x")])
    blobs.update({b.digest: b.raw for b in only_other.layers})
    assert not verify_cosign(only_other.raw, read_blob=read, signed_digest=digest, key=pub, where="t")
    elsewhere = make_cosign_signature([_sign(key, "sha256:" + "34" * 32, "r/x")])
    blobs.update({b.digest: b.raw for b in elsewhere.layers})
    with pytest.raises(IntegrityError, match="names sha256:3434"):
        verify_cosign(elsewhere.raw, read_blob=read, signed_digest=digest, key=pub, where="t")
    with pytest.raises(UsageError, match="not a PEM public key"):
        load_public_key(b"hello", name="k")


# --- end to end ------------------------------------------------------------------------------------------


class Upstream:
    def __init__(self, server: RegistryServer, key: Key, seed: str) -> None:
        self.host = server.host
        self.key = key
        child_a = make_image(seed=f"{seed}-a", random_layers=[2000])
        child_b = make_image(seed=f"{seed}-b", random_layers=[2000], architecture="arm64")
        self.app = make_index([child_a, child_b])
        self.child = child_a
        self.app_repo = f"{seed}/app"
        push(server.url, self.app_repo, self.app, "v1")
        self.app_sig = make_cosign_signature([_sign(key, self.app.digest, f"{self.host}/{self.app_repo}")])
        push(server.url, self.app_repo, self.app_sig, cosign_tag(self.app.digest))
        self.child_sig = make_cosign_signature([_sign(key, child_a.digest, f"{self.host}/{self.app_repo}")])
        push(server.url, self.app_repo, self.child_sig, cosign_tag(child_a.digest))
        self.other = make_image(seed=f"{seed}-other", docker=True)
        self.other_repo = f"{seed}/other"
        push(server.url, self.other_repo, self.other, "v1")
        sbom = make_referrer(self.other, artifact_type="application/spdx+json", payload=b'{"spdxVersion":"SPDX-2.3"}', payload_type="application/spdx+json")
        self.referrers = make_referrers_index([sbom])
        push(server.url, self.other_repo, self.referrers, referrers_tag(self.other.digest))
        self.plain_repo = f"{seed}/plain"
        push(server.url, self.plain_repo, make_image(seed=f"{seed}-plain"), "v1")
        self.release: ReleaseFixture = build_release(
            server.url, version="4.21.0", components=5, repo=f"{seed}/release", component_repo=f"{seed}/art-dev", seed=seed
        )
        self.release_sig = make_cosign_signature([_sign(key, self.release.digest, f"{self.host}/{seed}/release")])
        push(server.url, f"{seed}/release", self.release_sig, cosign_tag(self.release.digest))
        component = self.release.components["cli"].split("@", 1)[1]
        self.component_digest = component
        self.component_sig = make_cosign_signature([_sign(key, component, f"{self.host}/{seed}/art-dev")])
        push(server.url, f"{seed}/art-dev", self.component_sig, cosign_tag(component))

    def config(self, path: Path, *, gpg: bool = False) -> Path:
        path.write_text(
            "apiVersion: ocp-bundler.io/v1alpha1\nkind: ImageSet\n"
            f"releases:\n  images:\n    - {self.release.release_ref}\n  signatures: {'true' if gpg else 'false'}\n"
            "additionalImages:\n"
            f"  - {self.host}/{self.app_repo}:v1\n  - {self.host}/{self.other_repo}:v1\n  - {self.host}/{self.plain_repo}:v1\n"
        )
        return path


@pytest.fixture(scope="module")
def signing_key() -> Key:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def upstream(registry_plain: RegistryServer, signing_key: Key) -> Upstream:
    return Upstream(registry_plain, signing_key, "sigs")


def _registries(*hosts: str) -> Registries:
    return Registries(options=TransportOptions(insecure_hosts=frozenset(hosts)))


def test_signatures_pack_unpack_digest_exact(upstream: Upstream, fresh_registry_plain: RegistryServer, tmp_path: Path, skopeo: Any, signing_key: Key) -> None:
    result = pack(
        PackOptions(config=upstream.config(tmp_path / "c.yaml"), out_dir=tmp_path / "b", work_dir=tmp_path / "w", release_keys=(_pem(signing_key, tmp_path / "cosign.pub"),)),
        registries=_registries(upstream.host),
    )
    report = result.plan.reports.signatures
    assert report is not None
    assert (report.cosign, report.referrers_tags, report.referrers) == (4, 1, 0)
    assert report.verified and report.verification == ["release 4.21.0-x86_64: cosign signature verified with cosign.pub"]
    assert "Signatures: 5 carried (4 cosign .sig, 0 referrers, 1 referrers tags)" in report.summary()
    kinds = [i.kind for i in Bundle.open(tmp_path / "b").manifest.images]
    assert kinds.count("signature") == 5
    mirror = fresh_registry_plain
    unpack_bundle(tmp_path / "b", options=UnpackOptions(registry=mirror.host, transport=TransportOptions(insecure_hosts=frozenset({mirror.host})), resources_dir=tmp_path / "res"))
    m = mirror.host
    assert skopeo.digest(f"{m}/{upstream.app_repo}:{cosign_tag(upstream.app.digest)}") == upstream.app_sig.digest
    assert skopeo.digest(f"{m}/{upstream.app_repo}:{cosign_tag(upstream.child.digest)}") == upstream.child_sig.digest
    assert skopeo.digest(f"{m}/{upstream.app_repo}:v1") == upstream.app.digest
    assert skopeo.digest(f"{m}/{upstream.other_repo}:{referrers_tag(upstream.other.digest)}") == upstream.referrers.digest
    # the release and its component go to the release repository, their signatures next to them
    assert skopeo.digest(f"{m}/ocp4/openshift4:{cosign_tag(upstream.release.digest)}") == upstream.release_sig.digest
    assert skopeo.digest(f"{m}/ocp4/openshift4:{cosign_tag(upstream.component_digest)}") == upstream.component_sig.digest
    mapping = (tmp_path / "res" / "mapping.txt").read_text()
    assert f"{upstream.host}/{upstream.app_repo}@{upstream.app_sig.digest}={m}/{upstream.app_repo}:{cosign_tag(upstream.app.digest)}" in mapping


def test_remove_signatures_and_a_wrong_key(upstream: Upstream, tmp_path: Path) -> None:
    result = pack(
        PackOptions(config=upstream.config(tmp_path / "c.yaml"), out_dir=tmp_path / "b", work_dir=tmp_path / "w", remove_signatures=True),
        registries=_registries(upstream.host),
    )
    assert result.plan.reports.signatures is not None and result.plan.reports.signatures.removed
    assert not [i for i in Bundle.open(tmp_path / "b").manifest.images if i.kind == "signature"]
    wrong = _pem(ec.generate_private_key(ec.SECP256R1()), tmp_path / "wrong.pub")
    with pytest.raises(SignatureError, match="no signature made by the given key"):
        pack(PackOptions(config=upstream.config(tmp_path / "c.yaml"), out_dir=tmp_path / "b2", work_dir=tmp_path / "w", dry_run=True, release_keys=(wrong,)),
             registries=_registries(upstream.host))
    # the command line: the summary says what was carried and that nothing was verified
    run = cli_runner().invoke(main, ["pack", "--config", str(upstream.config(tmp_path / "c.yaml")), "--out", str(tmp_path / "b3"), "--work-dir", str(tmp_path / "w"),
                             "--dry-run", "--insecure-registry", upstream.host])
    assert run.exit_code == 0, run.output
    assert "Signatures: 5 carried (4 cosign .sig, 0 referrers, 1 referrers tags) for 5 of 12 manifests checked" in run.stdout
    assert "release signatures were NOT verified" in run.stderr
    run = cli_runner().invoke(main, ["pack", "--config", str(upstream.config(tmp_path / "c.yaml")), "--out", str(tmp_path / "b3"), "--work-dir", str(tmp_path / "w"),
                             "--dry-run", "--insecure-registry", upstream.host, "--release-key", str(wrong)])
    assert run.exit_code == ExitCode.INTEGRITY, run.output
    assert "release signature check failed" in run.output


# --- OpenPGP release signatures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpg_key() -> Iterator[Tuple[str, bytes]]:
    """(gpg home, armored public key) of an Ed25519 key made here with no passphrase."""
    gpg = shutil.which("gpg")
    assert gpg is not None, "gpg is required"
    home = tempfile.mkdtemp(prefix="ocpb-g")
    env = {**os.environ, "GNUPGHOME": home}
    try:
        subprocess.run([gpg, "--batch", "--passphrase", "", "--quick-gen-key", "Release Test <release@example.com>", "ed25519", "sign", "never"],
                       env=env, check=True, capture_output=True)
        public = subprocess.run([gpg, "--armor", "--export"], env=env, check=True, capture_output=True).stdout
        yield home, public
    finally:
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=env, check=False, capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


def _gpg_sign(home: str, body: bytes) -> bytes:
    return subprocess.run(["gpg", "--batch", "--sign"], input=body, env={**os.environ, "GNUPGHOME": home}, check=True, capture_output=True).stdout


def test_openpgp_release_signatures(upstream: Upstream, gpg_key: Tuple[str, bytes], tmp_path: Path, signing_key: Key) -> None:
    home, public = gpg_key
    assert is_openpgp_key(public) and is_openpgp_key(dearmor(public)) and dearmor(public)[0] in (0x98, 0x99, 0x9A, 0xC6)
    real = SIGNATURE_FIXTURE.read_bytes()
    # the real Red Hat signature is well-formed but not made by this key
    assert not verify_gpg(real, digest=SIGNATURE_FIXTURE_DIGEST, keyring=public)
    body = json.dumps({"critical": {"image": {"docker-manifest-digest": upstream.release.digest}, "type": "atomic container signature",
                                    "identity": {"docker-reference": upstream.release.release_ref}}, "optional": {}}).encode()
    signed = _gpg_sign(home, body)
    assert verify_gpg(signed, digest=upstream.release.digest, keyring=public)
    with pytest.raises(IntegrityError, match="names"):
        verify_gpg(signed, digest="sha256:" + "0" * 64, keyring=public)
    key_file = tmp_path / "release.asc"
    key_file.write_bytes(public)
    server, store = signature_store({upstream.release.digest: [real, signed]})
    try:
        result = pack(
            PackOptions(config=upstream.config(tmp_path / "c.yaml", gpg=True), out_dir=tmp_path / "b", work_dir=tmp_path / "w",
                        dry_run=True, signature_store=store, remove_signatures=True, release_keys=(key_file,)),
            registries=_registries(upstream.host),
        )
        report = result.plan.reports.signatures
        assert report is not None and report.verification == ["release 4.21.0-x86_64: signature-2 (OpenPGP) verified with release.asc"]
        server.files = {k: v for k, v in server.files.items() if not k.endswith("signature-2")}
        with pytest.raises(SignatureError):
            pack(PackOptions(config=upstream.config(tmp_path / "c.yaml", gpg=True), out_dir=tmp_path / "b", work_dir=tmp_path / "w",
                             dry_run=True, signature_store=store, remove_signatures=True, release_keys=(key_file,)),
                 registries=_registries(upstream.host))
    finally:
        server.close()
    assert Digest.parse(upstream.release.digest)


# --- OCI 1.1 referrers through the API (real Quay 3.18 serves it) -------------------------------------------


def test_referrers_from_the_api_of_a_real_quay(real_quay: Any, fresh_registry_plain: RegistryServer, tmp_path: Path, skopeo: Any) -> None:
    from bundler.registry.auth import CredentialStore

    real_quay.create_org("sigref")
    auth = ("$oauthtoken", real_quay.token)
    app = make_image(seed="sigref-app", random_layers=[3000])
    push(real_quay.url, "sigref/app", app, "v1", auth=auth)
    sbom = make_referrer(app, artifact_type="application/spdx+json", payload=b'{"spdxVersion":"SPDX-2.3"}', payload_type="application/spdx+json")
    push(real_quay.url, "sigref/app", sbom, auth=auth)  # by digest only, as OCI 1.1 clients attach them
    authfile = tmp_path / "auth.json"
    authfile.write_text(json.dumps({"auths": {real_quay.host: real_quay.auth_entry()}}))
    config = tmp_path / "c.yaml"
    config.write_text(f"apiVersion: ocp-bundler.io/v1alpha1\nkind: ImageSet\nadditionalImages:\n  - {real_quay.host}/sigref/app:v1\n")
    result = pack(
        PackOptions(config=config, out_dir=tmp_path / "b", work_dir=tmp_path / "w"),
        registries=Registries(credentials=CredentialStore(authfile), options=TransportOptions(insecure_hosts=frozenset({real_quay.host}))),
    )
    report = result.plan.reports.signatures
    assert report is not None and (report.referrers, report.cosign, report.referrers_tags) == (1, 0, 0)
    mirror = fresh_registry_plain
    unpack_bundle(tmp_path / "b", options=UnpackOptions(registry=mirror.host, transport=TransportOptions(insecure_hosts=frozenset({mirror.host})), write_resources=False))
    tag = "ocpb-ref-" + sbom.digest.replace(":", "-")[:47]
    assert skopeo.digest(f"{mirror.host}/sigref/app:{tag}") == sbom.digest
    assert skopeo.digest(f"{mirror.host}/sigref/app:v1") == app.digest


def test_signatures_land_next_to_their_images_in_a_real_quay(upstream: Upstream, real_quay: Any, tmp_path: Path, skopeo: Any) -> None:
    """The far side is Quay: organisations are made, the .sig tags are pushed beside their images, digest-exact."""
    config = tmp_path / "c.yaml"
    config.write_text(f"apiVersion: ocp-bundler.io/v1alpha1\nkind: ImageSet\nadditionalImages:\n  - {upstream.host}/{upstream.app_repo}:v1\n")
    pack(PackOptions(config=config, out_dir=tmp_path / "b", work_dir=tmp_path / "w"), registries=_registries(upstream.host))
    real_quay.create_org("sigquay")
    authfile = tmp_path / "auth.json"
    authfile.write_text(json.dumps({"auths": {real_quay.host: real_quay.auth_entry()}}))
    unpack_bundle(
        tmp_path / "b",
        options=UnpackOptions(registry=real_quay.host, prefix="sigquay", registry_kind="plain", authfile=authfile,
                              transport=TransportOptions(insecure_hosts=frozenset({real_quay.host})), state_dir=tmp_path / "state", write_resources=False),
    )
    tags = real_quay.tags("sigquay", upstream.app_repo)
    assert tags["v1"] == upstream.app.digest
    assert tags[cosign_tag(upstream.app.digest)] == upstream.app_sig.digest
    assert tags[cosign_tag(upstream.child.digest)] == upstream.child_sig.digest

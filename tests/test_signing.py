"""Ed25519 keys and detached signatures (`bundler.bundle.signing`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bundler.base.errors import ExitCode, SignatureError, UsageError
from bundler.bundle.signing import generate_keypair, key_id, load_public_key, sign, signature_key_id, verify_signature


@pytest.fixture
def pair(tmp_path: Path) -> "tuple[Path, Path]":
    generate_keypair(tmp_path / "k.key", tmp_path / "k.pub")
    return tmp_path / "k.key", tmp_path / "k.pub"


def test_keygen_files(pair: "tuple[Path, Path]") -> None:
    private, public = pair
    assert private.stat().st_mode & 0o777 == 0o600
    assert private.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert public.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")


def test_keygen_never_overwrites(pair: "tuple[Path, Path]", tmp_path: Path) -> None:
    before = pair[0].read_bytes()
    with pytest.raises(UsageError, match="already exists"):
        generate_keypair(pair[0], tmp_path / "new.pub")
    with pytest.raises(UsageError, match="already exists"):
        generate_keypair(tmp_path / "new.key", pair[1])
    assert pair[0].read_bytes() == before and not (tmp_path / "new.key").exists()


def test_sign_and_verify(pair: "tuple[Path, Path]") -> None:
    data = b'{"bundle": 1}\n'
    sig = sign(data, pair[0])
    doc = json.loads(sig)
    assert doc["algorithm"] == "ed25519" and signature_key_id(sig) == key_id(load_public_key(pair[1]))
    verify_signature(data, sig, pair[1])
    with pytest.raises(SignatureError, match="tampered with after signing") as e:
        verify_signature(data + b" ", sig, pair[1])
    assert e.value.exit_code == ExitCode.INTEGRITY


def test_wrong_key_is_named(pair: "tuple[Path, Path]", tmp_path: Path) -> None:
    generate_keypair(tmp_path / "o.key", tmp_path / "o.pub")
    sig = sign(b"x", pair[0])
    with pytest.raises(SignatureError, match="made with key sha256:.* but .*o.pub is key sha256:"):
        verify_signature(b"x", sig, tmp_path / "o.pub")


@pytest.mark.parametrize(
    "mangle, match",
    [
        (lambda s: b"not json", "not valid JSON"),
        (lambda s: s.replace(b"ed25519", b"rsa"), "not an ed25519 signature"),
        (lambda s: json.dumps({**json.loads(s), "signature": "***"}).encode(), "not base64"),
        (lambda s: json.dumps({**json.loads(s), "signature": "AAAA"}).encode(), "3 bytes, expected 64"),
    ],
)
def test_damaged_signature_files(pair: "tuple[Path, Path]", mangle, match: str) -> None:  # type: ignore[no-untyped-def]
    sig = sign(b"x", pair[0])
    with pytest.raises(SignatureError, match=match):
        verify_signature(b"x", mangle(sig), pair[1])


def test_key_file_mistakes(pair: "tuple[Path, Path]", tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="is a public key"):
        sign(b"x", pair[1])
    with pytest.raises(UsageError, match="is a private key"):
        verify_signature(b"x", sign(b"x", pair[0]), pair[0])
    with pytest.raises(UsageError, match="does not exist.*keygen"):
        sign(b"x", tmp_path / "missing.key")
    (tmp_path / "junk.pub").write_text("hello")
    with pytest.raises(UsageError, match="not a PEM public key"):
        load_public_key(tmp_path / "junk.pub")
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "rsa.key").write_bytes(rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (tmp_path / "rsa.pub").write_bytes(rsa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    with pytest.raises(UsageError, match="not an Ed25519 key"):
        sign(b"x", tmp_path / "rsa.key")
    with pytest.raises(UsageError, match="not an Ed25519 public key"):
        load_public_key(tmp_path / "rsa.pub")

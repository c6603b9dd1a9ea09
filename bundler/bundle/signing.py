"""Ed25519 keys and detached signatures over the exact bytes of a bundle manifest.

Owns the key files and the signature file format (spec: "Signing" in the bundle issue):

- `generate_keypair` writes a PKCS#8 PEM private key (mode 0600, never overwritten) and a
  SubjectPublicKeyInfo PEM public key;
- `sign` returns the content of a detached signature file: a small JSON document
  `{"algorithm": "ed25519", "keyId": "sha256:<hex of the raw public key>", "signature": "<base64>"}`.
  The key id lets `verify_signature` tell "signed with another key" from "data altered";
- `verify_signature` raises `SignatureError` (exit 3) when the signature does not match.

The signature covers the manifest bytes exactly as stored; nothing is re-serialised before checking.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from bundler.base.errors import SignatureError, UsageError
from bundler.base.jsonlimits import loads_bounded
from bundler.base.safefile import read_regular

ALGORITHM = "ed25519"


def key_id(public_key: Ed25519PublicKey) -> str:
    """`sha256:<hex>` of the raw 32-byte public key: a short, stable name for a key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def generate_keypair(private_path: Path, public_path: Path) -> None:
    """Create an Ed25519 key pair. The private key file is created 0600 and never overwritten."""
    private_path, public_path = Path(private_path), Path(public_path)
    for p in (private_path, public_path):
        if p.exists():
            raise UsageError(f"{p} already exists", hint="refusing to overwrite a key; choose another path or remove it first")
    if private_path.resolve() == public_path.resolve():
        raise UsageError("the private and public key paths are the same file")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    private_path.parent.mkdir(parents=True, exist_ok=True)
    public_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, private_pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    fd = os.open(public_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, public_pem)
        os.fsync(fd)
    finally:
        os.close(fd)


MAX_KEY_BYTES = 64 * 1024


def _read_key_file(path: Path, what: str) -> bytes:
    try:
        return read_regular(path, max_size=MAX_KEY_BYTES, what=what, follow_links=True)
    except FileNotFoundError:
        raise UsageError(f"{what} {path} does not exist", hint="create a key pair with: ocp-bundler keygen --private bundle.key --public bundle.pub") from None
    except IsADirectoryError:
        raise UsageError(f"{what} {path} is a directory, not a key file") from None
    except PermissionError:
        raise UsageError(f"{what} {path} cannot be read (permission denied)") from None


def load_private_key(path: Path) -> Ed25519PrivateKey:
    data = _read_key_file(path, "private key")
    if b"PUBLIC KEY" in data and b"PRIVATE KEY" not in data:
        raise UsageError(f"{path} is a public key", hint="signing needs the private key (the file made by keygen --private)")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise UsageError(f"{path} is not an unencrypted PEM private key ({exc})", hint="create one with ocp-bundler keygen") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UsageError(f"{path} is not an Ed25519 key", hint="create one with ocp-bundler keygen")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    data = _read_key_file(path, "public key")
    if b"PRIVATE KEY" in data:
        raise UsageError(f"{path} is a private key", hint="pass the public key (keygen --public) to verify; keep the private key on the connected side")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise UsageError(f"{path} is not a PEM public key ({exc})", hint="pass the file made by ocp-bundler keygen --public") from None
    if not isinstance(key, Ed25519PublicKey):
        raise UsageError(f"{path} is not an Ed25519 public key", hint="pass the file made by ocp-bundler keygen --public")
    return key


def sign(data: bytes, private_key: Path) -> bytes:
    """The detached signature file content for `data`, signed with the key at `private_key`."""
    key = load_private_key(private_key)
    doc: Dict[str, Any] = {
        "algorithm": ALGORITHM,
        "keyId": key_id(key.public_key()),
        "signature": base64.b64encode(key.sign(data)).decode("ascii"),
    }
    return (json.dumps(doc, indent=1) + "\n").encode()


def signature_key_id(signature: bytes) -> str:
    """The key id a signature file claims (unauthenticated: for messages only)."""
    return _parse_signature(signature)[1]


def _parse_signature(signature: bytes) -> "tuple[bytes, str]":
    try:
        doc = loads_bounded(signature)
    except (ValueError, UnicodeDecodeError):
        raise SignatureError("the signature file is not valid JSON: it was damaged or tampered with") from None
    if not isinstance(doc, dict) or doc.get("algorithm") != ALGORITHM:
        raise SignatureError(f"the signature file is damaged or not an {ALGORITHM} signature")
    sig_text, kid = doc.get("signature"), doc.get("keyId", "")
    if not isinstance(sig_text, str) or not isinstance(kid, str):
        raise SignatureError("the signature file is damaged (fields of the wrong type)")
    try:
        raw = base64.b64decode(sig_text, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("the signature file is damaged (signature is not base64)") from None
    if len(raw) != 64:
        raise SignatureError(f"the signature file is damaged (signature is {len(raw)} bytes, expected 64)")
    return raw, kid


def verify_signature(data: bytes, signature: bytes, public_key: Path) -> None:
    """Raise SignatureError unless `signature` (a signature file's content) signs `data` with `public_key`."""
    key = load_public_key(public_key)
    raw, kid = _parse_signature(signature)
    try:
        key.verify(raw, data)
    except InvalidSignature:
        mine = key_id(key)
        if kid and kid != mine:
            raise SignatureError(
                f"signature does not match: it was made with key {kid[:19]}…, but {public_key} is key {mine[:19]}…",
                hint="pass the public key that belongs to the signing key, or the data was tampered with",
            ) from None
        raise SignatureError(
            f"signature does not match the signed data under the key {public_key}",
            hint="the data was tampered with after signing, or the key is wrong",
        ) from None

"""Test PKI: a throw-away CA, a server certificate for 127.0.0.1/localhost, and the
token server's ES256 signing key and certificate.

Owns nothing but PEM files in a directory given by the caller. Layout written by
:func:`make_tls_files` (the CA sits alone in ``ca/`` so that directory can be given
to ``skopeo --cert-dir``, which treats every ``*.crt`` there as a CA and every
``*.key`` as a client key)::

    <dir>/ca/ca.crt     CA certificate
    <dir>/ca-key.pem    CA private key
    <dir>/server.crt    server certificate (SAN: IP 127.0.0.1, IP ::1, DNS localhost)
    <dir>/server.key    server private key
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PathLike = Union[str, Path]

_VALIDITY = datetime.timedelta(days=3650)


@dataclass(frozen=True)
class TLSFiles:
    """Paths of a CA and a server certificate signed by it."""

    ca_file: Path
    ca_key_file: Path
    cert_file: Path
    key_file: Path

    @property
    def ca_dir(self) -> Path:
        """Directory holding only ``ca.crt`` (usable as ``skopeo --cert-dir``)."""
        return self.ca_file.parent


@dataclass(frozen=True)
class SigningKey:
    """ES256 key + self-signed certificate used to sign registry tokens."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    key_file: Path
    cert_file: Path

    @property
    def cert_der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _write_cert(cert: x509.Certificate, path: Path) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ocp-bundler tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _self_signed_ca(key: ec.EllipticCurvePrivateKey, common_name: str) -> x509.Certificate:
    name = _name(common_name)
    start = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def make_tls_files(
    directory: PathLike,
    *,
    hosts: Sequence[str] = ("127.0.0.1", "::1", "localhost"),
    expired: bool = False,
) -> TLSFiles:
    """Create a CA and a server certificate for ``hosts`` (IPs become IP SANs, the rest
    DNS SANs) under ``directory``; return their paths. ``expired``: the server
    certificate's validity ended ten days ago."""
    out = Path(directory)
    (out / "ca").mkdir(parents=True, exist_ok=True)

    ca_key = _new_key()
    ca_cert = _self_signed_ca(ca_key, "ocp-bundler test CA")

    sans: List[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))

    key = _new_key()
    start = _now() - datetime.timedelta(days=20) if expired else _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0] if hosts else "localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=10) if expired else start + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    files = TLSFiles(
        ca_file=out / "ca" / "ca.crt",
        ca_key_file=out / "ca-key.pem",
        cert_file=out / "server.crt",
        key_file=out / "server.key",
    )
    _write_cert(ca_cert, files.ca_file)
    _write_key(ca_key, files.ca_key_file)
    _write_cert(cert, files.cert_file)
    _write_key(key, files.key_file)
    return files


def make_token_signing_key(directory: PathLike, *, common_name: Optional[str] = None) -> SigningKey:
    """Create an ES256 (P-256) key and a self-signed certificate for it under
    ``directory`` (``token-signing.crt`` / ``token-signing.key``). The certificate is
    what goes into the registry's ``auth.token.rootcertbundle`` and, base64 DER, into
    each token's ``x5c`` header."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    key = _new_key()
    cert = _self_signed_ca(key, common_name or "ocp-bundler test token signer")
    signing = SigningKey(
        key=key,
        cert=cert,
        key_file=out / "token-signing.key",
        cert_file=out / "token-signing.crt",
    )
    _write_key(key, signing.key_file)
    _write_cert(cert, signing.cert_file)
    return signing

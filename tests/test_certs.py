"""The registry's CA and server certificate (`bundler.quay.certs`), checked with `cryptography` and a real TLS
handshake through Python's `ssl` (OpenSSL) verifying the chain and the host name / IP."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import stat
import threading
from pathlib import Path
from typing import List

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from bundler.quay.certs import (
    CertificatePaths,
    ensure_certificates,
    install_user_certificate,
    issue_server_certificate,
    load_certificates,
    make_ca,
)
from bundler.base.errors import UsageError


def _paths(tmp_path: Path) -> CertificatePaths:
    return CertificatePaths.in_directories(tmp_path / "ca", tmp_path / "config")


def _not_after(cert: x509.Certificate) -> datetime.datetime:
    return cert.not_valid_after_utc


def _not_before(cert: x509.Certificate) -> datetime.datetime:
    return cert.not_valid_before_utc


def _handshake(paths: CertificatePaths, server_name: str, connect_host: str = "127.0.0.1") -> None:
    """Serve ssl.cert/ssl.key on loopback and connect verifying with ca.crt and `server_name`."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(str(paths.server_cert), str(paths.server_key))
    client_ctx = ssl.create_default_context(cafile=str(paths.ca_cert))
    listener = socket.socket()
    listener.bind((connect_host, 0))
    listener.listen(1)
    errors: List[BaseException] = []

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except (ssl.SSLError, OSError) as exc:
            errors.append(exc)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        with socket.create_connection(listener.getsockname()[:2], timeout=5) as raw:
            with client_ctx.wrap_socket(raw, server_hostname=server_name) as tls:
                tls.sendall(b"x")
    finally:
        t.join(5)
        listener.close()


def test_ca_and_server_certificate_properties(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    result = ensure_certificates(paths, hostname="mirror.example.com", extra_names=["10.1.2.3", "127.0.0.1", "registry.example.com", "::1"])
    assert result.ca_created and result.server_issued and result.ca_file == paths.ca_cert

    chain = load_certificates(paths.server_cert)
    ca = load_certificates(paths.ca_cert)[0]
    assert len(chain) == 2 and chain[1] == ca  # ssl.cert = leaf + CA chain
    leaf = chain[0]
    leaf.verify_directly_issued_by(ca)

    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["mirror.example.com", "registry.example.com"]
    assert set(san.get_values_for_type(x509.IPAddress)) == {ipaddress.ip_address("10.1.2.3"), ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")}

    # validity: server >= 2 years (and <= 825 days), CA 10 years
    assert _not_after(leaf) - _not_before(leaf) >= datetime.timedelta(days=730)
    assert _not_after(leaf) - _not_before(leaf) <= datetime.timedelta(days=826)
    assert _not_after(ca) - _not_before(ca) >= datetime.timedelta(days=3649)

    # CA constraints
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca is True and bc.value.path_length == 0
    ku = ca.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    assert ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)

    # server constraints
    bc = leaf.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca is False
    ku = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest

    # modern keys: EC P-256 by default
    for cert in (leaf, ca):
        key = cert.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    assert leaf.signature_hash_algorithm is not None and leaf.signature_hash_algorithm.name == "sha256"

    # private keys are 0600
    for key_file in (paths.ca_key, paths.server_key):
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    # OpenSSL accepts the chain for the DNS name and for the IP address
    _handshake(paths, "mirror.example.com")
    _handshake(paths, "127.0.0.1")
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(paths, "other.example.com")


def test_rsa_keys_are_3072_bits_with_key_encipherment(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    ensure_certificates(paths, hostname="10.0.0.1", key_type="rsa")
    leaf, ca = load_certificates(paths.server_cert)
    for cert in (leaf, ca):
        key = cert.public_key()
        assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 3072
    ku = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and ku.key_encipherment
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.1")]
    assert san.get_values_for_type(x509.DNSName) == []


def test_rerun_reuses_everything_and_new_names_reissue_with_the_same_ca(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    ensure_certificates(paths, hostname="mirror.example.com", extra_names=["10.0.0.5"])
    files = (paths.ca_cert, paths.ca_key, paths.server_cert, paths.server_key)
    before = [f.read_bytes() for f in files]

    again = ensure_certificates(paths, hostname="MIRROR.example.com", extra_names=["10.0.0.5"])
    assert not again.changed
    assert [f.read_bytes() for f in files] == before

    # a new name: the leaf is re-issued, the CA clients already trust stays
    moved = ensure_certificates(paths, hostname="mirror.example.com", extra_names=["10.0.0.5", "10.0.0.6"])
    assert moved.server_issued and not moved.ca_created
    assert paths.ca_cert.read_bytes() == before[0] and paths.ca_key.read_bytes() == before[1]
    assert paths.server_cert.read_bytes() != before[2]
    leaf = load_certificates(paths.server_cert)[0]
    leaf.verify_directly_issued_by(load_certificates(paths.ca_cert)[0])


def test_a_half_missing_ca_is_refused_not_replaced(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    ensure_certificates(paths, hostname="mirror.example.com")
    paths.ca_key.unlink()
    with pytest.raises(UsageError, match="only one of"):
        ensure_certificates(paths, hostname="mirror.example.com")


def test_user_certificate_is_checked_and_installed(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    ca_key, ca = make_ca()
    key, leaf = issue_server_certificate(ca_key, ca, dns_names=["quay.corp.example"], ip_addresses=[])

    def pem(cert: x509.Certificate) -> bytes:
        return cert.public_bytes(serialization.Encoding.PEM)

    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (tmp_path / "chain.pem").write_bytes(pem(leaf) + pem(ca))
    (tmp_path / "leaf.pem").write_bytes(pem(leaf))
    (tmp_path / "key.pem").write_bytes(key_pem)
    (tmp_path / "ca.pem").write_bytes(pem(ca))
    paths = _paths(tmp_path / "out")

    # the self-signed root at the end of the chain becomes the CA to trust
    result = install_user_certificate(paths, cert_file=tmp_path / "chain.pem", key_file=tmp_path / "key.pem", hostname="quay.corp.example")
    assert result.user_provided and result.ca_file == paths.ca_cert
    assert paths.ca_cert.read_bytes() == pem(ca)
    assert paths.server_cert.read_bytes() == pem(leaf) + pem(ca)
    assert stat.S_IMODE(paths.server_key.stat().st_mode) == 0o600
    assert not paths.ca_key.exists()  # we never had the user's CA key
    _handshake(paths, "quay.corp.example")
    again = install_user_certificate(paths, cert_file=tmp_path / "chain.pem", key_file=tmp_path / "key.pem", hostname="quay.corp.example")
    assert not again.changed

    # a leaf alone, CA given separately
    other = _paths(tmp_path / "out2")
    result = install_user_certificate(other, cert_file=tmp_path / "leaf.pem", key_file=tmp_path / "key.pem", ca_file=tmp_path / "ca.pem", hostname="quay.corp.example")
    assert result.ca_file == other.ca_cert

    # wrong names, wrong key
    with pytest.raises(UsageError, match="does not cover"):
        install_user_certificate(other, cert_file=tmp_path / "chain.pem", key_file=tmp_path / "key.pem", hostname="other.example")
    wrong_key, _ = make_ca()
    (tmp_path / "wrong.pem").write_bytes(wrong_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(UsageError, match="does not belong"):
        install_user_certificate(other, cert_file=tmp_path / "chain.pem", key_file=tmp_path / "wrong.pem", hostname="quay.corp.example")
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(UsageError, match="no PEM certificate"):
        install_user_certificate(other, cert_file=tmp_path / "junk.pem", key_file=tmp_path / "key.pem", hostname="quay.corp.example")

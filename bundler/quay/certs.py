"""The TLS material of a mirror registry: a private CA and a server certificate it signs.

Owns the files Quay reads from its config volume (`ssl.cert` = leaf + CA chain, `ssl.key`) and the CA
that clients must trust (PROTOCOL-NOTES §4, "TLS"). Made with `cryptography`:

- CA: EC P-256 (or RSA 3072), `basicConstraints CA:TRUE, pathlen:0` (critical), key usage
  keyCertSign + cRLSign (critical), subject key identifier, valid 10 years;
- server: same key type, SANs = the hostname (DNS or IP) plus any extra DNS names and IP addresses,
  `basicConstraints CA:FALSE`, key usage digitalSignature (+ keyEncipherment for RSA), extended key usage
  serverAuth, authority/subject key identifiers, valid 825 days (> 2 years; the longest validity macOS/iOS
  accept for a TLS server certificate).

Reruns reuse what exists: the CA is never replaced while its files are there (clients already trust it);
the server certificate is re-issued with that CA only when it no longer covers the wanted names or is
within 30 days of expiry. Keys are written 0600, atomically.

Users who bring their own certificate (`--ssl-cert/--ssl-key`) get it checked (the key matches, the names
are covered) and copied into place; the CA to trust is then theirs (`--ssl-ca`, or the self-signed root found
at the end of their chain).
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bundler.base.errors import UsageError
from bundler.base.fsutil import atomic_write
from bundler.base.safefile import read_regular

log = logging.getLogger(__name__)

CA_VALIDITY = datetime.timedelta(days=3650)
SERVER_VALIDITY = datetime.timedelta(days=825)
RENEW_BEFORE = datetime.timedelta(days=30)
RSA_BITS = 3072
KEY_TYPES = ("ec", "rsa")

PrivateKey = Union[ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey]


@dataclass(frozen=True)
class CertificatePaths:
    """Where the CA and the server certificate live. `server_cert` holds the leaf followed by the CA."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path

    @classmethod
    def in_directories(cls, ca_dir: Path, server_dir: Path) -> "CertificatePaths":
        return cls(ca_dir / "ca.crt", ca_dir / "ca.key", server_dir / "ssl.cert", server_dir / "ssl.key")


@dataclass(frozen=True)
class CertificateResult:
    paths: CertificatePaths
    ca_created: bool
    server_issued: bool
    user_provided: bool = False
    ca_file: Optional[Path] = None
    """The CA clients must trust (None when a user's certificate chains to a CA we were not given)."""

    @property
    def changed(self) -> bool:
        return self.ca_created or self.server_issued


def split_names(names: Sequence[str]) -> Tuple[List[str], List[str]]:
    """(DNS names, IP addresses) from a mixed list, de-duplicated, order kept."""
    dns: List[str] = []
    ips: List[str] = []
    for n in names:
        n = n.strip().strip("[]")
        if not n:
            continue
        try:
            ip = str(ipaddress.ip_address(n))
        except ValueError:
            if n.lower() not in dns:
                dns.append(n.lower())
        else:
            if ip not in ips:
                ips.append(ip)
    return dns, ips


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _new_key(key_type: str) -> PrivateKey:
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    raise UsageError(f"unknown key type {key_type!r}", hint=f"use one of {', '.join(KEY_TYPES)}")


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _not_after(cert: x509.Certificate) -> datetime.datetime:
    value: Optional[datetime.datetime] = getattr(cert, "not_valid_after_utc", None)
    if value is None:  # cryptography < 42
        value = cert.not_valid_after.replace(tzinfo=datetime.timezone.utc)
    return value


def _subject(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ocp-bundler mirror registry"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]),
        ]
    )


def make_ca(*, key_type: str = "ec", common_name: str = "ocp-bundler mirror registry CA") -> Tuple[PrivateKey, x509.Certificate]:
    key = _new_key(key_type)
    name = _subject(common_name)
    start = _now() - datetime.timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
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
    return key, cert


def issue_server_certificate(
    ca_key: PrivateKey,
    ca_cert: x509.Certificate,
    *,
    dns_names: Sequence[str],
    ip_addresses: Sequence[str],
    key_type: str = "ec",
) -> Tuple[PrivateKey, x509.Certificate]:
    if not dns_names and not ip_addresses:
        raise UsageError("a server certificate needs at least one host name or IP address")
    key = _new_key(key_type)
    sans: List[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    start = _now() - datetime.timedelta(minutes=5)
    is_rsa = isinstance(key, rsa.RSAPrivateKey)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_subject((list(dns_names) + list(ip_addresses))[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + SERVER_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=is_rsa,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


# -- reading -------------------------------------------------------------------------------------------------


MAX_PEM_BYTES = 1024 * 1024
"""Largest certificate or key file read (a CA bundle of a few hundred certificates)."""


def load_certificates(path: Path) -> List[x509.Certificate]:
    try:
        data = read_regular(path, max_size=MAX_PEM_BYTES, what="certificate file", follow_links=True)
    except FileNotFoundError:
        raise UsageError(f"certificate file {path} does not exist") from None
    marker = b"-----END CERTIFICATE-----"
    blocks = [b + marker for b in data.split(marker) if b"-----BEGIN CERTIFICATE-----" in b]
    try:
        certs = [x509.load_pem_x509_certificate(b.strip() + b"\n") for b in blocks]
    except ValueError:
        certs = []
    if not certs:
        raise UsageError(f"{path} holds no PEM certificate", hint="give a PEM file (-----BEGIN CERTIFICATE-----)")
    return certs


def load_private_key(path: Path) -> PrivateKey:
    try:
        data = read_regular(path, max_size=MAX_PEM_BYTES, what="key file", follow_links=True)
    except FileNotFoundError:
        raise UsageError(f"key file {path} does not exist") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise UsageError(f"{path} is not an unencrypted PEM private key", hint="decrypt it first (openssl pkey -in KEY -out KEY.plain)") from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise UsageError(f"{path}: only RSA and EC keys are supported")
    return key


def certificate_names(cert: x509.Certificate) -> Tuple[List[str], List[str]]:
    """(DNS names, IP addresses) of a certificate's subjectAltName."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    dns = [n.lower() for n in san.get_values_for_type(x509.DNSName)]
    ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return dns, ips


def covers(cert: x509.Certificate, dns_names: Sequence[str], ip_addresses: Sequence[str]) -> bool:
    have_dns, have_ips = certificate_names(cert)
    for name in dns_names:
        name = name.lower()
        if name in have_dns:
            continue
        wildcard = "*." + name.split(".", 1)[1] if "." in name else None
        if wildcard is None or wildcard not in have_dns:
            return False
    return all(str(ipaddress.ip_address(ip)) in have_ips for ip in ip_addresses)


def _same_public_key(key: PrivateKey, cert: x509.Certificate) -> bool:
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key.public_key().public_bytes(*fmt) == cert.public_key().public_bytes(*fmt)


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    verify = getattr(cert, "verify_directly_issued_by", None)
    if verify is None:  # cryptography < 40: names only
        return bool(cert.issuer == issuer.subject)
    try:
        verify(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


# -- the use-case --------------------------------------------------------------------------------------------


def ensure_certificates(
    paths: CertificatePaths,
    *,
    hostname: str,
    extra_names: Sequence[str] = (),
    key_type: str = "ec",
) -> CertificateResult:
    """Make (or reuse) the CA and a server certificate for `hostname` + `extra_names` (DNS names or IPs)."""
    dns, ips = split_names([hostname, *extra_names])
    ca_created = False
    if paths.ca_cert.exists() and paths.ca_key.exists():
        ca_cert = load_certificates(paths.ca_cert)[0]
        ca_key = load_private_key(paths.ca_key)
        if not _same_public_key(ca_key, ca_cert):
            raise UsageError(f"{paths.ca_key} does not belong to {paths.ca_cert}", hint="restore the matching pair, or remove both to make a new CA")
    else:
        if paths.ca_cert.exists() or paths.ca_key.exists():
            raise UsageError(
                f"only one of {paths.ca_cert} and {paths.ca_key} exists",
                hint="restore the missing file, or remove both to make a new CA (clients must then trust the new one)",
            )
        ca_key, ca_cert = make_ca(key_type=key_type)
        atomic_write(paths.ca_key, _key_pem(ca_key), mode=0o600)
        atomic_write(paths.ca_cert, _cert_pem(ca_cert), mode=0o644)
        ca_created = True
        log.info("created a CA in %s", paths.ca_cert)

    if not ca_created and _server_is_current(paths, ca_cert, dns, ips):
        return CertificateResult(paths, ca_created=False, server_issued=False, ca_file=paths.ca_cert)

    key, cert = issue_server_certificate(ca_key, ca_cert, dns_names=dns, ip_addresses=ips, key_type=key_type)
    atomic_write(paths.server_key, _key_pem(key), mode=0o600)
    atomic_write(paths.server_cert, _cert_pem(cert) + _cert_pem(ca_cert), mode=0o644)
    log.info("issued a server certificate for %s", ", ".join(dns + ips))
    return CertificateResult(paths, ca_created=ca_created, server_issued=True, ca_file=paths.ca_cert)


def _server_is_current(paths: CertificatePaths, ca_cert: x509.Certificate, dns: Sequence[str], ips: Sequence[str]) -> bool:
    if not (paths.server_cert.exists() and paths.server_key.exists()):
        return False
    try:
        chain = load_certificates(paths.server_cert)
        key = load_private_key(paths.server_key)
    except UsageError:
        return False
    leaf = chain[0]
    return (
        _same_public_key(key, leaf)
        and _signed_by(leaf, ca_cert)
        and covers(leaf, dns, ips)
        and _not_after(leaf) - _now() > RENEW_BEFORE
    )


def install_user_certificate(
    paths: CertificatePaths,
    *,
    cert_file: Path,
    key_file: Path,
    ca_file: Optional[Path] = None,
    hostname: str,
    extra_names: Sequence[str] = (),
) -> CertificateResult:
    """Check a certificate the user brings and copy it (and its CA, when known) into place."""
    chain = load_certificates(cert_file)
    key = load_private_key(key_file)
    leaf = chain[0]
    if not _same_public_key(key, leaf):
        raise UsageError(f"the key in {key_file} does not belong to the certificate in {cert_file}", hint="give the matching --ssl-key")
    dns, ips = split_names([hostname, *extra_names])
    if not covers(leaf, dns, ips):
        have_dns, have_ips = certificate_names(leaf)
        raise UsageError(
            f"the certificate in {cert_file} does not cover {', '.join(dns + ips)} (it names {', '.join(have_dns + have_ips) or 'nothing'})",
            hint="issue it with a subjectAltName for the registry host name, or use another --hostname",
        )
    if _not_after(leaf) <= _now():
        raise UsageError(f"the certificate in {cert_file} expired on {_not_after(leaf):%Y-%m-%d}", hint="renew it and rerun")
    ca_pem: Optional[bytes] = None
    if ca_file is not None:
        ca_pem = b"".join(_cert_pem(c) for c in load_certificates(ca_file))
        cas = load_certificates(ca_file)
        if not chain[1:] and not any(_signed_by(leaf, ca) for ca in cas):
            log.warning("the certificate in %s is not directly signed by the CA in %s", cert_file, ca_file)
    elif len(chain) > 1 and chain[-1].issuer == chain[-1].subject:
        ca_pem = _cert_pem(chain[-1])
    full_chain = b"".join(_cert_pem(c) for c in chain)
    changed = not (paths.server_cert.exists() and paths.server_cert.read_bytes() == full_chain)
    changed = changed or not (paths.server_key.exists() and paths.server_key.read_bytes() == key_file.read_bytes())
    if changed:
        atomic_write(paths.server_cert, full_chain, mode=0o644)
        atomic_write(paths.server_key, key_file.read_bytes(), mode=0o600)
    out_ca: Optional[Path] = None
    if ca_pem is not None:
        if not (paths.ca_cert.exists() and paths.ca_cert.read_bytes() == ca_pem):
            atomic_write(paths.ca_cert, ca_pem, mode=0o644)
        out_ca = paths.ca_cert
    return CertificateResult(paths, ca_created=False, server_issued=changed, user_provided=True, ca_file=out_ca)

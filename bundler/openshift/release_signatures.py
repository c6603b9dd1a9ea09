"""Release signatures: fetch `signature-1..N` of a release digest from a signature store.

Owns PROTOCOL-NOTES §5 "Release signatures" on the connected side: signatures are published per release
manifest digest as ``<store>/<algorithm>=<hex>/signature-<N>``, N = 1, 2, ... until the first 404. They are
OpenPGP-wrapped "atomic container signature" documents; they are carried as opaque bytes (the cluster
checks them against its own keyring); `verify_gpg` checks one against a given public key on the connected
side (pack `--release-key`). `bundler.openshift.resources` turns them into the
``openshift-config-managed`` ConfigMaps on the far side, from `ReleaseSignature(digest, index, data)`.

A digest without any published signature is not an error here (nightlies and OKD are not signed): the
caller gets an empty list and decides (the release planner records a warning).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Iterable, List, Mapping, Optional, Sequence

from bundler.openshift.cincinnati import HttpFetcher
from bundler.oci.digest import Digest
from bundler.base.errors import IntegrityError, RegistryError, RegistryUnreachableError, UsageError
from bundler.registry.client import TransportOptions, redact

if TYPE_CHECKING:
    from bundler.openshift.resources import ReleaseSignature

log = logging.getLogger(__name__)

DEFAULT_SIGNATURE_STORE = "https://mirror.openshift.com/pub/openshift-v4/signatures/openshift/release"
#: A store that keeps answering 200 must not loop forever.
MAX_SIGNATURES = 32
MAX_SIGNATURE_BYTES = 1 << 20


def signature_url(store: str, digest: str, index: int) -> str:
    d = Digest.parse(digest)
    return f"{store.rstrip('/')}/{d.algorithm}={d.encoded}/signature-{index}"


def fetch_signatures(
    digest: str,
    *,
    store: str = DEFAULT_SIGNATURE_STORE,
    fetcher: Optional[HttpFetcher] = None,
    options: TransportOptions = TransportOptions(),
    max_signatures: int = MAX_SIGNATURES,
) -> List[bytes]:
    """`signature-1..N` of `digest` from `store`, in order; empty when the store has none (404 on the first)."""
    own = fetcher is None
    http = fetcher or HttpFetcher(options)
    found: List[bytes] = []
    try:
        for index in range(1, max_signatures + 1):
            url = signature_url(store, digest, index)
            try:
                answer = http.get(url, what=f"release signature {index} of {Digest.parse(digest).short}", max_bytes=MAX_SIGNATURE_BYTES)
            except RegistryUnreachableError as exc:
                raise RegistryUnreachableError(
                    exc.message,
                    url=exc.url,
                    temporary=exc.temporary,
                    hint=f"{exc.hint}; or set signatures: false to carry no release signatures" if exc.hint else "set signatures: false to carry none",
                ) from None
            if answer.status == 404 or (answer.status == 403 and index > 1):
                break  # S3-style stores answer 403 for a missing key
            if answer.status != 200:
                raise RegistryError(
                    f"signature store {redact(store)} answered HTTP {answer.status} for {digest} signature-{index}",
                    status=answer.status,
                    url=redact(url),
                    hint="check the signature store URL, or set signatures: false to carry none",
                )
            if not answer.data:
                raise RegistryError(f"signature store {redact(store)} served an empty signature-{index} for {digest}", url=redact(url))
            found.append(answer.data)
    finally:
        if own:
            http.close()
    log.debug("%s: %d signature(s) from %s", digest, len(found), redact(store))
    return found


def fetch_all(
    digests: Iterable[str],
    *,
    store: str = DEFAULT_SIGNATURE_STORE,
    options: TransportOptions = TransportOptions(),
    workers: int = 8,
) -> Dict[str, List[bytes]]:
    """Signatures of every digest (in parallel), keyed by digest; digests without signatures map to []."""
    unique = list(dict.fromkeys(digests))
    with HttpFetcher(options) as http, ThreadPoolExecutor(max_workers=max(1, min(workers, len(unique) or 1))) as pool:
        results = list(pool.map(lambda d: fetch_signatures(d, store=store, fetcher=http), unique))
    return dict(zip(unique, results))


def is_openpgp_key(data: bytes) -> bool:
    """An armored OpenPGP public key block, or a binary one (a public-key packet first)."""
    return data.lstrip().startswith(b"-----BEGIN PGP PUBLIC KEY BLOCK-----") or (bool(data) and data[0] in (0x98, 0x99, 0x9A, 0xC6))


def dearmor(data: bytes) -> bytes:
    """The binary form of an (armored) OpenPGP key block; binary input is returned as it is."""
    text = data.lstrip()
    if not text.startswith(b"-----BEGIN "):
        return data
    lines = text.decode("ascii", "replace").splitlines()[1:]
    while lines and lines[0].strip() and ":" in lines[0]:
        lines.pop(0)  # armor headers (Version:, Comment:)
    body = []
    for line in lines:
        line = line.strip()
        if not line:
            continue
        if line.startswith("=") or line.startswith("-----END"):
            break
        body.append(line)
    try:
        return base64.b64decode("".join(body), validate=True)
    except (binascii.Error, ValueError):
        raise UsageError("the OpenPGP key is not valid ASCII armor", hint="export it with gpg --export [--armor]") from None


def verify_gpg(signature: bytes, *, digest: str, keyring: bytes) -> bool:
    """Whether `signature` (an OpenPGP-signed atomic container signature) is signed by a key in `keyring`
    and names `digest`. Checked with `gpgv` (shipped with apt on every Debian and Ubuntu). A good signature
    naming another digest is an `IntegrityError`."""
    gpgv = shutil.which("gpgv")
    if gpgv is None:
        raise UsageError("gpgv is needed to check OpenPGP release signatures and is not installed", hint="apt-get install gpgv")
    with tempfile.TemporaryDirectory(prefix="ocpb-gpgv-") as tmp:
        ring = Path(tmp) / "keyring.gpg"
        ring.write_bytes(dearmor(keyring))
        sig = Path(tmp) / "signature"
        sig.write_bytes(signature)
        proc = subprocess.run(
            [gpgv, "--homedir", tmp, "--keyring", str(ring), "--output", "-", str(sig)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False, timeout=60,
        )
    log.debug("gpgv for %s: exit %d: %s", digest, proc.returncode, proc.stderr.decode("utf-8", "replace").strip())
    if proc.returncode != 0:
        return False
    try:
        named = str(json.loads(proc.stdout)["critical"]["image"]["docker-manifest-digest"])
    except (ValueError, KeyError, TypeError):
        raise IntegrityError(f"release signature of {digest}: the signed content is not an atomic container signature") from None
    if named != digest:
        raise IntegrityError(f"release signature of {digest}: a good signature names {named} instead")
    return True


def as_release_signatures(signatures: Mapping[str, Sequence[bytes]]) -> List[ReleaseSignature]:
    """The `ReleaseSignature`s `bundler.openshift.resources` writes ConfigMaps from (index 1-based, in store order)."""
    from bundler.openshift.resources import ReleaseSignature  # the far side's resources: not loaded by pack

    return [
        ReleaseSignature(digest=digest, index=i, data=data)
        for digest in sorted(signatures)
        for i, data in enumerate(signatures[digest], start=1)
    ]

"""Release signatures: fetch `signature-1..N` of a release digest from a signature store.

Owns PROTOCOL-NOTES §5 "Release signatures" on the connected side: signatures are published per release
manifest digest as ``<store>/<algorithm>=<hex>/signature-<N>``, N = 1, 2, ... until the first 404. They are
OpenPGP-wrapped "atomic container signature" documents; they are carried as opaque bytes (verification is
the cluster's job, against its own keyring). `bundler.openshift.resources` turns them into the
``openshift-config-managed`` ConfigMaps on the far side, from `ReleaseSignature(digest, index, data)`.

A digest without any published signature is not an error here (nightlies and OKD are not signed): the
caller gets an empty list and decides (the release planner records a warning).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

from bundler.openshift.cincinnati import HttpFetcher
from bundler.oci.digest import Digest
from bundler.base.errors import RegistryError, RegistryUnreachableError
from bundler.registry.client import TransportOptions, redact
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


def as_release_signatures(signatures: Mapping[str, Sequence[bytes]]) -> List[ReleaseSignature]:
    """The `ReleaseSignature`s `bundler.openshift.resources` writes ConfigMaps from (index 1-based, in store order)."""
    return [
        ReleaseSignature(digest=digest, index=i, data=data)
        for digest in sorted(signatures)
        for i, data in enumerate(signatures[digest], start=1)
    ]

"""Pack's signature step: which carried manifests to look up signatures for, and the release checks.

Owns the part of pack between "every image is pulled" and "write the bundle": the subjects whose
sigstore signatures `bundler.openshift.sigstore.find_signatures` looks up (every image pulled from a
registry and every child of a list; images built here, such as pruned catalogs, have no upstream
signature), and `verify_releases`: with `--release-key`, each release digest's signatures are checked
against the given keys (cosign `.sig` with a PEM public key, `signature-N` with an OpenPGP key). A release
whose signatures do not check out stops the pack (`IntegrityError`, exit 3); without a key the report says
plainly that nothing was verified.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from bundler.base.errors import BundlerError, IntegrityError, SignatureError, UsageError
from bundler.oci.digest import Digest
from bundler.oci.media import Descriptor, is_index, parse_manifest
from bundler.oci.planned import PlannedImage
from bundler.oci.reference import Reference
from bundler.openshift import sigstore
from bundler.transfer.transports import ImageSource

log = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES = 1 << 20
_SIGNATURE_FILE = re.compile(r"^signatures/(sha256|sha512)-([0-9a-f]{64}|[0-9a-f]{128})-([1-9][0-9]*)$")

#: (planned image, its digest) for every image carried.
Carried = Sequence[Tuple[PlannedImage, str]]


def subjects(carried: Carried, *, open_image: Callable[[PlannedImage], ImageSource]) -> List[sigstore.Subject]:
    """Every manifest whose signatures to look up: each image pulled from a registry, and its children (an
    image built here or read from a local OCI layout has no registry to hold its signatures)."""
    out: List[sigstore.Subject] = []
    for img, digest in carried:
        if img.kind == sigstore.SIGNATURE_KIND or img.in_layout or img.local_layout is not None:
            continue
        ref = Reference.parse(img.source)
        repository = f"{ref.registry}/{ref.repository}"
        out.append(sigstore.Subject(repository=repository, digest=digest, target_repository=img.target_repository))
        try:
            top = open_image(img).resolve()
        except BundlerError as exc:  # the image itself is reported by the pull; its children are not looked up
            log.debug("children of %s: %s", img.source, exc)
            continue
        if is_index(top.media_type):
            for child in parse_manifest(top.raw, top.media_type).children:
                out.append(sigstore.Subject(repository=repository, digest=str(child.digest), target_repository=img.target_repository))
    return out


def release_signatures_in(files: Mapping[str, bytes]) -> Dict[str, List[bytes]]:
    """Release digest -> its `signature-N` in order, from the files pack carries (``signatures/<alg>-<hex>-<N>``)."""
    found: Dict[str, List[Tuple[int, bytes]]] = {}
    for name, data in files.items():
        match = _SIGNATURE_FILE.match(name)
        if match is not None:
            algorithm, encoded, index = match.groups()
            found.setdefault(f"{algorithm}:{encoded}", []).append((int(index), data))
    return {digest: [data for _, data in sorted(items)] for digest, items in found.items()}


def _read_blob(source: ImageSource, digest: Digest) -> bytes:
    chunks: List[bytes] = []
    total = 0
    with source.open_blob(Descriptor(media_type="", digest=digest, size=0), 0) as stream:
        while True:
            data = stream.read(1 << 16)
            if not data:
                break
            total += len(data)
            if total > MAX_PAYLOAD_BYTES:
                raise IntegrityError(f"signature payload {digest} is larger than {MAX_PAYLOAD_BYTES} bytes")
            chunks.append(data)
    raw = b"".join(chunks)
    if Digest.of(raw) != digest:
        raise IntegrityError(f"signature payload {digest} arrived with digest {Digest.of(raw)}")
    return raw


def verify_releases(
    releases: Sequence[Tuple[str, str]],
    *,
    keys: Sequence[Path],
    signature_images: Sequence[PlannedImage],
    open_image: Callable[[PlannedImage], ImageSource],
    release_signatures: Mapping[str, Sequence[bytes]],
) -> List[str]:
    """Check every release (label, digest) against `keys`; one report line per release.

    Each release needs at least one signature, cosign or OpenPGP, that a given key made and that names its
    digest; otherwise `IntegrityError` lists those that failed."""
    from bundler.openshift.release_signatures import is_openpgp_key, verify_gpg  # only with --release-key

    cosign_keys = []
    gpg_keys = []
    for path in keys:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read release key {path}: {exc.strerror}") from None
        if is_openpgp_key(data):
            gpg_keys.append((path, data))
        else:
            cosign_keys.append((path, sigstore.load_public_key(data, name=str(path))))
    by_signed: Dict[str, List[PlannedImage]] = {}
    for img in signature_images:
        if img.annotations.get(sigstore.SCHEME) == sigstore.SCHEME_COSIGN:
            by_signed.setdefault(img.annotations[sigstore.SIGNS], []).append(img)
    lines: List[str] = []
    failed: List[str] = []
    for label, digest in releases:
        how: Optional[str] = None
        for sig_image in by_signed.get(digest, []):
            source = open_image(sig_image)
            manifest = source.resolve()
            for path, key in cosign_keys:
                if sigstore.verify_cosign(manifest.raw, read_blob=lambda d: _read_blob(source, d), signed_digest=digest, key=key, where=f"cosign signature of release {label}"):
                    how = f"cosign signature verified with {path.name}"
                    break
            if how:
                break
        if how is None:
            for index, data in enumerate(release_signatures.get(digest, ()), start=1):
                for path, keyring in gpg_keys:
                    if verify_gpg(data, digest=digest, keyring=keyring):
                        how = f"signature-{index} (OpenPGP) verified with {path.name}"
                        break
                if how:
                    break
        if how is None:
            failed.append(f"{label} ({digest})")
            lines.append(f"release {label}: NO signature verified with the given key(s)")
        else:
            lines.append(f"release {label}: {how}")
    if failed:
        raise SignatureError(
            f"release signature check failed: no signature made by the given key(s) for {', '.join(failed)}",
            hint="check --release-key (a cosign PEM public key or an OpenPGP public key) and that the releases are signed",
        )
    return lines

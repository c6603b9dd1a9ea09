"""Sigstore signatures of carried images: finding them upstream, naming them on the mirror, checking them.

Owns the sigstore side of OpenShift 4.21's default ClusterImagePolicy (release images whose signatures are
not in the mirror fail to run there):

* cosign's tag scheme: the signature of the manifest `sha256:<hex>` in repository R is the OCI manifest at
  ``R:sha256-<hex>.sig``; each layer (media type `SIMPLE_SIGNING`) is a "simple signing" JSON payload naming
  the signed digest (``critical.image.docker-manifest-digest``), and its annotation
  ``dev.cosignproject.cosign/signature`` holds the base64 ECDSA signature of that payload;
* OCI 1.1 referrers (manifests whose ``subject`` is the image): through the referrers API where the source
  registry serves it, otherwise through the fallback tag schema ``R:sha256-<hex>`` (an index of them);
* `find_signatures`: for every carried image (and every child of a list) one manifest HEAD for the
  ``.sig`` tag and one referrers look-up, in parallel; each find becomes a `PlannedImage` of kind
  ``signature`` with the signed image's target repository and the same tag, digest-pinned, so the copy
  engine carries it byte for byte and unpack pushes it next to its image;
* `verify_cosign`: a simple-signing payload against a PEM public key (ECDSA P-256/SHA-256, as
  ``cosign generate-key-pair`` makes; RSA and Ed25519 keys work too).

Referrers found through the API have no tag upstream; they are carried under ``ocpb-ref-sha256-<hex>``
tags (a tag keeps Quay from collecting them). A far-side registry with the referrers API lists them from
their ``subject``; one without it holds them by that tag only.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from bundler.base.errors import IntegrityError, RegistryError, UsageError
from bundler.oci.digest import Digest
from bundler.oci.planned import PlannedImage, digest_tag
from bundler.oci.reference import Reference
from bundler.registry.client import Registries
from bundler.transfer.transports import pull_location

log = logging.getLogger(__name__)

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
SIGNATURE_KIND = "signature"
#: Annotation keys a carried signature is recorded with.
SIGNS = "signs"
SCHEME = "signature-scheme"
SCHEME_COSIGN = "cosign"
SCHEME_REFERRER = "referrer"
SCHEME_REFERRERS_TAG = "referrers-tag"


def signature_tag(digest: str) -> str:
    """cosign's tag for the signature of `digest`: ``sha256-<hex>.sig``."""
    d = Digest.parse(digest)
    return f"{d.algorithm}-{d.encoded}.sig"


def referrers_tag(digest: str) -> str:
    """The OCI 1.1 referrers fallback tag of `digest`: ``sha256-<hex>``."""
    d = Digest.parse(digest)
    return f"{d.algorithm}-{d.encoded}"


@dataclass(frozen=True)
class Subject:
    """One manifest whose signatures to look for: where it lives upstream and where it goes on the mirror."""

    repository: str
    """`host/path` of the source repository."""
    digest: str
    target_repository: str


@dataclass
class SignatureReport:
    """What the signature look-up found, for the pack summary and `reports/plan.json`."""

    removed: bool = False
    """`--remove-signatures`: nothing was looked up or carried."""
    checked: int = 0
    """Manifests (images and list children) whose signatures were looked up."""
    cosign: int = 0
    referrers: int = 0
    referrers_tags: int = 0
    signed: int = 0
    """Manifests with at least one signature carried."""
    verification: List[str] = field(default_factory=list)
    """One line per release signature check; empty when no key was given."""
    verified: bool = False
    """True when at least one release signature was checked against a given key."""

    @property
    def carried(self) -> int:
        return self.cosign + self.referrers + self.referrers_tags

    def summary(self) -> str:
        if self.removed:
            return "Signatures: none carried (--remove-signatures)"
        parts = [f"{self.cosign} cosign .sig"]
        if self.referrers or self.referrers_tags:
            parts.append(f"{self.referrers} referrers, {self.referrers_tags} referrers tags")
        return f"Signatures: {self.carried} carried ({', '.join(parts)}) for {self.signed} of {self.checked} manifests checked"

    def to_json(self) -> Dict[str, Any]:
        return {
            "removed": self.removed,
            "checked": self.checked,
            "carried": self.carried,
            "cosign": self.cosign,
            "referrers": self.referrers,
            "referrersTags": self.referrers_tags,
            "signed": self.signed,
            "verified": self.verified,
            "verification": list(self.verification),
        }


@dataclass(frozen=True)
class SignatureFindings:
    images: Tuple[PlannedImage, ...]
    report: SignatureReport


def find_signatures(subjects: Sequence[Subject], *, registries: Registries, workers: int = 8) -> SignatureFindings:
    """Every cosign signature and OCI 1.1 referrer of `subjects` upstream, planned next to their images."""
    unique = list({(s.repository, s.digest, s.target_repository): s for s in subjects}.values())
    api: Dict[str, bool] = {}
    """host -> whether it serves the referrers API (learnt from the first answer)."""

    def look(s: Subject) -> List[PlannedImage]:
        ref = pull_location(registries, Reference.parse(f"{s.repository}@{s.digest}"))  # a mirror's copy has them too
        client = registries.client(ref.registry)
        found: List[PlannedImage] = []

        def planned(tag: str, digest: Optional[Digest], scheme: str, upstream_ref: str) -> None:
            if digest is None:
                digest = client.get_manifest(ref.repository, upstream_ref).digest
            found.append(
                PlannedImage(
                    source=f"{s.repository}@{digest}",
                    kind=SIGNATURE_KIND,
                    target_repository=s.target_repository,
                    target_tag=tag,
                    digest=str(digest),
                    annotations={SIGNS: s.digest, SCHEME: scheme},
                )
            )

        sig = signature_tag(s.digest)
        head = client.head_manifest(ref.repository, sig)
        if head is not None:
            planned(sig, head.digest, SCHEME_COSIGN, sig)
        referrers = None
        if api.get(ref.registry) is not False:
            try:
                referrers = client.get_referrers(ref.repository, Digest.parse(s.digest))
            except RegistryError as exc:  # an API we may not use is an API we do not have: the tag schema remains
                log.debug("referrers of %s@%s: %s; using the referrers tag instead", s.repository, s.digest, exc)
            api.setdefault(ref.registry, referrers is not None)
        if referrers is not None:
            for d in referrers:
                if head is not None and head.digest == d.digest:
                    continue
                planned(digest_tag(str(d.digest), prefix="ocpb-ref"), d.digest, SCHEME_REFERRER, str(d.digest))
        else:
            tag = referrers_tag(s.digest)
            index = client.head_manifest(ref.repository, tag)
            if index is not None:
                planned(tag, index.digest, SCHEME_REFERRERS_TAG, tag)
        return found

    report = SignatureReport(checked=len(unique))
    if not unique:
        return SignatureFindings((), report)
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(unique)))) as pool:
        results = list(pool.map(look, unique))
    images: Dict[Tuple[str, str], PlannedImage] = {}
    for per_subject in results:
        if per_subject:
            report.signed += 1
        for img in per_subject:
            key = (img.target_repository, img.target_tag)
            prev = images.get(key)
            if prev is not None:
                if prev.digest != img.digest:
                    log.warning("%s:%s: two different signatures upstream (%s, %s); carrying the first", key[0], key[1], prev.source, img.source)
                continue
            images[key] = img
            scheme = img.annotations[SCHEME]
            if scheme == SCHEME_COSIGN:
                report.cosign += 1
            elif scheme == SCHEME_REFERRER:
                report.referrers += 1
            else:
                report.referrers_tags += 1
    return SignatureFindings(tuple(images.values()), report)


# --- verification --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimpleSigningPayload:
    """The parts of a simple-signing payload a check needs."""

    digest: str
    """``critical.image.docker-manifest-digest``: the manifest it signs."""
    reference: str
    """``critical.identity.docker-reference``: the repository it was signed for."""

    @classmethod
    def parse(cls, raw: bytes, *, where: str) -> "SimpleSigningPayload":
        try:
            obj = json.loads(raw)
            critical = obj["critical"]
            digest = str(critical["image"]["docker-manifest-digest"])
            reference = str((critical.get("identity") or {}).get("docker-reference", ""))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise IntegrityError(f"{where}: not a simple-signing payload (no critical.image.docker-manifest-digest)") from None
        return cls(digest=digest, reference=reference)


PublicKey = Any  # one of cryptography's EC / RSA / Ed25519 public keys


def load_public_key(data: bytes, *, name: str) -> PublicKey:
    """A PEM public key (cosign.pub, ``openssl pkey -pubout``); refused with a clear line otherwise."""
    # cryptography is imported only where a key is used: finding signatures (every pack) needs none of it.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise UsageError(f"{name} is not a PEM public key", hint="give the cosign public key (cosign.pub) or an OpenPGP public key") from None
    if not isinstance(key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey, ed25519.Ed25519PublicKey)):
        raise UsageError(f"{name}: unsupported key type {type(key).__name__}", hint="use an ECDSA (cosign's default), RSA or Ed25519 key")
    return key


def signature_is_valid(key: PublicKey, payload: bytes, signature: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, payload, padding.PKCS1v15(), hashes.SHA256())
        else:
            key.verify(signature, payload)
    except InvalidSignature:
        return False
    return True


def verify_cosign(
    signature_manifest: bytes,
    *,
    read_blob: Callable[[Digest], bytes],
    signed_digest: str,
    key: PublicKey,
    where: str,
) -> bool:
    """Whether any simple-signing layer of a cosign signature manifest is signed by `key` and names
    `signed_digest`. A layer signed by the key but naming another digest is an `IntegrityError`."""
    try:
        obj = json.loads(signature_manifest)
        layers = obj.get("layers") or []
    except (ValueError, AttributeError):
        raise IntegrityError(f"{where}: the signature manifest is not JSON") from None
    for layer in layers:
        if not isinstance(layer, dict) or layer.get("mediaType") != SIMPLE_SIGNING:
            continue
        encoded = (layer.get("annotations") or {}).get(SIGNATURE_ANNOTATION)
        if not encoded:
            continue
        try:
            signature = base64.b64decode(str(encoded), validate=True)
        except (binascii.Error, ValueError):
            continue
        payload = read_blob(Digest.parse(str(layer.get("digest"))))
        if not signature_is_valid(key, payload, signature):
            continue
        parsed = SimpleSigningPayload.parse(payload, where=where)
        if parsed.digest != signed_digest:
            raise IntegrityError(f"{where}: a valid signature names {parsed.digest}, not the image's {signed_digest}")
        return True
    return False

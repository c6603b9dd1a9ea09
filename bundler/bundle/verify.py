"""Proving a bundle is intact on the far side: signature, every volume, every tar member, every blob.

Owns `verify_bundle` (spec: "Verify" in the bundle issue). In order:

1. the signature over the exact bytes of `bundle-manifest.json` (Ed25519, `bundler.bundle.signing`); an unsigned
   bundle passes with a loud warning unless a signature is required (`require_signature`, or a `key` was
   given: a stripped signature must not silently downgrade the check);
2. the manifest is parsed and checked field by field;
3. every volume is read ONCE, in 4 MiB chunks, volumes in parallel threads (hashlib and zstd release the
   GIL): the same buffer feeds the volume's sha256 (on a helper thread), the tar header scanner (regular
   files with safe names only: `../`, absolute paths, links and devices are `UnsafeArchiveError`) and the
   hashers of the blobs and files whose data lies in it (decompressing zstd-stored ones and checking the
   original digest). A blob continued from the previous volume is hashed in the same pass when that
   volume is already done, otherwise its continuation is re-read afterwards (only that part);
4. the image graphs are walked: every blob an image needs is carried or listed as left to the base.

The single pass over the volumes is `bundle.volume_pass`, the tar header checks `bundle.tarscan`; this module
judges what they found.

Every problem is collected; then one `IntegrityError` (exit 3) is raised whose first line is a summary
(how many problems, which volumes to re-copy) and whose next lines name each problem precisely: a missing,
truncated, altered or swapped volume, the bad blob (its role, digest and volume), an unsafe member, a
signature that does not match.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple

from bundler.base.errors import BundlerError, IntegrityError, SignatureError, UsageError
from bundler.base.progress import NullProgress, Progress
from bundler.bundle.manifest import (
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    MAX_SIGNATURE_BYTES,
    SIGNATURE_NAME,
    BundleBlob,
    BundleImage,
    BundleManifest,
    BundleVolume,
    is_volume_name,
    read_bundle_file,
)
from bundler.bundle.problems import Problem, raise_problems
from bundler.bundle.volume_pass import ItemCheck, VolumeOutcome, finish_deferred, read_volumes
from bundler.bundle.volumes import STATE_NAME, Bundle, read_manifest
from bundler.oci.digest import Digest
from bundler.oci.graph import walk_manifests
from bundler.oci.media import Descriptor, FetchedManifest, detect_media_type, parse_manifest

log = logging.getLogger(__name__)

UNSIGNED_WARNING = (
    "THE BUNDLE IS NOT SIGNED: nothing proves who wrote it. Checksums only catch accidental damage; "
    "sign bundles with pack --sign-key and verify with --key (or --require-signature)."
)

@dataclass(frozen=True)
class VerifyResult:
    directory: Path
    bundle_id: str
    signed: bool
    """True when the signature was checked against a key and matches."""
    key_id: Optional[str]
    warnings: Tuple[str, ...]
    volumes_checked: int
    blobs_checked: int
    files_checked: int
    bytes: int
    seconds: float

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> Dict[str, Any]:
        return {
            "ok": True,
            "directory": str(self.directory),
            "id": self.bundle_id,
            "signed": self.signed,
            "keyId": self.key_id,
            "warnings": list(self.warnings),
            "volumesChecked": self.volumes_checked,
            "blobsChecked": self.blobs_checked,
            "filesChecked": self.files_checked,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "mbPerSecond": round(self.mb_per_s, 1),
        }


def verify_bundle(
    directory: Path,
    *,
    key: Optional[Path] = None,
    require_signature: bool = False,
    progress: Progress = NullProgress(),
    workers: int = 2,
) -> VerifyResult:
    """Check a bundle completely; raise IntegrityError (exit 3) listing every problem, or return what was checked."""
    started = time.monotonic()
    directory = Path(directory)
    if directory.is_file() and directory.name == MANIFEST_NAME:
        directory = directory.parent
    if require_signature and key is None:
        raise UsageError("--require-signature needs the public key", hint="pass --key bundle.pub")
    from bundler.bundle.signing import key_id, load_public_key

    public = load_public_key(key) if key is not None else None
    head = _check_signature(directory, key, require_signature)
    manifest, problems, warnings = head.manifest, head.problems, head.warnings
    warnings.extend(_stray_files(directory, manifest))
    workers = max(1, workers)
    checks, outcomes = read_volumes(directory, manifest, progress, workers)
    bad_volumes = _judge_volumes(directory, manifest, outcomes, problems)
    suppressed, verified = _judge_items(directory, checks, bad_volumes, workers, problems)
    if not problems:
        problems.extend(_graph_problems(directory, manifest, head.raw, verified))
    if problems:
        raise_problems(directory, problems, suppressed=suppressed)

    for w in warnings:
        log.warning("%s", w)
    return VerifyResult(
        directory=directory,
        bundle_id=manifest.id,
        signed=head.signed,
        key_id=key_id(public) if public is not None and head.signed else None,
        warnings=tuple(warnings),
        volumes_checked=len(manifest.volumes),
        blobs_checked=len(manifest.blobs),
        files_checked=len(manifest.files),
        bytes=sum(out.size for out in outcomes),
        seconds=time.monotonic() - started,
    )


@dataclass
class _Head:
    """The manifest as parsed, its bytes, and what the signature check found."""

    manifest: BundleManifest
    raw: bytes
    signed: bool
    problems: List[Problem]
    warnings: List[str]


def _check_signature(directory: Path, key: Optional[Path], require_signature: bool) -> _Head:
    """Step 1: the signature over the manifest's bytes as stored, then the parsed manifest (or exit 3)."""
    from bundler.bundle.signing import verify_signature

    warnings: List[str] = []
    problems: List[Problem] = []
    try:
        manifest, raw = read_manifest(directory)
        parse_error: Optional[BundlerError] = None
    except IntegrityError as exc:
        manifest, parse_error = None, exc
        try:
            raw = read_bundle_file(directory / MANIFEST_NAME, max_size=MAX_MANIFEST_BYTES)
        except (OSError, IntegrityError):
            raise exc from None
    sig_path = directory / SIGNATURE_NAME
    signed = False
    if os.path.lexists(sig_path):
        if key is not None:
            try:
                verify_signature(raw, _read_signature(sig_path), key)
                signed = True
            except SignatureError as exc:
                problems.append(Problem("signature", f"{MANIFEST_NAME} does not match its signature {SIGNATURE_NAME}: the manifest was tampered with, or {key} is not the key it was signed with ({exc})"))
        else:
            warnings.append("the bundle is signed but no --key was given: the signature was NOT checked")
    elif key is not None or require_signature:
        problems.append(Problem("signature", f"the bundle is not signed (no {SIGNATURE_NAME}), but a signed bundle is required: it was stripped of its signature, or packed without --sign-key"))
    else:
        warnings.append(UNSIGNED_WARNING)
    if parse_error is not None or manifest is None:
        problems.append(Problem("manifest", f"{parse_error}"))
        raise_problems(directory, problems)
    assert manifest is not None
    return _Head(manifest, raw, signed, problems, warnings)


def _read_signature(path: Path) -> bytes:
    try:
        return read_bundle_file(path, max_size=MAX_SIGNATURE_BYTES)
    except IntegrityError as exc:
        raise SignatureError(str(exc)) from None
    except OSError as exc:
        raise SignatureError(f"{path.name} cannot be read ({exc.strerror or exc})") from None


def _stray_files(directory: Path, manifest: BundleManifest) -> List[str]:
    """Step 2: warnings about what is on disk besides the listed volumes."""
    warnings: List[str] = []
    listed = {v.name for v in manifest.volumes}
    extra = sorted(p.name for p in directory.glob("bundle-*.tar") if is_volume_name(p.name) and p.name not in listed)
    if extra:
        warnings.append(f"volume files not listed in the manifest (ignored): {', '.join(extra)}")
    if (directory / STATE_NAME).exists():
        warnings.append(f"{STATE_NAME} is present: a later pack into this directory did not finish")
    return warnings


def _judge_volumes(directory: Path, manifest: BundleManifest, outcomes: Sequence[VolumeOutcome], problems: List[Problem]) -> Set[str]:
    """Each volume against its record: missing, swapped, truncated, grown, altered, or its members wrong.

    Adds to `problems`; returns the volumes whose blobs cannot be judged."""
    bad_volumes: Set[str] = set()
    by_sha: Dict[str, str] = {}
    for v in manifest.volumes:
        if v.sha256 is not None:  # version 2 volumes carry none: their blobs' digests prove them
            by_sha.setdefault(v.sha256, v.name)
    for out in outcomes:
        v = out.volume
        if out.unreadable is not None:
            problems.append(Problem("volume", out.unreadable, v.name))
            bad_volumes.add(v.name)
            continue
        if not out.present:
            problems.append(Problem("volume", f"{v.name} is missing: copy it from the source media into {directory}", v.name))
            bad_volumes.add(v.name)
            continue
        if out.scanner is not None:
            problems.extend(p for p in out.scanner.problems if p.category == "unsafe")
        if v.sha256 is None and out.size != v.size:
            problems.append(Problem("volume", _size_problem(v, out.size), v.name))
            bad_volumes.add(v.name)
            continue
        if v.sha256 is not None and out.sha256 != v.sha256:
            problem, unusable = _volume_mismatch(out, by_sha)
            problems.append(problem)
            if unusable:
                bad_volumes.add(v.name)
            elif out.scanner is not None:
                problems.extend(p for p in out.scanner.problems if p.category == "member")
            continue
        if out.size != v.size:  # the content hashes right, so the record of its size is what lies
            problems.append(Problem("manifest", f"{MANIFEST_NAME} records {v.name} as {v.size} bytes, but it is {out.size} bytes with the recorded sha256: the manifest was altered"))
            bad_volumes.add(v.name)
            continue
        # intact volume: its members must be exactly what the manifest says
        problems.extend(_structure_problems(manifest, v, out))
    return bad_volumes


def _volume_mismatch(out: VolumeOutcome, by_sha: Mapping[str, str]) -> Tuple[Problem, bool]:
    """What is wrong with a volume whose sha256 differs, and whether its blobs are beyond judging."""
    v = out.volume
    assert v.sha256 is not None
    other = by_sha.get(out.sha256 or "")
    if other is not None and other != v.name:
        return Problem("volume", f"{v.name} holds the content of {other} (volumes swapped or renamed): give each file its right name, or re-copy {v.name}", v.name), True
    if out.size != v.size:
        return Problem("volume", _size_problem(v, out.size), v.name), True
    return Problem("volume", f"{v.name} is altered (sha256 {out.sha256[7:23] if out.sha256 else '?'}…, expected {v.sha256[7:23]}…): re-copy {v.name}", v.name), False


def _judge_items(directory: Path, checks: Sequence[ItemCheck], bad_volumes: Set[str], workers: int, problems: List[Problem]) -> Tuple[int, Set[Digest]]:
    """Step 4: finish split blobs, then judge each blob and file. Returns (how many could not be judged, digests verified)."""
    suppressed = 0
    live = []
    for check in checks:
        if any(p.volume in bad_volumes for p in check.item.parts):
            check.unverifiable = True
            suppressed += 1
        else:
            live.append(check)
    deferred = [c for c in live if c.next_part < len(c.item.parts) and c.error is None]
    if deferred:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="verify-split") as pool:
            list(pool.map(lambda c: finish_deferred(directory, c), deferred))
    verified: Set[Digest] = set()
    for check in live:
        why = check.outcome()
        if why is None:
            if isinstance(check.item, BundleBlob):
                verified.add(check.item.digest)
            continue
        volumes = sorted({p.volume for p in check.item.parts})
        problems.append(Problem("blob", f"{check.label}: {why}", volumes[0] if len(volumes) == 1 else None))
    return suppressed, verified


def _size_problem(v: BundleVolume, size: int) -> str:
    if size < v.size:
        return f"{v.name} is truncated: {size} of {v.size} bytes: re-copy {v.name}"
    return f"{v.name} is {size} bytes, {size - v.size} more than recorded ({v.size}): re-copy {v.name}"


def _structure_problems(manifest: BundleManifest, volume: BundleVolume, out: VolumeOutcome) -> List[Problem]:
    problems: List[Problem] = []
    scanner = out.scanner
    if scanner is None:
        return problems
    problems.extend(p for p in scanner.problems if p.category == "member")
    if not scanner.ended:
        problems.append(Problem("member", f"{volume.name} has no tar end-of-archive marker: re-copy {volume.name}", volume.name))
    expected = {}
    for item in list(manifest.blobs) + list(manifest.files):
        for part in item.parts:
            if part.volume == volume.name:
                expected[(part.member, part.offset)] = part.length
    found = {(name, offset): size for name, offset, size in scanner.members}
    for key, length in expected.items():
        if found.get(key) != length:
            problems.append(Problem("member", f"{volume.name}: member {key[0]} is not at offset {key[1]} with {length} bytes as the manifest records", volume.name))
    for key in found:
        if key not in expected:
            problems.append(Problem("member", f"{volume.name}: member {key[0]} at offset {key[1]} is not in the manifest", volume.name))
    for seg in out.beyond_end:
        problems.append(Problem("member", f"{volume.name}: {seg.check.label} lies beyond the end of the volume", volume.name))
    return problems


def _graph_problems(directory: Path, manifest: BundleManifest, raw: bytes, verified: Set[Digest]) -> List[Problem]:
    """Every blob each image needs is carried (or left to the base bundle)."""
    bundle = Bundle(directory, manifest, raw)
    base = {b.digest for b in manifest.base_blobs}
    problems: List[Problem] = []
    done: Set[Digest] = set()

    def read(image: BundleImage, digest: Digest, media_type: str) -> Optional[FetchedManifest]:
        """A manifest from the bundle, once across all images; None (and a problem) when it cannot be."""
        if digest in done:
            return None
        done.add(digest)
        if digest not in verified:
            where = "left to the base bundle" if digest in base else "not in the bundle"
            problems.append(Problem("graph", f"image {image.source} ({image.target}): manifest {digest} is {where}"))
            return None
        try:
            data = bundle.read_blob(digest)
            media_type = detect_media_type(data, media_type or None)
            parse_manifest(data, media_type)
        except BundlerError as exc:
            problems.append(Problem("graph", f"image {image.source}: manifest {digest} cannot be read ({exc})"))
            return None
        return FetchedManifest(data, media_type, digest)

    for image in manifest.images:
        top = read(image, image.digest, image.media_type)
        if top is None:
            continue

        def fetch(d: Descriptor, image: BundleImage = image) -> Optional[FetchedManifest]:
            return read(image, d.digest, d.media_type)

        for node in walk_manifests(top, fetch, description=f"image {image.source}"):
            for b in node.blobs:
                d = b.digest
                if d not in verified and d not in base:
                    problems.append(Problem("graph", f"image {image.source} ({image.target}): blob {d} is neither in the bundle nor in its base"))
    return problems

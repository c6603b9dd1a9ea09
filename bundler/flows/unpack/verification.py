"""Verification once per unchanged bundle: `verify_bundle`, unless a full verification of these very files
is on record (the record and the fingerprint that identifies the files live here).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from bundler.base.errors import BundlerError
from bundler.base.fsutil import atomic_write
from bundler.bundle.manifest import MANIFEST_NAME, MAX_MANIFEST_BYTES, MAX_SIGNATURE_BYTES, SIGNATURE_NAME, BundleManifest, read_bundle_file
from bundler.flows.unpack.model import UnpackOptions

if TYPE_CHECKING:
    from bundler.bundle.verify import VerifyResult

log = logging.getLogger(__name__)

STAMP_VERSION = 1


def default_state_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ocp-bundler" / "verified"


def verify_once(directory: Path, options: UnpackOptions) -> Tuple[str, List[str]]:
    """`verify_bundle`, unless a full verification of these very files is on record.

    The record (in `state_dir`) holds the sha256 of the manifest and of its signature and, for every volume,
    device, inode, size, mtime and ctime (ctime cannot be set back by a user: any write or re-copy changes
    it). When all of that is unchanged and the record is at least as strong as what is asked now (same key,
    signature required), the volumes are not hashed again; the signature is still checked against the key.
    Whatever is pushed is checked by the registry against its digest in any case.
    """
    from bundler.bundle.verify import verify_bundle

    fingerprint = _fingerprint(directory)
    stamp_path = _stamp_path(options.state_dir, directory, fingerprint)
    current_key = _key_id(options.key) if options.key is not None else None
    if not options.reverify and fingerprint is not None and stamp_path is not None:
        stamp = _read_stamp(stamp_path)
        if (
            stamp is not None
            and stamp.get("fingerprint") == fingerprint
            and (current_key is None or stamp.get("keyId") == current_key)
            and (not (options.require_signature or options.key) or stamp.get("signed") is True)
        ):
            if options.key is not None:
                from bundler.bundle.signing import verify_signature

                raw = read_bundle_file(directory / MANIFEST_NAME, max_size=MAX_MANIFEST_BYTES)
                verify_signature(raw, read_bundle_file(directory / SIGNATURE_NAME, max_size=MAX_SIGNATURE_BYTES), options.key)
            when = str(stamp.get("verifiedAt", "?"))
            log.info("%s was fully verified at %s and its files are unchanged: not hashing the volumes again", directory, when)
            return f"unchanged since a full verification at {when}", [str(w) for w in stamp.get("warnings", [])]
    log.info("verifying %s", directory)
    result = verify_bundle(directory, key=options.key, require_signature=options.require_signature, progress=options.progress)
    record_verification(directory, result, fingerprint=fingerprint, state_dir=options.state_dir)
    return "full", list(result.warnings)


def record_verification(directory: Path, result: VerifyResult, *, fingerprint: Optional[Dict[str, Any]], state_dir: Optional[Path] = None) -> None:
    """Remember a successful full verification of these very files (`fingerprint` taken before it started),
    so that `unpack` need not hash the volumes again. Nothing is recorded if the files changed meanwhile."""
    stamp_path = _stamp_path(state_dir, directory, fingerprint)
    if fingerprint is None or stamp_path is None or fingerprint != _fingerprint(directory):
        return
    record = {
        "version": STAMP_VERSION,
        "directory": str(directory.resolve()),
        "bundleId": result.bundle_id,
        "fingerprint": fingerprint,
        "signed": result.signed,
        "keyId": result.key_id,
        "warnings": list(result.warnings),
        "verifiedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    try:
        stamp_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(stamp_path, (json.dumps(record, indent=1) + "\n").encode(), mode=0o600)
    except OSError as exc:
        log.debug("cannot record the verification in %s: %s", stamp_path, exc)


def bundle_fingerprint(directory: Path) -> Optional[Dict[str, Any]]:
    """What identifies these bundle files for a verification record (None when something cannot be read)."""
    return _fingerprint(directory)


def _fingerprint(directory: Path) -> Optional[Dict[str, Any]]:
    """What identifies these bundle files (see `verify_once`); None when something cannot be read."""
    try:
        raw = read_bundle_file(directory / MANIFEST_NAME, max_size=MAX_MANIFEST_BYTES)
        signature = directory / SIGNATURE_NAME
        sig = read_bundle_file(signature, max_size=MAX_SIGNATURE_BYTES) if os.path.lexists(signature) else None
        manifest = BundleManifest.from_bytes(raw, where=MANIFEST_NAME)
        volumes = {}
        for volume in manifest.volumes:
            st = (directory / volume.name).stat()
            volumes[volume.name] = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
    except (OSError, BundlerError):
        return None
    return {
        "manifest": hashlib.sha256(raw).hexdigest(),
        "signature": hashlib.sha256(sig).hexdigest() if sig is not None else None,
        "volumes": volumes,
    }


def _stamp_path(state_dir: Optional[Path], directory: Path, fingerprint: Optional[Dict[str, Any]]) -> Optional[Path]:
    if fingerprint is None:
        return None
    where = hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:16]
    return Path(state_dir or default_state_dir()) / f"{str(fingerprint['manifest'])[:32]}-{where}.json"


def _read_stamp(path: Path) -> Optional[Dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("version") == STAMP_VERSION else None


def _key_id(path: Path) -> str:
    from bundler.bundle.signing import key_id, load_public_key

    return key_id(load_public_key(path))

"""Content digests and verified streaming.

Owns the `Digest` value type (OCI image-spec "Digests": `algorithm:encoded`, sha256 and sha512) and the
helpers that hash bytes while they stream, so nothing is ever trusted before its digest is checked.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from typing import Callable, Optional, Protocol

from bundler.base.errors import DigestMismatchError, InvalidReferenceError

CHUNK_SIZE = 1 << 20

_ENCODED = {"sha256": re.compile(r"^[a-f0-9]{64}$"), "sha512": re.compile(r"^[a-f0-9]{128}$")}


class Readable(Protocol):
    def read(self, n: int = ...) -> bytes: ...


class Writable(Protocol):
    def write(self, data: bytes) -> int: ...


@dataclass(frozen=True, order=True)
class Digest:
    algorithm: str
    encoded: str

    @classmethod
    def parse(cls, text: str) -> "Digest":
        algorithm, sep, encoded = text.partition(":")
        pattern = _ENCODED.get(algorithm)
        if not sep or pattern is None or not pattern.match(encoded):
            raise InvalidReferenceError(f"invalid digest {text!r}", hint="expected sha256:<64 hex digits>")
        return cls(algorithm, encoded)

    @classmethod
    def of(cls, data: bytes) -> "Digest":
        return cls("sha256", hashlib.sha256(data).hexdigest())

    def new_hasher(self) -> "hashlib._Hash":
        return hashlib.new(self.algorithm)

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.encoded}"

    @property
    def short(self) -> str:
        return f"{self.algorithm}:{self.encoded[:12]}"


def hash_file(path: "str | os.PathLike[str]", *, algorithm: str = "sha256", on_bytes: Optional[Callable[[int], None]] = None) -> str:
    """Hex digest of a file, read in large chunks (hashlib releases the GIL on big buffers)."""
    hasher = hashlib.new(algorithm)
    buf = bytearray(4 * CHUNK_SIZE)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            hasher.update(view[:n])
            if on_bytes is not None:
                on_bytes(n)
    return hasher.hexdigest()


def copy_verified(
    src: Readable,
    dst: Writable,
    *,
    hasher: "hashlib._Hash",
    limit: Optional[int] = None,
    on_bytes: Optional[Callable[[int], None]] = None,
) -> int:
    """Copy `src` into `dst` feeding `hasher`; stop after `limit` bytes when given. Returns bytes copied."""
    copied = 0
    while limit is None or copied < limit:
        want = CHUNK_SIZE if limit is None else min(CHUNK_SIZE, limit - copied)
        chunk = src.read(want)
        if not chunk:
            break
        hasher.update(chunk)
        dst.write(chunk)
        copied += len(chunk)
        if on_bytes is not None:
            on_bytes(len(chunk))
    return copied


def check(expected: Digest, actual_hex: str, *, size: Optional[int] = None, actual_size: Optional[int] = None, what: str = "blob") -> None:
    """Raise DigestMismatchError when a digest (or size) differs from what was expected."""
    if size is not None and actual_size is not None and size != actual_size:
        raise DigestMismatchError(f"{what} {expected.short}: size {actual_size} bytes, expected {size}")
    if actual_hex != expected.encoded:
        raise DigestMismatchError(
            f"{what} {expected}: content hashes to {expected.algorithm}:{actual_hex[:12]}…",
            hint="the source served corrupted data; rerun to fetch it again",
        )

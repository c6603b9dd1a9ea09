"""How an item is stored: as it is (`raw`) or zstd-compressed, decided, measured and produced the same way.

Owns the compression rules (level 3, deterministic, streaming, memory flat; only when it saves >= 10 %)
and `Cursor`, which reads an item's stored bytes in order while hashing its own bytes, so a writer checks
each digest in the same pass that writes it.
"""

from __future__ import annotations

from typing import Any, Iterator, Optional, Tuple

import zstandard

from bundler.base.errors import BundlerError, IntegrityError
from bundler.bundle.manifest import TAR_BLOCK
from bundler.bundle.members import CHUNK, INLINE_LIMIT, ZSTD_LEVEL, Item

def compressor() -> zstandard.ZstdCompressor:
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True, write_checksum=False)


def _read_raw(item: Item, hasher: Optional[Any] = None) -> Iterator[bytes]:
    """The blob's own bytes in chunks (from memory or the layout), feeding `hasher`."""
    if item.data is not None:
        for i in range(0, max(1, len(item.data)), CHUNK):
            chunk = item.data[i : i + CHUNK]
            if hasher is not None:
                hasher.update(chunk)
            yield chunk
        return
    assert item.path is not None
    with open(item.path, "rb", buffering=0) as f:
        remaining = item.size
        while remaining > 0:
            chunk = f.read(min(CHUNK, remaining))
            if not chunk:
                raise IntegrityError(f"blob {item.digest} in the work layout is shorter than {item.size} bytes", hint=f"delete {item.path} and rerun pack to fetch it again")
            remaining -= len(chunk)
            if hasher is not None:
                hasher.update(chunk)
            yield chunk


def _zstd_stream(item: Item, hasher: Optional[Any] = None) -> Iterator[bytes]:
    """The zstd-compressed form of the item, deterministic (same input → same bytes)."""
    cctx = compressor()
    if item.size <= INLINE_LIMIT:
        yield cctx.compress(b"".join(_read_raw(item, hasher)))
        return
    cobj = cctx.compressobj(size=item.size)
    for chunk in _read_raw(item, hasher):
        out = cobj.compress(chunk)
        if out:
            yield out
    yield cobj.flush()


def _check_item_digest(item: Item, actual_hex: str) -> None:
    if actual_hex != item.digest.encoded:
        where = f"in the work layout ({item.path})" if item.path else "given"
        raise IntegrityError(
            f"{item.kind} {item.key} {where} does not match its digest (content hashes to {item.digest.algorithm}:{actual_hex[:12]}…)",
            hint="delete it and rerun pack to fetch it again" if item.path else None,
        )


def measure_stored(item: Item) -> Tuple[str, int]:
    """Decide how to store an item: ("zstd", compressed size) when that pays, else ("raw", size)."""
    if not item.compressible() or item.size < 2 * TAR_BLOCK:
        return "raw", item.size
    if item.size > INLINE_LIMIT:
        # Look at a sample first, so incompressible data is not compressed in full just to find out.
        assert item.path is not None
        with open(item.path, "rb") as f:
            sample = f.read(INLINE_LIMIT)
        if not compression_pays(len(sample), len(compressor().compress(sample))):
            return "raw", item.size
    hasher = item.digest.new_hasher()
    stored = sum(len(c) for c in _zstd_stream(item, hasher))
    _check_item_digest(item, hasher.hexdigest())
    return ("zstd", stored) if compression_pays(item.size, stored) else ("raw", item.size)


def compression_pays(size: int, compressed: int) -> bool:
    return compressed <= size * 0.9 and size - compressed >= TAR_BLOCK


class Cursor:
    """Reads an item's stored bytes sequentially (across the parts and volumes it is written in),
    hashing the item's own bytes on the way so its digest is checked as it is written."""

    def __init__(self, item: Item) -> None:
        self.item = item
        self.hasher = item.digest.new_hasher()
        self.pos = 0
        self._buf = memoryview(b"")
        if item.encoding == "zstd":
            self._gen: Iterator[bytes] = _zstd_stream(item, self.hasher)
        else:
            self._gen = _read_raw(item, self.hasher)

    def read(self, limit: int) -> memoryview:
        """Up to `limit` (≥ 1) stored bytes; empty only when the stream ended."""
        while not self._buf:
            try:
                self._buf = memoryview(next(self._gen))
            except StopIteration:
                return memoryview(b"")
        out, self._buf = self._buf[:limit], self._buf[limit:]
        self.pos += len(out)
        return out

    def skip(self, n: int) -> None:
        while n > 0:
            got = self.read(min(n, CHUNK))
            if not got:
                break
            n -= len(got)

    def finish(self) -> None:
        for _ in self._gen:  # a fully read stream; this only closes the generator
            pass
        if self.pos != self.item.stored_size:
            raise BundlerError(f"{self.item.kind} {self.item.key}: produced {self.pos} stored bytes, expected {self.item.stored_size} (compression not deterministic?)")
        _check_item_digest(self.item, self.hasher.hexdigest())

"""The tar headers of a volume, parsed from the same chunks that are being hashed.

Owns `TarScanner` (fed consecutive chunks, it records each member's name, data offset and size, and
reports as problems anything ocp-bundler never writes: links, devices, directories, extension headers,
`..` or absolute names, damaged headers) and `scan_volume`, the same checks on one volume file alone.
"""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import List, Tuple

from bundler.bundle.manifest import TAR_BLOCK, open_volume, unsafe_member_reason
from bundler.bundle.problems import Problem
from bundler.bundle.volumes import CHUNK

_TYPE_NAMES = {
    tarfile.LNKTYPE: "hard link",
    tarfile.SYMTYPE: "symbolic link",
    tarfile.CHRTYPE: "character device",
    tarfile.BLKTYPE: "block device",
    tarfile.FIFOTYPE: "FIFO",
    tarfile.DIRTYPE: "directory",
    tarfile.CONTTYPE: "contiguous file",
    tarfile.XHDTYPE: "pax extended header",
    tarfile.XGLTYPE: "pax global header",
    tarfile.GNUTYPE_LONGNAME: "GNU long name header",
    tarfile.GNUTYPE_LONGLINK: "GNU long link header",
    tarfile.GNUTYPE_SPARSE: "GNU sparse file",
}


class TarScanner:
    """Walks the tar headers of a volume from consecutive chunks; records members and unsafe ones.

    ocp-bundler writes only plain ustar regular files with relative names, so anything else (links,
    devices, directories, extension headers, `..`, absolute names) is reported.
    """

    def __init__(self, volume: str) -> None:
        self.volume = volume
        self.members: List[Tuple[str, int, int]] = []  # (name, data offset, size)
        self.problems: List[Problem] = []
        self.ended = False
        self._want = 0  # position of the next header byte needed
        self._buf = bytearray()

    def feed(self, pos: int, chunk: memoryview) -> None:
        end = pos + len(chunk)
        while not self.ended and self._want < end:
            if self._want < pos:  # pragma: no cover - chunks are consecutive
                raise AssertionError("tar scanner fed out of order")
            take = min(TAR_BLOCK - len(self._buf), end - self._want)
            self._buf += chunk[self._want - pos : self._want - pos + take]
            self._want += take
            if len(self._buf) == TAR_BLOCK:
                header_at = self._want - TAR_BLOCK
                block = bytes(self._buf)
                self._buf.clear()
                self._header(header_at, block)

    def _header(self, at: int, block: bytes) -> None:
        if block == bytes(TAR_BLOCK):
            self.ended = True
            return
        try:
            info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        except tarfile.HeaderError as exc:
            self.problems.append(Problem("member", f"{self.volume}: damaged tar header at offset {at} ({exc}): re-copy {self.volume}", self.volume))
            self.ended = True
            return
        size = info.size if info.type in tarfile.REGULAR_TYPES or info.type in (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK) else 0
        name = info.name
        kind = _TYPE_NAMES.get(info.type) if info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE) else None
        if kind is None and info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
            kind = f"member of type {info.type!r}"
        why = unsafe_member_reason(name)
        if kind is not None:
            target = f" -> {info.linkname}" if info.linkname else ""
            self.problems.append(Problem("unsafe", f"{self.volume}: unsafe member {name!r}{target} ({kind}; ocp-bundler writes regular files only): do not extract {self.volume}; re-copy it from a trusted source", self.volume))
        elif why is not None:
            self.problems.append(Problem("unsafe", f"{self.volume}: unsafe member {name!r} ({why}): do not extract {self.volume}; re-copy it from a trusted source", self.volume))
        else:
            self.members.append((name, at + TAR_BLOCK, size))
        self._want = at + TAR_BLOCK + (size + TAR_BLOCK - 1) // TAR_BLOCK * TAR_BLOCK


def scan_volume(path: Path) -> TarScanner:
    """Scan one volume file's tar headers (the same checks verify makes, on their own)."""
    scanner = TarScanner(path.name)
    with open_volume(path) as f:
        pos = 0
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        while not scanner.ended:
            n = f.readinto(buf)
            if not n:
                break
            scanner.feed(pos, view[:n])
            pos += n
    return scanner

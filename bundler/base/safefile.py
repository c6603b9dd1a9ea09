"""Opening files nobody vouches for: regular files only, links refused, sizes checked before reading.

Owns the one way ocp-bundler opens a file that came with a bundle (the manifest, its signature, the
volumes) or that a file option names (`--key`, `--config`, `--authfile`, a pull secret …). A path that is
a FIFO, a device, a socket or a directory is refused before a byte is read (a FIFO would block the
reader, `/dev/zero` never ends); a symbolic link is refused where `follow_links` is False (everything in a
bundle directory), and followed to a regular file otherwise (a file option may be a link to a real file).
The open itself uses `O_NOFOLLOW` and `O_NONBLOCK`, and `fstat` on the open descriptor decides, so swapping
the path between the check and the open gains nothing. `read_regular` refuses a file larger than its
limit before reading it, and reads at most limit + 1 bytes in case it grows meanwhile.

Refusals are `UnsafeFileError` (a `UsageError`, exit 2) naming the path and what it is; callers reading a
bundle turn them into integrity problems. A missing or unreadable file is the plain `OSError`, so each
caller keeps its own wording for those.
"""

from __future__ import annotations

import errno
import fcntl
import io
import os
import stat
from typing import Optional, Union

from bundler.base.errors import UsageError

PathLike = Union[str, "os.PathLike[str]"]


class UnsafeFileError(UsageError):
    """A path that is not a regular file (or a link where none may be), or a file over its size limit."""

    def __init__(self, message: str, *, reason: str, hint: Optional[str] = None) -> None:
        super().__init__(message, hint=hint)
        self.reason = reason
        """What the path is instead, e.g. "a FIFO", "a symbolic link", "larger than 16 MiB"."""


def describe_mode(mode: int) -> str:
    """What kind of file a `st_mode` is, for messages: "a directory", "a character device" …"""
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISREG(mode):
        return "a regular file"
    return "not a regular file"


def _refuse(path: PathLike, what: str, kind: str) -> UnsafeFileError:
    return UnsafeFileError(
        f"{what} {os.fspath(path)} is {kind}, not a regular file",
        reason=kind,
        hint="give a regular file (links, devices and FIFOs are refused)" if kind != "a directory" else "give a file, not a directory",
    )


def _too_large(path: PathLike, what: str, size: int, limit: int) -> UnsafeFileError:
    return UnsafeFileError(
        f"{what} {os.fspath(path)} is {size} bytes, more than the {limit} bytes allowed",
        reason=f"larger than {limit} bytes",
        hint="check that this is the right file",
    )


def open_regular(path: PathLike, *, what: str = "file", follow_links: bool = False, max_size: Optional[int] = None) -> io.FileIO:
    """Open `path` for reading when it is a regular file (of at most `max_size` bytes); refuse anything else.

    Raises `UnsafeFileError` for links (unless `follow_links`), FIFOs, devices, sockets, directories and
    files over `max_size`; `FileNotFoundError`/`PermissionError` as they come.
    """
    st = os.stat(path) if follow_links else os.lstat(path)  # refuse before opening: opening a device can act
    if not stat.S_ISREG(st.st_mode):
        raise _refuse(path, what, describe_mode(st.st_mode))
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if not follow_links:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_links:
            raise _refuse(path, what, "a symbolic link") from None
        raise
    try:
        st = os.fstat(fd)  # what was opened decides, not what the path was a moment ago
        if not stat.S_ISREG(st.st_mode):
            raise _refuse(path, what, describe_mode(st.st_mode))
        if max_size is not None and st.st_size > max_size:
            raise _too_large(path, what, st.st_size, max_size)
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return io.FileIO(fd, "rb", closefd=True)
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: PathLike, *, max_size: int, what: str = "file", follow_links: bool = False) -> bytes:
    """The whole content of a regular file of at most `max_size` bytes (see `open_regular`)."""
    with open_regular(path, what=what, follow_links=follow_links, max_size=max_size) as f:
        chunks = []
        left = max_size + 1
        while left > 0:
            data = f.read(min(left, 1 << 20))
            if not data:
                break
            chunks.append(data)
            left -= len(data)
    raw = b"".join(chunks)
    if len(raw) > max_size:  # it grew after the size check
        raise _too_large(path, what, len(raw), max_size)
    return raw

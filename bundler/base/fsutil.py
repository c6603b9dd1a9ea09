"""Safe file writing shared by every module that writes: atomic replace, durable renames, free space.

A file written here is either the old content or the new, never half of one: the data goes to a temporary
file in the same directory (created with its final mode, so a secret is never readable by others, and no
chmod is needed — FAT32 and some network file systems refuse one), is fsync'd, renamed into place, and the
directory is fsync'd where the platform allows it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Union

PathLike = Union[str, "os.PathLike[str]"]


def fsync_dir(directory: PathLike) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: PathLike, data: bytes, *, mode: int = 0o644) -> None:
    """Replace `path` with `data` atomically; the file has `mode` (subject to the umask) from its creation."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # created 0600
    try:
        with contextlib.suppress(OSError):  # widen to the requested mode where the file system allows it
            if mode != 0o600:
                os.fchmod(fd, mode & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def free_space(directory: PathLike) -> int:
    """Free bytes on the file system that holds `directory` (or would hold it, if it does not exist yet)."""
    probe = Path(directory)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current

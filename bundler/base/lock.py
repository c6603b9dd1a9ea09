"""One lock for everything two runs of ocp-bundler could write at the same time.

Owns `exclusive_lock`: an advisory `fcntl.flock` on a small lock file (it holds the holder's pid, for the
message). Used for pack's `--out` and work directory, the pull secret `pull-secret` edits, unpack's
verification records and `quay up`'s data directory. A run that finds the lock taken either waits (up to
`wait` seconds, for short edits such as a pull secret) or stops at once with a `LockBusyError` (exit 2)
naming the lock file and the pid holding it. The lock file is removed on release; a waiter that acquires
a lock file just removed by its holder notices (the path no longer names the locked file) and retries,
so two runs never both hold it. The kernel drops the lock when a holder dies, even by kill -9.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from pathlib import Path
from typing import Iterator, Optional

from bundler.base.errors import UsageError

LOCK_SUFFIX = ".lock"


class LockBusyError(UsageError):
    """Another run holds the lock."""

    def __init__(self, message: str, *, lock_path: Path, holder: Optional[int], hint: Optional[str] = None) -> None:
        super().__init__(message, hint=hint)
        self.lock_path = lock_path
        self.holder = holder


def _holder(fd: int) -> Optional[int]:
    with contextlib.suppress(OSError, ValueError):
        data = os.pread(fd, 32, 0)
        return int(data.decode("ascii", "replace").strip() or "x")
    return None


def _open(lock_path: Path) -> int:
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:
        return os.open(lock_path, flags, 0o600)
    except OSError as exc:
        raise UsageError(f"cannot create the lock file {lock_path}: {exc.strerror or exc}", hint="check the directory exists and is writable") from None


def _still_ours(fd: int, lock_path: Path) -> bool:
    try:
        st = os.stat(lock_path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


@contextlib.contextmanager
def exclusive_lock(lock_path: Path, *, what: str, wait: float = 0.0, hint: Optional[str] = None) -> Iterator[None]:
    """Hold an exclusive lock on `lock_path` (created if needed) for the `with` block.

    `what` names the locked thing in the message ("the bundle directory /media/usb"). With `wait` > 0,
    waits up to that many seconds for the holder to finish; then (or at once) raises `LockBusyError`.
    """
    lock_path = Path(lock_path)
    deadline = time.monotonic() + max(0.0, wait)
    delay = 0.01
    while True:
        fd = _open(lock_path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise UsageError(f"cannot lock {lock_path}: {exc.strerror or exc}") from None
            holder = _holder(fd)
            os.close(fd)
            if time.monotonic() >= deadline:
                who = f"pid {holder}" if holder else "another process"
                raise LockBusyError(
                    f"{what} is in use by another ocp-bundler run ({who} holds {lock_path})",
                    lock_path=lock_path,
                    holder=holder,
                    hint=hint or "wait for that run to finish, then try again",
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
            continue
        if not _still_ours(fd, lock_path):  # the holder removed it as we opened it: start again
            os.close(fd)
            continue
        break
    try:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock_path)  # still locked: nobody else can hold this inode while it is unlinked
        os.close(fd)


def lock_path_for(path: Path) -> Path:
    """The lock file beside `path` that guards it: `.NAME.lock` in the same directory."""
    path = Path(path)
    return path.parent / f".{path.name}{LOCK_SUFFIX}"

"""The one exception root of ocp-bundler and the exit codes every command uses.

Every error a user can meet is a `BundlerError` subclass carrying its exit code and a message that names
the thing that went wrong and what to do next. The CLI prints `str(error)` as one line and logs the
traceback to the debug log only.

Exit codes (documented in docs/REFERENCE.md):

    0  success
    1  internal error (a bug: please report it with the debug log)
    2  usage, configuration or environment error (bad flag, bad config, unknown image, disk full)
    3  integrity failure (digest, checksum, signature, unsafe archive member)
    4  partial failure (some items failed after retries; the rest is done and a rerun resumes)
    5  cannot reach or authenticate to a registry
"""

from __future__ import annotations

import enum
from typing import Optional, Sequence


class ExitCode(enum.IntEnum):
    OK = 0
    INTERNAL = 1
    USAGE = 2
    INTEGRITY = 3
    PARTIAL = 4
    REGISTRY = 5


class BundlerError(Exception):
    """Root of every error ocp-bundler raises on purpose."""

    exit_code: ExitCode = ExitCode.INTERNAL

    def __init__(self, message: str, *, hint: Optional[str] = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message)

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}: {self.hint}"
        return self.message


class UsageError(BundlerError):
    """A bad flag, argument or input file."""

    exit_code = ExitCode.USAGE


class ConfigError(UsageError):
    """An image-set config that cannot be used; the message names file, path and expectation."""


class InvalidReferenceError(UsageError):
    """An image reference that cannot be parsed."""


class ImageNotFoundError(UsageError):
    """An image (tag or digest) that the registry does not have."""


class DiskSpaceError(UsageError):
    """Not enough free space at a destination."""


class IntegrityError(BundlerError):
    """Content is not what it claims to be (digest, size, checksum, signature, archive safety)."""

    exit_code = ExitCode.INTEGRITY


class DigestMismatchError(IntegrityError):
    pass


class SignatureError(IntegrityError):
    pass


class UnsafeArchiveError(IntegrityError):
    pass


class PartialFailureError(BundlerError):
    """Some items failed after retries; everything else is done and a rerun resumes."""

    exit_code = ExitCode.PARTIAL

    def __init__(self, message: str, *, failures: Sequence[str] = (), hint: Optional[str] = None) -> None:
        super().__init__(message, hint=hint)
        self.failures = list(failures)


class RegistryError(BundlerError):
    """A registry answered with an error, or could not be reached.

    Carries the HTTP status (None for connection failures), the registry's error codes, a URL with
    credentials and query strings redacted, and whether retrying may help.
    """

    exit_code = ExitCode.REGISTRY

    def __init__(
        self,
        message: str,
        *,
        status: Optional[int] = None,
        codes: Sequence[str] = (),
        url: str = "",
        temporary: bool = False,
        hint: Optional[str] = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.codes = list(codes)
        self.url = url
        self.temporary = temporary


class RegistryUnreachableError(RegistryError):
    pass


class RangeIgnoredError(RegistryError):
    """A registry (or a proxy before it) answered a bounded `Range` request with the whole resource (200):
    the caller falls back to one stream."""


class AuthenticationError(RegistryError):
    pass


class UnsupportedError(UsageError):
    """Something we know about but do not (yet) support; the message says what instead."""

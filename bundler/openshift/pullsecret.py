"""Add the mirror registry's credentials to a pull secret or docker/containers auth file.

Owns editing one file of the shape `{"auths": {"<registry>": {"auth": base64("user:pass"), "email": ...}}}`
(an OpenShift pull secret, `~/.docker/config.json`, `${XDG_RUNTIME_DIR}/containers/auth.json`): the entry
for one registry is added or replaced, every other key and entry keeps its value, and the file is
replaced atomically with mode 0600 (PROTOCOL-NOTES §3 "Authentication" for the file format; ARCHITECTURE
habit 3 for the write). Secrets never appear in messages or logs.
"""

from __future__ import annotations

import base64
import errno
import json
import logging
import os
from pathlib import Path
from typing import Any

from bundler.base.errors import DiskSpaceError, UsageError
from bundler.base.fsutil import atomic_write
from bundler.base.jsonlimits import JsonTooDeepError, loads_bounded
from bundler.base.lock import exclusive_lock, lock_path_for
from bundler.base.safefile import UnsafeFileError, read_regular

log = logging.getLogger(__name__)

__all__ = ["add_registry_credentials"]

_FILE_MODE = 0o600


def add_registry_credentials(
    path: Path,
    *,
    registry: str,
    username: str,
    password: str,
    email: str | None = None,
) -> None:
    """Add or replace the `auths` entry for `registry` in the auth file at `path`.

    A missing file (or an empty one) starts a new `{"auths": {}}`. A single-line file (the form
    console.redhat.com hands out and install-config.yaml's pullSecret wants) stays on one line; otherwise
    the file is written indented. Raises `UsageError` for unreadable, malformed or wrongly shaped files,
    naming the file and the problem but never a secret.
    """
    _check_arguments(registry=registry, username=username, password=password, email=email)
    path = Path(path)
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    if path.exists() and not path.is_file():  # refused before a lock file is made beside it
        _read(path)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        raise _write_error(error, path) from None
    # Read, change and replace under one lock: parallel runs each add their entry, none is lost.
    with exclusive_lock(lock_path_for(path), what=f"the pull secret {path}", wait=LOCK_WAIT_SECONDS):
        _add_entry(path, registry=registry, username=username, password=password, email=email)


MAX_PULL_SECRET_BYTES = 16 * 1024 * 1024
LOCK_WAIT_SECONDS = 60.0
"""How long a run waits for another run editing the same file (each edit takes milliseconds)."""


def _add_entry(path: Path, *, registry: str, username: str, password: str, email: str | None) -> None:
    raw_text = _read(path)
    if raw_text is None or not raw_text.strip():
        document: dict[str, Any] = {}
        compact = False
    else:
        document = _parse(raw_text, path)
        compact = "\n" not in raw_text.strip()

    auths = document.setdefault("auths", {})
    if not isinstance(auths, dict):
        raise UsageError(f"{path}: 'auths' is a {_json_type(auths)}, not an object", hint="fix or remove it")
    for host, entry in auths.items():
        if not isinstance(entry, dict):
            raise UsageError(
                f"{path}: the entry for {host!r} under 'auths' is a {_json_type(entry)}, not an object",
                hint="fix or remove that entry",
            )

    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    entry_value: dict[str, Any] = {"auth": token}
    if email is not None:
        entry_value["email"] = email
    replaced = registry in auths
    auths[registry] = entry_value  # replaces in place: the key keeps its position

    if compact:
        text = json.dumps(document, separators=(",", ":")) + "\n"
    else:
        text = json.dumps(document, indent=2) + "\n"
    _write_secret_atomic(path, text.encode("utf-8"))
    log.info("%s credentials for %s in %s", "replaced" if replaced else "added", registry, path)


def _check_arguments(*, registry: str, username: str, password: str, email: str | None) -> None:
    if not registry or registry != registry.strip() or any(c.isspace() for c in registry):
        raise UsageError(f"registry {registry!r} is empty or contains whitespace", hint="give host[:port]")
    if "://" in registry:
        raise UsageError(f"registry {registry!r} has a scheme", hint="give it as host[:port], without https://")
    if not username:
        raise UsageError(f"empty user name for registry {registry}")
    if ":" in username:
        raise UsageError(
            f"the user name for registry {registry} contains ':'",
            hint="an auth entry is base64(user:password), so the user name cannot contain ':'",
        )
    if not password:
        raise UsageError(f"empty password for registry {registry}")
    if email is not None and any(c.isspace() for c in email):
        raise UsageError(f"the e-mail address for registry {registry} contains whitespace")


def _read(path: Path) -> str | None:
    try:
        raw = read_regular(path, max_size=MAX_PULL_SECRET_BYTES, what="pull secret", follow_links=True)
    except FileNotFoundError:
        return None
    except UnsafeFileError as exc:
        if exc.reason == "a directory":
            raise UsageError(f"{path} is a directory, not a pull secret file") from None
        raise UsageError(exc.message, hint="give the pull secret or auth file itself") from None
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror or type(error).__name__}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not UTF-8 text", hint="give a JSON pull secret or auth file") from None


def _parse(raw_text: str, path: Path) -> dict[str, Any]:
    try:
        document = loads_bounded(raw_text)
    except JsonTooDeepError as error:
        raise UsageError(f"{path} is not a pull secret ({error})", hint='expected {"auths": {"<registry>": {"auth": "..."}}}') from None
    except json.JSONDecodeError as error:
        # Only position and reason: the exception's own text could quote the secret it failed on.
        raise UsageError(
            f"{path} is not valid JSON ({error.msg} at line {error.lineno} column {error.colno})",
            hint='expected {"auths": {"<registry>": {"auth": "..."}}}',
        ) from None
    if not isinstance(document, dict):
        raise UsageError(
            f"{path} holds a JSON {_json_type(document)}, not an object",
            hint='expected {"auths": {"<registry>": {"auth": "..."}}}',
        )
    return document


def _write_secret_atomic(path: Path, data: bytes) -> None:
    """Write through a 0600 temp file in the same directory, fsync, `os.replace`; no partial file remains."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write(path, data, mode=_FILE_MODE)
    except OSError as error:
        raise _write_error(error, path) from None


def _write_error(error: OSError, path: Path) -> UsageError:
    if error.errno == errno.ENOSPC:
        return DiskSpaceError(f"no space left to write {path}", hint="free some space and try again")
    return UsageError(f"cannot write {path}: {error.strerror or type(error).__name__}")


def _json_type(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"

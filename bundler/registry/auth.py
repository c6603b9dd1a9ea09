"""Credentials and registry tokens.

Owns where credentials come from and how they become `Authorization` headers:

- auth files in the containers/image order (PROTOCOL-NOTES §3): `--authfile` alone when given, else
  `$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`, `~/.config/containers/auth.json`,
  `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`; the OpenShift pull secret has the same format.
  Keys may be `host`, `host/namespace[/repo]` (most specific wins) or legacy `https://host/v1/` URLs; empty
  entries are skipped; `credHelpers` / `credsStore` run `docker-credential-<name> get`.
- the Bearer-token flow (distribution `token.md`): tokens cached per (realm, service, scopes) and refreshed
  before they expire, so long pushes never die with 401 half way.

Secrets are never logged; `__repr__` of credentials hides the password.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from bundler.base.errors import UsageError
from bundler.base.safefile import UnsafeFileError, read_regular

log = logging.getLogger(__name__)

#: Refresh a token when less than this many seconds (or this fraction of its life) remain.
REFRESH_MARGIN_SECONDS = 10.0
REFRESH_MARGIN_FRACTION = 0.2


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


def default_auth_files() -> List[Path]:
    env = os.environ
    out: List[Path] = []
    if env.get("REGISTRY_AUTH_FILE"):
        out.append(Path(env["REGISTRY_AUTH_FILE"]))
    if env.get("XDG_RUNTIME_DIR"):
        out.append(Path(env["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    home = Path.home()
    out.append(home / ".config" / "containers" / "auth.json")
    if env.get("DOCKER_CONFIG"):
        out.append(Path(env["DOCKER_CONFIG"]) / "config.json")
    else:
        out.append(home / ".docker" / "config.json")
    return out


def _normalise_key(key: str) -> str:
    key = re.sub(r"^https?://", "", key.strip())
    if key.endswith("/v1/") or key.endswith("/v2/"):
        key = key[:-4]
    key = key.rstrip("/")
    if key in ("index.docker.io", "registry-1.docker.io"):
        key = "docker.io"
    return key


MAX_AUTH_FILE_BYTES = 16 * 1024 * 1024
"""Largest auth file read (a pull secret for hundreds of registries is a few KiB)."""


class CredentialStore:
    """Looks up credentials for a registry (and repository) across the auth files in precedence order."""

    def __init__(self, authfile: Optional[Path] = None, *, files: Optional[Sequence[Path]] = None) -> None:
        if authfile is not None:
            if not os.path.lexists(authfile):
                raise UsageError(f"auth file {authfile} does not exist", hint="check --authfile")
            self.files: List[Path] = [Path(authfile)]
        else:
            self.files = list(files) if files is not None else default_auth_files()
        self._loaded: List[Tuple[Path, Dict[str, Any]]] = []
        for path in self.files:
            doc = self._load(path, explicit=authfile is not None)
            if doc is not None:
                self._loaded.append((path, doc))
        self._extra: Dict[str, Credentials] = {}

    @staticmethod
    def _load(path: Path, *, explicit: bool) -> Optional[Dict[str, Any]]:
        try:
            text = read_regular(path, max_size=MAX_AUTH_FILE_BYTES, what="auth file", follow_links=True).decode("utf-8", "replace")
        except FileNotFoundError:
            return None
        except UnsafeFileError as exc:
            if explicit:
                raise UsageError(exc.message, hint="check --authfile") from None
            log.warning("WARNING: ignoring %s", exc.message)
            return None
        except OSError as exc:
            if explicit:
                raise UsageError(f"cannot read auth file {path}: {exc.strerror}") from None
            return None
        try:
            doc = json.loads(text) if text.strip() else {}
        except ValueError as exc:
            raise UsageError(f"auth file {path} is not valid JSON (line {getattr(exc, 'lineno', '?')})", hint="fix or remove it") from None
        if not isinstance(doc, dict):
            raise UsageError(f"auth file {path} is not a JSON object with an 'auths' map")
        return doc

    def add(self, registry: str, creds: Credentials) -> None:
        """Credentials given on the command line; they win over files."""
        self._extra[_normalise_key(registry)] = creds

    def lookup(self, registry: str, repository: str = "") -> Optional[Credentials]:
        registry = _normalise_key(registry)
        if registry in self._extra:
            return self._extra[registry]
        candidates = [registry]
        parts = repository.split("/") if repository else []
        for i in range(len(parts), 0, -1):
            candidates.insert(len(candidates) - 1, f"{registry}/{'/'.join(parts[:i])}")
        for path, doc in self._loaded:
            helpers = doc.get("credHelpers") or {}
            if isinstance(helpers, dict) and registry in helpers:
                creds = _run_helper(str(helpers[registry]), registry)
                if creds:
                    return creds
            auths = doc.get("auths") or {}
            if isinstance(auths, dict):
                normalised = {_normalise_key(k): v for k, v in auths.items()}
                for key in candidates:
                    creds = _decode_entry(normalised.get(key), path, key)
                    if creds:
                        return creds
            store = doc.get("credsStore")
            if isinstance(store, str) and store:
                creds = _run_helper(store, registry)
                if creds:
                    return creds
        return None


def _decode_entry(entry: Any, path: Path, key: str) -> Optional[Credentials]:
    if not isinstance(entry, Mapping):
        return None
    auth = entry.get("auth")
    if isinstance(auth, str) and auth:
        try:
            decoded = base64.b64decode(auth).decode()
        except (ValueError, UnicodeDecodeError):
            raise UsageError(f"auth file {path}: the entry for {key} is not valid base64", hint="log in again") from None
        user, sep, password = decoded.partition(":")
        if not sep:
            raise UsageError(f"auth file {path}: the entry for {key} is not 'user:password'", hint="log in again")
        return Credentials(user, password)
    username, secret = entry.get("username"), entry.get("password")
    if isinstance(username, str) and isinstance(secret, str) and username:
        return Credentials(username, secret)
    return None


def _run_helper(name: str, registry: str) -> Optional[Credentials]:
    exe = shutil.which(f"docker-credential-{name}")
    if exe is None:
        log.debug("credential helper docker-credential-%s not found", name)
        return None
    try:
        proc = subprocess.run([exe, "get"], input=registry.encode(), capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    try:
        obj = json.loads(proc.stdout)
        return Credentials(str(obj["Username"]), str(obj["Secret"]))
    except (ValueError, KeyError, TypeError):
        return None


# -- tokens --------------------------------------------------------------------------------------------------

_CHALLENGE_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


@dataclass(frozen=True)
class Challenge:
    scheme: str  # "bearer" or "basic"
    params: Mapping[str, str]


def parse_challenge(header: str) -> Optional[Challenge]:
    header = header.strip()
    if not header:
        return None
    scheme, _, rest = header.partition(" ")
    params = {m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3)) for m in _CHALLENGE_PARAM.finditer(rest)}
    return Challenge(scheme.lower(), params)


@dataclass
class _Token:
    value: str
    expires_at: float
    lifetime: float

    def fresh(self, now: float) -> bool:
        margin = min(REFRESH_MARGIN_SECONDS, self.lifetime * REFRESH_MARGIN_FRACTION)
        return now < self.expires_at - margin


class TokenCache:
    """Bearer tokens per (realm, service, scopes), refreshed before expiry. Thread-safe."""

    def __init__(self) -> None:
        self._tokens: Dict[Tuple[str, str, Tuple[str, ...]], _Token] = {}
        self._lock = threading.Lock()
        self._key_locks: Dict[Tuple[str, str, Tuple[str, ...]], threading.Lock] = {}

    def get(self, key: Tuple[str, str, Tuple[str, ...]]) -> Optional[str]:
        with self._lock:
            tok = self._tokens.get(key)
        if tok is not None and tok.fresh(time.monotonic()):
            return tok.value
        return None

    def lock_for(self, key: Tuple[str, str, Tuple[str, ...]]) -> threading.Lock:
        with self._lock:
            return self._key_locks.setdefault(key, threading.Lock())

    def put(self, key: Tuple[str, str, Tuple[str, ...]], value: str, expires_in: float) -> None:
        expires_in = max(float(expires_in), 1.0)
        with self._lock:
            self._tokens[key] = _Token(value, time.monotonic() + expires_in, expires_in)

    def invalidate(self, key: Tuple[str, str, Tuple[str, ...]]) -> None:
        with self._lock:
            self._tokens.pop(key, None)

"""The data directory of a Quay bring-up: where each of its files lives, and its state file.

Owns `QuayPaths` (`config/` with config.yaml, ssl.cert, ssl.key → Quay's config volume; `storage/` →
/datastorage; `postgres/` → /var/lib/pgsql/data; `ca/` (ca.crt, ca.key); `env/` (container env files);
`secrets.json` (0600); `state.json`; `auth.json` (0600, the push robots); `pull-secret.json` (0600, the
read-only robots); `systemd/`), the default location, and reading and writing the state file (what `quay status` and
later runs need to know).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

from bundler.base.errors import BundlerError, UsageError
from bundler.base.fsutil import atomic_write
from bundler.base.jsonlimits import loads_bounded
from bundler.base.safefile import read_regular
from bundler.quay.certs import CertificatePaths
from bundler.quay.config import load_secrets

STATE_VERSION = 1


@dataclass(frozen=True)
class QuayPaths:
    root: Path

    @property
    def config_dir(self) -> Path:
        return self.root / "config"

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.yaml"

    @property
    def storage_dir(self) -> Path:
        return self.root / "storage"

    @property
    def postgres_dir(self) -> Path:
        return self.root / "postgres"

    @property
    def ca_dir(self) -> Path:
        return self.root / "ca"

    @property
    def env_dir(self) -> Path:
        return self.root / "env"

    @property
    def secrets_file(self) -> Path:
        return self.root / "secrets.json"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def auth_file(self) -> Path:
        return self.root / "auth.json"

    @property
    def pull_secret_file(self) -> Path:
        return self.root / "pull-secret.json"

    @property
    def systemd_dir(self) -> Path:
        return self.root / "systemd"

    @property
    def work_dir(self) -> Path:
        return self.root / "tmp"

    @property
    def certificates(self) -> CertificatePaths:
        return CertificatePaths.in_directories(self.ca_dir, self.config_dir)

    def not_ours_because(self) -> Optional[str]:
        """Why this directory is not a data directory `quay up` made (None when it is one).

        It must hold what `quay up` creates first (config/, ca/, env/), nothing `quay up` never writes, and
        either a `state.json` of this tool's shape or a `secrets.json` that parses as Quay's secrets."""
        try:
            entries = {p.name for p in self.root.iterdir()}
        except OSError as exc:
            return f"it cannot be listed ({exc.strerror or exc})"
        missing = sorted(_FIRST_ENTRIES - entries)
        if missing:
            return f"it lacks {', '.join(missing)}"
        foreign = sorted(e for e in entries - _DATA_ENTRIES if not e.startswith("."))
        if foreign:
            return f"it holds {', '.join(foreign[:5])}, which quay up never writes"
        if _state_is_ours(self.state_file):
            return None
        try:
            if self.secrets_file.is_file() and load_secrets(self.secrets_file) is not None:
                return None
        except BundlerError:
            pass
        return "neither its state.json nor its secrets.json is one quay up wrote"


_FIRST_ENTRIES = frozenset({"config", "ca", "env"})
_DATA_ENTRIES = frozenset({"config", "storage", "postgres", "ca", "env", "secrets.json", "state.json", "auth.json", "pull-secret.json", "systemd", "tmp"})


def _state_is_ours(path: Path) -> bool:
    try:
        obj = loads_bounded(read_regular(path, max_size=1 << 20, what="state file"))
    except (OSError, ValueError, UsageError):
        return False
    return (
        isinstance(obj, dict)
        and obj.get("version") == STATE_VERSION
        and not isinstance(obj.get("version"), bool)
        and all(isinstance(obj.get(k), str) and obj.get(k) for k in ("name", "hostname", "server"))
        and isinstance(obj.get("images"), dict)
    )


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "ocp-bundler" / "quay"


def read_state(path: Path) -> Dict[str, Any]:
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError:
        raise UsageError(f"{path} is not valid JSON", hint="remove it; the next `quay up` writes it again") from None
    return obj if isinstance(obj, dict) else {}


def write_json(path: Path, obj: Any, *, mode: int) -> bool:
    data = (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    atomic_write(path, data, mode=mode)
    return True

"""Quay's `config.yaml` and the secrets behind it (PROTOCOL-NOTES §4).

Owns:

- `QuaySecrets`: every random value a Quay installation needs (`DATABASE_SECRET_KEY`, `SECRET_KEY`, the
  PostgreSQL and Redis passwords, the first user's password) plus what later runs must remember (the first
  user's API token, robot tokens, S3 credentials). Kept in one JSON file, mode 0600, written atomically;
  created once and never regenerated: Quay encrypts database fields with `DATABASE_SECRET_KEY`, so a new
  value would make the existing database unreadable.
- `QuayConfigOptions` → `render_config` → `write_config`: the config with every key Quay requires
  (`SERVER_HOSTNAME` exactly `host[:port]`, `PREFERRED_URL_SCHEME`, `SETUP_COMPLETE`, `AUTHENTICATION_TYPE`,
  `DB_URI`, the two secret keys, `BUILDLOGS_REDIS`, `USER_EVENTS_REDIS`, `PULL_METRICS_REDIS`,
  `DISTRIBUTED_STORAGE_CONFIG` and `_PREFERENCE`, `USERFILES_LOCATION` and `LOG_ARCHIVE_LOCATION` (Quay's
  defaults name a location we do not configure), `DEFAULT_TAG_EXPIRATION`, `TAG_EXPIRATION_OPTIONS`, `FEATURE_USER_INITIALIZE`,
  `SUPER_USERS`, `CREATE_NAMESPACE_ON_PUSH`), storage on the local volume or on S3-compatible object
  storage (`S3Storage` for AWS S3, `RadosGWStorage` for MinIO, Ceph RadosGW and ODF/NooBaa).

The config file holds secrets too (Quay reads them from there): it is written 0640, never logged.
"""

from __future__ import annotations

import json
import logging
import os
import secrets as _random
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple
from urllib.parse import quote

import yaml

from bundler.base.errors import UsageError
from bundler.base.fsutil import atomic_write

log = logging.getLogger(__name__)

SECRETS_VERSION = 1
STORAGE_KINDS = {"s3": "S3Storage", "radosgw": "RadosGWStorage"}
DEFAULT_STORAGE_PATH = "/datastorage/registry"
STORAGE_LOCATION = "default"
DATABASE_NAME = "quay"
DATABASE_USER = "quay"

_ALPHABET = string.ascii_letters + string.digits


def random_secret(length: int = 48) -> str:
    """A random string of letters and digits (safe in URLs, YAML and env files without quoting)."""
    return "".join(_random.choice(_ALPHABET) for _ in range(length))


@dataclass(frozen=True)
class S3StorageOptions:
    """S3-compatible object storage for image blobs instead of the local `/datastorage` volume."""

    host: str
    bucket: str
    access_key: str
    secret_key: str = field(repr=False)
    port: Optional[int] = None
    storage_path: str = DEFAULT_STORAGE_PATH
    is_secure: bool = True
    kind: str = "radosgw"  # "radosgw" (MinIO, Ceph RadosGW, ODF/NooBaa) or "s3" (AWS S3)
    region: Optional[str] = None

    def __post_init__(self) -> None:
        if self.kind not in STORAGE_KINDS:
            raise UsageError(f"unknown S3 storage kind {self.kind!r}", hint=f"use one of {', '.join(STORAGE_KINDS)}")
        for flag, value in (("host", self.host), ("bucket", self.bucket), ("access-key", self.access_key), ("secret-key", self.secret_key)):
            if not value:
                raise UsageError(f"S3 storage needs --s3-{flag}")

    def to_json(self) -> Dict[str, Any]:
        return {
            "host": self.host,
            "bucket": self.bucket,
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            "port": self.port,
            "storage_path": self.storage_path,
            "is_secure": self.is_secure,
            "kind": self.kind,
            "region": self.region,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "S3StorageOptions":
        return cls(
            host=str(obj["host"]),
            bucket=str(obj["bucket"]),
            access_key=str(obj["access_key"]),
            secret_key=str(obj["secret_key"]),
            port=int(obj["port"]) if obj.get("port") is not None else None,
            storage_path=str(obj.get("storage_path") or DEFAULT_STORAGE_PATH),
            is_secure=bool(obj.get("is_secure", True)),
            kind=str(obj.get("kind") or "radosgw"),
            region=obj.get("region"),
        )


@dataclass
class QuaySecrets:
    """Random values created once per installation, and tokens later runs need. Never printed."""

    database_secret_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    postgres_password: str = field(repr=False)
    postgres_admin_password: str = field(repr=False)
    redis_password: str = field(repr=False)
    init_password: str = field(repr=False)
    admin_token: Optional[str] = field(default=None, repr=False)
    robot_tokens: Dict[str, str] = field(default_factory=dict, repr=False)
    """Robot full name (`org+name`) → token, for the robots that push."""
    reader_tokens: Dict[str, str] = field(default_factory=dict, repr=False)
    """Robot full name (`org+name`) → token, for the read-only robots the cluster pulls with."""
    storage: Optional[S3StorageOptions] = field(default=None, repr=False)

    @classmethod
    def generate(cls) -> "QuaySecrets":
        return cls(
            database_secret_key=random_secret(64),
            secret_key=random_secret(64),
            postgres_password=random_secret(32),
            postgres_admin_password=random_secret(32),
            redis_password=random_secret(32),
            init_password=random_secret(24),
        )

    def values(self) -> List[str]:
        """Every secret string (to redact them from logs shown to the user)."""
        out = [
            self.database_secret_key,
            self.secret_key,
            self.postgres_password,
            self.postgres_admin_password,
            self.redis_password,
            self.init_password,
        ]
        if self.admin_token:
            out.append(self.admin_token)
        out += list(self.robot_tokens.values())
        out += list(self.reader_tokens.values())
        if self.storage is not None:
            out.append(self.storage.secret_key)
        return [v for v in out if v]

    def to_json(self) -> Dict[str, Any]:
        return {
            "version": SECRETS_VERSION,
            "database_secret_key": self.database_secret_key,
            "secret_key": self.secret_key,
            "postgres_password": self.postgres_password,
            "postgres_admin_password": self.postgres_admin_password,
            "redis_password": self.redis_password,
            "init_password": self.init_password,
            "admin_token": self.admin_token,
            "robot_tokens": dict(self.robot_tokens),
            "reader_tokens": dict(self.reader_tokens),
            "storage": self.storage.to_json() if self.storage else None,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], *, where: str) -> "QuaySecrets":
        try:
            if int(obj.get("version", 0)) > SECRETS_VERSION:
                raise UsageError(f"{where} was written by a newer ocp-bundler", hint="use that version")
            storage = obj.get("storage")
            return cls(
                database_secret_key=str(obj["database_secret_key"]),
                secret_key=str(obj["secret_key"]),
                postgres_password=str(obj["postgres_password"]),
                postgres_admin_password=str(obj["postgres_admin_password"]),
                redis_password=str(obj["redis_password"]),
                init_password=str(obj["init_password"]),
                admin_token=obj.get("admin_token") or None,
                robot_tokens={str(k): str(v) for k, v in (obj.get("robot_tokens") or {}).items()},
                reader_tokens={str(k): str(v) for k, v in (obj.get("reader_tokens") or {}).items()},
                storage=S3StorageOptions.from_json(storage) if isinstance(storage, dict) else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"{where} is damaged ({exc.__class__.__name__}: {exc})", hint="restore it from a backup; never delete it while Quay's database exists") from None


def load_secrets(path: Path) -> Optional[QuaySecrets]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        obj = json.loads(text)
    except ValueError:
        raise UsageError(f"{path} is not valid JSON", hint="restore it from a backup; never delete it while Quay's database exists") from None
    if not isinstance(obj, dict):
        raise UsageError(f"{path} is not a JSON object")
    return QuaySecrets.from_json(obj, where=str(path))


def save_secrets(path: Path, value: QuaySecrets) -> None:
    """Write the secrets file atomically, mode 0600."""
    atomic_write(path, (json.dumps(value.to_json(), indent=2) + "\n").encode(), mode=0o600)


def load_or_create_secrets(path: Path) -> Tuple[QuaySecrets, bool]:
    """The installation's secrets; generated and saved (0600) on the first call only. Returns (secrets, created)."""
    existing = load_secrets(path)
    if existing is not None:
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
        return existing, False
    created = QuaySecrets.generate()
    save_secrets(path, created)
    return created, True


@dataclass(frozen=True)
class QuayConfigOptions:
    """What goes into config.yaml besides the secrets."""

    hostname: str
    port: int = 8443
    superusers: Tuple[str, ...] = ("init",)
    storage: Optional[S3StorageOptions] = None
    database_host: str = "127.0.0.1"
    database_port: int = 5432
    database_name: str = DATABASE_NAME
    database_user: str = DATABASE_USER
    redis_host: str = "127.0.0.1"
    redis_port: int = 6379
    create_namespace_on_push: bool = False
    default_tag_expiration: str = "2w"
    tag_expiration_options: Tuple[str, ...] = ("0s", "1d", "1w", "2w", "4w")
    registry_title: str = "ocp-bundler mirror registry"
    extra: Mapping[str, Any] = field(default_factory=dict)


def server_hostname(hostname: str, port: int) -> str:
    """`SERVER_HOSTNAME` as clients type it: `host:port`, or just `host` on 443. IPv6 hosts get brackets."""
    host = hostname.strip()
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return host if port == 443 else f"{host}:{port}"


def render_config(options: QuayConfigOptions, secrets: QuaySecrets) -> Dict[str, Any]:
    """The config.yaml document (a plain dict, keys in a stable order)."""
    redis = {"host": options.redis_host, "port": options.redis_port, "password": secrets.redis_password}
    db_uri = (
        f"postgresql://{quote(options.database_user, safe='')}:{quote(secrets.postgres_password, safe='')}"
        f"@{options.database_host}:{options.database_port}/{quote(options.database_name, safe='')}"
    )
    storage_config = _storage_config(options.storage)
    config: Dict[str, Any] = {
        "SERVER_HOSTNAME": server_hostname(options.hostname, options.port),
        "PREFERRED_URL_SCHEME": "https",
        "EXTERNAL_TLS_TERMINATION": False,
        "SETUP_COMPLETE": True,
        "AUTHENTICATION_TYPE": "Database",
        "DB_URI": db_uri,
        "DB_CONNECTION_ARGS": {"autorollback": True, "threadlocals": True},
        "DATABASE_SECRET_KEY": secrets.database_secret_key,
        "SECRET_KEY": secrets.secret_key,
        "BUILDLOGS_REDIS": dict(redis),
        "USER_EVENTS_REDIS": dict(redis),
        "PULL_METRICS_REDIS": dict(redis, db=1),
        "DISTRIBUTED_STORAGE_CONFIG": storage_config,
        "DISTRIBUTED_STORAGE_PREFERENCE": list(storage_config),
        "DISTRIBUTED_STORAGE_DEFAULT_LOCATIONS": [],
        # Quay's defaults name a storage location "local_us" for these; ours is called "default".
        "USERFILES_LOCATION": STORAGE_LOCATION,
        "USERFILES_PATH": "userfiles/",
        "LOG_ARCHIVE_LOCATION": STORAGE_LOCATION,
        "LOG_ARCHIVE_PATH": "logarchive/",
        "DEFAULT_TAG_EXPIRATION": options.default_tag_expiration,
        "TAG_EXPIRATION_OPTIONS": list(options.tag_expiration_options),
        "FEATURE_USER_INITIALIZE": True,
        "FEATURE_MAILING": False,
        "FEATURE_BUILD_SUPPORT": False,
        "FEATURE_SECURITY_SCANNER": False,
        "SUPER_USERS": list(options.superusers),
        "CREATE_NAMESPACE_ON_PUSH": options.create_namespace_on_push,
        "CREATE_PRIVATE_REPO_ON_PUSH": True,
        "REGISTRY_TITLE": options.registry_title,
        "REGISTRY_TITLE_SHORT": "Quay",
        "TESTING": False,
    }
    config.update(options.extra)
    return config


def _storage_config(storage: Optional[S3StorageOptions]) -> Dict[str, List[Any]]:
    if storage is None:
        return {STORAGE_LOCATION: ["LocalStorage", {"storage_path": DEFAULT_STORAGE_PATH}]}
    if storage.kind == "s3":
        params: Dict[str, Any] = {
            "host": storage.host,
            "s3_bucket": storage.bucket,
            "s3_access_key": storage.access_key,
            "s3_secret_key": storage.secret_key,
            "storage_path": storage.storage_path,
        }
        if storage.port is not None:
            params["port"] = storage.port
        if storage.region:
            params["s3_region"] = storage.region
        return {STORAGE_LOCATION: ["S3Storage", params]}
    params = {
        "hostname": storage.host,
        "port": storage.port if storage.port is not None else (443 if storage.is_secure else 80),
        "is_secure": storage.is_secure,
        "bucket_name": storage.bucket,
        "access_key": storage.access_key,
        "secret_key": storage.secret_key,
        "storage_path": storage.storage_path,
    }
    return {STORAGE_LOCATION: ["RadosGWStorage", params]}


def dump_config(config: Mapping[str, Any]) -> bytes:
    text: str = yaml.safe_dump(dict(config), sort_keys=False, default_flow_style=False)
    return text.encode()


def write_config(path: Path, config: Mapping[str, Any], *, mode: int = 0o640) -> bool:
    """Write config.yaml atomically when its content differs; returns whether it changed."""
    data = dump_config(config)
    try:
        if path.read_bytes() == data:
            if path.stat().st_mode & 0o777 != mode:
                os.chmod(path, mode)
            return False
    except FileNotFoundError:
        pass
    atomic_write(path, data, mode=mode)
    return True


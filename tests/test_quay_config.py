"""Quay's config.yaml and the secrets file (`bundler.quay.config`): every key PROTOCOL-NOTES §4 requires,
S3-compatible storage variants, secrets that are stable, private and never shown."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import yaml

from bundler.base.errors import UsageError
from bundler.quay.config import (
    QuayConfigOptions,
    QuaySecrets,
    S3StorageOptions,
    load_or_create_secrets,
    render_config,
    save_secrets,
    server_hostname,
    write_config,
)

REQUIRED_KEYS = (
    "SERVER_HOSTNAME",
    "PREFERRED_URL_SCHEME",
    "SETUP_COMPLETE",
    "AUTHENTICATION_TYPE",
    "DB_URI",
    "DATABASE_SECRET_KEY",
    "SECRET_KEY",
    "BUILDLOGS_REDIS",
    "USER_EVENTS_REDIS",
    "DISTRIBUTED_STORAGE_CONFIG",
    "DISTRIBUTED_STORAGE_PREFERENCE",
    "DEFAULT_TAG_EXPIRATION",
    "TAG_EXPIRATION_OPTIONS",
    "FEATURE_USER_INITIALIZE",
    "SUPER_USERS",
    "CREATE_NAMESPACE_ON_PUSH",
)


def test_config_has_every_required_key_with_the_right_values(tmp_path: Path) -> None:
    secrets = QuaySecrets.generate()
    config = render_config(QuayConfigOptions(hostname="mirror.example.com", port=8443, superusers=("admin",)), secrets)
    for key in REQUIRED_KEYS:
        assert key in config, key
    assert config["SERVER_HOSTNAME"] == "mirror.example.com:8443"
    assert config["PREFERRED_URL_SCHEME"] == "https"
    assert config["SETUP_COMPLETE"] is True
    assert config["AUTHENTICATION_TYPE"] == "Database"
    assert config["DB_URI"] == f"postgresql://quay:{secrets.postgres_password}@127.0.0.1:5432/quay"
    assert config["DATABASE_SECRET_KEY"] == secrets.database_secret_key
    assert config["SECRET_KEY"] == secrets.secret_key
    assert config["DATABASE_SECRET_KEY"] != config["SECRET_KEY"]
    for key in ("BUILDLOGS_REDIS", "USER_EVENTS_REDIS"):
        assert config[key] == {"host": "127.0.0.1", "port": 6379, "password": secrets.redis_password}
    assert config["DISTRIBUTED_STORAGE_CONFIG"] == {"default": ["LocalStorage", {"storage_path": "/datastorage/registry"}]}
    assert config["DISTRIBUTED_STORAGE_PREFERENCE"] == ["default"]
    assert config["DEFAULT_TAG_EXPIRATION"] in config["TAG_EXPIRATION_OPTIONS"]
    assert config["FEATURE_USER_INITIALIZE"] is True
    assert config["SUPER_USERS"] == ["admin"]
    assert config["CREATE_NAMESPACE_ON_PUSH"] is False

    path = tmp_path / "config.yaml"
    assert write_config(path, config) is True
    assert yaml.safe_load(path.read_text()) == config
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert write_config(path, config) is False  # unchanged content is not rewritten


@pytest.mark.parametrize(
    "host,port,expected",
    [("mirror.example.com", 8443, "mirror.example.com:8443"), ("mirror.example.com", 443, "mirror.example.com"), ("10.0.0.1", 5000, "10.0.0.1:5000"), ("fd00::1", 8443, "[fd00::1]:8443")],
)
def test_server_hostname_is_exactly_what_clients_type(host: str, port: int, expected: str) -> None:
    assert server_hostname(host, port) == expected


def test_create_namespace_on_push_can_be_enabled() -> None:
    config = render_config(QuayConfigOptions(hostname="h", create_namespace_on_push=True), QuaySecrets.generate())
    assert config["CREATE_NAMESPACE_ON_PUSH"] is True


def test_radosgw_storage_for_minio_ceph_odf() -> None:
    storage = S3StorageOptions(host="minio.example.com", port=9000, bucket="quay", access_key="AK", secret_key="SK", is_secure=False, storage_path="/quay")
    config = render_config(QuayConfigOptions(hostname="h", storage=storage), QuaySecrets.generate())
    assert config["DISTRIBUTED_STORAGE_CONFIG"] == {
        "default": [
            "RadosGWStorage",
            {"hostname": "minio.example.com", "port": 9000, "is_secure": False, "bucket_name": "quay", "access_key": "AK", "secret_key": "SK", "storage_path": "/quay"},
        ]
    }
    assert config["DISTRIBUTED_STORAGE_PREFERENCE"] == ["default"]
    assert "SK" not in repr(storage)
    secure = S3StorageOptions(host="rgw", bucket="b", access_key="a", secret_key="s")
    params = render_config(QuayConfigOptions(hostname="h", storage=secure), QuaySecrets.generate())["DISTRIBUTED_STORAGE_CONFIG"]["default"][1]
    assert params["port"] == 443 and params["is_secure"] is True


def test_s3_storage_for_aws() -> None:
    storage = S3StorageOptions(host="s3.eu-west-1.amazonaws.com", bucket="quay", access_key="AK", secret_key="SK", kind="s3", region="eu-west-1")
    config = render_config(QuayConfigOptions(hostname="h", storage=storage), QuaySecrets.generate())
    driver, params = config["DISTRIBUTED_STORAGE_CONFIG"]["default"]
    assert driver == "S3Storage"
    assert params == {
        "host": "s3.eu-west-1.amazonaws.com",
        "s3_bucket": "quay",
        "s3_access_key": "AK",
        "s3_secret_key": "SK",
        "storage_path": "/datastorage/registry",
        "s3_region": "eu-west-1",
    }


def test_s3_storage_needs_its_parameters() -> None:
    with pytest.raises(UsageError, match="--s3-bucket"):
        S3StorageOptions(host="h", bucket="", access_key="a", secret_key="s")
    with pytest.raises(UsageError, match="unknown S3 storage kind"):
        S3StorageOptions(host="h", bucket="b", access_key="a", secret_key="s", kind="gcs")


def test_secrets_are_created_once_0600_and_never_regenerated(tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    first, created = load_or_create_secrets(path)
    assert created
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    raw = path.read_bytes()
    values = first.values()
    assert len(set(values)) == len(values)  # all distinct
    assert len(first.database_secret_key) >= 48 and len(first.secret_key) >= 48
    assert len(first.init_password) >= 8

    second, created = load_or_create_secrets(path)
    assert not created and second == first and path.read_bytes() == raw

    path.chmod(0o644)  # loosened by someone: tightened again
    load_or_create_secrets(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    second.admin_token = "tok-123456"
    second.robot_tokens["ocp4+bundler"] = "robot-abcdef"
    second.storage = S3StorageOptions(host="h", bucket="b", access_key="a", secret_key="s3cret")
    save_secrets(path, second)
    third, _ = load_or_create_secrets(path)
    assert third == second and third.storage is not None and third.storage.secret_key == "s3cret"
    text = repr(third)
    for value in third.values():
        assert value not in text


def test_a_damaged_secrets_file_is_an_error_not_a_new_installation(tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    path.write_text(json.dumps({"version": 1, "secret_key": "x"}))
    with pytest.raises(UsageError, match="damaged"):
        load_or_create_secrets(path)
    assert json.loads(path.read_text()) == {"version": 1, "secret_key": "x"}  # untouched
    path.write_text("{not json")
    with pytest.raises(UsageError, match="not valid JSON"):
        load_or_create_secrets(path)

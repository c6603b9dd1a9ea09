"""Tests for bundler.openshift.pullsecret: add a mirror's credentials to a pull secret without disturbing the rest."""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

import pytest

from bundler.base.errors import UsageError
from bundler.openshift.pullsecret import add_registry_credentials

PASSWORD = "s3cr3t-P@ss:with:colons"
EXISTING_AUTH = base64.b64encode(b"someone:existing-secret-token").decode()
MIRROR = "mirror.example.com:8443"


def pull_secret() -> dict[str, Any]:
    """Shaped like the one console.redhat.com hands out."""
    return {
        "auths": {
            "cloud.openshift.com": {"auth": EXISTING_AUTH, "email": "someone@example.com"},
            "quay.io": {"auth": EXISTING_AUTH, "email": "someone@example.com"},
            "registry.connect.redhat.com": {"auth": EXISTING_AUTH, "email": "someone@example.com"},
            "registry.redhat.io": {"auth": EXISTING_AUTH, "email": "someone@example.com", "extra": [1, {"k": None}]},
        },
        "credHelpers": {"gcr.io": "gcloud"},
    }


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def decode(entry: dict[str, Any]) -> str:
    return base64.b64decode(entry["auth"]).decode()


def test_adds_entry_and_keeps_the_others(tmp_path: Path) -> None:
    path = tmp_path / "pull-secret.json"
    original = pull_secret()
    path.write_text(json.dumps(original))
    add_registry_credentials(path, registry=MIRROR, username="admin", password=PASSWORD, email="ops@example.com")

    result = json.loads(path.read_text())
    assert decode(result["auths"][MIRROR]) == f"admin:{PASSWORD}"
    assert result["auths"][MIRROR]["email"] == "ops@example.com"
    for host, entry in original["auths"].items():
        assert result["auths"][host] == entry
    assert result["credHelpers"] == original["credHelpers"]
    assert list(result["auths"]) == [*original["auths"], MIRROR]
    assert "\n" not in path.read_text().strip(), "a one-line pull secret stays one line"


def test_replaces_an_existing_entry_in_place(tmp_path: Path) -> None:
    path = tmp_path / "auth.json"
    original = {"auths": {MIRROR: {"auth": EXISTING_AUTH, "identitytoken": "old"}, "quay.io": {"auth": "eA=="}}}
    path.write_text(json.dumps(original, indent=4))
    add_registry_credentials(path, registry=MIRROR, username="robot", password=PASSWORD)
    result = json.loads(path.read_text())
    assert list(result["auths"]) == [MIRROR, "quay.io"]
    assert result["auths"][MIRROR] == {"auth": base64.b64encode(f"robot:{PASSWORD}".encode()).decode()}
    assert result["auths"]["quay.io"] == {"auth": "eA=="}
    assert "\n" in path.read_text().strip(), "an indented file stays indented"


def test_new_file_is_created_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "containers" / "auth.json"
    add_registry_credentials(path, registry=MIRROR, username="admin", password=PASSWORD)
    assert mode(path) == 0o600
    assert json.loads(path.read_text()) == {
        "auths": {MIRROR: {"auth": base64.b64encode(f"admin:{PASSWORD}".encode()).decode()}}
    }

    empty = tmp_path / "empty.json"
    empty.touch()
    add_registry_credentials(empty, registry=MIRROR, username="admin", password=PASSWORD)
    assert set(json.loads(empty.read_text())["auths"]) == {MIRROR}


def test_existing_readable_file_becomes_0600(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(pull_secret()))
    path.chmod(0o644)
    add_registry_credentials(path, registry=MIRROR, username="admin", password=PASSWORD)
    assert mode(path) == 0o600


def test_temp_file_is_0600_before_the_secret_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[int, int]] = []
    real_mkstemp = tempfile.mkstemp

    def spying_mkstemp(*args: Any, **kwargs: Any) -> tuple[int, str]:
        fd, name = real_mkstemp(*args, **kwargs)
        info = os.stat(name)
        seen.append((stat.S_IMODE(info.st_mode), info.st_size))
        return fd, name

    monkeypatch.setattr(tempfile, "mkstemp", spying_mkstemp)
    add_registry_credentials(tmp_path / "a.json", registry=MIRROR, username="admin", password=PASSWORD)
    assert seen == [(0o600, 0)]


def test_atomic_no_temp_files_left(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "pull-secret.json"
    before = json.dumps(pull_secret())
    path.write_text(before)
    add_registry_credentials(path, registry=MIRROR, username="admin", password=PASSWORD)
    assert [p.name for p in tmp_path.iterdir()] == ["pull-secret.json"]

    # A failure at the last step leaves the old file untouched and no temp file behind.
    after_first = path.read_bytes()

    def failing_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(UsageError, match="no space") as info:
        add_registry_credentials(path, registry="other.example.com", username="u", password=PASSWORD)
    assert PASSWORD not in str(info.value)
    assert path.read_bytes() == after_first
    assert [p.name for p in tmp_path.iterdir()] == ["pull-secret.json"]


@pytest.mark.parametrize(
    "content, problem",
    [
        ('{"auths": {"quay.io": {"auth": existing-secret-token}}}', "not valid JSON"),
        ('{"auths": {"quay.io": {"auth": "existing-secret-token"}}', "not valid JSON"),
        ('["existing-secret-token"]', "JSON array, not an object"),
        ('{"auths": "existing-secret-token"}', "'auths' is a string"),
        ('{"auths": {"quay.io": "existing-secret-token"}}', "entry for 'quay.io'"),
        ("\xff\xfe", "not UTF-8"),
    ],
)
def test_malformed_file_is_a_usage_error_without_secrets(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "pull-secret.json"
    path.write_bytes(content.encode("latin-1"))
    with pytest.raises(UsageError) as info:
        add_registry_credentials(path, registry=MIRROR, username="admin", password=PASSWORD)
    message = str(info.value)
    assert str(path) in message and problem in message
    assert "existing-secret-token" not in message and PASSWORD not in message
    assert info.value.__cause__ is None
    assert path.read_bytes() == content.encode("latin-1"), "the file is left alone"
    assert [p.name for p in tmp_path.iterdir()] == ["pull-secret.json"]


def test_bad_arguments(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    for kwargs in (
        {"registry": "", "username": "u", "password": PASSWORD},
        {"registry": "https://mirror", "username": "u", "password": PASSWORD},
        {"registry": MIRROR, "username": "a:b", "password": PASSWORD},
        {"registry": MIRROR, "username": "", "password": PASSWORD},
        {"registry": MIRROR, "username": "u", "password": ""},
    ):
        with pytest.raises(UsageError) as info:
            add_registry_credentials(path, **kwargs)
        assert PASSWORD not in str(info.value)
    assert not path.exists()
    with pytest.raises(UsageError, match="directory"):
        add_registry_credentials(tmp_path, registry=MIRROR, username="u", password=PASSWORD)


def test_password_never_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    add_registry_credentials(tmp_path / "a.json", registry=MIRROR, username="admin", password=PASSWORD)
    token = base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
    captured = capsys.readouterr()
    for text in (caplog.text, captured.out, captured.err):
        assert PASSWORD not in text and token not in text
    assert MIRROR in caplog.text


def test_symlink_target_is_updated(tmp_path: Path) -> None:
    real = tmp_path / "real.json"
    real.write_text(json.dumps(pull_secret()))
    link = tmp_path / "link.json"
    link.symlink_to(real)
    add_registry_credentials(link, registry=MIRROR, username="admin", password=PASSWORD)
    assert link.is_symlink()
    assert MIRROR in json.loads(real.read_text())["auths"]


def test_cli_from_adds_every_entry_of_a_snippet_and_keeps_the_rest(tmp_path: Path) -> None:
    """`pull-secret --from`: the read-only robots' snippet (host entry and one per organisation) goes into a
    one-line pull secret, which stays on one line and 0600; nothing secret is printed."""
    from bundler.cli.main import main
    from tests.conftest import cli_runner

    snippet = tmp_path / "snippet.json"
    robots = {MIRROR: ("ocp4+cluster_pull", "TOKEN-A"), f"{MIRROR}/ocp4": ("ocp4+cluster_pull", "TOKEN-A"), f"{MIRROR}/olm": ("olm+cluster_pull", "TOKEN-B")}
    snippet.write_text(json.dumps({"auths": {k: {"auth": base64.b64encode(f"{u}:{p}".encode()).decode()} for k, (u, p) in robots.items()}}))
    target = tmp_path / "pull-secret.json"
    target.write_text(json.dumps(pull_secret(), separators=(",", ":")) + "\n")
    out = cli_runner().invoke(main, ["pull-secret", "--file", str(target), "--from", str(snippet)])
    assert out.exit_code == 0, out.output
    assert f"added credentials for {MIRROR}/olm (user olm+cluster_pull) to {target}" in out.output
    assert "TOKEN-" not in out.output
    text = target.read_text()
    assert text.count("\n") == 1 and mode(target) == 0o600
    doc = json.loads(text)
    assert {k: decode(doc["auths"][k]) for k in robots} == {k: f"{u}:{p}" for k, (u, p) in robots.items()}
    assert {k: v for k, v in doc["auths"].items() if k not in robots} == pull_secret()["auths"]
    assert doc["credHelpers"] == {"gcr.io": "gcloud"}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--from", "SNIPPET", "--registry", MIRROR], "--from adds the entries of a file"),
        ([], "give --from FILE, or --registry and --username"),
        (["--from", "BROKEN"], "is not base64 of user:password"),
    ],
)
def test_cli_from_usage_errors_are_one_line_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    from bundler.cli.main import main
    from tests.conftest import cli_runner

    (tmp_path / "SNIPPET").write_text(json.dumps({"auths": {MIRROR: {"auth": base64.b64encode(b"a:b").decode()}}}))
    (tmp_path / "BROKEN").write_text(json.dumps({"auths": {MIRROR: {"auth": "not base64!"}}}))
    args = [str(tmp_path / a) if a in ("SNIPPET", "BROKEN") else a for a in args]
    out = cli_runner().invoke(main, ["pull-secret", "--file", str(tmp_path / "ps.json"), *args])
    assert out.exit_code == 2, out.output
    assert message in out.output and "Traceback" not in out.output
    assert not (tmp_path / "ps.json").exists()

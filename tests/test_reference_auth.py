"""Reference parsing (distribution grammar, Docker Hub defaults) and credential look-up order."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from bundler.registry.auth import CredentialStore, TokenCache, default_auth_files, parse_challenge
from bundler.base.errors import InvalidReferenceError, UsageError
from bundler.oci.reference import Reference

D = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    "text, registry, repository, tag, digest",
    [
        ("quay.io/openshift-release-dev/ocp-release:4.4.5-x86_64", "quay.io", "openshift-release-dev/ocp-release", "4.4.5-x86_64", None),
        ("nginx", "docker.io", "library/nginx", None, None),
        ("docker.io/nginx:1.21", "docker.io", "library/nginx", "1.21", None),
        ("index.docker.io/foo/bar", "docker.io", "foo/bar", None, None),
        ("localhost:5000/a/b/c:v1", "localhost:5000", "a/b/c", "v1", None),
        (f"127.0.0.1:5000/a@{D}", "127.0.0.1:5000", "a", None, D),
        (f"registry.redhat.io/rhel9/redis-7:latest@{D}", "registry.redhat.io", "rhel9/redis-7", "latest", D),
        ("myhost/x", "docker.io", "myhost/x", None, None),
    ],
)
def test_parse(text: str, registry: str, repository: str, tag: str, digest: str) -> None:
    ref = Reference.parse(text)
    assert (ref.registry, ref.repository, ref.tag, str(ref.digest) if ref.digest else None) == (registry, repository, tag, digest)
    assert Reference.parse(str(ref)) == ref


@pytest.mark.parametrize("text", ["", " x", "Quay.io/UPPER/x", "quay.io/a:bad tag", "quay.io/a@sha256:123", "quay.io/a//b", "quay.io/-a", "a:" + "t" * 200])
def test_parse_rejects(text: str) -> None:
    with pytest.raises(InvalidReferenceError):
        Reference.parse(text)


def test_identifier_prefers_digest() -> None:
    assert Reference.parse(f"q.io/a:v1@{D}").identifier == D
    assert Reference.parse("q.io/a").identifier == "latest"


def _auth(path: Path, entries: dict) -> Path:
    path.write_text(json.dumps({"auths": {k: {"auth": base64.b64encode(v.encode()).decode()} for k, v in entries.items()}}))
    return path


def test_lookup_most_specific_key_wins(tmp_path: Path) -> None:
    f = _auth(tmp_path / "a.json", {"quay.io": "u1:p1", "quay.io/org": "u2:p2", "https://registry.redhat.io/v1/": "u3:p3"})
    store = CredentialStore(f)
    assert store.lookup("quay.io", "org/repo").username == "u2"  # type: ignore[union-attr]
    assert store.lookup("quay.io", "other/repo").username == "u1"  # type: ignore[union-attr]
    assert store.lookup("registry.redhat.io").username == "u3"  # type: ignore[union-attr]
    assert store.lookup("example.com") is None
    assert "p1" not in repr(store.lookup("quay.io"))


def test_containers_order_and_empty_entries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = tmp_path / "reg.json"
    first.write_text(json.dumps({"auths": {"quay.io": {}}}))  # empty entries are skipped
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(first))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    (tmp_path / "run" / "containers").mkdir(parents=True)
    _auth(tmp_path / "run" / "containers" / "auth.json", {"quay.io": "podman:pw"})
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    (tmp_path / "docker").mkdir()
    _auth(tmp_path / "docker" / "config.json", {"quay.io": "docker:pw", "ghcr.io": "gh:pw"})
    files = default_auth_files()
    assert files[0] == first and files[1] == tmp_path / "run/containers/auth.json" and files[-2] == tmp_path / "docker/config.json"
    assert files[-1] == Path.home() / ".dockercfg"
    store = CredentialStore(files=files)
    assert store.lookup("quay.io").username == "podman"  # type: ignore[union-attr]
    assert store.lookup("ghcr.io").username == "gh"  # type: ignore[union-attr]


def test_bad_auth_files(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        CredentialStore(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UsageError, match="not valid JSON"):
        CredentialStore(bad)
    bad.write_text(json.dumps({"auths": {"q.io": {"auth": "!!!notbase64"}}}))
    with pytest.raises(UsageError, match="q.io"):
        CredentialStore(bad).lookup("q.io")


def test_challenge_parsing() -> None:
    ch = parse_challenge('Bearer realm="https://auth.example/token",service="registry",scope="repository:a/b:pull,push"')
    assert ch is not None and ch.scheme == "bearer"
    assert ch.params == {"realm": "https://auth.example/token", "service": "registry", "scope": "repository:a/b:pull,push"}
    assert parse_challenge('Basic realm="x"').scheme == "basic"  # type: ignore[union-attr]


def test_token_cache_refreshes_before_expiry(monkeypatch: pytest.MonkeyPatch) -> None:
    import bundler.registry.auth as auth

    now = [1000.0]
    monkeypatch.setattr(auth.time, "monotonic", lambda: now[0])
    cache = TokenCache()
    key = ("r", "s", ("repository:a:pull",))
    cache.put(key, "t1", 300)
    now[0] += 280
    assert cache.get(key) == "t1"
    now[0] += 15  # 5 s left: inside the refresh margin
    assert cache.get(key) is None

"""Credential helpers (credHelpers, credsStore) asked once per registry for a whole command, and the
legacy ~/.dockercfg, against a real registry with htpasswd and a helper script that logs its calls."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

from tests.infra.images import make_image, make_index, push
from tests.infra.registry import RegistryServer

HELPER = """#!/bin/sh
# docker-credential-{name}: logs every call, answers `get` for {host}
read server
echo "$1 $server" >> {log}
if [ "$1" = get ] && [ "$server" = "{host}" ]; then
  printf '{{"ServerURL":"%s","Username":"{user}","Secret":"{password}"}}' "$server"
  exit 0
fi
echo "credentials not found in native keychain"
exit 1
"""


def _helper(bin_dir: Path, name: str, server: RegistryServer, log: Path) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / f"docker-credential-{name}"
    path.write_text(HELPER.format(name=name, host=server.host, user=server.username, password=server.password, log=log))
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def _env(tmp_path: Path) -> Dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    keep = {k: v for k, v in os.environ.items() if k not in ("REGISTRY_AUTH_FILE", "DOCKER_CONFIG", "XDG_RUNTIME_DIR")}
    return {**keep, "HOME": str(home), "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "OCPB_DEBUG_LOG": "/dev/null"}


def _calls(log: Path) -> List[str]:
    return log.read_text().splitlines() if log.exists() else []


def _image(server: RegistryServer, repo: str, seed: str) -> str:
    img = make_index(
        [make_image(random_layers=[20_000, 30_000], seed=f"{seed}-a", docker=True), make_image(random_layers=[25_000], seed=f"{seed}-b", docker=True, architecture="arm64")],
        docker=True,
    )
    return push(server.url, repo, img, "v1", ca_file=server.ca_file, auth=server.auth)


def test_cred_helpers_and_creds_store_are_called_once_per_registry(registry_tls: RegistryServer, tmp_path: Path, skopeo: Any) -> None:
    digest = _image(registry_tls, "helper/app", "helper")
    env = _env(tmp_path)
    config = tmp_path / "home" / ".docker" / "config.json"
    config.parent.mkdir(parents=True)
    ca = ["--ca-file", str(registry_tls.ca_file)]

    for kind, doc in (("credHelpers", {"credHelpers": {registry_tls.host: "logtest"}}), ("credsStore", {"credsStore": "logtest"})):
        log = tmp_path / f"{kind}.log"
        _helper(tmp_path / "bin", "logtest", registry_tls, log)
        config.write_text(json.dumps(doc))
        r = subprocess.run(
            [sys.executable, "-m", "bundler.cli", "copy", f"docker://{registry_tls.host}/helper/app:v1", f"oci:{tmp_path}/{kind}", *ca, "--json", "--workers", "4"],
            capture_output=True, text=True, env=env, timeout=120,
        )
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["digest"] == digest
        assert _calls(log) == [f"get {registry_tls.host}"], kind  # one registry, one call, for 3 manifests and 5 blobs
        assert registry_tls.password not in r.stdout + r.stderr
        # nothing was written anywhere: the auth file is as it was, and no file holds the secret
        assert json.loads(config.read_text()) == doc
        for path in (tmp_path / "home").rglob("*"):
            if path.is_file():
                assert registry_tls.password not in path.read_text(errors="replace"), path
        # skopeo in the same set-up gets the same image through the same helper, also with one call
        # (skopeo 1.9 reads credHelpers but not docker's credsStore, which docker itself honours)
        if kind == "credsStore":
            continue
        log.unlink()
        sk = subprocess.run(
            ["skopeo", "inspect", "--raw", "--cert-dir", str(registry_tls.cert_dir), f"docker://{registry_tls.host}/helper/app:v1"],
            capture_output=True, env=env, timeout=120,
        )
        assert sk.returncode == 0, sk.stderr
        import hashlib

        assert "sha256:" + hashlib.sha256(sk.stdout).hexdigest() == digest
        assert _calls(log) == [f"get {registry_tls.host}"]


def test_legacy_dockercfg_is_read_last(registry_tls: RegistryServer, tmp_path: Path, skopeo: Any) -> None:
    digest = _image(registry_tls, "legacy/app", "legacy")
    env = _env(tmp_path)
    token = base64.b64encode(f"{registry_tls.username}:{registry_tls.password}".encode()).decode()
    (tmp_path / "home" / ".dockercfg").write_text(json.dumps({f"https://{registry_tls.host}": {"auth": token, "email": "a@b.c"}}))
    r = subprocess.run(
        [sys.executable, "-m", "bundler.cli", "copy", f"docker://{registry_tls.host}/legacy/app:v1", f"oci:{tmp_path}/l", "--ca-file", str(registry_tls.ca_file), "--json"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["digest"] == digest
    sk = subprocess.run(
        ["skopeo", "inspect", "--raw", "--cert-dir", str(registry_tls.cert_dir), f"docker://{registry_tls.host}/legacy/app:v1"], capture_output=True, env=env, timeout=120
    )
    assert sk.returncode == 0, sk.stderr

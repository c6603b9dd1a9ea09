"""certs.d: per-registry CA files and client certificates, against docker-registry requiring a client
certificate (`http.tls.clientcas`), with skopeo reading the same certs.d as the oracle."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import pytest

from bundler.base.errors import UsageError
from bundler.registry.certsd import CertsD, read_host_dir
from tests.infra.images import make_image, make_index, write_oci_layout
from tests.infra.registry import RegistryServer


def test_host_directories_in_containers_order(tmp_path: Path) -> None:
    home, etc_containers, etc_docker = tmp_path / "home", tmp_path / "etc-containers", tmp_path / "etc-docker"
    for root, names in ((home, ["a.example:5000"]), (etc_containers, ["a.example:5000", "b.example"]), (etc_docker, ["b.example", "c.example:8443"])):
        for name in names:
            d = root / name
            d.mkdir(parents=True)
            (d / f"{root.name}.crt").write_text("x")
    certs = CertsD([home, etc_containers, etc_docker])
    # the first root with the registry's directory wins; later ones are not read
    assert certs.for_host("a.example:5000").ca_files == (home / "a.example:5000" / "home.crt",)  # type: ignore[union-attr]
    assert certs.for_host("b.example").ca_files == (etc_containers / "b.example" / "etc-containers.crt",)  # type: ignore[union-attr]
    assert certs.for_host("c.example:8443").directory == etc_docker / "c.example:8443"  # type: ignore[union-attr]
    assert certs.for_host("c.example") is None and certs.for_host("a.example") is None
    cas, clients = certs.scan()
    assert dict(cas) == {
        "a.example:5000": home / "a.example:5000" / "home.crt",
        "b.example:443": etc_containers / "b.example" / "etc-containers.crt",
        "c.example:8443": etc_docker / "c.example:8443" / "etc-docker.crt",
    }
    assert clients == ()


def test_client_pairs_must_be_complete(tmp_path: Path) -> None:
    d = tmp_path / "r.example:5000"
    d.mkdir()
    (d / "ca.crt").write_text("x")
    (d / "client.cert").write_text("x")
    with pytest.raises(UsageError, match=r"client.cert has no key .*client.key"):
        read_host_dir(d)
    (d / "client.key").write_text("x")
    (d / "stray.key").write_text("x")
    with pytest.raises(UsageError, match=r"stray.key has no client certificate .*stray.cert"):
        read_host_dir(d)
    (d / "stray.key").unlink()
    h = read_host_dir(d)
    assert h.ca_files == (d / "ca.crt",) and h.client_cert == (d / "client.cert", d / "client.key")
def _env(home: Path) -> Dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k not in ("REGISTRY_AUTH_FILE", "DOCKER_CONFIG", "HTTPS_PROXY", "https_proxy")}
    return {**keep, "HOME": str(home), "OCPB_DEBUG_LOG": "/dev/null"}


def _cli(env: Dict[str, str], *args: str) -> "subprocess.CompletedProcess[str]":
    return subprocess.run([sys.executable, "-m", "bundler.cli", *args], capture_output=True, text=True, timeout=180, env=env)


def test_mutual_tls_with_files_only_in_certs_d(registry_factory: Any, tmp_path: Path, skopeo: Any) -> None:
    server: RegistryServer = registry_factory("tls-clientcert")
    assert server.client_cert is not None and server.client_key is not None and server.ca_file is not None
    home = tmp_path / "home"
    host_dir = home / ".config" / "containers" / "certs.d" / server.host
    host_dir.mkdir(parents=True)
    shutil.copy(server.ca_file, host_dir / "ca.crt")
    shutil.copy(server.client_cert, host_dir / "client.cert")
    shutil.copy(server.client_key, host_dir / "client.key")
    env = _env(home)

    # put an image there with skopeo, which reads the same certs.d
    img = make_index([make_image(random_layers=[30_000], seed="mtls-a"), make_image(random_layers=[20_000], seed="mtls-b", architecture="arm64")])
    layout = write_oci_layout(tmp_path / "src", [("v1", img)])
    sk = subprocess.run(["skopeo", "copy", "--all", "--preserve-digests", f"oci:{layout}:v1", f"docker://{server.host}/mtls/app:v1"], capture_output=True, env=env, timeout=120)
    assert sk.returncode == 0, sk.stderr
    sk = subprocess.run(["skopeo", "inspect", "--raw", f"docker://{server.host}/mtls/app:v1"], capture_output=True, env=env, timeout=120)
    assert sk.returncode == 0, sk.stderr
    digest = "sha256:" + hashlib.sha256(sk.stdout).hexdigest()

    # ocp-bundler: no --ca-file, no flag at all; CA and client certificate come from certs.d
    r = _cli(env, "copy", f"docker://{server.host}/mtls/app:v1", f"oci:{tmp_path}/l", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["digest"] == digest
    r = _cli(env, "copy", f"oci:{tmp_path}/l", f"docker://{server.host}/mtls/copy:v2", "--json")
    assert r.returncode == 0, r.stderr
    sk = subprocess.run(["skopeo", "inspect", "--raw", f"docker://{server.host}/mtls/copy:v2"], capture_output=True, env=env, timeout=120)
    assert sk.returncode == 0 and "sha256:" + hashlib.sha256(sk.stdout).hexdigest() == digest
    # --ca-file stays usable beside certs.d
    r = _cli(env, "copy", f"docker://{server.host}/mtls/app:v1", f"oci:{tmp_path}/l2", "--ca-file", str(server.ca_file))
    assert r.returncode == 0, r.stderr

    # without the client certificate the registry refuses the handshake (skopeo fails the same way)
    (host_dir / "client.cert").unlink()
    (host_dir / "client.key").unlink()
    r = _cli(env, "copy", f"docker://{server.host}/mtls/app:v1", f"oci:{tmp_path}/l3")
    assert r.returncode == 5 and server.host in r.stderr, r.stderr
    sk = subprocess.run(["skopeo", "inspect", "--raw", f"docker://{server.host}/mtls/app:v1"], capture_output=True, env=env, timeout=120)
    assert sk.returncode != 0
    # and without the CA, the server's certificate is not trusted
    (host_dir / "ca.crt").unlink()
    r = _cli(env, "copy", f"docker://{server.host}/mtls/app:v1", f"oci:{tmp_path}/l4")
    assert r.returncode == 5 and "certificate" in r.stderr, r.stderr

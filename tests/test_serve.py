"""`serve`: a packed bundle as a read-only registry. skopeo copies every image out of it, digest-exact
(into a real docker-registry, `--all --preserve-digests`); Range requests are honoured byte for byte;
writes get 405; an incremental bundle needs its base; the CLI verifies first and stops cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator, List, Tuple

import pytest

from bundler.bundle.volumes import Bundle
from bundler.flows.serve import RegistryServer, ServeOptions, index_bundles, open_server
from tests.infra.images import Image
from tests.infra.registry import RegistryServer as DockerRegistry
from tests.test_unpack import ROOT, Entry, content, make_bundle, signature_files, signing_key  # noqa: F401 (fixture)

PREFIX = "mirror"


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> Tuple[Path, List[Entry]]:
    from tests.test_unpack import PRIVATE_KEY

    entries = content("serve", scale=2)
    directory = tmp_path_factory.mktemp("serve") / "bundle"
    return make_bundle(directory, entries, key=PRIVATE_KEY, files=signature_files(entries)), entries


@pytest.fixture
def served(packed: Tuple[Path, List[Entry]]) -> Iterator[RegistryServer]:
    with open_server(packed[0], ServeOptions(listen="127.0.0.1:0", prefix=PREFIX)) as server:
        yield server


def _get(url: str, *, method: str = "GET", headers: Any = None, data: Any = None) -> Tuple[int, dict, bytes]:
    request = urllib.request.Request(url, method=method, headers=headers or {}, data=data)
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_skopeo_copies_every_image_out_digest_exact(served: RegistryServer, packed: Tuple[Path, List[Entry]], fresh_registry_plain: DockerRegistry, skopeo: Any) -> None:
    _, entries = packed
    for entry in entries:
        source = f"{served.address}/{PREFIX}/{entry.repository}:{entry.tag}"
        assert skopeo.digest(source) == entry.digest
        target = f"{fresh_registry_plain.host}/copied/{entry.repository}:{entry.tag}"
        skopeo.copy(f"docker://{source}", f"docker://{target}", "--all", "--preserve-digests")
        assert skopeo.digest(target) == entry.digest
    status, _, body = _get(f"{served.url}/v2/_catalog")
    assert status == 200
    assert set(json.loads(body)["repositories"]) == {f"{PREFIX}/{e.repository}" for e in entries}
    app = next(e for e in entries if e.repository == "myorg/app")
    status, _, body = _get(f"{served.url}/v2/{PREFIX}/myorg/app/tags/list")
    assert json.loads(body) == {"name": f"{PREFIX}/myorg/app", "tags": [app.tag]}
    assert served.stats.requests > len(entries) and served.stats.bytes_sent > 0


def test_ranges_heads_and_refused_writes(served: RegistryServer, packed: Tuple[Path, List[Entry]]) -> None:
    _, entries = packed
    app = next(e for e in entries if e.repository == "myorg/app")
    assert isinstance(app.obj, Image)
    layer = app.obj.layers[0]
    whole = _get(f"{served.url}/v2/{PREFIX}/myorg/app/blobs/{layer.digest}")[2]
    assert len(whole) == layer.size
    status, headers, part = _get(f"{served.url}/v2/{PREFIX}/myorg/app/blobs/{layer.digest}", headers={"Range": "bytes=100-4195"})
    assert status == 206 and part == whole[100:4196]
    assert headers["Content-Range"] == f"bytes 100-4195/{layer.size}"
    status, _, tail = _get(f"{served.url}/v2/{PREFIX}/myorg/app/blobs/{layer.digest}", headers={"Range": "bytes=-10"})
    assert status == 206 and tail == whole[-10:]
    assert _get(f"{served.url}/v2/{PREFIX}/myorg/app/blobs/{layer.digest}", headers={"Range": f"bytes={layer.size}-"})[0] == 416
    status, headers, body = _get(f"{served.url}/v2/{PREFIX}/myorg/app/manifests/{app.tag}", method="HEAD")
    assert status == 200 and headers["Docker-Content-Digest"] == app.digest and body == b""
    # a blob of another repository is not served under this one, as a registry scopes blobs by repository
    other = next(e for e in entries if e.repository == "redhat/redhat-operator-index")
    assert isinstance(other.obj, Image)
    assert _get(f"{served.url}/v2/{PREFIX}/myorg/app/blobs/{other.obj.config.digest}")[0] == 404
    assert _get(f"{served.url}/v2/{PREFIX}/nothing/manifests/latest")[0] == 404
    for method, path in (("POST", "blobs/uploads/"), ("PUT", f"manifests/{app.tag}"), ("DELETE", f"manifests/{app.digest}"), ("PATCH", "blobs/uploads/x")):
        status, _, body = _get(f"{served.url}/v2/{PREFIX}/myorg/app/{path}", method=method, data=b"x" if method != "DELETE" else None)
        assert status == 405, (method, path)
        assert json.loads(body)["errors"][0]["code"] == "UNSUPPORTED"


def test_ocp_bundler_copy_pulls_from_a_served_bundle(served: RegistryServer, packed: Tuple[Path, List[Entry]], fresh_registry_plain: DockerRegistry, skopeo: Any) -> None:
    _, entries = packed
    release = next(e for e in entries if e.kind == "release")
    source = f"docker://{served.address}/{PREFIX}/{release.repository}:{release.tag}"
    target = f"docker://{fresh_registry_plain.host}/again/{release.repository}:{release.tag}"
    env = {**os.environ, "OCPB_DEBUG_LOG": os.devnull}
    done = subprocess.run(
        [sys.executable, "-m", "bundler.cli", "copy", source, target, "--insecure-registry", served.address, "--insecure-registry", fresh_registry_plain.host],
        capture_output=True, env=env, cwd=ROOT, timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert skopeo.digest(f"{fresh_registry_plain.host}/again/{release.repository}:{release.tag}") == release.digest


def test_an_incremental_bundle_is_served_with_its_base(packed: Tuple[Path, List[Entry]], tmp_path: Path, skopeo: Any) -> None:
    base_dir, entries = packed
    from tests.test_unpack import PRIVATE_KEY

    second = make_bundle(tmp_path / "incr", entries, key=PRIVATE_KEY, base=base_dir, files=signature_files(entries))
    alone = index_bundles(Bundle.open(second), prefix=PREFIX)
    assert alone.missing  # every layer is left to the base
    with RegistryServer(index_bundles(Bundle.open(second), [Bundle.open(base_dir)], prefix=PREFIX), ServeOptions(listen="127.0.0.1:0", prefix=PREFIX)) as server:
        for entry in entries:
            assert skopeo.digest(f"{server.address}/{PREFIX}/{entry.repository}:{entry.tag}") == entry.digest
        app = next(e for e in entries if e.repository == "myorg/app")
        assert isinstance(app.obj, Image)
        layer = app.obj.layers[0]
        assert len(_get(f"{server.url}/v2/{PREFIX}/myorg/app/blobs/{layer.digest}")[2]) == layer.size


def test_cli_verifies_serves_and_stops_with_a_summary(packed: Tuple[Path, List[Entry]], signing_key: Tuple[Path, Path]) -> None:
    env = {**os.environ, "OCPB_DEBUG_LOG": os.devnull}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bundler.cli", "serve", str(packed[0]), "--listen", "127.0.0.1:0", "--key", str(signing_key[1]), "--require-signature"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        assert line.startswith("serving ") and "(read-only)" in line, line + proc.stderr.read().decode() if proc.stderr else ""
        url = line.split(" at ", 1)[1].split(" ", 1)[0]
        assert _get(f"{url}/v2/")[0] == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    assert out.decode().startswith("stopped: ") and "requests" in out.decode()

    wrong = subprocess.run(
        [sys.executable, "-m", "bundler.cli", "serve", str(packed[0]), "--listen", "127.0.0.1:0", "--key", str(signing_key[1]), "--tls-cert", str(signing_key[1])],
        capture_output=True, env=env, cwd=ROOT, timeout=120,
    )
    assert wrong.returncode == 2 and b"--tls-cert and --tls-key go together" in wrong.stderr and b"Traceback" not in wrong.stderr


def test_systemd_unit_runs_the_same_serve(packed: Tuple[Path, List[Entry]], tmp_path: Path, signing_key: Tuple[Path, Path]) -> None:
    unit = tmp_path / "ocp-bundler-serve.service"
    env = {**os.environ, "OCPB_DEBUG_LOG": os.devnull}
    done = subprocess.run(
        [sys.executable, "-m", "bundler.cli", "serve", str(packed[0]), "--listen", "0.0.0.0:5000", "--key", str(signing_key[1]), "--systemd-unit", str(unit)],
        capture_output=True, env=env, cwd=ROOT, timeout=60,
    )
    assert done.returncode == 0, done.stderr.decode()
    text = unit.read_text()
    exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    assert f" serve {packed[0].resolve()} --listen 0.0.0.0:5000" in exec_start and f"--key {signing_key[1].resolve()}" in exec_start
    assert "[Install]" in text and "WantedBy=multi-user.target" in text


def test_cluster_resources_for_the_served_address(packed: Tuple[Path, List[Entry]], tmp_path: Path) -> None:
    import yaml

    env = {**os.environ, "OCPB_DEBUG_LOG": os.devnull}
    resources = tmp_path / "resources"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bundler.cli", "serve", str(packed[0]), "--no-verify", "--listen", "127.0.0.1:0",
         "--advertise", "edge1.example.com:5000", "--prefix", PREFIX, "--resources-dir", str(resources)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().decode()
        assert first.startswith("cluster resources for edge1.example.com:5000"), first
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    idms = yaml.safe_load((resources / "imageDigestMirrorSet-0.yaml").read_text())
    mirrors = {m for entry in idms["spec"]["imageDigestMirrors"] for m in entry["mirrors"]}
    assert mirrors and all(m.startswith(f"edge1.example.com:5000/{PREFIX}/") for m in mirrors)
    assert list(resources.glob("catalogSource-*.yaml"))

    refused = subprocess.run(
        [sys.executable, "-m", "bundler.cli", "serve", str(packed[0]), "--no-verify", "--listen", "0.0.0.0:0", "--resources-dir", str(tmp_path / "r2")],
        capture_output=True, env=env, cwd=ROOT, timeout=60,
    )
    assert refused.returncode == 2 and b"--advertise" in refused.stderr

"""Tests of the test infrastructure itself (tests/infra), against the real registry and
skopeo: if these fail, nothing else in the suite can be trusted."""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.client
import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest
import urllib3
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from tests.conftest import Skopeo, require_tool
from tests.infra.certs import make_tls_files
from tests.infra.faultproxy import FaultProxy
from tests.infra.images import (
    DOCKER_LAYER_GZIP,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    Image,
    OCI_LAYER_TAR,
    OCI_MANIFEST,
    PushError,
    RegistryClient,
    make_image,
    make_index,
    push,
    write_oci_layout,
)
from tests.infra.registry import RegistryServer
from tests.infra.token_server import b64url_decode, jwt_claims

MODES = ["registry_plain", "registry_tls", "registry_token"]
_HTTP = urllib3.PoolManager(retries=False)


def _skopeo_args(reg: RegistryServer) -> Dict[str, Any]:
    return {
        "tls_verify": reg.ca_file is not None,
        "creds": reg.auth,
        "cert_dir": reg.cert_dir,
    }


# -- images ------------------------------------------------------------------------
def test_images_are_deterministic_and_consistent() -> None:
    a = make_image(files={"etc/x": b"1"}, random_layers=[2048], seed=7, labels={"k": "v"})
    b = make_image(files={"etc/x": b"1"}, random_layers=[2048], seed=7, labels={"k": "v"})
    c = make_image(files={"etc/x": b"1"}, random_layers=[2048], seed=8, labels={"k": "v"})
    assert a.digest == b.digest and a.digest != c.digest
    assert a.digest == "sha256:" + hashlib.sha256(a.manifest_raw).hexdigest()
    manifest = a.manifest
    assert manifest["mediaType"] == OCI_MANIFEST
    config = json.loads(a.config.raw)
    assert config["config"]["Labels"] == {"k": "v"}
    assert config["architecture"] == "amd64" and config["os"] == "linux"
    diff_ids = ["sha256:" + hashlib.sha256(gzip.decompress(layer.raw)).hexdigest() for layer in a.layers]
    assert config["rootfs"]["diff_ids"] == diff_ids
    assert [d["digest"] for d in manifest["layers"]] == [layer.digest for layer in a.layers]

    docker = make_image(base_layers=a.layers[:1], docker=True, seed=7)
    assert docker.media_type == DOCKER_MANIFEST
    assert {d["mediaType"] for d in docker.manifest["layers"]} == {DOCKER_LAYER_GZIP}
    assert docker.layers[0].digest == a.layers[0].digest  # shared base layer, same bytes

    tar = make_image(files={"f": b"x"}, compressed=False)
    assert tar.manifest["layers"][0]["mediaType"] == OCI_LAYER_TAR

    lst = make_index([docker, make_image(seed=9, docker=True, architecture="arm64", variant="v8")], docker=True)
    assert lst.media_type == DOCKER_LIST
    assert [m["platform"]["architecture"] for m in lst.manifest["manifests"]] == ["amd64", "arm64"]
    assert lst.manifest["manifests"][1]["platform"]["variant"] == "v8"
    assert len(lst.images) == 2


# -- registries + pusher, checked by skopeo --------------------------------------------
@pytest.mark.parametrize("fixture", MODES)
def test_push_oci_image_and_docker_list(
    fixture: str, request: pytest.FixtureRequest, skopeo: Skopeo, repo: str
) -> None:
    reg: RegistryServer = request.getfixturevalue(fixture)
    img = make_image(files={"hello": b"world"}, random_layers=[4096], seed=fixture)
    children = [
        make_image(seed=fixture + "-a", docker=True),
        make_image(seed=fixture + "-b", docker=True, architecture="arm64"),
    ]
    lst = make_index(children, docker=True)
    oci_lst = make_index([img, make_image(seed=fixture + "-c", architecture="s390x")])
    for tag, obj in (("img", img), ("list", lst), ("ocilist", oci_lst)):
        assert push(reg.url, repo, obj, tag, ca_file=reg.ca_file, auth=reg.auth) == obj.digest
        assert skopeo.digest("%s/%s:%s" % (reg.host, repo, tag), **_skopeo_args(reg)) == obj.digest
    # children are addressable by digest
    child = lst.children[1]
    assert skopeo.digest("%s/%s@%s" % (reg.host, repo, child.digest), **_skopeo_args(reg)) == child.digest
    with RegistryClient(reg.url, ca_file=reg.ca_file, auth=reg.auth) as client:
        raw, ctype = client.get_manifest(repo, "list")
        assert raw == lst.raw and ctype == DOCKER_LIST
        assert client.get_blob(repo, img.layers[0].digest) == img.layers[0].raw


def test_tls_registry_rejects_missing_credentials(registry_tls: RegistryServer, repo: str) -> None:
    with pytest.raises(PushError):
        push(registry_tls.url, repo, make_image(seed="nocreds"), "x", ca_file=registry_tls.ca_file)
    with pytest.raises(PushError):
        push(registry_tls.url, repo, make_image(seed="bad"), "x", ca_file=registry_tls.ca_file, auth=("user", "wrong"))


def test_authfile_and_ca_work_with_skopeo(
    registry_tls: RegistryServer, skopeo: Skopeo, repo: str, authfile: Callable[..., Path]
) -> None:
    img = make_image(seed="authfile")
    push(registry_tls.url, repo, img, "v1", ca_file=registry_tls.ca_file, auth=registry_tls.auth)
    path = authfile(registry_tls)
    entry = json.loads(path.read_text())["auths"][registry_tls.host]
    assert base64.b64decode(entry["auth"]).decode() == "user:pass"
    out = skopeo.run(
        "inspect", "--raw", "--authfile", str(path), "--cert-dir", str(registry_tls.cert_dir),
        "docker://%s/%s:v1" % (registry_tls.host, repo),
    ).stdout
    assert out == img.raw


def test_certificate_has_ip_san(tmp_path: Path) -> None:
    files = make_tls_files(tmp_path)
    cert = x509.load_pem_x509_certificate(files.cert_file.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "127.0.0.1" in [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert sorted(p.name for p in files.ca_dir.iterdir()) == ["ca.crt"]


def test_oci_layout_readable_by_skopeo(oci_dir: Path, skopeo: Skopeo, fresh_registry_plain: RegistryServer) -> None:
    img = make_image(files={"a": b"b"}, seed="layout")
    idx = make_index([img, make_image(seed="layout-arm", architecture="arm64")])
    write_oci_layout(oci_dir, [("img", img), ("idx", idx)])
    write_oci_layout(oci_dir, [("img2", make_image(seed="layout2"))])  # merges
    index = json.loads((oci_dir / "index.json").read_text())
    assert [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]] == ["img", "idx", "img2"]
    assert skopeo.digest("oci:%s:img" % oci_dir) == img.digest
    assert skopeo.digest("oci:%s:idx" % oci_dir) == idx.digest
    assert (oci_dir / "blobs/sha256" / img.layers[0].digest[7:]).read_bytes() == img.layers[0].raw
    dst = "%s/t/from-layout:v1" % fresh_registry_plain.host
    skopeo.copy("oci:%s:idx" % oci_dir, dst, "--all", "--preserve-digests")
    assert skopeo.digest(dst) == idx.digest


def test_restart_keeps_data_and_port(fresh_registry_plain: RegistryServer, skopeo: Skopeo) -> None:
    reg = fresh_registry_plain
    img = make_image(seed="restart")
    push(reg.url, "t/r", img, "v1")
    host, pid = reg.host, reg.pid
    reg.restart()
    assert reg.host == host and reg.pid != pid
    assert skopeo.digest("%s/t/r:v1" % reg.host) == img.digest


def test_registry_process_is_gone_after_close() -> None:
    require_tool("docker-registry")
    with RegistryServer("plain") as reg:
        pid = reg.pid
        assert pid is not None and Path("/proc/%d" % pid).exists()
        workdir = reg.workdir
    assert not Path("/proc/%d" % pid).exists()
    assert not workdir.exists()


def test_require_tool_skips_or_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OCPB_REQUIRE_TOOLS", raising=False)
    with pytest.raises(pytest.skip.Exception):
        require_tool("ocpb-no-such-tool")
    monkeypatch.setenv("OCPB_REQUIRE_TOOLS", "1")
    with pytest.raises(pytest.fail.Exception):
        require_tool("ocpb-no-such-tool")
    assert require_tool("sh")


# -- token server ------------------------------------------------------------------
def _get_token(reg: RegistryServer, scope: str, auth: Optional[str]) -> Any:
    assert reg.token_server is not None
    headers = {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()} if auth else {}
    return _HTTP.request(
        "GET", reg.token_server.realm, fields={"service": reg.token_server.service, "scope": scope}, headers=headers
    )


def test_token_is_valid_es256_jwt(registry_token: RegistryServer, repo: str) -> None:
    ts = registry_token.token_server
    assert ts is not None
    resp = _get_token(registry_token, "repository:%s:pull,push" % repo, "user:pass")
    assert resp.status == 200
    body = json.loads(resp.data)
    token = body["token"]
    assert body["access_token"] == token and body["expires_in"] == ts.expires_in and body["issued_at"]
    head_b64, claims_b64, sig_b64 = token.split(".")
    header = json.loads(b64url_decode(head_b64))
    assert header["alg"] == "ES256" and header["typ"] == "JWT"
    cert = x509.load_der_x509_certificate(base64.b64decode(header["x5c"][0]))
    sig = b64url_decode(sig_b64)
    assert len(sig) == 64
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    pub = cert.public_key()
    assert isinstance(pub, ec.EllipticCurvePublicKey)
    pub.verify(der, (head_b64 + "." + claims_b64).encode(), ec.ECDSA(hashes.SHA256()))
    claims = jwt_claims(token)
    assert claims["aud"] == ts.service and claims["iss"] == ts.issuer and claims["sub"] == "user"
    assert claims["access"] == [{"type": "repository", "name": repo, "actions": ["pull", "push"]}]
    assert claims["nbf"] <= claims["iat"] < claims["exp"]

    # the registry accepts it
    r = _HTTP.request("GET", registry_token.url + "/v2/", headers={"Authorization": "Bearer " + token})
    assert r.status == 200


def test_token_server_rejects_wrong_password(registry_token: RegistryServer, repo: str) -> None:
    ts = registry_token.token_server
    assert ts is not None
    before = ts.rejected
    assert _get_token(registry_token, "repository:%s:pull" % repo, "user:wrong").status == 401
    assert ts.rejected == before + 1
    with pytest.raises(PushError, match="token request failed: 401"):
        push(registry_token.url, repo, make_image(seed="wrongpw"), "v1", auth=("user", "wrong"))
    # anonymous gets a token without access: the registry refuses it
    anon = _get_token(registry_token, "repository:%s:pull" % repo, None)
    assert anon.status == 200 and jwt_claims(json.loads(anon.data)["token"])["access"] == []
    with pytest.raises(PushError):
        push(registry_token.url, repo, make_image(seed="anon"), "v1")


def test_token_anonymous_pull(registry_factory: Callable[..., RegistryServer], skopeo: Skopeo) -> None:
    reg = registry_factory("token", anonymous_pull=True)
    img = make_image(seed="anon-pull")
    push(reg.url, "t/anon", img, "v1", auth=reg.auth)
    assert skopeo.digest("%s/t/anon:v1" % reg.host) == img.digest  # no creds
    with pytest.raises(PushError):
        push(reg.url, "t/anon", make_image(seed="anon-push"), "v2")
    assert reg.token_server is not None
    assert "repository:t/anon:pull" in reg.token_server.scopes_requested


def test_short_token_expiry_forces_refresh(registry_factory: Callable[..., RegistryServer]) -> None:
    reg = registry_factory("token", token_expires_in=1)
    ts = reg.token_server
    assert ts is not None
    with FaultProxy(reg.url, strict_token_expiry=True) as proxy, RegistryClient(proxy.url, auth=reg.auth) as client:
        client.push("t/exp", make_image(seed="exp1"), "v1")
        issued = ts.tokens_issued
        time.sleep(1.2)
        client.push("t/exp", make_image(seed="exp2"), "v2")
        assert proxy.counts["expired_token"] >= 1
        assert ts.tokens_issued > issued
        assert all(t.expires_at - t.issued_at == 1 for t in ts.issued)


# -- fault proxy --------------------------------------------------------------------
Proxied = Tuple[FaultProxy, Image]


@pytest.fixture
def proxied(fresh_registry_plain: RegistryServer) -> Iterator[Proxied]:
    img = make_image(random_layers=[100_000], seed="proxy")
    push(fresh_registry_plain.url, "t/p", img, "v1")
    with FaultProxy(fresh_registry_plain.url, stall_seconds=1.0) as proxy:
        yield proxy, img


def _http(proxy: FaultProxy, method: str, path: str, timeout: float = 10) -> http.client.HTTPConnection:
    conn = http.client.HTTPConnection("127.0.0.1", int(proxy.host.split(":")[1]), timeout=timeout)
    conn.request(method, path)
    return conn


def _is_blob(method: str, path: str) -> bool:
    return method == "GET" and "/blobs/sha256:" in path


def test_proxy_forwards_faithfully(proxied: Proxied, skopeo: Skopeo, tmp_path: Path) -> None:
    proxy, img = proxied
    assert skopeo.digest("%s/t/p:v1" % proxy.host) == img.digest
    # skopeo pushes with chunked PATCH bodies and relative/absolute Locations
    big = make_image(random_layers=[3_000_000], seed="through-proxy")
    write_oci_layout(tmp_path / "oci", [("x", big)])
    skopeo.copy("oci:%s:x" % (tmp_path / "oci"), "%s/t/q:v1" % proxy.host, "--preserve-digests")
    with RegistryClient(proxy.upstream) as direct:
        assert direct.get_manifest("t/q", "v1")[0] == big.raw
        assert direct.get_blob("t/q", big.layers[0].digest) == big.layers[0].raw
    assert any(method == "PATCH" for method, *_ in proxy.log)
    # chunked request body + Location rewritten to the proxy
    conn = _http(proxy, "POST", "/v2/t/loc/blobs/uploads/")
    resp = conn.getresponse()
    resp.read()
    location = resp.getheader("Location", "")
    assert resp.status == 202 and location.startswith(proxy.url + "/v2/t/loc/blobs/uploads/")
    data = os.urandom(300_000)
    chunks = (data[i : i + 65_000] for i in range(0, len(data), 65_000))
    conn.request("PATCH", location[len(proxy.url):], body=chunks, encode_chunked=True)
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 202 and resp.getheader("Range") == "0-%d" % (len(data) - 1)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    conn.request("PUT", resp.getheader("Location", "")[len(proxy.url):] + "&digest=" + digest, body=b"")
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 201
    conn.close()
    with RegistryClient(proxy.upstream) as direct:
        assert direct.get_blob("t/loc", digest) == data
    assert proxy.total_faults == 0


def test_proxy_reset(proxied: Proxied) -> None:
    proxy, _ = proxied
    proxy.script("reset", match=lambda m, p: p == "/v2/")
    conn = _http(proxy, "GET", "/v2/")
    with pytest.raises((ConnectionResetError, http.client.RemoteDisconnected)):
        conn.getresponse()
    conn.close()
    assert proxy.counts["reset"] == 1
    conn = _http(proxy, "GET", "/v2/")
    assert conn.getresponse().status == 200
    conn.close()


def test_proxy_500_and_429(proxied: Proxied) -> None:
    proxy, img = proxied
    blob_path = "/v2/t/p/blobs/" + img.layers[0].digest
    proxy.script("500", match=_is_blob, times=2)
    proxy.script("429", match=lambda m, p: "/manifests/" in p)
    http_ = urllib3.PoolManager(retries=False)
    assert http_.request("HEAD", proxy.url + blob_path).status == 200  # HEAD does not match
    for _ in range(2):
        r = http_.request("GET", proxy.url + blob_path)
        assert r.status == 500 and json.loads(r.data)["errors"][0]["code"] == "UNKNOWN"
    assert http_.request("GET", proxy.url + blob_path).data == img.layers[0].raw
    r = http_.request("GET", proxy.url + "/v2/t/p/manifests/v1", headers={"Accept": OCI_MANIFEST})
    assert r.status == 429 and r.headers["Retry-After"] == "1"
    assert json.loads(r.data)["errors"][0]["code"] == "TOOMANYREQUESTS"
    assert proxy.counts["500"] == 2 and proxy.counts["429"] == 1 and proxy.pending_scripts == 0


def test_proxy_truncate(proxied: Proxied) -> None:
    proxy, img = proxied
    layer = img.layers[0]
    proxy.script("truncate")  # first request with a body: HEAD passes, the script waits
    conn = _http(proxy, "HEAD", "/v2/t/p/blobs/" + layer.digest)
    assert conn.getresponse().status == 200
    conn.close()
    assert proxy.counts["truncate"] == 0 and proxy.pending_scripts == 1
    conn = _http(proxy, "GET", "/v2/t/p/blobs/" + layer.digest)
    resp = conn.getresponse()
    assert resp.status == 200 and int(resp.getheader("Content-Length", "0")) == layer.size
    with pytest.raises(http.client.IncompleteRead) as info:
        resp.read()
    assert len(info.value.partial) == layer.size // 2
    assert layer.raw.startswith(info.value.partial)
    conn.close()
    assert proxy.counts["truncate"] == 1


def test_proxy_stall(proxied: Proxied) -> None:
    proxy, _ = proxied
    proxy.script("stall", times=2)
    http_ = urllib3.PoolManager(retries=False)
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        http_.request("GET", proxy.url + "/v2/", timeout=urllib3.Timeout(read=0.3))
    start = time.monotonic()
    assert http_.request("GET", proxy.url + "/v2/", timeout=5).status == 200
    assert time.monotonic() - start >= 0.9
    assert proxy.counts["stall"] == 2


def test_proxy_random_faults_are_seeded(fresh_registry_plain: RegistryServer) -> None:
    def run() -> List[int]:
        with FaultProxy(fresh_registry_plain.url, rate=0.5, kinds=["500", "429"], seed=42) as proxy:
            http_ = urllib3.PoolManager(retries=False)
            statuses = [http_.request("GET", proxy.url + "/v2/").status for _ in range(30)]
            assert proxy.counts["500"] == statuses.count(500)
            assert proxy.counts["429"] == statuses.count(429)
            assert 0 < proxy.total_faults < 30
            return statuses

    assert run() == run()


def test_proxy_stop_leaves_no_threads(proxied: Proxied) -> None:
    proxy, _ = proxied
    before = threading.active_count()
    conns = [_http(proxy, "GET", "/v2/") for _ in range(5)]
    for c in conns:
        c.getresponse().read()  # keep-alive connections left open
    proxy.script("stall", stall_seconds=30)

    def stalled_client() -> None:
        try:
            _http(proxy, "GET", "/v2/", timeout=60).getresponse()
        except (OSError, http.client.HTTPException):
            pass

    client = threading.Thread(target=stalled_client, daemon=True)
    client.start()
    time.sleep(0.2)
    start = time.monotonic()
    proxy.stop()
    assert time.monotonic() - start < 5
    client.join(timeout=5)
    assert threading.active_count() <= before, threading.enumerate()  # the proxy's own loop thread is gone as well
    for c in conns:
        c.close()
    with pytest.raises(OSError):
        _http(proxy, "GET", "/v2/", timeout=1).getresponse()



def test_link_relay_passes_bytes_and_ranges_exactly_and_counts_them(registry_plain: RegistryServer) -> None:
    """The benchmarks' link relay (a child process): whole and ranged blob GETs arrive byte-exact through
    it, keep-alive connections are reused, and its counters see every connection and byte."""
    from tests.infra.images import random_layer
    from tests.infra.link import LinkRelay

    layer = random_layer(1_500_000, seed="link-relay")
    push(registry_plain.url, "infra/link", make_image(base_layers=[layer], seed="link-relay"), "v1")
    with LinkRelay(registry_plain.host, rate=50e6, latency=0.005, per_connection=20e6) as link:
        pool = urllib3.PoolManager(maxsize=1)
        url = f"{link.url}/v2/infra/link/blobs/{layer.digest}"
        whole = pool.request("GET", url)
        part = pool.request("GET", url, headers={"Range": "bytes=1000-299999"})
        stats = link.stats()
    assert whole.status == 200 and whole.data == layer.raw
    assert part.status == 206 and part.data == layer.raw[1000:300000]
    assert stats["connections"] == 1
    assert stats["bytes_down"] >= len(layer.raw) + 299000 and stats["bytes_up"] > 0

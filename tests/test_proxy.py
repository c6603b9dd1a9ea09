"""HTTP(S) proxies from the environment, against a real forward proxy and real registries, skopeo as the oracle.

The registries are addressed by a name only the proxy resolves (``registry.corp.test``), so a copy that
does not go through the proxy cannot reach them at all.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import pytest

from bundler.base.errors import UsageError
from bundler.registry.proxy import NoProxy, ProxySettings
from tests.infra.forward_proxy import ForwardProxy
from tests.infra.images import make_image, make_index, push
from tests.infra.registry import RegistryServer

NAME = "registry.corp.test"
PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy")


# -- choosing the proxy (Go's httpproxy rules) --------------------------------------------------------------


@pytest.mark.parametrize(
    "entry,host,port,bypass",
    [
        ("registry.corp.test", "registry.corp.test", "443", True),
        ("corp.test", "registry.corp.test", "443", True),  # a domain: itself and its subdomains
        ("corp.test", "corp.test", "443", True),
        (".corp.test", "registry.corp.test", "443", True),  # a leading dot: subdomains only
        (".corp.test", "corp.test", "443", False),
        ("*.corp.test", "corp.test", "443", False),
        ("corp.test", "notcorp.test", "443", False),
        ("corp.test:5000", "registry.corp.test", "5000", True),
        ("corp.test:5000", "registry.corp.test", "443", False),
        ("10.0.0.0/8", "10.1.2.3", "443", True),
        ("10.0.0.0/8", "11.1.2.3", "443", False),
        ("fd00::/8", "fd00::1", "443", True),
        ("192.168.1.5", "192.168.1.5", "80", True),
        ("192.168.1.5:8443", "192.168.1.5", "80", False),
        ("*", "anything.example", "443", True),
        (" A.Example ,, b.example", "x.a.example", "443", True),
    ],
)
def test_no_proxy_forms(entry: str, host: str, port: str, bypass: bool) -> None:
    assert NoProxy.parse(entry).bypass(host, port) is bypass


def test_environment_precedence_and_override() -> None:
    env = {"HTTPS_PROXY": "proxy.upper:3128", "https_proxy": "http://proxy.lower:3128", "http_proxy": "http://plain:80", "no_proxy": "internal.test"}
    s = ProxySettings.from_environment(env)
    assert s.proxy_for("https://quay.io/v2/") is not None and s.proxy_for("https://quay.io/v2/").url == "http://proxy.upper:3128"  # type: ignore[union-attr]
    assert s.proxy_for("http://quay.io/v2/").url == "http://plain:80"  # type: ignore[union-attr]
    assert s.proxy_for("https://reg.internal.test:5000/v2/") is None
    assert s.proxy_for("https://127.0.0.1:5000/v2/") is None and s.proxy_for("http://localhost/v2/") is None  # loopback: never
    o = ProxySettings.from_environment(env, override="http://u:p%40ss@other:8080")
    p = o.proxy_for("http://quay.io/")
    assert p is not None and p.url == "http://other:8080" and (p.username, p.password) == ("u", "p@ss") and "p@ss" not in repr(p)
    assert o.proxy_for("https://x.internal.test/") is None  # NO_PROXY still applies to --proxy
    assert ProxySettings.from_environment({}).proxy_for("https://quay.io/") is None
    with pytest.raises(UsageError, match="HTTPS_PROXY"):
        ProxySettings.from_environment({"HTTPS_PROXY": "socks5://p:1080"})


# -- real proxy, real registries ----------------------------------------------------------------------------


def _cli(*args: str, env: Dict[str, str]) -> "subprocess.CompletedProcess[str]":
    base = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
    return subprocess.run(
        [sys.executable, "-m", "bundler.cli", *args], capture_output=True, text=True, timeout=180,
        env={**base, "OCPB_DEBUG_LOG": "/dev/null", **env},
    )


def _skopeo_digest(ref: str, env: Dict[str, str], *extra: str) -> "subprocess.CompletedProcess[bytes]":
    base = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
    return subprocess.run(["skopeo", "inspect", "--raw", *extra, f"docker://{ref}"], capture_output=True, env={**base, **env}, timeout=120)


@pytest.fixture
def proxy() -> Iterator[ForwardProxy]:
    with ForwardProxy({NAME: "127.0.0.1"}) as p:
        yield p


@pytest.fixture
def tls_registry(registry_factory: Any) -> RegistryServer:
    server: RegistryServer = registry_factory("tls-htpasswd", tls_names=(NAME,))
    return server


def test_tls_registry_only_through_the_proxy_by_connect(proxy: ForwardProxy, tls_registry: RegistryServer, tmp_path: Path, skopeo: Any) -> None:
    img = make_index([make_image(random_layers=[30_000], seed="proxy-tls", docker=True)], docker=True)
    digest = push(tls_registry.url, "p/app", img, "v1", ca_file=tls_registry.ca_file, auth=tls_registry.auth)
    ref = f"{NAME}:{tls_registry.port}/p/app:v1"
    auth = tls_registry.write_authfile(tmp_path / "auth.json")
    text = auth.read_text().replace(tls_registry.host, f"{NAME}:{tls_registry.port}")
    auth.write_text(text)
    common = ["--authfile", str(auth), "--ca-file", str(tls_registry.ca_file)]

    # without a proxy the name does not even resolve
    r = _cli("copy", f"docker://{ref}", f"oci:{tmp_path}/direct", *common, env={})
    assert r.returncode == 5 and "cannot reach" in r.stderr, r.stderr

    # HTTPS_PROXY: a CONNECT tunnel, end to end TLS; digest-exact, the same as skopeo through the same proxy
    r = _cli("copy", f"docker://{ref}", f"oci:{tmp_path}/l", *common, "--json", env={"HTTPS_PROXY": proxy.url})
    assert r.returncode == 0, r.stderr
    assert f'"digest": "{digest}"' in r.stdout
    ours = list(proxy.requests)
    assert ours and {q.method for q in ours} == {"CONNECT"} and {q.host for q in ours} == {f"{NAME}:{tls_registry.port}"}
    for q in ours:  # registry credentials never reach the proxy; no proxy credentials were configured
        assert "authorization" not in q.headers and "proxy-authorization" not in q.headers
    sk = _skopeo_digest(ref, {"HTTPS_PROXY": proxy.url}, "--authfile", str(auth), "--cert-dir", str(tls_registry.cert_dir))
    assert sk.returncode == 0, sk.stderr
    import hashlib

    assert "sha256:" + hashlib.sha256(sk.stdout).hexdigest() == digest

    # NO_PROXY with the domain: direct again, so unreachable (skopeo agrees)
    env = {"HTTPS_PROXY": proxy.url, "NO_PROXY": "corp.test"}
    r = _cli("copy", f"docker://{ref}", f"oci:{tmp_path}/np", *common, env=env)
    assert r.returncode == 5, r.stderr
    assert _skopeo_digest(ref, env, "--authfile", str(auth), "--cert-dir", str(tls_registry.cert_dir)).returncode != 0

    # --proxy overrides the environment
    before = len(proxy.requests)
    r = _cli("copy", f"docker://{ref}", f"oci:{tmp_path}/flag", *common, "--proxy", proxy.url, env={"HTTPS_PROXY": "http://127.0.0.1:9"})
    assert r.returncode == 0, r.stderr
    assert len(proxy.requests) > before


def test_plain_http_registry_through_the_proxy(proxy: ForwardProxy, fresh_registry_plain: RegistryServer, tmp_path: Path) -> None:
    img = make_image(random_layers=[20_000], seed="proxy-plain")
    digest = push(fresh_registry_plain.url, "p/plain", img, "v1")
    ref = f"{NAME}:{fresh_registry_plain.port}/p/plain:v1"
    r = _cli(
        "copy", f"docker://{ref}", f"oci:{tmp_path}/l", "--insecure-registry", f"{NAME}:{fresh_registry_plain.port}", "--json",
        env={"HTTP_PROXY": proxy.url, "HTTPS_PROXY": proxy.url},
    )
    assert r.returncode == 0, r.stderr
    assert f'"digest": "{digest}"' in r.stdout
    forwarded = [q for q in proxy.requests if q.method != "CONNECT"]
    assert forwarded and all(q.target.startswith(f"http://{NAME}:{fresh_registry_plain.port}/v2/") for q in forwarded)


def test_proxy_credentials_only_from_the_proxy_url(tls_registry: RegistryServer, tmp_path: Path) -> None:
    push(tls_registry.url, "p/auth", make_image(seed="proxy-auth"), "v1", ca_file=tls_registry.ca_file, auth=tls_registry.auth)
    ref = f"{NAME}:{tls_registry.port}/p/auth:v1"
    auth = tmp_path / "auth.json"
    tls_registry.write_authfile(auth)
    auth.write_text(auth.read_text().replace(tls_registry.host, f"{NAME}:{tls_registry.port}"))
    common = ["--authfile", str(auth), "--ca-file", str(tls_registry.ca_file)]
    with ForwardProxy({NAME: "127.0.0.1"}, credentials=("pu", "pp")) as guarded:
        r = _cli("copy", f"docker://{ref}", f"oci:{tmp_path}/no", *common, env={"HTTPS_PROXY": guarded.url})
        assert r.returncode == 5 and "407" in r.stderr, r.stderr
        assert all("proxy-authorization" not in q.headers for q in guarded.requests)
        url: Optional[str] = guarded.url.replace("http://", "http://pu:pp@")
        r = _cli("copy", f"docker://{ref}", f"oci:{tmp_path}/yes", *common, env={"HTTPS_PROXY": str(url)})
        assert r.returncode == 0, r.stderr
        assert "pp" not in r.stderr
        assert any(q.headers.get("proxy-authorization") for q in guarded.requests)
        assert all("authorization" not in q.headers for q in guarded.requests)

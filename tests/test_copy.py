"""Registry → layout → registry copies on a real docker-registry, proven digest-exact with skopeo.

Covers the three registry modes (plain HTTP, htpasswd + TLS, token auth), OCI- and Docker-typed images
and manifest lists with shared layers, resumable blob downloads, retries on 429/500, token refresh, and
the exit code and one-line error of each failure a user meets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, List, Optional, Tuple

import pytest

from bundler.base.singleflight import SingleFlight
from bundler.registry.auth import CredentialStore
from bundler.transfer.copy import Copier, CopyOptions
from bundler.oci.digest import Digest
from bundler.layout.store import Layout
from bundler.oci.reference import Reference
from bundler.registry.client import Registries, TransportOptions
from bundler.transfer.transports import LayoutImage, RegistryRepository
from tests.infra.faultproxy import FaultProxy
from tests.infra.images import make_image, make_index, push, random_layer
from tests.infra.registry import RegistryServer


def _images(seed: int) -> List[Tuple[str, Any]]:
    """A Docker list and an OCI index sharing a base layer, plus a single OCI manifest with an uncompressed layer."""
    base = random_layer(300_000, seed=f"base-{seed}")
    amd = make_image(random_layers=[200_000], base_layers=[base], seed=f"a{seed}", docker=True)
    arm = make_image(random_layers=[150_000], base_layers=[base], seed=f"b{seed}", docker=True, architecture="arm64")
    oci_a = make_image(random_layers=[100_000], base_layers=[base], seed=f"c{seed}")
    oci_b = make_image(random_layers=[120_000], seed=f"d{seed}", architecture="s390x")
    single = make_image(files={"etc/hello": b"hi"}, random_layers=[50_000], seed=f"e{seed}", compressed=False)
    return [
        ("docker-list", make_index([amd, arm], docker=True)),
        ("oci-index", make_index([oci_a, oci_b])),
        ("single", single),
    ]


def _registries(server: RegistryServer, authfile: Optional[Path] = None) -> Registries:
    insecure = frozenset() if server.ca_file else frozenset({server.host})
    return Registries(
        credentials=CredentialStore(authfile) if authfile else CredentialStore(files=[]),
        options=TransportOptions(ca_file=Path(server.ca_file) if server.ca_file else None, insecure_hosts=insecure, backoff_base=0.05),
    )


def _push_fixtures(server: RegistryServer, repo: str, seed: int) -> List[Tuple[str, str]]:
    out = []
    for tag, obj in _images(seed):
        digest = push(
            server.url, repo, obj, tag, ca_file=server.ca_file, auth=server.auth,
            token_url=server.token_server.realm if server.token_server else None,
        )
        out.append((tag, digest))
    return out


@pytest.mark.parametrize("mode", ["plain", "tls-htpasswd", "token"])
def test_round_trip_is_digest_exact(mode: str, request: pytest.FixtureRequest, tmp_path: Path, skopeo: Any, authfile: Any) -> None:
    server: RegistryServer = request.getfixturevalue({"plain": "registry_plain", "tls-htpasswd": "registry_tls", "token": "registry_token"}[mode])
    repo = f"rt/{mode}"
    pushed = _push_fixtures(server, repo, seed=hash(mode) % 1000)
    auth = authfile(server) if server.auth else None
    regs = _registries(server, auth)
    layout = Layout(tmp_path / "layout")
    with Copier(CopyOptions(workers=4)) as copier:
        jobs = []
        for tag, digest in pushed:
            ref = Reference.parse(f"{server.host}/{repo}:{tag}")
            jobs.append((RegistryRepository(regs.client(server.host), ref), LayoutImage(layout, str(ref)), Digest.parse(digest)))
        results = copier.copy_many(jobs)
        assert [r.status for r in results] == ["copied"] * 3, [str(r.error) for r in results]
        # the shared base layer was fetched once into the layout
        assert sum(r.stats.blobs_copied for r in results) == len({d for d, _ in layout.iter_blobs()}) - sum(
            1 + (len(json.loads(layout.read_blob(Digest.parse(d))).get("manifests", []))) for _, d in pushed
        )
        # layout → registry under a new repository
        back = []
        for tag, digest in pushed:
            src = LayoutImage(layout, f"{server.host}/{repo}:{tag}")
            dst = RegistryRepository(regs.client(server.host), Reference.parse(f"{server.host}/{repo}-back:{tag}"))
            back.append((src, dst, Digest.parse(digest)))
        assert [r.status for r in copier.copy_many(back)] == ["copied"] * 3
    creds = server.auth
    for tag, digest in pushed:
        for r in (repo, f"{repo}-back"):
            got = skopeo.digest(f"{server.host}/{r}:{tag}", tls_verify=server.ca_file is not None, creds=creds, cert_dir=server.cert_dir)
            assert got == digest, (r, tag)
    # index.json names every image by its full source reference, and skopeo reads the OCI-typed ones
    names = {e["annotations"]["org.opencontainers.image.ref.name"] for e in json.loads((tmp_path / "layout/index.json").read_text())["manifests"]}
    assert names == {f"{server.host}/{repo}:{tag}" for tag, _ in pushed}
    oci_digest = dict(pushed)["oci-index"]
    assert skopeo.digest(f"oci:{tmp_path / 'layout'}:{server.host}/{repo}:oci-index") == oci_digest


def test_second_copy_is_a_no_op(registry_plain: RegistryServer, tmp_path: Path) -> None:
    repo = "noop/x"
    pushed = _push_fixtures(registry_plain, repo, seed=7)
    regs = _registries(registry_plain)
    layout = Layout(tmp_path / "l")
    jobs = lambda: [  # noqa: E731
        (RegistryRepository(regs.client(registry_plain.host), Reference.parse(f"{registry_plain.host}/{repo}:{t}")),
         LayoutImage(layout, t), None) for t, _ in pushed
    ]
    with Copier() as c:
        first = c.copy_many(jobs())
    with Copier() as c:
        second = c.copy_many(jobs())
    assert {r.status for r in first} == {"copied"}
    assert {r.status for r in second} == {"present"}
    assert sum(r.stats.bytes_copied for r in second) == 0


def test_interrupted_blob_download_resumes(fresh_registry_plain: RegistryServer, tmp_path: Path) -> None:
    big = random_layer(3_000_000, seed="big")
    img = make_image(base_layers=[big], seed="resume")
    push(fresh_registry_plain.url, "resume/x", img, "v1")
    blob_path = f"/v2/resume/x/blobs/{big.digest}"
    with FaultProxy(fresh_registry_plain.url) as proxy:
        proxy.script("truncate", match=lambda m, t: m == "GET" and t.startswith(blob_path), times=2)
        regs = Registries(options=TransportOptions(insecure_hosts=frozenset({proxy.host}), backoff_base=0.01))
        ref = Reference.parse(f"{proxy.host}/resume/x:v1")
        layout = Layout(tmp_path / "l")
        with Copier() as c:
            result = c.copy(RegistryRepository(regs.client(proxy.host), ref), LayoutImage(layout, "x"))
        assert result.digest == Digest.parse(img.digest)
        assert proxy.counts["truncate"] == 2
        ranges = [t for (m, t, f, s) in proxy.log if m == "GET" and t.startswith(blob_path)]
        assert len(ranges) == 3  # two cut downloads, then the rest
    assert layout.has_blob(Digest.parse(big.digest), big.size)
    assert not list((tmp_path / "l" / "ingest").glob("*.partial"))


def test_partial_file_from_a_killed_run_is_resumed_not_refetched(fresh_registry_plain: RegistryServer, tmp_path: Path) -> None:
    big = random_layer(2_000_000, seed="killed")
    img = make_image(base_layers=[big], seed="killed")
    push(fresh_registry_plain.url, "k/x", img, "v1")
    layout = Layout(tmp_path / "l")
    (tmp_path / "l" / "ingest").mkdir()
    # what a killed run leaves: the first half of the blob under its partial name
    (tmp_path / "l" / "ingest" / f"sha256-{big.digest.split(':')[1]}.partial").write_bytes(big.raw[:1_000_000])
    regs = _registries(fresh_registry_plain)
    with Copier() as c:
        r = c.copy(RegistryRepository(regs.client(fresh_registry_plain.host), Reference.parse(f"{fresh_registry_plain.host}/k/x:v1")), LayoutImage(layout, "x"))
    assert r.stats.bytes_copied >= big.size  # accounted as copied…
    assert layout.read_blob(Digest.parse(big.digest)) == big.raw


def test_corrupted_partial_file_is_discarded(fresh_registry_plain: RegistryServer, tmp_path: Path) -> None:
    big = random_layer(500_000, seed="corrupt")
    img = make_image(base_layers=[big], seed="corrupt")
    push(fresh_registry_plain.url, "c/x", img, "v1")
    layout = Layout(tmp_path / "l")
    (tmp_path / "l" / "ingest").mkdir()
    (tmp_path / "l" / "ingest" / f"sha256-{big.digest.split(':')[1]}.partial").write_bytes(b"garbage" * 100)
    regs = _registries(fresh_registry_plain)
    from bundler.base.errors import DigestMismatchError

    src = RegistryRepository(regs.client(fresh_registry_plain.host), Reference.parse(f"{fresh_registry_plain.host}/c/x:v1"))
    with Copier() as c, pytest.raises(DigestMismatchError):
        c.copy(src, LayoutImage(layout, "x"))
    assert not layout.has_blob(Digest.parse(big.digest))
    with Copier() as c:  # the bad partial was removed, so a rerun succeeds
        assert c.copy(src, LayoutImage(layout, "x")).status == "copied"


@pytest.mark.parametrize("kind", ["429", "500", "reset"])
def test_transient_errors_are_retried(kind: str, fresh_registry_plain: RegistryServer, tmp_path: Path, skopeo: Any) -> None:
    img = make_index([make_image(random_layers=[100_000], seed=f"t{kind}")])
    digest = push(fresh_registry_plain.url, "retry/x", img, "v1")
    with FaultProxy(fresh_registry_plain.url, retry_after=0) as proxy:
        proxy.script(kind, match=lambda m, t: "/manifests/" in t or "/blobs/" in t, times=3)
        regs = Registries(options=TransportOptions(insecure_hosts=frozenset({proxy.host}), backoff_base=0.01))
        layout = Layout(tmp_path / "l")
        with Copier() as c:
            r = c.copy(RegistryRepository(regs.client(proxy.host), Reference.parse(f"{proxy.host}/retry/x:v1")), LayoutImage(layout, "x"))
            assert proxy.counts[kind] == 3
            proxy.script(kind, match=lambda m, t: m in ("PUT", "POST", "HEAD"), times=3)
            back = RegistryRepository(regs.client(proxy.host), Reference.parse(f"{proxy.host}/retry/back:v1"))
            c.copy(LayoutImage(layout, "x"), back)
    assert str(r.digest) == digest
    assert skopeo.digest(f"{fresh_registry_plain.host}/retry/back:v1") == digest


def test_token_is_refreshed_before_expiry(registry_factory: Any, tmp_path: Path, authfile: Any) -> None:
    server = registry_factory("token", token_expires_in=2)
    img = make_image(random_layers=[10_000], seed="tok")
    push(server.url, "tok/x", img, "v1", auth=server.auth, token_url=server.token_server.realm)
    regs = _registries(server, authfile(server))
    client = regs.client(server.host)
    ref = Reference.parse(f"{server.host}/tok/x:v1")
    src = RegistryRepository(client, ref)
    src.resolve()
    issued = server.token_server.tokens_issued
    import time

    time.sleep(1.7)  # inside the refresh margin of a 2 s token: a new one must be fetched before use
    src.resolve()
    assert server.token_server.tokens_issued == issued + 1
    # and without 401 round trips: the cached token was replaced proactively
    src.resolve()
    assert server.token_server.tokens_issued == issued + 1


# -- the command line ----------------------------------------------------------------------------------------


def _cli(*args: str, env: Optional[dict] = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bundler.cli", *args], capture_output=True, text=True, timeout=120,
        env={**os.environ, "OCPB_DEBUG_LOG": "/dev/null", **(env or {})},
    )


def _one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_cli_copy_round_trip_json(registry_tls: RegistryServer, tmp_path: Path, authfile: Any, skopeo: Any) -> None:
    img = make_index([make_image(random_layers=[20_000], seed="cli", docker=True)], docker=True)
    digest = push(registry_tls.url, "cli/x", img, "v1", ca_file=registry_tls.ca_file, auth=registry_tls.auth)
    af = authfile(registry_tls)
    out = _cli("copy", f"docker://{registry_tls.host}/cli/x:v1", f"oci:{tmp_path}/l", "--authfile", str(af), "--ca-file", str(registry_tls.ca_file), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["digest"] == digest
    out = _cli("copy", f"oci:{tmp_path}/l:{registry_tls.host}/cli/x:v1", f"docker://{registry_tls.host}/cli/y:v2", "--authfile", str(af), "--ca-file", str(registry_tls.ca_file))
    assert out.returncode == 0, out.stderr
    assert skopeo.digest(f"{registry_tls.host}/cli/y:v2", tls_verify=True, creds=registry_tls.auth, cert_dir=registry_tls.cert_dir) == digest


def test_cli_errors_have_exit_codes_and_one_line(registry_tls: RegistryServer, tmp_path: Path) -> None:
    bad_auth = tmp_path / "auth.json"
    import base64

    bad_auth.write_text(json.dumps({"auths": {registry_tls.host: {"auth": base64.b64encode(b"user:wrong").decode()}}}))
    ca = str(registry_tls.ca_file)
    push(registry_tls.url, "err/x", make_image(seed="err"), "v1", ca_file=registry_tls.ca_file, auth=registry_tls.auth)
    # wrong password
    r = _cli("copy", f"docker://{registry_tls.host}/err/x:v1", f"oci:{tmp_path}/l", "--authfile", str(bad_auth), "--ca-file", ca)
    assert r.returncode == 5 and "user 'user'" in _one_line(r.stderr) and "wrong" not in r.stderr
    # unknown image
    good = tmp_path / "good.json"
    registry_tls.write_authfile(good)
    r = _cli("copy", f"docker://{registry_tls.host}/err/nope:v1", f"oci:{tmp_path}/l", "--authfile", str(good), "--ca-file", ca)
    assert r.returncode == 2 and "not found" in _one_line(r.stderr)
    # TLS verified by default: without the CA the copy fails with a hint
    r = _cli("copy", f"docker://{registry_tls.host}/err/x:v1", f"oci:{tmp_path}/l", "--authfile", str(good))
    assert r.returncode == 5 and "--ca-file" in _one_line(r.stderr)
    # unreachable host
    r = _cli("copy", "docker://127.0.0.1:9/err/x:v1", f"oci:{tmp_path}/l", "--insecure-registry", "127.0.0.1:9")
    assert r.returncode == 5 and "cannot reach 127.0.0.1:9" in _one_line(r.stderr)
    # malformed reference and location
    r = _cli("copy", "docker://Bad/Ref:x", f"oci:{tmp_path}/l")
    assert r.returncode == 2 and "invalid image reference" in _one_line(r.stderr)
    r = _cli("copy", "ftp://x", f"oci:{tmp_path}/l")
    assert r.returncode == 2 and "invalid location" in _one_line(r.stderr)


def test_chunked_upload_recovers_the_offset_after_a_broken_chunk(fresh_registry_plain: RegistryServer, tmp_path: Path, skopeo: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Big blobs go up in chunks; a chunk cut half way is not resent blindly: the offset is asked first."""
    import bundler.registry.push as registry_mod

    monkeypatch.setattr(registry_mod, "CHUNKED_UPLOAD_THRESHOLD", 100_000)
    monkeypatch.setattr(registry_mod, "UPLOAD_CHUNK_SIZE", 256 * 1024)
    big = random_layer(1_500_000, seed="chunked")
    img = make_image(base_layers=[big], seed="chunked")
    layout = Layout(tmp_path / "l")
    from tests.infra.images import write_oci_layout

    write_oci_layout(tmp_path / "l", [("x", img)])
    with FaultProxy(fresh_registry_plain.url) as proxy:
        seen = {"PATCH": 0}

        def nth_patch(n: int) -> Any:
            def match(method: str, target: str) -> bool:
                if method != "PATCH":
                    return False
                seen["PATCH"] += 1
                return seen["PATCH"] == n
            return match

        proxy.script("reset", match=nth_patch(1), times=1)  # before anything arrived
        proxy.script("500", match=nth_patch(4), times=1)  # half way: the upload resumes at the registry's offset
        regs = Registries(options=TransportOptions(insecure_hosts=frozenset({proxy.host}), backoff_base=0.01))
        with Copier() as c:
            c.copy(LayoutImage(layout, "x"), RegistryRepository(regs.client(proxy.host), Reference.parse(f"{proxy.host}/chunked/x:v1")))
        patches = [t for (m, t, f, s) in proxy.log if m == "PATCH"]
        assert proxy.counts["reset"] == 1 and proxy.counts["500"] == 1
        assert len(patches) >= 7  # six 256 KiB chunks, plus the ones that failed
    assert skopeo.digest(f"{fresh_registry_plain.host}/chunked/x:v1") == img.digest


def test_single_flight_one_owner_per_key_and_a_failed_key_is_free_again() -> None:
    """The one de-duplication the copy engine and unpack share: many threads ask, one owns the work."""
    import threading

    flight: SingleFlight[str, str] = SingleFlight()
    owners: List[bool] = []
    barrier = threading.Barrier(8)

    def ask() -> None:
        barrier.wait()
        owned, _ = flight.claim("sha256:a")
        owners.append(owned)

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert owners.count(True) == 1
    owned, fut = flight.claim("sha256:a")
    assert not owned and not fut.done()  # still under way: the caller waits for the owner
    fut.set_exception(OSError("connection reset"))
    owned, retry = flight.claim("sha256:a")
    assert owned and retry is not fut  # the failure freed the key: this caller retries as the new owner
    retry.set_result("copied")
    owned, again = flight.claim("sha256:a")
    assert not owned and again.result() == "copied"
    assert flight.claim("sha256:b")[0]  # other keys are independent


def test_blob_and_manifest_checks_of_large_content_read_no_body(registry_plain: RegistryServer) -> None:
    """A HEAD's Content-Length is the size of the blob, not of an answer to read: a 3 MiB layer (over the
    in-memory answer limit) is found present, not refused as an oversized answer."""
    image = make_image(random_layers=[3 * 1024 * 1024], seed="head-large")
    push(registry_plain.url, "headcheck/large", image, "1")
    registries = Registries(options=TransportOptions(insecure_hosts=frozenset({registry_plain.host})))
    try:
        client = registries.client(registry_plain.host)
        assert client.has_blob("headcheck/large", Digest.parse(image.layers[0].digest))
        assert not client.has_blob("headcheck/large", Digest.parse("sha256:" + "0" * 64))
        head = client.head_manifest("headcheck/large", "1")
        assert head is not None and str(head.digest) == image.digest
    finally:
        registries.close()

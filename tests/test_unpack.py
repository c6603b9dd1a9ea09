"""`unpack` on real registries (plain, TLS+htpasswd, token), proven digest-exact with skopeo as the oracle.

Covers: Docker- and OCI-typed lists with layers shared across repositories (each blob uploaded once, the
rest mounted), a no-op rerun (one HEAD per image, nothing written), a kill -9 half-way and a rerun, a tag
changed behind our back between push and read-back, a fault proxy (500/429/resets), a repository that
always fails (exit 4), `--prefix`, dry runs, incremental bundles whose base is missing, the generated
cluster resources (validated against the real CRDs), and the `pull-secret` command.
"""

from __future__ import annotations

import atexit
import base64
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import pytest
import yaml

from bundler.bundle.volumes import Bundle, BundleWriteOptions, write_bundle
from bundler.bundle.manifest import BundleImage
from bundler.base.errors import ExitCode, IntegrityError, UsageError
from bundler.layout.store import Layout
from bundler.oci.planned import ImageFacts, digest_tag
from bundler.base.progress import NullProgress
from bundler.registry.client import TransportOptions
from bundler.bundle.signing import generate_keypair
from bundler.flows.unpack import ReadBackMismatchError, UnpackIntegrityError, UnpackOptions, UnpackPartialFailureError, UnpackResult, unpack_bundle
from bundler.oci.digest import Digest
from tests.crdschema import load_crds, validate_object
from tests.infra.faultproxy import FaultProxy
from tests.infra.images import MANIFEST_TYPES, Image, ImageIndex, Manifestish, RegistryClient, make_image, make_index, random_layer, write_oci_layout
from tests.infra.registry import RegistryServer

FIXTURES = Path(os.environ.get("BUNDLER_FIXTURES", "/work/shared/fixtures"))
CRDS = FIXTURES / "cluster-resources" / "crds"
SIGNATURE = FIXTURES / "release-payload" / "signature-1.ocp-release-4.15.0-x86_64.gpg"
ROOT = Path(__file__).resolve().parent.parent


# --- content ---------------------------------------------------------------------------------------------


@dataclass
class Entry:
    obj: Manifestish
    source: str
    kind: str
    repository: str
    tag: str
    annotations: Dict[str, str] = field(default_factory=dict)
    facts: ImageFacts = ImageFacts()

    @property
    def digest(self) -> str:
        return self.obj.digest


def content(seed: str, *, scale: int = 1) -> List[Entry]:
    """OpenShift-shaped content: a Docker release list, a Docker component, an OCI sample index, an operator,
    a catalog and an additional image; two base layers shared across five repositories."""
    base = random_layer(120_000 * scale, seed=f"{seed}-base")
    base2 = random_layer(50_000 * scale, seed=f"{seed}-base2")
    rel_amd = make_image(files={"release-manifests/release-metadata": "{}"}, base_layers=[base, base2], random_layers=[20_000], docker=True, seed=f"{seed}-ra")
    rel_arm = make_image(base_layers=[base], random_layers=[20_000], docker=True, seed=f"{seed}-rb", architecture="arm64")
    release = make_index([rel_amd, rel_arm], docker=True)
    etcd = make_image(base_layers=[base, base2], random_layers=[30_000], docker=True, seed=f"{seed}-etcd")
    ruby = make_index(
        [
            make_image(base_layers=[base], random_layers=[25_000], seed=f"{seed}-ruby-a"),
            make_image(base_layers=[base], random_layers=[25_000], seed=f"{seed}-ruby-b", architecture="arm64"),
        ]
    )
    operator = make_image(base_layers=[base2], random_layers=[10_000], seed=f"{seed}-op")
    catalog = make_image(
        files={"configs/demo/catalog.json": '{"schema":"olm.package","name":"demo"}'},
        base_layers=[base],
        labels={"operators.operatorframework.io.index.configs.v1": "/configs"},
        seed=f"{seed}-cat",
    )
    app = make_image(base_layers=[base, base2], docker=True, seed=f"{seed}-app")
    return [
        Entry(release, f"quay.io/openshift-release-dev/ocp-release@{release.digest}", "release", "ocp4/openshift4", "4.8.0-x86_64"),
        Entry(etcd, f"quay.io/openshift-release-dev/ocp-v4.0-art-dev@{etcd.digest}", "release-component", "ocp4/openshift4", "4.8.0-x86_64-etcd"),
        Entry(ruby, "registry.redhat.io/rhscl/ruby-25-rhel7:latest", "sample", "rhscl/ruby-25-rhel7", "latest"),
        Entry(operator, f"registry.redhat.io/ocs4/ocs-operator@{operator.digest}", "operator", "ocs4/ocs-operator", digest_tag(operator.digest)),
        Entry(catalog, "registry.redhat.io/redhat/redhat-operator-index:v4.8", "catalog", "redhat/redhat-operator-index", "v4.8", facts=ImageFacts(catalog_name="redhat-operators")),
        Entry(app, "quay.io/myorg/app:1.0", "additional", "myorg/app", "1.0"),
    ]


def unique_blobs(entries: Sequence[Entry]) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for e in entries:
        for b in e.obj.blobs:
            out[b.digest] = b.size
    return out


def expected_mounts(entries: Sequence[Entry]) -> int:
    """Each blob is uploaded to one repository and mounted into every other repository that needs it."""
    repos: Dict[str, set] = {}
    for e in entries:
        for b in e.obj.blobs:
            repos.setdefault(b.digest, set()).add(e.repository)
    return sum(len(r) - 1 for r in repos.values())


def bundle_images(entries: Sequence[Entry]) -> List[BundleImage]:
    return [
        BundleImage(
            source=e.source,
            digest=Digest.parse(e.digest),
            media_type=e.obj.media_type,
            size=e.obj.size,
            kind=e.kind,
            target_repository=e.repository,
            target_tag=e.tag,
            annotations=dict(e.annotations),
            facts=e.facts,
        )
        for e in entries
    ]


# --- bundles ------------------------------------------------------------------------------------------------

VOLUME_SIZE = 300_000  # small volumes: blobs cross volume boundaries and are read in place across them


_KEY_DIR = Path(tempfile.mkdtemp(prefix="ocpb-unpack-keys-"))
atexit.register(shutil.rmtree, _KEY_DIR, True)
PRIVATE_KEY, PUBLIC_KEY = _KEY_DIR / "bundle.key", _KEY_DIR / "bundle.pub"
generate_keypair(PRIVATE_KEY, PUBLIC_KEY)


@pytest.fixture
def signing_key() -> Tuple[Path, Path]:
    return PRIVATE_KEY, PUBLIC_KEY


def make_bundle(
    directory: Path,
    entries: Sequence[Entry],
    *,
    key: Optional[Path] = PRIVATE_KEY,
    base: Optional[Path] = None,
    files: Optional[Mapping[str, bytes]] = None,
) -> Path:
    """A real bundle (`write_bundle`) of `entries`; with `base`, blobs the base carries are left out."""
    layout_dir = directory.parent / f"{directory.name}-layout"
    write_oci_layout(layout_dir, [(e.source, e.obj) for e in entries])
    write_bundle(
        Layout(layout_dir, create=False),
        bundle_images(entries),
        options=BundleWriteOptions(out_dir=directory, volume_size=VOLUME_SIZE, sign_key=key, base=base, files=dict(files or {})),
    )
    return directory


def signature_files(entries: Sequence[Entry]) -> Dict[str, bytes]:
    release = next(e for e in entries if e.kind == "release")
    return {f"signatures/{release.digest.replace(':', '-')}-1": SIGNATURE.read_bytes()}


# --- running -----------------------------------------------------------------------------------------------


FAST = dict(backoff_base=0.01, backoff_max=0.05, connect_timeout=5.0, read_timeout=30.0)


def options(server_host: str, tmp_path: Path, *, prefix: str, ca_file: Optional[Path] = None, authfile: Optional[Path] = None, **kw: Any) -> UnpackOptions:
    insecure = frozenset() if ca_file else frozenset({server_host.split("/")[0]})
    transport = TransportOptions(ca_file=ca_file, insecure_hosts=insecure, **{**FAST, **kw.pop("transport", {})})  # type: ignore[arg-type]
    kw.setdefault("resources_dir", tmp_path / "resources")
    kw.setdefault("state_dir", tmp_path / "state")
    kw.setdefault("registry_kind", "auto")
    kw.setdefault("verify", True)
    if kw["verify"]:
        kw.setdefault("key", PUBLIC_KEY)
        kw.setdefault("require_signature", True)
    return UnpackOptions(registry=server_host, prefix=prefix, authfile=authfile, transport=transport, workers=4, **kw)


def run(bundle_dir: Path, opts: UnpackOptions) -> UnpackResult:
    return unpack_bundle(bundle_dir, options=opts)


def expect_in_registry(skopeo: Any, host: str, prefix: str, entries: Sequence[Entry], *, creds: Any = None, cert_dir: Any = None) -> None:
    for e in entries:
        ref = f"{host}/{prefix}/{e.repository}:{e.tag}"
        got = skopeo.digest(ref, tls_verify=cert_dir is not None, creds=creds, cert_dir=cert_dir)
        assert got == e.digest, f"{ref}: skopeo sees {got}, bundle says {e.digest}"


def check_resources(directory: Path, registry: str, entries: Sequence[Entry]) -> None:
    crds = load_crds(sorted(CRDS.glob("*.yaml")))
    kinds = set()
    for path in sorted(directory.glob("*.yaml")):
        if path.name.startswith(("install-config", "samples-operator-patch")):
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is None:
                continue
            kinds.add(doc["kind"])
            if doc["kind"] == "ConfigMap":
                assert doc["metadata"]["namespace"] == "openshift-config-managed"
                continue
            if doc["kind"] == "ClusterCatalog":  # OLM v1: no CRD fixture; its ref is checked below
                continue
            assert validate_object(doc, crds) == [], path.name
    assert {"ImageDigestMirrorSet", "CatalogSource", "ClusterCatalog", "ConfigMap"} <= kinds, kinds
    mapping = (directory / "mapping.txt").read_text().splitlines()
    assert len(mapping) == len(entries)
    for e in entries:
        assert f"{e.source}={registry}/{e.repository}:{e.tag}" in mapping
    catalog = yaml.safe_load((directory / "catalogSource-redhat-operators.yaml").read_text())
    assert catalog["spec"]["image"] == f"{registry}/redhat/redhat-operator-index:v4.8"
    (index,) = [e for e in entries if e.repository == "redhat/redhat-operator-index"]
    cluster_catalog = yaml.safe_load((directory / "clusterCatalog-redhat-operators.yaml").read_text())
    assert cluster_catalog["spec"]["source"] == {
        "type": "Image",
        "image": {"ref": f"{registry}/redhat/redhat-operator-index@{index.digest}"},
    }
    idms = (directory / "imageDigestMirrorSet-0.yaml").read_text()
    assert f"{registry}/ocp4/openshift4" in idms


# --- tests ---------------------------------------------------------------------------------------------------


def test_plain_registry_everything_arrives_with_mounts_and_a_noop_rerun(registry_plain: RegistryServer, tmp_path: Path, skopeo: Any) -> None:
    entries = content("plain")
    bundle = make_bundle(tmp_path / "bundle", entries, files=signature_files(entries))
    prefix = "plain-e2e"
    started = time.monotonic()
    result = run(bundle, options(registry_plain.host, tmp_path, prefix=prefix))
    full = time.monotonic() - started

    assert [i.status for i in result.images] == ["pushed"] * len(entries)
    expect_in_registry(skopeo, registry_plain.host, prefix, entries)
    blobs = unique_blobs(entries)
    stats = result.stats
    # every distinct blob crossed the wire exactly once; every other repository mounted it
    assert stats.blobs_copied == len(blobs), stats
    assert stats.bytes_copied == sum(blobs.values())
    assert stats.blobs_mounted == expected_mounts(entries), stats
    registry = f"{registry_plain.host}/{prefix}"
    assert result.registry == registry
    check_resources(tmp_path / "resources", registry, entries)
    sig = list((tmp_path / "resources").glob("release-signatures-*.yaml"))
    assert len(sig) == 1
    report = result.to_json()
    assert {i["target"] for i in report["images"]} == {f"{registry}/{e.repository}:{e.tag}" for e in entries}
    assert all(set(i) >= {"source", "target", "digest", "status"} for i in report["images"])

    # a second unpack through a counting proxy: one manifest HEAD per image, nothing else
    with FaultProxy(registry_plain.url) as proxy:
        started = time.monotonic()
        again = run(bundle, options(proxy.host, tmp_path, prefix=prefix, resources_dir=tmp_path / "res2", registry_kind="plain"))
        noop = time.monotonic() - started
        methods = [(m, t) for m, t, _, _ in proxy.log]
    assert [i.status for i in again.images] == ["present"] * len(entries)
    assert result.verification == "full" and again.verification.startswith("unchanged since a full verification"), again.verification
    assert not [x for x in methods if x[0] in ("POST", "PUT", "PATCH", "DELETE")], methods
    assert not [x for x in methods if "/blobs/" in x[1]], methods
    assert len([x for x in methods if x[0] == "HEAD" and "/manifests/" in x[1]]) == len(entries), methods
    print(f"\nfull unpack {full:.3f}s, no-op rerun {noop:.3f}s, ratio {noop / full:.1%}")


@pytest.mark.parametrize("mode", ["tls-htpasswd", "token"])
def test_authenticated_registries(mode: str, request: pytest.FixtureRequest, tmp_path: Path, skopeo: Any, authfile: Any) -> None:
    server: RegistryServer = request.getfixturevalue({"tls-htpasswd": "registry_tls", "token": "registry_token"}[mode])
    entries = content(f"auth-{mode}")
    bundle = make_bundle(tmp_path / "bundle", entries, files=signature_files(entries))
    prefix = f"auth-{mode}"
    ca = Path(server.ca_file) if server.ca_file else None
    result = run(bundle, options(server.host, tmp_path, prefix=prefix, ca_file=ca, authfile=authfile(server)))
    assert [i.status for i in result.images] == ["pushed"] * len(entries)
    assert result.stats.blobs_copied == len(unique_blobs(entries))
    assert result.stats.blobs_mounted == expected_mounts(entries)
    expect_in_registry(skopeo, server.host, prefix, entries, creds=server.auth, cert_dir=server.cert_dir)
    check_resources(tmp_path / "resources", f"{server.host}/{prefix}", entries)
    again = run(bundle, options(server.host, tmp_path, prefix=prefix, ca_file=ca, authfile=authfile(server)))
    assert {i.status for i in again.images} == {"present"}
    assert again.stats.manifests_pushed == 0


class Tamper(NullProgress):
    """Another writer: as soon as our push of `repo:tag` is done, put a different image under the same tag."""

    def __init__(self, server: RegistryServer, repo: str, tag: str, expected: str, substitute: Image) -> None:
        self.server, self.repo, self.tag, self.expected, self.substitute = server, repo, tag, expected, substitute
        self.done = False
        self.lock = threading.Lock()  # item_done comes from several image threads at once

    def item_done(self, name: str, status: str) -> None:
        with self.lock:
            if not self.done:
                self._tamper()

    def _tamper(self) -> None:
        with RegistryClient(self.server.url) as client:
            resp = client.request("HEAD", f"/v2/{self.repo}/manifests/{self.tag}", headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
            if resp.status == 200 and resp.headers.get("Docker-Content-Digest") == self.expected:
                client.push(self.repo, self.substitute, self.tag)
                self.done = True


def test_read_back_catches_a_tag_changed_between_push_and_read_back(registry_plain: RegistryServer, tmp_path: Path, skopeo: Any) -> None:
    """Honest corruption: a real second writer re-tags one image after our PUT and before our read-back
    (PUT answered with the right digest, so only the read-back can notice). skopeo confirms the registry
    really holds the other digest; a rerun repairs the tag."""
    entries = content("tamper")
    bundle = make_bundle(tmp_path / "bundle", entries, files=signature_files(entries))
    prefix = "tamper"
    app = next(e for e in entries if e.repository == "myorg/app")
    substitute = make_image(random_layers=[1000], docker=True, seed="tamper-substitute")
    tamper = Tamper(registry_plain, f"{prefix}/myorg/app", "1.0", app.digest, substitute)
    with pytest.raises(ReadBackMismatchError) as info:
        run(bundle, options(registry_plain.host, tmp_path, prefix=prefix, progress=tamper))
    assert tamper.done
    err = info.value
    assert err.exit_code == ExitCode.INTEGRITY
    assert f"{registry_plain.host}/{prefix}/myorg/app:1.0" in str(err)
    assert substitute.digest in str(err) and app.digest in str(err)
    statuses = {i.target.rsplit("/", 2)[-2] + "/" + i.target.rsplit("/", 1)[-1]: i.status for i in err.result.images}
    assert statuses["myorg/app:1.0"] == "mismatch"
    assert list(statuses.values()).count("pushed") == len(entries) - 1
    assert not (tmp_path / "resources").exists()  # no YAML for a mirror we cannot vouch for
    assert skopeo.digest(f"{registry_plain.host}/{prefix}/myorg/app:1.0") == substitute.digest

    again = run(bundle, options(registry_plain.host, tmp_path, prefix=prefix))
    assert {i.target.rsplit("/", 1)[-1]: i.status for i in again.images}["app:1.0"] == "pushed"
    expect_in_registry(skopeo, registry_plain.host, prefix, entries)


def test_fault_proxy_errors_and_resets_still_digest_exact(registry_plain: RegistryServer, tmp_path: Path, skopeo: Any) -> None:
    entries = content("faults")
    bundle = make_bundle(tmp_path / "bundle", entries, files=signature_files(entries))
    prefix = "faults"
    with FaultProxy(registry_plain.url, rate=0.15, kinds=("reset", "500", "429"), seed=7, retry_after=0) as proxy:
        result = run(bundle, options(proxy.host, tmp_path, prefix=prefix, transport={"max_attempts": 8}))
        faults = proxy.total_faults
    assert faults >= 5, faults
    assert [i.status for i in result.images] == ["pushed"] * len(entries)
    expect_in_registry(skopeo, registry_plain.host, prefix, entries)


def test_a_repository_that_always_fails_is_a_partial_failure(registry_plain: RegistryServer, tmp_path: Path, skopeo: Any) -> None:
    entries = content("partial")
    bundle = make_bundle(tmp_path / "bundle", entries, files=signature_files(entries))
    prefix = "partial"
    with FaultProxy(registry_plain.url) as proxy:
        proxy.script("500", match=lambda method, target: f"/v2/{prefix}/myorg/app/" in target, times=10**6)
        with pytest.raises(UnpackPartialFailureError) as info:
            run(bundle, options(proxy.host, tmp_path, prefix=prefix, transport={"max_attempts": 2}))
    err = info.value
    assert err.exit_code == ExitCode.PARTIAL
    assert len(err.failures) == 1 and "myorg/app:1.0" in err.failures[0]
    assert "rerun" in str(err)
    ok = [e for e in entries if e.repository != "myorg/app"]
    expect_in_registry(skopeo, registry_plain.host, prefix, ok)
    # the rerun does only what is missing
    again = run(bundle, options(registry_plain.host, tmp_path, prefix=prefix))
    assert sorted(i.status for i in again.images) == sorted(["present"] * len(ok) + ["pushed"])
    expect_in_registry(skopeo, registry_plain.host, prefix, entries)


def test_dry_run_writes_nothing(fresh_registry_plain: RegistryServer, tmp_path: Path) -> None:
    entries = content("dry")
    bundle = make_bundle(tmp_path / "bundle", entries)
    result = run(bundle, options(fresh_registry_plain.host, tmp_path, prefix="dry", dry_run=True))
    assert result.dry_run
    assert [i.status for i in result.images] == ["would-push"] * len(entries)
    assert all(i.size and i.size > 0 for i in result.images)
    assert set(result.organizations) == {"dry"}
    assert not (tmp_path / "resources").exists()
    with RegistryClient(fresh_registry_plain.url) as client:
        catalog = json.loads(client.request("GET", "/v2/_catalog").data)
    assert catalog["repositories"] == []


def test_organisations_are_first_path_components_after_prefix(registry_plain: RegistryServer, tmp_path: Path) -> None:
    entries = content("orgs")
    bundle = make_bundle(tmp_path / "bundle", entries)
    result = run(bundle, options(registry_plain.host, tmp_path, prefix="", dry_run=True))
    assert result.organizations == ("myorg", "ocp4", "ocs4", "redhat", "rhscl")
    # a registry given as host/path adds to the prefix
    result = run(bundle, options(f"{registry_plain.host}/mirror", tmp_path, prefix="ocp", dry_run=True))
    assert result.registry == f"{registry_plain.host}/mirror/ocp"
    assert result.organizations == ("mirror",)
    assert all(i.target.startswith(f"{registry_plain.host}/mirror/ocp/") for i in result.images)


def test_incremental_bundle_with_missing_base_blobs(fresh_registry_plain: RegistryServer, tmp_path: Path, skopeo: Any) -> None:
    base_entries = content("incr")
    newer = content("incr")  # same base layers ...
    newer[-1] = Entry(make_image(base_layers=[random_layer(120_000, seed="incr-base")], random_layers=[5000], docker=True, seed="incr-app2"), "quay.io/myorg/app:2.0", "additional", "myorg/app", "2.0")
    base_dir = make_bundle(tmp_path / "base", base_entries)
    incr_dir = make_bundle(tmp_path / "incr", newer, base=base_dir)
    base_id = Bundle.open(base_dir).manifest.id
    needed = Bundle.open(incr_dir).blobs_needed_from_base()
    assert needed and Bundle.open(incr_dir).manifest.base_id == base_id
    host = fresh_registry_plain.host

    with pytest.raises(UsageError) as info:
        run(incr_dir, options(host, tmp_path, prefix="incr"))
    message = str(info.value)
    assert info.value.exit_code == ExitCode.USAGE
    assert f"unpack the base bundle {base_id} first" in message
    for digest in needed:
        assert str(digest) in message
    assert "myorg/app:2.0" in message
    with RegistryClient(fresh_registry_plain.url) as client:
        assert json.loads(client.request("GET", "/v2/_catalog").data)["repositories"] == []

    run(base_dir, options(host, tmp_path, prefix="incr"))
    result = run(incr_dir, options(host, tmp_path, prefix="incr"))
    statuses = {i.target.rsplit("/", 1)[-1]: i.status for i in result.images}
    assert statuses["app:2.0"] == "pushed"
    assert list(statuses.values()).count("present") == len(newer) - 1
    expect_in_registry(skopeo, host, "incr", newer)


# --- CLI ---------------------------------------------------------------------------------------------------


def cli(*args: str, stdin: Optional[bytes] = None, env: Optional[Dict[str, str]] = None) -> "subprocess.CompletedProcess[bytes]":
    full_env = {**os.environ, "OCPB_DEBUG_LOG": os.devnull, "XDG_CACHE_HOME": str(_KEY_DIR / "cache"), **(env or {})}
    return subprocess.run([sys.executable, "-m", "bundler.cli", *args], input=stdin, capture_output=True, env=full_env, timeout=120, cwd=ROOT)


def test_pull_secret_command(tmp_path: Path) -> None:
    path = tmp_path / "pull-secret.json"
    existing = {"auths": {"quay.io": {"auth": base64.b64encode(b"me:other").decode(), "email": "me@example.com"}}}
    path.write_text(json.dumps(existing))
    os.chmod(path, 0o644)
    password = "hunter2-Secret!"
    proc = cli("pull-secret", "--file", str(path), "--registry", "mirror.example:8443", "--username", "ocp+robot", "--password-stdin", stdin=password.encode() + b"\n")
    assert proc.returncode == 0, proc.stderr
    assert password.encode() not in proc.stdout + proc.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    doc = json.loads(path.read_text())
    assert doc["auths"]["quay.io"] == existing["auths"]["quay.io"]
    assert base64.b64decode(doc["auths"]["mirror.example:8443"]["auth"]).decode() == f"ocp+robot:{password}"

    proc = cli("pull-secret", "--file", str(path), "--registry", "mirror.example:8443", "--username", "u", "--password-stdin", stdin=b"")
    assert proc.returncode == ExitCode.USAGE
    assert b"empty password" in proc.stderr


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def tag_digest(server: RegistryServer, repo: str, tag: str) -> Optional[str]:
    with RegistryClient(server.url) as client:
        resp = client.request("HEAD", f"/v2/{repo}/manifests/{tag}", headers={"Accept": ", ".join(MANIFEST_TYPES)})
        return resp.headers.get("Docker-Content-Digest") if resp.status == 200 else None


def blob_present(server: RegistryServer, repo: str, digest: str) -> bool:
    with RegistryClient(server.url) as client:
        return client.request("HEAD", f"/v2/{repo}/blobs/{digest}").status == 200


def unpack_args(bundle: Path, host: str, prefix: str, tmp_path: Path, public_key: Path, *extra: str) -> List[str]:
    args = ["unpack", str(bundle), "--registry", host, "--insecure-registry", host, "--prefix", prefix, "--resources-dir", str(tmp_path / "resources"), "--workers", "4"]
    args += ["--key", str(public_key)]
    return args + list(extra)


def test_killed_half_way_then_rerun_completes(registry_plain: RegistryServer, tmp_path: Path, skopeo: Any, signing_key: Tuple[Path, Path]) -> None:
    entries = content("kill", scale=4)
    bundle = make_bundle(tmp_path / "bundle", entries, key=signing_key[0], files=signature_files(entries))
    prefix = "kill"
    app = next(e for e in entries if e.repository == "myorg/app")
    with FaultProxy(registry_plain.url, stall_seconds=120) as proxy:
        # the upload of the app's own config blob hangs: everything else finishes, then the process dies
        # with -9 (a blob, not the manifest: the proxy forwards a stalled request when it stops, after our
        # process is gone, and a late blob is harmless where a late tag would hide the interruption)
        assert isinstance(app.obj, Image)
        config_hex = app.obj.config.digest.split(":", 1)[1]
        proxy.script("stall", match=lambda m, t: m == "PUT" and f"/v2/{prefix}/myorg/app/blobs/uploads/" in t and config_hex in t, times=10)
        env = {**os.environ, "OCPB_DEBUG_LOG": os.devnull, "XDG_CACHE_HOME": str(_KEY_DIR / "cache")}
        proc = subprocess.Popen([sys.executable, "-m", "bundler.cli", *unpack_args(bundle, proxy.host, prefix, tmp_path, signing_key[1], "--json")], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            others = [e for e in entries if e is not app]
            wait_for(lambda: all(tag_digest(registry_plain, f"{prefix}/{e.repository}", e.tag) == e.digest for e in others), 60, "the other images")
            wait_for(lambda: proxy.pending_scripts < 10, 30, "the stalled upload")
            layers = [layer.digest for layer in app.obj.layers]
            wait_for(lambda: all(blob_present(registry_plain, f"{prefix}/myorg/app", d) for d in layers), 60, "the app's layers")
            assert proc.poll() is None, proc.communicate()
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(timeout=30)
            proc.stdout.close()  # type: ignore[union-attr]
            proc.stderr.close()  # type: ignore[union-attr]
    assert proc.returncode == -signal.SIGKILL
    assert tag_digest(registry_plain, f"{prefix}/myorg/app", "1.0") is None
    assert not (tmp_path / "resources").exists()

    done = cli(*unpack_args(bundle, registry_plain.host, prefix, tmp_path, signing_key[1], "--json"))
    assert done.returncode == 0, done.stderr.decode()
    report = json.loads(done.stdout)
    statuses = {i["target"].split("/", 1)[1]: i["status"] for i in report["images"]}
    assert statuses.pop("kill/myorg/app:1.0") == "pushed"
    assert set(statuses.values()) == {"present"}
    # the rerun put the app's manifest and at most its own small blobs; the shared layers were there already
    app_report = next(i for i in report["images"] if i["target"].endswith("/myorg/app:1.0"))
    own = app.obj.config.size + app.obj.layers[-1].size
    assert app_report["manifestsPushed"] == 1 and app_report["bytesCopied"] <= own, app_report
    assert app_report["blobsPresent"] + app_report["blobsMounted"] >= 2, app_report
    expect_in_registry(skopeo, registry_plain.host, prefix, entries)
    assert (tmp_path / "resources" / "mapping.txt").exists()


def test_cli_partial_failure_exit_4_with_report(registry_plain: RegistryServer, tmp_path: Path, signing_key: Tuple[Path, Path]) -> None:
    entries = content("cli-partial")
    bundle = make_bundle(tmp_path / "bundle", entries, key=signing_key[0])
    prefix = "cli-partial"
    with FaultProxy(registry_plain.url) as proxy:
        proxy.script("500", match=lambda m, t: f"/v2/{prefix}/rhscl/" in t, times=10**6)
        proc = cli(*unpack_args(bundle, proxy.host, prefix, tmp_path, signing_key[1], "--json"))
    assert proc.returncode == ExitCode.PARTIAL, proc.stderr.decode()
    stderr = proc.stderr.decode()
    assert "1 of 6 images failed" in stderr and "rhscl/ruby-25-rhel7:latest" in stderr and "rerun" in stderr
    report = json.loads(proc.stdout)
    assert report["totals"]["failed"] == 1 and report["totals"]["pushed"] == 5
    failed = [i for i in report["images"] if i["status"] == "failed"]
    assert failed[0]["target"].endswith("/rhscl/ruby-25-rhel7:latest") and "HTTP 500" in failed[0]["error"]


def test_cli_dry_run_and_no_verify_warning(fresh_registry_plain: RegistryServer, tmp_path: Path, signing_key: Tuple[Path, Path]) -> None:
    entries = content("cli-dry")
    bundle = make_bundle(tmp_path / "bundle", entries, key=signing_key[0])
    host = fresh_registry_plain.host
    proc = cli("unpack", str(bundle), "--registry", host, "--insecure-registry", host, "--prefix", "dry", "--dry-run", "--no-verify", "--resources-dir", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr.decode()
    out = proc.stdout.decode()
    assert "dry run: nothing was written" in out and "6 to push" in out
    assert f"{host}/dry/ocp4/openshift4:4.8.0-x86_64" in out
    assert "warning: --no-verify" in proc.stderr.decode()
    assert not (tmp_path / "r").exists()
    with RegistryClient(fresh_registry_plain.url) as client:
        assert json.loads(client.request("GET", "/v2/_catalog").data)["repositories"] == []


def test_a_damaged_bundle_is_refused_before_anything_is_pushed(fresh_registry_plain: RegistryServer, tmp_path: Path) -> None:
    entries = content("damaged")
    bundle = make_bundle(tmp_path / "bundle", entries)
    host = fresh_registry_plain.host
    first = run(bundle, options(host, tmp_path, prefix="first"))  # verified in full and recorded
    assert first.verification == "full"
    volume = max(bundle.glob("bundle-*.tar"), key=lambda p: p.stat().st_size)
    data = bytearray(volume.read_bytes())
    data[len(data) // 2] ^= 0x01
    volume.write_bytes(bytes(data))
    # the record does not cover the changed volume: verified in full again, refused before any push
    with pytest.raises(IntegrityError) as info:
        run(bundle, options(host, tmp_path, prefix="damaged"))
    assert info.value.exit_code == ExitCode.INTEGRITY and volume.name in str(info.value)
    with RegistryClient(fresh_registry_plain.url) as client:
        repos = json.loads(client.request("GET", "/v2/_catalog").data)["repositories"]
    assert not [r for r in repos if r.startswith("damaged/")]
    # with --no-verify the registry still refuses the damaged blob: an integrity failure naming the image,
    # everything else pushed, and the warning in the report
    with pytest.raises(UnpackIntegrityError) as damaged:
        run(bundle, options(host, tmp_path, prefix="damaged", verify=False, registry_kind="plain"))
    err = damaged.value
    assert err.exit_code == ExitCode.INTEGRITY and "DIGEST_INVALID" in str(err) and "verify" in str(err)
    assert any("NOT checked" in w for w in err.result.warnings) and not err.result.verified
    failed = [i for i in err.result.images if i.status == "failed"]
    assert len(failed) >= 1 and all(i.status == "pushed" for i in err.result.images if i not in failed)


def test_two_bundle_images_with_one_target_are_pushed_once_and_both_mapped(registry_plain: RegistryServer, tmp_path: Path) -> None:
    entries = content("dup")
    app = next(e for e in entries if e.repository == "myorg/app")
    twin = Entry(app.obj, f"quay.io/myorg/app@{app.digest}", "additional", app.repository, app.tag)
    bundle = make_bundle(tmp_path / "bundle", [*entries, twin])
    result = run(bundle, options(registry_plain.host, tmp_path, prefix="dup"))
    assert len(result.images) == len(entries) + 1
    assert [i.status for i in result.images] == ["pushed"] * (len(entries) + 1)
    assert result.stats.blobs_copied == len(unique_blobs(entries))
    assert result.stats.manifests_pushed == sum(1 + (len(e.obj.children) if isinstance(e.obj, ImageIndex) else 0) for e in entries)
    mapping = (tmp_path / "resources" / "mapping.txt").read_text().splitlines()
    target = f"{registry_plain.host}/dup/myorg/app:1.0"
    assert f"{app.source}={target}" in mapping and f"{twin.source}={target}" in mapping

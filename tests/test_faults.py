"""Pack and unpack through broken networks and under `kill -9`, proven with skopeo as the oracle.

- `test_pack_through_a_faulty_source`: a synthetic release (10 components), a Docker list, an OCI index and
  an image with a multi-MB layer are packed through a `FaultProxy` in front of the source registry that
  resets connections, answers 500 and 429 (Retry-After), truncates bodies and stalls on 15% of requests
  (plus each kind once where it hurts; one stall outlasts the client's read timeout). Pack finishes, or
  one rerun does (and then fetches no finished blob again); `verify` passes and every image's digest in
  the bundle manifest is what skopeo reads from the source registry directly. No layer is pulled into the
  work layout: blobs stream straight into the volumes.
- `test_pack_rerun_resumes_after_a_fault_that_outlasts_the_retries`: the multi-MB layer breaks half way,
  then keeps failing: the first pack reports a partial failure (exit 4) naming the blob and its image,
  and leaves no bundle manifest; every other blob is journaled as finished. The half-written slot is
  never trusted: the rerun fetches that layer again from its first byte (bytes counted on the wire) and
  nothing that was finished.
- `test_unpack_through_a_faulty_target`: the same faults between unpack and the target registry; every
  image arrives digest-exact (skopeo against the target directly) and the read-back passes.
- `test_pack_killed_at_random_points`: `ocp-bundler pack` as a subprocess, killed with SIGKILL at delays
  drawn from a seeded RNG while a throttled source makes the pull last seconds, then twice while the
  volumes are being filled (after a seeded number of images are complete). After every kill the work
  layout holds no layer (it is planning's cache only), and the bundle directory holds either no manifest
  or one that verifies. No run fetches a blob the journal listed as finished when it started; the last
  run completes and the bundle verifies with the source digests (so every journaled slot was whole).
- `test_unpack_killed_at_random_points`: `ocp-bundler unpack` killed with SIGKILL at seeded random points
  while a throttled target makes the push last seconds; after every kill each tag in the target is either
  absent or the bundle's digest with everything below it present; a rerun completes digest-exact (skopeo)
  and a final no-op rerun writes nothing and touches no blob.

Regression tests for faults these found: `test_pack_rerun_fetches_no_finished_blob_again` (planning
reads the release from the work layout, so a rerun downloads nothing finished),
`test_pack_rerun_keeps_what_an_interrupted_fill_finished` (the bundle carries no per-run data, so
journaled blobs are kept), `test_unpack_recovers_from_an_upload_cut_mid_body` (a cut upload opens a
new upload session).

Determinism: fault choices and kill delays come from fixed seeds; the throttle bounds how much any killed
run can move, so every kill lands while the process is still working. Timeouts are generous but bounded.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple

import pytest

from bundler.bundle.volumes import read_manifest
from bundler.bundle.manifest import MANIFEST_NAME
from bundler.bundle.members import JOURNAL_NAME
from bundler.base.errors import ExitCode, PartialFailureError
from bundler.flows.pack import PackOptions, PackResult, pack
from bundler.base.progress import NullProgress
from bundler.registry.client import Registries, TransportOptions
from bundler.bundle.signing import generate_keypair
from bundler.flows.unpack import UnpackOptions, UnpackPartialFailureError, UnpackResult, unpack_bundle
from bundler.bundle.verify import verify_bundle
from tests.infra.faultproxy import HTTP_429, HTTP_500, RESET, STALL, TRUNCATE, FaultProxy
from tests.infra.faults import Throttle, blob_map, tree_check
from tests.infra.images import MANIFEST_TYPES, Blob, Manifestish, RegistryClient, iter_manifests, make_image, make_index, push, random_layer
from tests.infra.openshift_images import ReleaseFixture, build_release
from tests.infra.registry import RegistryServer

ROOT = Path(__file__).resolve().parent.parent

READ_TIMEOUT = 4.0
"""The client's read timeout in these tests (the default is 120 s): a stall longer than this fires it."""
STALL_SECONDS = 1.5
FAULT_RATE = 0.15
VOLUME_SIZE = 2 << 20
SUBPROCESS_TIMEOUT = 120


def transport(host: str) -> TransportOptions:
    return TransportOptions(
        insecure_hosts=frozenset({host}), connect_timeout=5.0, read_timeout=READ_TIMEOUT, backoff_base=0.05, backoff_max=1.0, max_attempts=5
    )


# --- content ------------------------------------------------------------------------------------------------


@dataclass
class Content:
    """What was pushed to the source, addressed through `host` (a proxy in front of the registry)."""

    host: str
    release: ReleaseFixture
    additional: Dict[str, Manifestish]
    """`host/repo:tag` -> image or list."""
    big: Blob
    """The largest layer."""

    @property
    def objects(self) -> List[Manifestish]:
        assert self.release.image is not None
        return [self.release.image, *self.release.component_images.values(), *self.additional.values()]

    @property
    def expected(self) -> Dict[str, str]:
        """Bundle image source -> digest, as pack must record them."""
        out = {self.release.pinned_ref: self.release.digest}
        for name, ref in self.release.components.items():
            out[ref] = self.release.component_images[name].digest
        out.update({ref: obj.digest for ref, obj in self.additional.items()})
        return out

    def describe(self, digest: str) -> str:
        """Where a blob or manifest belongs, for messages."""
        names = {self.release.pinned_ref: self.release.image, **{ref: self.release.component_images[n] for n, ref in self.release.components.items()}}
        names.update(self.additional)
        for ref, obj in names.items():
            assert obj is not None
            for m in iter_manifests(obj):
                if m.digest == digest:
                    return f"{ref} manifest {digest[:19]}"
                for b in getattr(m, "blobs", []):
                    if b.digest == digest:
                        return f"{ref} {'config' if b is getattr(m, 'config', None) else 'layer'} {digest[:19]} ({b.size} bytes)"
        return digest

    @property
    def by_digest(self) -> Dict[str, Manifestish]:
        """Every manifest (lists, their children, single images) by digest."""
        return {m.digest: m for obj in self.objects for m in iter_manifests(obj)}


def build_content(url: str, *, prefix: str, seed: str, big_sizes: Sequence[int], components: int = 10) -> Content:
    """A release with `components` components, a Docker list and an OCI index sharing a base layer, and one
    image per size in `big_sizes` (alternately OCI and Docker) with one random layer of that size."""
    host = url.split("://", 1)[-1]
    release = build_release(
        url, version="4.8.0", components=components, repo=f"{prefix}/ocp-release", component_repo=f"{prefix}/ocp-v4.0-art-dev", seed=seed
    )
    base = random_layer(150_000, seed=f"{seed}-base")
    docker_list = make_index(
        [
            make_image(random_layers=[100_000], base_layers=[base], docker=True, seed=f"{seed}-docker-amd64"),
            make_image(random_layers=[100_000], base_layers=[base], docker=True, seed=f"{seed}-docker-arm64", architecture="arm64"),
        ],
        docker=True,
    )
    oci_index = make_index(
        [
            make_image(random_layers=[100_000], base_layers=[base], seed=f"{seed}-oci-amd64"),
            make_image(random_layers=[80_000], seed=f"{seed}-oci-arm64", architecture="arm64"),
        ]
    )
    additional: Dict[str, Manifestish] = {f"{host}/{prefix}/docker-app:v1": docker_list, f"{host}/{prefix}/oci-app:v2": oci_index}
    bigs = []
    for i, size in enumerate(big_sizes):
        image = make_image(random_layers=[size], base_layers=[base], docker=i % 2 == 1, seed=f"{seed}-big-{i}")
        additional[f"{host}/{prefix}/big-{i}:v1"] = image
        bigs.append(image.layers[-1])
    for ref, obj in additional.items():
        repo, _, tag = ref[len(host) + 1 :].rpartition(":")
        push(url, repo, obj, tag=tag)
    return Content(host=host, release=release, additional=additional, big=max(bigs, key=lambda b: b.size))


def write_image_set(path: Path, content: Content) -> Path:
    lines = [
        "apiVersion: ocp-bundler.io/v1alpha1",
        "kind: ImageSet",
        "releases:",
        "  images:",
        f"    - {content.release.release_ref}",
        "  signatures: false",
        "additionalImages:",
        *[f"  - {ref}" for ref in content.additional],
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass(frozen=True)
class Keys:
    private: Path
    public: Path


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    d = tmp_path_factory.mktemp("faults-keys")
    generate_keypair(d / "bundle.key", d / "bundle.pub")
    return Keys(d / "bundle.key", d / "bundle.pub")


def run_pack(content: Content, tmp_path: Path, keys: Keys, registries: Registries) -> PackResult:
    return pack(
        PackOptions(
            config=write_image_set(tmp_path / "image-set.yaml", content),
            out_dir=tmp_path / "bundle",
            work_dir=tmp_path / "work",
            volume_size=VOLUME_SIZE,
            sign_key=keys.private,
            workers=8,
        ),
        registries=registries,
    )


def check_bundle(bundle: Path, content: Content, keys: Keys, skopeo: Any, source_host: str) -> None:
    """verify passes; the bundle holds exactly the expected images; skopeo reads the same digests from the
    source registry directly (not through the proxy the pack used)."""
    result = verify_bundle(bundle, key=keys.public, require_signature=True)
    assert result.signed
    manifest, _ = read_manifest(bundle)
    got = {i.source: str(i.digest) for i in manifest.images}
    assert got == content.expected
    for image in manifest.images:
        direct = image.source.replace(content.host, source_host, 1)
        assert skopeo.digest(direct) == str(image.digest), f"{direct}: bundle says {image.digest}"


def blob_gets(log: Sequence[Tuple[str, str, Optional[str], Optional[int]]]) -> List[str]:
    """Digests of the blob GETs in a FaultProxy log."""
    out = []
    for method, target, _, _ in log:
        if method == "GET" and "/blobs/sha256:" in target:
            out.append("sha256:" + target.split("/blobs/sha256:", 1)[1].split("?", 1)[0])
    return out


def journaled(bundle: Path) -> Set[str]:
    """Blobs the fill journal beside the volumes lists as finished (complete lines after the header)."""
    try:
        lines = (bundle / JOURNAL_NAME).read_bytes().split(b"\n")
    except FileNotFoundError:
        return set()
    return {ln.decode().split("\t", 1)[0] for ln in lines[1:-1] if ln.startswith(b"sha256:") and ln.count(b"\t") == 4}


def refetched(log: Sequence[Tuple[str, str, Optional[str], Optional[int]]], finished: Iterable[str], content: Content) -> List[str]:
    """Blobs a run fetched although they were finished (journaled, or whole in the bundle) before it started."""
    done = set(finished)
    return [content.describe(d) for d in blob_gets(log) if d in done]


def is_blob_get(digest_hex: Optional[str] = None) -> Callable[[str, str], bool]:
    def match(method: str, target: str) -> bool:
        return method == "GET" and "/blobs/sha256:" in target and (digest_hex is None or digest_hex in target)

    return match


# --- 1. pack through a faulty source ----------------------------------------------------------------------


def test_pack_through_a_faulty_source(registry_plain: RegistryServer, tmp_path: Path, skopeo: Any, keys: Keys) -> None:
    with FaultProxy(registry_plain.url, rate=0.0, seed=20240611, stall_seconds=STALL_SECONDS, retry_after=1) as proxy:
        content = build_content(proxy.url, prefix="t-faults/pack", seed="faults-pack", big_sizes=(4 << 20,))
        proxy.reset_counters()
        # each kind at least once where it hurts, then random faults on 15% of all requests
        big_hex = content.big.digest.split(":", 1)[1]
        proxy.script(TRUNCATE, match=is_blob_get(big_hex))  # the multi-MB layer breaks half way: resumed
        proxy.script(STALL, match=is_blob_get(), stall_seconds=READ_TIMEOUT + 1.5)  # outlasts the read timeout
        proxy.script(RESET, match=lambda m, t: m == "GET" and "/manifests/" in t)
        proxy.script(HTTP_500, match=lambda m, t: "/manifests/" in t)
        proxy.script(HTTP_429, match=is_blob_get())
        proxy.rate = FAULT_RATE
        registries = Registries(options=transport(proxy.host))
        reruns = 0
        try:
            started = time.monotonic()
            try:
                result = run_pack(content, tmp_path, keys, registries)
            except PartialFailureError as first:
                # a rare random fault outlasted every retry: one rerun must finish, without fetching again
                # anything the first run finished
                reruns = 1
                assert not (tmp_path / "bundle" / MANIFEST_NAME).exists(), first
                finished = journaled(tmp_path / "bundle")
                mark = len(proxy.log)
                result = run_pack(content, tmp_path, keys, registries)
                again = refetched(proxy.log[mark:], finished, content)
                assert again == [], f"the rerun fetched finished blobs again: {again}"
            seconds = time.monotonic() - started
        finally:
            registries.close()
        counts = dict(proxy.counts)
        requests = len(proxy.log)
        scripted_left = proxy.pending_scripts

    assert scripted_left == 0
    for kind in (RESET, HTTP_500, HTTP_429, TRUNCATE, STALL):
        assert counts[kind] >= 1, counts
    assert sum(counts[k] for k in (RESET, HTTP_500, HTTP_429, TRUNCATE, STALL)) >= 5 + 3, counts  # random ones too
    assert reruns <= 1
    assert {i.status for i in result.images} == {"packed"}
    assert len(result.images) == len(content.expected)
    report = tree_check(tmp_path / "work" / "layout", blob_map(content.objects))
    assert report.problems == [] and report.partials == {}, report
    assert content.big.digest not in report.final_blobs, "layers stream into the volumes, not into the work layout"
    check_bundle(tmp_path / "bundle", content, keys, skopeo, registry_plain.host)
    print(f"\npack through faults: {requests} requests, faults {counts}, {reruns} rerun(s), {seconds:.1f}s")


def test_pack_rerun_resumes_after_a_fault_that_outlasts_the_retries(registry_plain: RegistryServer, tmp_path: Path, skopeo: Any, keys: Keys) -> None:
    with Throttle(registry_plain.host) as wire, FaultProxy(wire.url, rate=0.0) as proxy:
        content = build_content(proxy.url, prefix="t-faults/rerun", seed="faults-rerun", big_sizes=(4 << 20,), components=5)
        known = blob_map(content.objects)
        big = content.big
        big_hex = big.digest.split(":", 1)[1]
        broken = threading.Event()
        broken.set()
        proxy.script(TRUNCATE, match=is_blob_get(big_hex))  # half of the layer arrives ...
        proxy.script(HTTP_500, match=lambda m, t: broken.is_set() and is_blob_get(big_hex)(m, t), times=10**6)  # ... then nothing
        registries = Registries(options=transport(proxy.host))
        try:
            with pytest.raises(PartialFailureError) as info:
                run_pack(content, tmp_path, keys, registries)
            big_ref = next(ref for ref, obj in content.additional.items() if big in obj.blobs)
            message = str(info.value)
            assert info.value.exit_code == ExitCode.PARTIAL
            assert "1 of " in message and big.digest in message and big_ref in message and "rerun" in (info.value.hint or message)
            assert not (tmp_path / "bundle" / MANIFEST_NAME).exists()
            assert volume_files(tmp_path / "bundle") == []  # only the hidden .partial volumes, no bundle yet

            done = journaled(tmp_path / "bundle")
            assert big.digest not in done, "a slot that was cut half way is never trusted"
            carried = set(known)
            assert carried - done == {big.digest}, "everything else was finished and journaled"
            layout = tmp_path / "work" / "layout"
            report = tree_check(layout, known)
            assert report.problems == [] and big.digest not in report.final_blobs and big.digest not in report.partials

            broken.clear()
            mark, wire_before = len(proxy.log), wire.bytes_down
            result = run_pack(content, tmp_path, keys, registries)
            rerun_log = proxy.log[mark:]
            fetched = wire.bytes_down - wire_before
        finally:
            registries.close()

    assert {i.status for i in result.images} == {"packed"}
    assert refetched(rerun_log, done, content) == []  # nothing finished is fetched again ...
    assert blob_gets(rerun_log) == [big.digest]  # ... only the broken layer, once, from its first byte
    assert big.size <= fetched <= big.size + 256 * 1024, (fetched, big.size)
    assert not (tmp_path / "bundle" / JOURNAL_NAME).exists()
    check_bundle(tmp_path / "bundle", content, keys, skopeo, registry_plain.host)


def test_pack_rerun_fetches_no_finished_blob_again(registry_plain: RegistryServer, tmp_path: Path, keys: Keys) -> None:
    with FaultProxy(registry_plain.url, rate=0.0) as proxy:  # counts only
        content = build_content(proxy.url, prefix="t-faults/refetch", seed="faults-refetch", big_sizes=(1 << 20,), components=5)
        registries = Registries(options=transport(proxy.host))
        try:
            proxy.reset_counters()
            run_pack(content, tmp_path, keys, registries)
            first = blob_gets(proxy.log)
            proxy.reset_counters()
            run_pack(content, tmp_path, keys, registries)
            second = blob_gets(proxy.log)
        finally:
            registries.close()
    twice = sorted({content.describe(d) for d in first if first.count(d) > 1})
    assert twice == [], f"the first run fetched blobs more than once: {twice}"
    assert [content.describe(d) for d in second] == [], "the rerun fetched finished blobs again"


class Interrupted(Exception):
    """Stands in for a kill: raised from the progress callback once some images are complete."""


class StopAfterImages(NullProgress):
    def __init__(self, images: int) -> None:
        self.images = images
        self.packed = 0

    def item_done(self, name: str, status: str) -> None:
        if status == "packed":
            self.packed += 1
            if self.packed >= self.images:
                raise Interrupted(name)


def test_pack_rerun_keeps_what_an_interrupted_fill_finished(registry_plain: RegistryServer, tmp_path: Path, keys: Keys) -> None:
    with FaultProxy(registry_plain.url, rate=0.0) as proxy:  # counts only
        content = build_content(proxy.url, prefix="t-faults/keep", seed="faults-keep", big_sizes=(1 << 20,), components=5)
        registries = Registries(options=transport(proxy.host))
        options = PackOptions(
            config=write_image_set(tmp_path / "image-set.yaml", content), out_dir=tmp_path / "bundle", work_dir=tmp_path / "work",
            volume_size=256 * 1024, sign_key=keys.private, workers=1,
        )
        try:
            with pytest.raises(Interrupted):
                pack(dataclasses.replace(options, progress=StopAfterImages(3)), registries=registries)
            assert not (tmp_path / "bundle" / MANIFEST_NAME).exists()
            done = journaled(tmp_path / "bundle")
            assert done, "the interrupted run journaled what it finished"
            mark = len(proxy.log)
            result = pack(options, registries=registries)
            again = refetched(proxy.log[mark:], done, content)
        finally:
            registries.close()
    assert again == [], f"the rerun fetched journaled blobs again: {again}"
    assert result.bundle is not None and result.bundle.bytes_written < result.bundle.total_bytes
    verify_bundle(tmp_path / "bundle", key=keys.public, require_signature=True)


# --- 2. unpack through a faulty target --------------------------------------------------------------------


@dataclass(frozen=True)
class Packed:
    bundle: Path
    content: Content
    source: RegistryServer


@pytest.fixture(scope="module")
def packed(registry_plain: RegistryServer, tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Packed:
    """A signed bundle packed (without faults) from a release, lists and two multi-MB images."""
    d = tmp_path_factory.mktemp("faults-packed")
    content = build_content(registry_plain.url, prefix="t-faults/src", seed="faults-src", big_sizes=(6 << 20, 3 << 20))
    registries = Registries(options=transport(registry_plain.host))
    try:
        run_pack(content, d, keys, registries)
    finally:
        registries.close()
    return Packed(d / "bundle", content, registry_plain)


def unpack_options(host: str, tmp_path: Path, keys: Keys, *, prefix: str) -> UnpackOptions:
    return UnpackOptions(
        registry=host,
        prefix=prefix,
        transport=transport(host),
        workers=4,
        registry_kind="plain",
        key=keys.public,
        require_signature=True,
        resources_dir=tmp_path / "resources",
    )


def expect_in_target(skopeo: Any, target: RegistryServer, prefix: str, bundle: Path) -> int:
    manifest, _ = read_manifest(bundle)
    for image in manifest.images:
        ref = f"{target.host}/{prefix}/{image.target_repository}:{image.target_tag}"
        got = skopeo.digest(ref)
        assert got == str(image.digest), f"{ref}: skopeo sees {got}, the bundle says {image.digest}"
    return len(manifest.images)


def test_unpack_through_a_faulty_target(packed: Packed, registry_factory: Callable[..., RegistryServer], tmp_path: Path, skopeo: Any, keys: Keys) -> None:
    target = registry_factory("plain")
    prefix = "faults"
    kinds = (RESET, HTTP_500, HTTP_429, STALL)  # unpack reads no response bodies: nothing to truncate
    with FaultProxy(target.url, rate=FAULT_RATE, kinds=kinds, seed=1234567, stall_seconds=STALL_SECONDS, retry_after=1) as proxy:
        proxy.script(STALL, match=lambda m, t: m == "HEAD" and "/manifests/" in t, stall_seconds=READ_TIMEOUT + 1.5)
        proxy.script(RESET, match=lambda m, t: m == "PUT" and "/blobs/uploads/" in t)  # a blob upload
        proxy.script(HTTP_429, match=lambda m, t: m == "POST" and "/blobs/uploads/" in t)
        proxy.script(HTTP_500, match=lambda m, t: m == "PUT" and "/manifests/" in t)
        opts = unpack_options(proxy.host, tmp_path, keys, prefix=prefix)
        reruns = 0
        started = time.monotonic()
        try:
            result: UnpackResult = unpack_bundle(packed.bundle, options=opts)
        except UnpackPartialFailureError as first:
            reruns = 1  # a rare fault outlasted every retry: one rerun must finish
            assert not (tmp_path / "resources").exists(), first
            result = unpack_bundle(packed.bundle, options=opts)
        seconds = time.monotonic() - started
        counts = dict(proxy.counts)
        requests = len(proxy.log)
        scripted_left = proxy.pending_scripts

    assert scripted_left == 0
    for kind in kinds:
        assert counts[kind] >= 1, counts
    assert sum(counts[k] for k in kinds) >= 4 + 3, counts
    statuses = [i.status for i in result.images]
    assert set(statuses) <= ({"pushed"} if reruns == 0 else {"pushed", "present"}), statuses
    assert not result.failed
    n = expect_in_target(skopeo, target, prefix, packed.bundle)
    assert len(result.images) == n
    assert (tmp_path / "resources" / "mapping.txt").is_file()
    print(f"\nunpack through faults: {requests} requests, faults {counts}, {reruns} rerun(s), {seconds:.1f}s")


def test_unpack_recovers_from_an_upload_cut_mid_body(packed: Packed, registry_factory: Callable[..., RegistryServer], tmp_path: Path, skopeo: Any, keys: Keys) -> None:
    target = registry_factory("plain")
    prefix = "cut"
    with Throttle(target.host) as wire:
        wire.cut_uploads(1 << 20)  # the first connection to send more than 1 MiB (a layer upload) is reset there
        try:
            result = unpack_bundle(packed.bundle, options=unpack_options(wire.host, tmp_path, keys, prefix=prefix))
        finally:
            cuts = wire.cuts
    assert cuts == 1
    assert {i.status for i in result.images} == {"pushed"}
    expect_in_target(skopeo, target, prefix, packed.bundle)


# --- 3. kill -9 of pack --------------------------------------------------------------------------------------


def cli_env(home: Path) -> Dict[str, str]:
    return {**os.environ, "OCPB_DEBUG_LOG": os.devnull, "HOME": str(home)}


def ocp_bundler() -> List[str]:
    """The installed console script beside this interpreter (not a pyenv shim: its PID must be the
    program's, so that SIGKILL reaches it), or the same entry point through `-m`."""
    script = Path(sys.executable).parent / "ocp-bundler"
    return [str(script)] if script.is_file() and os.access(script, os.X_OK) else [sys.executable, "-m", "bundler.cli"]


def start(args: Sequence[str], log_dir: Path, name: str, env: Dict[str, str]) -> "subprocess.Popen[bytes]":
    with open(log_dir / f"{name}.out", "wb") as out, open(log_dir / f"{name}.err", "wb") as err:
        return subprocess.Popen([*ocp_bundler(), *args], cwd=ROOT, env=env, stdout=out, stderr=err)


def kill(proc: "subprocess.Popen[bytes]") -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def finish(proc: "subprocess.Popen[bytes]", log_dir: Path, name: str) -> Tuple[int, bytes, bytes]:
    try:
        proc.wait(timeout=SUBPROCESS_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"{name} did not finish within {SUBPROCESS_TIMEOUT}s") from None
    return proc.returncode, (log_dir / f"{name}.out").read_bytes(), (log_dir / f"{name}.err").read_bytes()


def wait_until(predicate: Callable[[], bool], proc: "subprocess.Popen[bytes]", timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"the process ended (exit {proc.returncode}) before {what}")
        time.sleep(0.002)
    raise AssertionError(f"timed out waiting for {what}")


def volume_files(bundle: Path) -> List[Path]:
    return sorted(p for p in bundle.glob("bundle-*.tar")) if bundle.is_dir() else []


def fresh_volumes(bundle: Path, since: float) -> List[Path]:
    """Volumes written since `since` (an earlier run's volumes stay until this run replaces them)."""
    out = []
    for p in volume_files(bundle):
        try:
            if p.stat().st_mtime >= since:
                out.append(p)
        except OSError:
            pass
    return out


def grown(counter: Callable[[], int], to: int) -> Callable[[], bool]:
    return lambda: counter() >= to


def volumes_written(bundle: Path, since: float, count: int) -> Callable[[], bool]:
    return lambda: len(fresh_volumes(bundle, since)) >= count


def check_bundle_dir_after_kill(bundle: Path, keys: Keys) -> str:
    """Either no manifest, or one that verifies."""
    if not bundle.is_dir():
        return "no bundle dir"
    if (bundle / MANIFEST_NAME).exists():
        verify_bundle(bundle, key=keys.public, require_signature=True)
        return "manifest present and verified"
    return f"no manifest, {len(journaled(bundle))} blobs journaled"


def test_pack_killed_at_random_points(registry_plain: RegistryServer, tmp_path: Path, skopeo: Any, keys: Keys) -> None:
    rng = random.Random(9061)
    logs = tmp_path / "logs"
    logs.mkdir()
    env = cli_env(tmp_path)
    layout = tmp_path / "work" / "layout"
    bundle = tmp_path / "bundle"
    with Throttle(registry_plain.host) as wire, FaultProxy(wire.url, rate=0.0) as proxy:  # the proxy only counts
        content = build_content(proxy.url, prefix="t-faults/kill-pack", seed="faults-kill-pack", big_sizes=(16 << 20, 12 << 20, 8 << 20), components=6)
        known = blob_map(content.objects)
        bigs = {b.digest for obj in content.additional.values() for b in obj.blobs if b.size >= 8 << 20}
        config = write_image_set(tmp_path / "image-set.yaml", content)
        args = [
            "pack", "--config", str(config), "--out", str(bundle), "--work-dir", str(tmp_path / "work"), "--volume-size", str(VOLUME_SIZE),
            "--sign-key", str(keys.private), "--insecure-registry", proxy.host, "--workers", "4", "--json",
        ]
        notes: List[str] = []
        fetched: List[str] = []

        def after_kill(run: str, mark: int, finished_before: Set[str]) -> None:
            time.sleep(0.3)  # requests the dead process had in flight settle in the proxy
            report = tree_check(layout, known)
            assert report.problems == [], f"after {run}: {report.problems}"
            assert not bigs & (set(report.final_blobs) | set(report.partials)), f"after {run}: a layer was pulled into the work layout"
            again = refetched(proxy.log[mark:], finished_before, content)
            assert again == [], f"{run} fetched blobs that were journaled before it started: {again}"
            fetched.extend(blob_gets(proxy.log[mark:]))
            state = check_bundle_dir_after_kill(bundle, keys)
            notes.append(f"{run}: {len(blob_gets(proxy.log[mark:]))} blob GETs; bundle: {state}")

        # 1-3: kills at a random delay after the layers started to flow (4 MB/s: a run moves at most ~6.5 MB
        # of the ~37 MB, so every kill lands mid-pull)
        wire.rate = 4e6
        for i in range(3):
            finished_before = journaled(bundle)
            mark, base = len(proxy.log), wire.bytes_down
            proc = start(args, logs, f"pack-{i}", env)
            wait_until(grown(lambda: wire.bytes_down, base + 256 * 1024), proc, 60, "the pull")
            delay = rng.uniform(0.5, 1.5)
            time.sleep(delay)
            assert proc.poll() is None, f"pack-{i} ended before the kill: {(logs / f'pack-{i}.err').read_text()}"
            kill(proc)
            after_kill(f"pack-{i} killed {delay:.2f}s into the pull", mark, finished_before)

        # 4, 5: each kill lands once the journal has grown by a seeded number of blobs
        wire.rate = 6e6
        for i in (3, 4):
            finished_before = journaled(bundle)
            k = rng.randint(1, 2)
            mark = len(proxy.log)
            proc = start(args, logs, f"pack-{i}", env)
            try:
                wait_until(lambda: len(journaled(bundle) - finished_before) >= k, proc, 60, f"{k} more journaled blobs")
            except AssertionError:
                if proc.returncode != 0:
                    raise
                notes.append(f"pack-{i} finished before {k} more blobs were seen in the journal")  # the last blobs went in at once
                break
            finally:
                if proc.poll() is None:
                    kill(proc)
            after_kill(f"pack-{i} killed after {k} more journaled blobs", mark, finished_before)

        # 6: the rerun completes, fetching only what the journal does not list
        wire.rate = None
        finished_before = journaled(bundle) if (bundle / JOURNAL_NAME).exists() else set(known)
        assert finished_before, notes
        mark = len(proxy.log)
        rc, out, err = finish(start(args, logs, "pack-final", env), logs, "pack-final")
        assert rc == 0, err.decode()
        again = refetched(proxy.log[mark:], finished_before, content)
        assert again == [], f"the final run fetched journaled blobs again: {again}"
        fetched.extend(blob_gets(proxy.log[mark:]))

    result = json.loads(out)
    assert result["bundle"]["bytesWritten"] < result["bundle"]["totalBytes"], result["bundle"]
    assert not (bundle / JOURNAL_NAME).exists() and not list(bundle.glob(".*.partial"))
    final = tree_check(layout, known)
    assert final.problems == [] and final.partials == {} and not bigs & set(final.final_blobs), final
    check_bundle(bundle, content, keys, skopeo, registry_plain.host)
    print("\n" + "\n".join(notes) + f"\n{len(fetched)} blob GETs in all for {len(known)} blobs and manifests")


# --- 4. kill -9 of unpack ------------------------------------------------------------------------------------


def registry_state(target: RegistryServer, prefix: str, packed: Packed) -> Tuple[int, List[str]]:
    """(tags present, problems): a tag must be absent, or the bundle's digest with everything below it present."""
    manifest, _ = read_manifest(packed.bundle)
    by_digest = packed.content.by_digest
    present = 0
    problems: List[str] = []
    with RegistryClient(target.url) as client:
        for image in manifest.images:
            repo = f"{prefix}/{image.target_repository}"
            resp = client.request("HEAD", f"/v2/{repo}/manifests/{image.target_tag}", headers={"Accept": ", ".join(MANIFEST_TYPES)})
            if resp.status == 404:
                continue
            got = resp.headers.get("Docker-Content-Digest")
            if resp.status != 200 or got != str(image.digest):
                problems.append(f"{repo}:{image.target_tag} is {resp.status} {got}, the bundle says {image.digest}")
                continue
            present += 1
            top = by_digest[str(image.digest)]
            for m in iter_manifests(top):
                if m is not top:
                    r = client.request("HEAD", f"/v2/{repo}/manifests/{m.digest}", headers={"Accept": ", ".join(MANIFEST_TYPES)})
                    if r.status != 200:
                        problems.append(f"{repo}:{image.target_tag} is there but its child {m.digest} is not")
            for b in top.blobs:
                if not client.blob_exists(repo, b.digest):
                    problems.append(f"{repo}:{image.target_tag} is there but its blob {b.digest} is not")
    return present, problems


def test_unpack_killed_at_random_points(packed: Packed, registry_factory: Callable[..., RegistryServer], tmp_path: Path, skopeo: Any, keys: Keys) -> None:
    rng = random.Random(5156)  # delays 0.51, 0.24, 1.40, 0.61 s
    target = registry_factory("plain")
    prefix = "kill"
    logs = tmp_path / "logs"
    logs.mkdir()
    env = cli_env(tmp_path)
    manifest, _ = read_manifest(packed.bundle)

    def args(host: str, resources: str = "resources") -> List[str]:
        return [
            "unpack", str(packed.bundle), "--registry", host, "--insecure-registry", host, "--prefix", prefix, "--registry-kind", "plain",
            "--resources-dir", str(tmp_path / resources), "--key", str(keys.public), "--require-signature", "--workers", "4", "--json",
        ]

    notes = []
    # 2 MB/s to the target: the 6 MiB layer alone needs 3 s and an upload starts over in every run, so no
    # killed run can finish
    with Throttle(target.host, rate=2e6) as wire:
        for i in range(4):
            base = wire.bytes_up
            proc = start(args(wire.host), logs, f"unpack-{i}", env)
            wait_until(grown(lambda: wire.bytes_up, base + 64 * 1024), proc, 60, "the push")  # past verify and tag checks
            delay = rng.uniform(0.0, 1.5)
            time.sleep(delay)
            assert proc.poll() is None, f"unpack-{i} ended before the kill: {(logs / f'unpack-{i}.err').read_text()}"
            kill(proc)
            present, problems = registry_state(target, prefix, packed)
            assert problems == [], f"after unpack-{i} killed {delay:.2f}s into the push: {problems}"
            assert not (tmp_path / "resources").exists()
            notes.append(
                f"unpack-{i} killed {delay:.2f}s into the push: {present}/{len(manifest.images)} tags in place, "
                f"{wire.bytes_up - base} bytes sent by this run"
            )

    rc, out, err = finish(start(args(target.host), logs, "unpack-final", env), logs, "unpack-final")
    assert rc == 0, err.decode()
    report = json.loads(out)
    assert {i["status"] for i in report["images"]} <= {"pushed", "present"}
    assert len(report["images"]) == len(manifest.images)
    assert expect_in_target(skopeo, target, prefix, packed.bundle) == len(manifest.images)
    assert (tmp_path / "resources" / "mapping.txt").is_file()

    # a final no-op rerun, counted by a proxy: one manifest HEAD per image, no write, no blob touched
    with FaultProxy(target.url) as counter:
        # through the proxy the mirror has another name: its resources go to a directory of their own
        rc, out, err = finish(start(args(counter.host, "resources-proxy"), logs, "unpack-noop", env), logs, "unpack-noop")
        requests = [(m, t) for m, t, _, _ in counter.log]
    assert rc == 0, err.decode()
    report = json.loads(out)
    assert {i["status"] for i in report["images"]} == {"present"}
    assert report["totals"]["manifestsPushed"] == 0 and report["totals"]["blobsCopied"] == 0
    assert [r for r in requests if r[0] in ("POST", "PUT", "PATCH", "DELETE")] == []
    assert [r for r in requests if "/blobs/" in r[1]] == []
    print("\n" + "\n".join(notes))

#!/usr/bin/env python3
"""Benchmark `unpack` against `skopeo copy --all --preserve-digests`, same images, empty loopback registries.

Builds a synthetic image set (default 30 images, ~1 GiB of distinct blobs: three base layers shared across
repositories in five organisations, a unique layer per image, every fifth image an OCI index of two
platforms) as an OCI layout, writes it as a signed bundle (`write_bundle`), then measures:

  * skopeo: `skopeo copy --all --preserve-digests oci:LAYOUT:REF docker://REG/REPO:TAG`, image after image
    (OCI-typed images, so skopeo 1.9.3 can preserve digests), into an empty docker-registry;
  * ocp-bundler: `unpack` of the bundle into another empty docker-registry, in a child process, reported as
    verify (`verify_bundle`, what `unpack` runs first) + push (everything after: tag checks, pushes with
    mounts, read-back, cluster resources);
  * the limit of this machine and registry: every distinct blob uploaded once by a bare client, in parallel;
  * a no-op re-unpack of the same bundle into the same registry, with the full verification on record
    (signature checked, volumes unchanged so not hashed again) and with --reverify (every volume hashed).

Rounds alternate skopeo and unpack into fresh registries (`sync` before each run; medians reported): the
loopback registry's disk makes single runs noisy. Both sides read from files in the page cache. Prints wall times, ratios, MB/s and peak RSS
(skopeo: `getrusage(RUSAGE_CHILDREN)`; ours: the child's own VmHWM) and writes JSON (--json-out).

    python scripts/bench_unpack.py                       # ~1 GiB, 30 images
    python scripts/bench_unpack.py --size 256M --images 10 --json-out /tmp/bench.json
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bundler.bundle.volumes import BundleWriteOptions, write_bundle  # noqa: E402
from bundler.bundle.manifest import BundleImage  # noqa: E402
from bundler.layout.store import Layout  # noqa: E402
from bundler.bundle.signing import generate_keypair  # noqa: E402
from bundler.base.units import parse_size  # noqa: E402
from tests.infra.registry import RegistryServer  # noqa: E402

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"
ORGS = ("ocp4", "rhscl", "ocs4", "redhat", "myorg")
CHUNK = 4 << 20


class LayoutWriter:
    """Writes blobs straight into an OCI layout (nothing big held in memory)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        self.refs: List[Dict[str, Any]] = []

    def put(self, data: bytes) -> Dict[str, Any]:
        digest = hashlib.sha256(data).hexdigest()
        path = self.root / "blobs" / "sha256" / digest
        if not path.exists():
            path.write_bytes(data)
        return {"digest": f"sha256:{digest}", "size": len(data)}

    def layer(self, size: int, seed: str) -> Tuple[Dict[str, Any], str]:
        """A valid gzip stream (stored blocks) of random bytes; returns (descriptor, diff_id)."""
        tmp = self.root / "ingest.tmp"
        compressed = hashlib.sha256()
        raw = hashlib.sha256()
        with open(tmp, "wb") as f, gzip.GzipFile(fileobj=_Tee(f, compressed), mode="wb", compresslevel=0, mtime=0) as gz:
            left = size
            rng = hashlib.sha256(seed.encode()).digest()
            while left > 0:
                n = min(CHUNK, left)
                chunk = os.urandom(n - 32) + rng
                raw.update(chunk)
                gz.write(chunk)
                left -= n
        digest = compressed.hexdigest()
        os.replace(tmp, self.root / "blobs" / "sha256" / digest)
        size_written = (self.root / "blobs" / "sha256" / digest).stat().st_size
        return {"mediaType": OCI_LAYER_GZIP, "digest": f"sha256:{digest}", "size": size_written}, f"sha256:{raw.hexdigest()}"

    def image(self, layers: List[Tuple[Dict[str, Any], str]], arch: str, seed: str) -> Dict[str, Any]:
        config = {
            "architecture": arch,
            "os": "linux",
            "config": {"Labels": {"seed": seed}},
            "rootfs": {"type": "layers", "diff_ids": [d for _, d in layers]},
        }
        cfg = self.put(json.dumps(config, sort_keys=True).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, **cfg},
            "layers": [d for d, _ in layers],
        }
        raw = json.dumps(manifest, indent=2).encode()
        return {"mediaType": OCI_MANIFEST, **self.put(raw), "platform": {"architecture": arch, "os": "linux"}}

    def index(self, children: List[Dict[str, Any]]) -> Dict[str, Any]:
        raw = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}, indent=2).encode()
        return {"mediaType": OCI_INDEX, **self.put(raw)}

    def ref(self, name: str, descriptor: Dict[str, Any]) -> None:
        entry = {k: v for k, v in descriptor.items() if k in ("mediaType", "digest", "size")}
        entry["annotations"] = {REF_NAME: name}
        self.refs.append(entry)

    def finish(self) -> None:
        (self.root / "index.json").write_text(json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.refs}, indent=1))


class _Tee:
    def __init__(self, f: Any, hasher: Any) -> None:
        self.f, self.hasher = f, hasher

    def write(self, data: bytes) -> int:
        self.hasher.update(data)
        return int(self.f.write(data))

    def flush(self) -> None:
        self.f.flush()


def build(root: Path, total: int, n_images: int) -> Tuple[List[BundleImage], int]:
    """The image set as an OCI layout; returns the bundle images and the bytes of distinct blobs."""
    writer = LayoutWriter(root)
    base_size = max(1 << 20, int(total * 0.30 / 3))
    unique_size = max(1 << 16, int(total * 0.70 / n_images))
    bases = [writer.layer(base_size, f"base{i}") for i in range(3)]
    images: List[BundleImage] = []
    for i in range(n_images):
        org = ORGS[i % len(ORGS)]
        repo, tag = f"{org}/app{i}", "v1"
        base = bases[i % 3]
        if i % 5 == 0:  # a two-platform index: the unique bytes split between the platforms
            children = [writer.image([base, writer.layer(unique_size // 2, f"u{i}{a}")], a, f"{i}{a}") for a in ("amd64", "arm64")]
            top = writer.index(children)
        else:
            top = writer.image([base, writer.layer(unique_size, f"u{i}")], "amd64", f"{i}")
        source = f"registry.example.com/{repo}:{tag}"
        writer.ref(source, top)
        images.append(
            BundleImage(
                source=source, digest=top["digest"], media_type=top["mediaType"], size=top["size"], kind="additional", target_repository=repo, target_tag=tag
            )
        )
    writer.finish()
    distinct = sum(p.stat().st_size for p in (root / "blobs" / "sha256").iterdir())
    return images, distinct


OURS = r"""
import dataclasses, json, sys, time
from pathlib import Path
from bundler.registry.client import TransportOptions
from bundler.flows.unpack import UnpackOptions, unpack_bundle, verify_once
bundle, host, key, workers, resources, state, reverify = sys.argv[1:]
options = UnpackOptions(registry=host, transport=TransportOptions(insecure_hosts=frozenset({host}), pool_size=32),
                        workers=int(workers), key=Path(key), require_signature=True, reverify=reverify == "1",
                        state_dir=Path(state), resources_dir=Path(resources), registry_kind="plain")
t0 = time.perf_counter()
verification, _ = verify_once(Path(bundle), options)  # exactly what unpack_bundle does first
t1 = time.perf_counter()
result = unpack_bundle(Path(bundle), options=dataclasses.replace(options, verify=False, require_signature=False))
t2 = time.perf_counter()
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
s = result.stats
print(json.dumps({"verify": t1 - t0, "verification": verification, "push": t2 - t1, "wall": t2 - t0, "rss_mb": int(hwm) / 1024,
                  "pushed": result.count("pushed"), "present": result.count("present"), "bytes_copied": s.bytes_copied,
                  "blobs_copied": s.blobs_copied, "blobs_mounted": s.blobs_mounted, "blobs_present": s.blobs_present,
                  "manifests_pushed": s.manifests_pushed}))
"""


FLOOR = r"""
import json, sys, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from bundler.bundle.volumes import Bundle
from bundler.oci.digest import Digest
from bundler.oci.media import Descriptor
from bundler.registry.client import Registries, TransportOptions
bundle, host, workers = sys.argv[1:]
b = Bundle.open(Path(bundle))
client = Registries(options=TransportOptions(insecure_hosts=frozenset({host}), pool_size=32)).client(host)
def up(blob):
    d = Descriptor(blob.media_type, Digest.parse(blob.digest), blob.size)
    client.upload_blob("floor/all", d, lambda offset: b.open_blob(blob.digest, offset))
t = time.perf_counter()
with ThreadPoolExecutor(int(workers)) as pool:
    list(pool.map(up, sorted(b.manifest.blobs, key=lambda x: -x.size)))
print(json.dumps({"wall": time.perf_counter() - t}))
"""


def run_floor(bundle: Path, host: str, workers: int) -> Dict[str, Any]:
    """The machine's limit: each distinct blob uploaded once, in parallel, by a bare client (no checks)."""
    os.sync()
    out = subprocess.run([sys.executable, "-c", FLOOR, str(bundle), host, str(workers)], capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(out.stderr)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def run_ours(bundle: Path, host: str, key: Path, workers: int, work: Path, *, reverify: bool = False) -> Dict[str, Any]:
    os.sync()  # start every measured run with no dirty pages left by the previous one
    before = time.perf_counter()
    args = [str(bundle), host, str(key), str(workers), str(work / "resources"), str(work / "state"), "1" if reverify else "0"]
    out = subprocess.run([sys.executable, "-c", OURS, *args], capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(out.stderr)
    res: Dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    res["process_wall"] = time.perf_counter() - before
    return res


def run_skopeo(layout: Path, images: List[BundleImage], host: str) -> Dict[str, Any]:
    os.sync()
    peak = 0
    t = time.perf_counter()
    for image in images:
        proc = subprocess.Popen(
            ["skopeo", "copy", "--quiet", "--all", "--preserve-digests", "--dest-tls-verify=false",
             f"oci:{layout}:{image.source}", f"docker://{host}/{image.target_repository}:{image.target_tag}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert proc.stderr is not None
        err = proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage (peak RSS in KiB)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise SystemExit(f"skopeo failed: {err.decode(errors='replace')}")
        peak = max(peak, usage.ru_maxrss)
    return {"wall": time.perf_counter() - t, "rss_mb": peak / 1024}


def walls(runs: List[Dict[str, Any]]) -> str:
    return ", ".join("%.2f" % r["wall"] for r in runs)


def median_run(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    return sorted(runs, key=lambda r: float(r["wall"]))[len(runs) // 2]


def check_same(images: List[BundleImage], hosts: Tuple[str, str]) -> None:
    """Both registries hold every image at the bundle's digest (skopeo inspect --raw | sha256)."""
    for image in images[:: max(1, len(images) // 6)]:
        for host in hosts:
            raw = subprocess.run(
                ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{host}/{image.target_repository}:{image.target_tag}"],
                check=True, capture_output=True,
            ).stdout
            got = "sha256:" + hashlib.sha256(raw).hexdigest()
            if got != image.digest:
                raise SystemExit(f"{host}/{image.target_repository}: {got} != {image.digest}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1G", help="bytes of distinct blobs (e.g. 256M, 1G, 2G)")
    ap.add_argument("--images", type=int, default=30)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3, help="alternating skopeo/unpack rounds; medians are reported")
    ap.add_argument("--json-out", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    ap.add_argument("--registry-tmpfs", action="store_true", help="keep the registries' storage in /dev/shm (takes the disk out of the figures)")
    args = ap.parse_args()
    if not shutil.which("skopeo") or not shutil.which("docker-registry"):
        raise SystemExit("needs skopeo and docker-registry: run scripts/install-deps.sh")
    total = parse_size(args.size)
    work = Path(tempfile.mkdtemp(prefix="ocpb-bench-unpack-"))
    regs = Path(tempfile.mkdtemp(prefix="ocpb-bench-registries-", dir="/dev/shm" if args.registry_tmpfs else None))
    try:
        t = time.perf_counter()
        images, distinct = build(work / "layout", total, args.images)
        build_s = time.perf_counter() - t
        generate_keypair(work / "bundle.key", work / "bundle.pub")
        t = time.perf_counter()
        write_bundle(Layout(work / "layout", create=False), images, options=BundleWriteOptions(out_dir=work / "bundle", sign_key=work / "bundle.key"))
        bundle_s = time.perf_counter() - t
        print(f"{len(images)} images, {distinct / 1e6:.0f} MB of distinct blobs (layout {build_s:.1f}s, bundle {bundle_s:.1f}s)", file=sys.stderr)

        skopeo_runs: List[Dict[str, Any]] = []
        ours_runs: List[Dict[str, Any]] = []
        floor_runs: List[Dict[str, Any]] = []
        for round_ in range(args.rounds):  # alternate, each into empty registries, so drift hits both
            with RegistryServer("plain", workdir=regs / f"reg-floor-{round_}") as reg_floor:
                floor_runs.append(run_floor(work / "bundle", reg_floor.host, args.workers))
            shutil.rmtree(regs / f"reg-floor-{round_}", ignore_errors=True)
            with RegistryServer("plain", workdir=regs / f"reg-skopeo-{round_}") as reg_skopeo, RegistryServer("plain", workdir=regs / f"reg-ours-{round_}") as reg_ours:
                skopeo_runs.append(run_skopeo(work / "layout", images, reg_skopeo.host))
                ours_runs.append(run_ours(work / "bundle", reg_ours.host, work / "bundle.pub", args.workers, work, reverify=True))
                if round_ == args.rounds - 1:
                    noop = run_ours(work / "bundle", reg_ours.host, work / "bundle.pub", args.workers, work)
                    noop_full = run_ours(work / "bundle", reg_ours.host, work / "bundle.pub", args.workers, work, reverify=True)
                    check_same(images, (reg_skopeo.host, reg_ours.host))
            shutil.rmtree(regs / f"reg-skopeo-{round_}", ignore_errors=True)
            shutil.rmtree(regs / f"reg-ours-{round_}", ignore_errors=True)
        skopeo = median_run(skopeo_runs)
        ours = median_run(ours_runs)
        floor = median_run(floor_runs)
        mb = distinct / 1e6
        assert all(r["pushed"] == len(images) for r in ours_runs) and noop["present"] == len(images), (ours_runs, noop)
        assert noop["manifests_pushed"] == 0 and noop["bytes_copied"] == 0, noop
        rows = [
            ("skopeo copy --all --preserve-digests", skopeo["wall"], skopeo["rss_mb"]),
            ("ocp-bundler unpack (verify + push)", ours["wall"], ours["rss_mb"]),
            ("  of which verify_bundle", ours["verify"], None),
            ("  of which push + read-back + YAML", ours["push"], None),
            ("no-op re-unpack (recorded verification)", noop["wall"], noop["rss_mb"]),
            ("  of which push phase (tag HEADs)", noop["push"], None),
            ("no-op re-unpack with --reverify", noop_full["wall"], noop_full["rss_mb"]),
            ("limit: bare upload of each distinct blob", floor["wall"], None),
        ]
        where = "tmpfs" if args.registry_tmpfs else "disk"
        print(f"\n{len(images)} images, {mb:.0f} MB distinct, {os.cpu_count()} cores, registries on {where}, median of {args.rounds} round(s)\n")
        print(f"{'':42} {'wall s':>8} {'MB/s':>8} {'peak RSS MB':>12}")
        for name, wall, rss in rows:
            print(f"{name:42} {wall:8.2f} {mb / wall:8.1f} {'' if rss is None else f'{rss:.0f}':>12}")
        ratio = ours["wall"] / skopeo["wall"]
        ratio_push = ours["push"] / skopeo["wall"]
        noop_ratio = noop["wall"] / ours["wall"]
        noop_full_ratio = noop_full["wall"] / ours["wall"]
        print(f"\nunpack / skopeo: {ratio:.3f} with verification, {ratio_push:.3f} push phase only (target <= 0.4)")
        print(f"no-op / full: {noop_ratio:.1%} (verification on record), {noop_full_ratio:.1%} with --reverify (target <= 5%)")
        print(f"skopeo walls: {walls(skopeo_runs)}; unpack walls: {walls(ours_runs)}; bare upload walls: {walls(floor_runs)}")
        print(f"push phase / bare-upload limit: {ours['push'] / floor['wall']:.2f}; limit / skopeo: {floor['wall'] / skopeo['wall']:.3f}")
        print(f"blobs uploaded {ours['blobs_copied']} ({ours['bytes_copied'] / 1e6:.0f} MB), mounted {ours['blobs_mounted']}, present {ours['blobs_present']}")
        result = {
            "images": len(images), "distinct_bytes": distinct, "rounds": args.rounds, "skopeo": skopeo, "ours": ours,
            "skopeo_runs": skopeo_runs, "ours_runs": ours_runs, "floor": floor, "floor_runs": floor_runs, "noop": noop, "noop_reverify": noop_full,
            "ratio": ratio, "ratio_push_phase": ratio_push, "noop_ratio": noop_ratio, "noop_reverify_ratio": noop_full_ratio,
            "build_seconds": build_s, "bundle_seconds": bundle_s, "registry_storage": "tmpfs" if args.registry_tmpfs else "disk",
        }
        if args.json_out:
            args.json_out.write_text(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(regs, ignore_errors=True)
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Benchmark: ocp-bundler copying a synthetic image set into one OCI layout versus skopeo, same data, same run.

Builds ~30 images (shared base layers, ~1-2 GB) in a loopback docker-registry, then measures:
  * ocp-bundler: every image into one layout in one process (parallel), wall time and peak RSS;
  * skopeo: `skopeo copy --all --preserve-digests` of each image into one `oci:` layout, one after another;
  * the machine's limits on the same data: plain HTTP GET of every blob + sha256, and a raw disk write;
  * peak RSS of ocp-bundler while copying a single 1 GiB blob.
Prints a table and writes JSON (--json-out). Usage: python scripts/bench_copy.py [--images 30] [--unique-mb 30]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.infra.images import Blob, make_image, push  # noqa: E402
from tests.infra.registry import RegistryServer  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts"))
from bench import disk_limit  # noqa: E402  (one disk probe for every benchmark)

GZIP_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def fast_layer(size: int, seed: str) -> Blob:
    """A valid gzip stream of random bytes, built at memory speed (stored blocks: level 0)."""
    data = hashlib.sha256(seed.encode()).digest() + os.urandom(size)
    diff_id = "sha256:" + hashlib.sha256(data).hexdigest()
    return Blob.of(gzip.compress(data, compresslevel=0, mtime=0), GZIP_LAYER, diff_id=diff_id)


def build_set(server: RegistryServer, n_images: int, unique_mb: int, base_mb: int) -> List[str]:
    bases = [fast_layer(base_mb << 20, f"base{i}") for i in range(3)]
    refs = []
    for i in range(n_images):
        img = make_image(base_layers=[bases[i % 3], fast_layer(unique_mb << 20, f"u{i}")], seed=f"img{i}")
        push(server.url, f"bench/app{i}", img, "v1")
        refs.append(f"{server.host}/bench/app{i}:v1")
    return refs


def rss_child_mb() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def run_child(code: str, *args: str) -> Dict[str, Any]:
    """Run in a fresh process so its peak RSS is its own."""
    before = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(out.stderr)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res.setdefault("wall", time.perf_counter() - before)
    return res


OURS = r"""
import json, resource, sys, time
from pathlib import Path
from bundler.transfer.copy import Copier, CopyOptions
from bundler.layout.store import Layout
from bundler.oci.reference import Reference
from bundler.registry.client import Registries, TransportOptions
from bundler.transfer.transports import LayoutImage, RegistryRepository
dest, host, workers, *refs = sys.argv[1:]
t = time.perf_counter()
regs = Registries(options=TransportOptions(insecure_hosts=frozenset({host}), pool_size=32))
layout = Layout(Path(dest))
with Copier(CopyOptions(workers=int(workers), image_workers=2 * int(workers))) as c:
    jobs = [(RegistryRepository(regs.client(host), Reference.parse(r)), LayoutImage(layout, r), None) for r in refs]
    res = c.copy_many(jobs)
bad = [str(r.error) for r in res if r.status == "failed"]
assert not bad, bad
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]  # this process's own peak (ru_maxrss inherits the parent's across exec)
print(json.dumps({"wall": time.perf_counter() - t, "rss_mb": int(hwm) / 1024,
                  "bytes": sum(r.stats.bytes_copied for r in res)}))
"""


def skopeo_copy(refs: List[str], dest: Path) -> Dict[str, Any]:
    t = time.perf_counter()
    for r in refs:
        subprocess.run(
            ["skopeo", "copy", "--quiet", "--all", "--preserve-digests", "--src-tls-verify=false", f"docker://{r}", f"oci:{dest}:{r}"],
            check=True,
            capture_output=True,
        )
    return {"wall": time.perf_counter() - t, "rss_mb": rss_child_mb()}


def http_limit(server: RegistryServer, refs: List[str]) -> Dict[str, Any]:
    import urllib3

    pool = urllib3.PoolManager(maxsize=8)
    accept = "application/vnd.oci.image.manifest.v1+json"
    blobs: Dict[str, str] = {}
    for r in refs:
        repo, tag = r.split("/", 1)[1].rsplit(":", 1)
        m = json.loads(pool.request("GET", f"{server.url}/v2/{repo}/manifests/{tag}", headers={"Accept": accept}).data)
        for d in [m["config"], *m["layers"]]:
            blobs.setdefault(d["digest"], repo)

    def get(item: Any) -> int:
        digest, repo = item
        resp = pool.request("GET", f"{server.url}/v2/{repo}/blobs/{digest}", preload_content=False)
        h = hashlib.sha256()
        n = 0
        for chunk in resp.stream(1 << 20):
            h.update(chunk)
            n += len(chunk)
        resp.release_conn()
        return n

    t = time.perf_counter()
    with ThreadPoolExecutor(4) as ex:
        total = sum(ex.map(get, blobs.items()))
    return {"wall": time.perf_counter() - t, "bytes": total}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=30)
    ap.add_argument("--unique-mb", type=int, default=30)
    ap.add_argument("--base-mb", type=int, default=100)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--big-blob-mb", type=int, default=1024, help="size of the single blob for the RSS check (0 to skip)")
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args()
    if not shutil.which("skopeo") or not shutil.which("docker-registry"):
        raise SystemExit("needs skopeo and docker-registry: run scripts/install-deps.sh")
    work = Path(tempfile.mkdtemp(prefix="ocpb-bench-copy-"))
    try:
        with RegistryServer("plain", workdir=work / "reg") as server:
            print(f"building {args.images} images in {server.host} …", file=sys.stderr)
            refs = build_set(server, args.images, args.unique_mb, args.base_mb)
            ours = run_child(OURS, str(work / "ours"), server.host, str(args.workers), *refs)
            data_bytes = ours["bytes"]
            theirs = skopeo_copy(refs, work / "skopeo")
            http = http_limit(server, refs)
            disk = disk_limit(work, data_bytes)
            disk["wall"] = disk["seconds"]
            big: Dict[str, Any] = {}
            if args.big_blob_mb:
                img = make_image(base_layers=[fast_layer(args.big_blob_mb << 20, "big")], seed="big")
                push(server.url, "bench/big", img, "v1")
                big = run_child(OURS, str(work / "big"), server.host, "2", f"{server.host}/bench/big:v1")
        mb = data_bytes / 1e6
        rows = [
            ("ocp-bundler", ours["wall"], ours.get("rss_mb")),
            ("skopeo (each image, one oci: layout)", theirs["wall"], None),
            ("limit: HTTP GET + sha256", http["wall"], None),
            ("limit: raw disk write", disk["wall"], None),
        ]
        print(f"\n{args.images} images, {mb:.0f} MB of unique blobs, {os.cpu_count()} cores\n")
        print(f"{'':42} {'wall s':>8} {'MB/s':>8} {'peak RSS MB':>12}")
        for name, wall, rss in rows:
            print(f"{name:42} {wall:8.2f} {mb / wall:8.1f} {'' if rss is None else f'{rss:.0f}':>12}")
        ratio = ours["wall"] / theirs["wall"]
        limit = max(http["wall"], disk["wall"])
        print(f"\nratio ocp-bundler / skopeo: {ratio:.3f} (target <= 0.3)")
        print(f"ocp-bundler vs the machine's limit (slower of HTTP+sha256 and disk write): {limit / ours['wall']:.0%} of limit speed")
        if big:
            print(f"peak RSS copying one {args.big_blob_mb} MiB blob: {big['rss_mb']:.0f} MB (target < 200)")
        result = {
            "images": args.images, "bytes": data_bytes, "ours": ours, "skopeo": theirs, "http_limit": http,
            "disk_limit": disk, "ratio": ratio, "big_blob": big,
        }
        if args.json_out:
            args.json_out.write_text(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Benchmark `serve` (blobs read in place from the bundle's volumes) against docker-registry serving the
same images from its own filesystem storage, with the same parallel pull client, in one run.

Builds the synthetic image set of bench_unpack (shared bases, a unique layer per image, some two-platform
indexes), writes it as a bundle, unpacks it into an empty docker-registry, and starts `ocp-bundler serve`
on the bundle (separate processes, so neither server shares the client's interpreter). Then, alternating
rounds, one client pulls every image from each server: manifests (and children), then every distinct blob
of each repository, over --threads connections, bytes counted and discarded. Prints walls, MB/s and the
ratio serve / registry (target >= 1: in-place reads of tar volumes cost no more than the registry's
filesystem driver), and writes JSON (--json-out).

    python scripts/bench_serve.py                        # 512 MB, 20 images
    python scripts/bench_serve.py --size 1G --images 30 --rounds 3 --json-out /tmp/serve.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Set, Tuple

import urllib3

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_unpack import build  # noqa: E402
from bundler.base.units import parse_size  # noqa: E402
from bundler.bundle.manifest import BundleImage  # noqa: E402
from bundler.bundle.volumes import BundleWriteOptions, write_bundle  # noqa: E402
from bundler.layout.store import Layout  # noqa: E402
from tests.infra.registry import RegistryServer  # noqa: E402

ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pull_all(host: str, images: List[BundleImage], threads: int) -> Dict[str, Any]:
    """Every image from `host`: manifests first (walking indexes), then every blob, in parallel."""
    pool = urllib3.HTTPConnectionPool(host.split(":")[0], int(host.split(":")[1]), maxsize=threads, block=True)
    started = time.perf_counter()
    blobs: Set[Tuple[str, str]] = set()
    requests = 0

    def manifest(repo: str, ref: str) -> None:
        nonlocal requests
        resp = pool.request("GET", f"/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT})
        requests += 1
        if resp.status != 200:
            raise SystemExit(f"{host}: manifest {repo}:{ref} answered {resp.status}")
        doc = json.loads(resp.data)
        for child in doc.get("manifests", []):
            manifest(repo, child["digest"])
        for blob in [doc.get("config")] + doc.get("layers", []):
            if blob:
                blobs.add((repo, blob["digest"]))

    for image in images:
        manifest(str(image.target_repository), image.target_tag)

    def get(item: Tuple[str, str]) -> int:
        repo, digest = item
        resp = pool.request("GET", f"/v2/{repo}/blobs/{digest}", preload_content=False)
        size = 0
        for chunk in resp.stream(1 << 20):
            size += len(chunk)
        resp.release_conn()
        if resp.status != 200:
            raise SystemExit(f"{host}: blob {digest} answered {resp.status}")
        return size

    with ThreadPoolExecutor(max_workers=threads) as ex:
        total = sum(ex.map(get, sorted(blobs)))
    wall = time.perf_counter() - started
    pool.close()
    return {"wall": wall, "bytes": total, "blobs": len(blobs), "requests": requests + len(blobs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="512M", help="bytes of distinct blobs (e.g. 256M, 1G)")
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--threads", type=int, default=8, help="parallel pulls")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians are reported")
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args()
    if not shutil.which("docker-registry"):
        raise SystemExit("needs docker-registry: run scripts/install-deps.sh")
    work = Path(tempfile.mkdtemp(prefix="ocpb-bench-serve-"))
    server = None
    try:
        images, distinct = build(work / "layout", parse_size(args.size), args.images)
        write_bundle(Layout(work / "layout", create=False), images, options=BundleWriteOptions(out_dir=work / "bundle"))
        env = {**os.environ, "OCPB_DEBUG_LOG": os.devnull, "PYTHONPATH": str(ROOT)}
        with RegistryServer("plain", workdir=work / "registry") as registry:
            subprocess.run(
                [sys.executable, "-m", "bundler.cli", "unpack", str(work / "bundle"), "--registry", registry.host, "--insecure-registry", registry.host,
                 "--registry-kind", "plain", "--no-verify", "--resources-dir", str(work / "resources"), "--ledger", str(work / "ledger")],
                check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            port = free_port()
            server = subprocess.Popen(
                [sys.executable, "-m", "bundler.cli", "serve", str(work / "bundle"), "--no-verify", "--listen", f"127.0.0.1:{port}"],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            )
            assert server.stdout is not None
            server.stdout.readline()  # "serving ..." once it listens
            served = f"127.0.0.1:{port}"
            ours: List[Dict[str, Any]] = []
            theirs: List[Dict[str, Any]] = []
            for _ in range(args.rounds):
                theirs.append(pull_all(registry.host, images, args.threads))
                ours.append(pull_all(served, images, args.threads))
        mb = distinct / 1e6
        reg = statistics.median(r["wall"] for r in theirs)
        srv = statistics.median(r["wall"] for r in ours)
        print(f"\n{len(images)} images, {mb:.0f} MB distinct, {ours[0]['blobs']} blob pulls, {args.threads} parallel pulls, {os.cpu_count()} cores, median of {args.rounds}\n")
        print(f"{'':40} {'wall s':>8} {'MB/s':>8}")
        print(f"{'docker-registry (filesystem driver)':40} {reg:8.2f} {ours[0]['bytes'] / 1e6 / reg:8.1f}")
        print(f"{'ocp-bundler serve (in place, volumes)':40} {srv:8.2f} {ours[0]['bytes'] / 1e6 / srv:8.1f}")
        ratio = reg / srv
        print(f"\nserve throughput / docker-registry: {ratio:.2f}x (target >= 1)")
        if args.json_out:
            args.json_out.write_text(json.dumps({"images": len(images), "distinct_bytes": distinct, "threads": args.threads, "registry": theirs, "serve": ours, "ratio": ratio}, indent=2))
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

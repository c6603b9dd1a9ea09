#!/usr/bin/env python3
"""Benchmark `verify_bundle` against coreutils `sha256sum` over the same volume files.

Builds a synthetic work layout of SIZE bytes (random "gzip" layers of 8–160 MiB that are stored raw, plus a
few percent of uncompressed text layers that are stored zstd), writes it as a bundle, then times:

- `sha256sum` over every volume file (one process, as a user would run it);
- `verify_bundle` in a child process (volume sha256 + tar headers + every blob digest, zstd decompressed),
  reporting its own peak RSS.

Both run with the files in the page cache (each is run once untimed first), so the figures compare hashing
work, not the disk. Everything is created in a temp dir and removed at the end (unless --keep).

    python scripts/bench_verify.py --size 1.5G
    python scripts/bench_verify.py --size 2G --volume-size 4G --workers 2
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bundler.bundle.volumes import BundleWriteOptions, write_bundle  # noqa: E402
from bundler.bundle.manifest import BundleImage  # noqa: E402
from bundler.oci.digest import Digest  # noqa: E402
from bundler.layout.store import Layout  # noqa: E402
from bundler.oci.media import DOCKER_LAYER_GZIP, OCI_CONFIG, OCI_INDEX, OCI_LAYER_TAR, OCI_MANIFEST  # noqa: E402
from bundler.base.units import parse_size  # noqa: E402

CHUNK = 4 << 20


def _write_blob(layout: Layout, size: int, rng: random.Random, *, text: bool) -> Tuple[str, int]:
    """Stream a blob of `size` bytes into the layout without holding it in memory."""
    hasher = hashlib.sha256()
    tmp = layout.root / "ingest-bench"
    line = b"the quick brown fox jumps over the lazy dog %d\n"
    with open(tmp, "wb") as f:
        left = size
        i = 0
        while left > 0:
            n = min(CHUNK, left)
            if text:
                chunk = b"".join(line % (i + k) for k in range(n // 40 + 1))[:n]
                i += n // 40
            else:
                chunk = rng.randbytes(n)
            f.write(chunk)
            hasher.update(chunk)
            left -= n
    digest = Digest("sha256", hasher.hexdigest())
    path = layout.blob_path(digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, path)
    return str(digest), size


def build(layout_dir: Path, total: int, seed: int) -> Tuple[Layout, List[BundleImage]]:
    rng = random.Random(seed)
    layout = Layout(layout_dir)
    images: List[BundleImage] = []
    made = 0
    n = 0
    while made < total:
        layers = []
        for _ in range(rng.randint(2, 5)):
            if made >= total:
                break
            text = rng.random() < 0.05
            size = min(total - made, rng.randint(8, 160) << 20 if not text else rng.randint(4, 32) << 20)
            digest, size = _write_blob(layout, size, rng, text=text)
            layers.append({"mediaType": OCI_LAYER_TAR if text else DOCKER_LAYER_GZIP, "digest": digest, "size": size})
            made += size
        if not layers:
            break
        config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [l["digest"] for l in layers]}}).encode()
        cd = layout.put_bytes(config)
        manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {"mediaType": OCI_CONFIG, "digest": str(cd), "size": len(config)}, "layers": layers}).encode()
        md = layout.put_bytes(manifest)
        index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [{"mediaType": OCI_MANIFEST, "digest": str(md), "size": len(manifest), "platform": {"os": "linux", "architecture": "amd64"}}]}).encode()
        idx = layout.put_bytes(index)
        images.append(BundleImage(source=f"example.com/bench/img{n}:v1", digest=str(idx), media_type=OCI_INDEX, size=len(index), kind="additional", target_repository=f"bench/img{n}", target_tag="v1"))
        n += 1
    return layout, images


CHILD = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
from bundler.bundle.verify import verify_bundle
t = time.monotonic()
r = verify_bundle({bundle!r}, workers={workers})
print(json.dumps({{"seconds": time.monotonic() - t, "bytes": r.bytes, "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}}))
"""


def run_verify(bundle: Path, workers: int) -> dict:  # type: ignore[type-arg]
    out = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT), bundle=str(bundle), workers=workers)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def run_sha256sum(files: List[Path]) -> float:
    t = time.monotonic()
    subprocess.run(["sha256sum", *map(str, files)], stdout=subprocess.DEVNULL, check=True)
    return time.monotonic() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1.5G", help="bytes of layer data to generate (default 1.5G)")
    ap.add_argument("--volume-size", default="512MiB", help="bundle volume size (default 512MiB)")
    ap.add_argument("--workers", type=int, default=2, help="verify workers (default 2)")
    ap.add_argument("--runs", type=int, default=3, help="timed runs of each; the best is reported (default 3)")
    ap.add_argument("--dir", type=Path, default=None, help="where to make the temp dir (default $TMPDIR)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = ap.parse_args()
    if not shutil.which("sha256sum"):
        print("sha256sum not found", file=sys.stderr)
        return 2
    total = parse_size(args.size, what="--size")
    volume_size = parse_size(args.volume_size, what="--volume-size")
    work = Path(tempfile.mkdtemp(prefix="ocpb-bench-verify-", dir=args.dir))
    try:
        t = time.monotonic()
        layout, images = build(work / "layout", total, seed=1)
        print(f"layout: {len(images)} images, {total / 1e6:.0f} MB in {time.monotonic() - t:.1f}s")
        t = time.monotonic()
        result = write_bundle(layout, images, options=BundleWriteOptions(out_dir=work / "bundle", volume_size=volume_size))
        wt = time.monotonic() - t
        vols = [work / "bundle" / v.name for v in result.manifest.volumes]
        nbytes = result.total_bytes
        print(f"write_bundle: {len(vols)} volumes, {nbytes / 1e6:.0f} MB in {wt:.2f}s ({nbytes / 1e6 / wt:.0f} MB/s)")
        run_sha256sum(vols)  # warm the page cache
        run_verify(work / "bundle", args.workers)
        sums = min(run_sha256sum(vols) for _ in range(args.runs))
        verifies = [run_verify(work / "bundle", args.workers) for _ in range(args.runs)]
        best = min(verifies, key=lambda r: r["seconds"])
        v_mbs = nbytes / 1e6 / best["seconds"]
        s_mbs = nbytes / 1e6 / sums
        print(f"sha256sum:     {sums:.2f}s  {s_mbs:7.0f} MB/s")
        print(f"verify_bundle: {best['seconds']:.2f}s  {v_mbs:7.0f} MB/s  (workers={args.workers}, volume sha256 + every blob digest + tar headers)")
        print(f"ratio verify/sha256sum: {v_mbs / s_mbs:.2f}x")
        print(f"verify peak RSS: {max(r['rss_kib'] for r in verifies) / 1024:.0f} MiB")
        return 0
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""End-to-end benchmark: ocp-bundler pack / verify / unpack against skopeo and sha256sum, one data set, one run.

Builds ~30 OCI-typed images (three shared base layers, one unique layer each, every fifth image a
two-platform OCI index; ~1 GB of distinct blobs by default, --size-mb) in a loopback docker-registry
(plain HTTP), writes an image-set config whose `additionalImages` lists them, then times the CLI as users
run it (`ocp-bundler …` as child processes, each under `/usr/bin/time` for its own peak RSS):

  pack          ocp-bundler pack --sign-key            vs  skopeo copy --all --preserve-digests of every image
                                                           into one shared oci: layout, then tar of the layout
  verify        ocp-bundler verify --key               vs  sha256sum of every volume (throughput)
  unpack        ocp-bundler unpack into an empty       vs  skopeo copy --all --preserve-digests from the layout
                registry (verifies first)                  into another empty registry
  no-op         the same unpack again                  vs  the full unpack (and skopeo's re-copy, for reference)
  incremental   pack --base <first bundle> of the set  vs  skopeo copy of the new images into the same layout,
                plus a few new images                      then tar of the files that are new in it

Pack is also measured over a simulated internet link (`--link`: a relay from tests/infra/faults.Throttle
with 30 ms each way, 12 MB/s per connection, 100 MB/s in all) on a release-like set of 60 small images,
as a multiple of unique bytes / 100 MB/s (and skopeo over the same link with `--link-skopeo`); the disk
used beside the bundle (work directory, journal) is sampled during and after pack; `--rss-blob-mb`
packs one image with a layer that large and reports pack's peak RSS.

and the machine's own limits on the same data: HTTP GET + sha256 of every blob from the source registry,
a raw disk write (+ fsync) of the same bytes, read + sha256 of the bundle volumes on all cores, and (what
bounds any unpack) a bare POST + PUT of every blob into an empty registry. Prints a table (wall, ratio,
MB/s, peak RSS, % of the machine's limit, the command's own CPU time), which targets are met and by how
much, and writes JSON (--json-out). The CLI runs this checkout's code (PYTHONPATH) with bytecode caching on;
its debug log and verification records stay in the temp dir, which is removed unless --keep.

    python scripts/bench.py                          # ~1 GB, 30 images, about 1.5 minutes on 2 cores
    python scripts/bench.py --size-mb 256 --images 10 --json-out /tmp/bench.json
"""

from __future__ import annotations

import argparse
import dataclasses
import threading
import gzip
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple
from urllib.parse import quote, urljoin

import urllib3

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.infra.images import Blob, iter_manifests, make_image, make_index  # noqa: E402
from tests.infra.registry import RegistryServer  # noqa: E402

GZIP_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
TIME = "/usr/bin/time"
TARGETS = {"pack": 0.3, "unpack": 0.4, "verify": 3.0, "noop": 0.05, "rss_mb": 200.0, "link": 1.3, "beside": 0.05}
LINK = {"latency": 0.030, "per_connection": 12e6, "rate": 100e6}


# --------------------------------------------------------------------------------------------------------
# the data set
# --------------------------------------------------------------------------------------------------------


def fast_layer(size: int, seed: str) -> Blob:
    """A valid gzip stream of random bytes, built at memory speed (stored blocks: level 0)."""
    data = hashlib.sha256(seed.encode()).digest() + os.urandom(max(0, size - 32))
    diff_id = "sha256:" + hashlib.sha256(data).hexdigest()
    return Blob.of(gzip.compress(data, compresslevel=0, mtime=0), GZIP_LAYER, diff_id=diff_id)


@dataclass
class BenchImage:
    ref: str  # host/repo:tag in the source registry
    repo: str
    tag: str
    digest: str
    blobs: Dict[str, int] = field(default_factory=dict)  # every manifest, config and layer: digest -> size
    manifests: Tuple[str, ...] = ()  # the digests in `blobs` that are manifests


class Pusher:
    """Pushes images into the source registry; a blob already in another repository is mounted, not re-sent."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = urllib3.PoolManager(maxsize=4)
        self.where: Dict[str, str] = {}

    def blob(self, repo: str, blob: Blob) -> None:
        src = self.where.get(blob.digest)
        if src == repo:
            return
        if src is not None:
            r = self.http.request("POST", f"{self.url}/v2/{repo}/blobs/uploads/?mount={quote(blob.digest)}&from={quote(src)}", redirect=False)
            if r.status == 201:
                return
        r = self.http.request("POST", f"{self.url}/v2/{repo}/blobs/uploads/", redirect=False)
        if r.status != 202:
            raise SystemExit(f"POST upload {repo}: {r.status} {r.data[:200]!r}")
        loc = urljoin(self.url + "/", r.headers["Location"])
        loc += ("&" if "?" in loc else "?") + "digest=" + quote(blob.digest)
        r = self.http.request("PUT", loc, body=blob.raw, headers={"Content-Type": "application/octet-stream"}, redirect=False)
        if r.status != 201:
            raise SystemExit(f"PUT blob {blob.digest}: {r.status} {r.data[:200]!r}")
        self.where[blob.digest] = repo

    def push(self, repo: str, obj: Any, tag: str) -> None:
        for b in obj.blobs:
            self.blob(repo, b)
        for m in iter_manifests(obj):
            ref = tag if m is obj else m.digest
            r = self.http.request("PUT", f"{self.url}/v2/{repo}/manifests/{ref}", body=m.raw, headers={"Content-Type": m.media_type})
            if r.status != 201:
                raise SystemExit(f"PUT manifest {repo}:{ref}: {r.status} {r.data[:200]!r}")


def build_images(pusher: Pusher, host: str, bases: Sequence[Blob], first: int, count: int, unique_size: int) -> List[BenchImage]:
    out: List[BenchImage] = []
    for i in range(first, first + count):
        base = bases[i % len(bases)]
        if i % 5 == 0:  # a two-platform OCI index; the unique bytes are split between the platforms
            children = [
                make_image(base_layers=[base, fast_layer(unique_size // 2, f"u{i}{arch}")], architecture=arch, seed=f"img{i}{arch}")
                for arch in ("amd64", "arm64")
            ]
            obj: Any = make_index(children)
        else:
            obj = make_image(base_layers=[base, fast_layer(unique_size, f"u{i}")], seed=f"img{i}")
        repo, tag = f"bench/app{i}", "v1"
        pusher.push(repo, obj, tag)
        blobs = {b.digest: b.size for b in obj.blobs}
        manifests = tuple(m.digest for m in iter_manifests(obj))
        for m in iter_manifests(obj):
            blobs[m.digest] = m.size
        out.append(BenchImage(f"{host}/{repo}:{tag}", repo, tag, obj.digest, blobs, manifests))
        del obj
    return out


def build_release_like(pusher: Pusher, host: str, count: int, total: int) -> List[BenchImage]:
    """`count` images shaped like release components: two shared base layers (20 % of the bytes), then
    three small layers of their own each."""
    bases = [fast_layer(int(total * 0.12), "link-base0"), fast_layer(int(total * 0.08), "link-base1")]
    own = int(total * 0.8 / count)
    out: List[BenchImage] = []
    for i in range(count):
        layers = [fast_layer(size, f"link{i}-{j}") for j, size in enumerate((own // 2, own // 3, own - own // 2 - own // 3))]
        obj = make_image(base_layers=[*bases, *layers], seed=f"link{i}")
        repo, tag = f"link/component{i}", "v1"
        pusher.push(repo, obj, tag)
        blobs = {b.digest: b.size for b in obj.blobs}
        blobs[obj.digest] = obj.size
        out.append(BenchImage(f"{host}/{repo}:{tag}", repo, tag, obj.digest, blobs, (obj.digest,)))
    return out


class Footprint:
    """Samples the bytes on disk under some directories (allocated blocks) while a command runs: the peak
    and the last sample. Used for what pack keeps beside the bundle (work directory, journal)."""

    def __init__(self, paths: Sequence[Path], *, skip_volumes_in: Path) -> None:
        self.paths = paths
        self.skip = skip_volumes_in
        self.peak = 0
        self.last = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def measure(self) -> int:
        total = 0
        for root in self.paths:
            for dirpath, _, names in os.walk(root):
                for name in names:
                    if Path(dirpath) == self.skip and (name.startswith("bundle-") or name.startswith(".bundle-") or name.startswith("bundle-manifest")):
                        continue  # the bundle itself
                    try:
                        total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
                    except OSError:
                        pass
        return total

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self.measure())

    def __enter__(self) -> "Footprint":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.last = self.measure()
        self.peak = max(self.peak, self.last)


def distinct_bytes(images: Sequence[BenchImage]) -> int:
    seen: Dict[str, int] = {}
    for img in images:
        seen.update(img.blobs)
    return sum(seen.values())


def write_config(path: Path, images: Sequence[BenchImage]) -> None:
    lines = ["apiVersion: ocp-bundler.io/v1alpha1", "kind: ImageSet", "additionalImages:"]
    lines += [f"  - {img.ref}" for img in images]
    path.write_text("\n".join(lines) + "\n")


# --------------------------------------------------------------------------------------------------------
# running things
# --------------------------------------------------------------------------------------------------------


@dataclass
class Run:
    wall: float
    rss_mb: float
    cpu: float = 0.0  # user + system CPU seconds of the command itself (what contention on a shared box changes least)
    stdout: str = ""

    def json(self) -> Any:
        return json.loads(self.stdout)


class Runner:
    def __init__(self, work: Path, env: Dict[str, str]) -> None:
        self.work = work
        self.env = env
        self.n = 0

    def run(self, cmd: Sequence[str], *, ok: Sequence[int] = (0,)) -> Run:
        """Run one command under /usr/bin/time: wall time (ours), the command's own peak RSS and CPU time."""
        self.n += 1
        rfile = self.work / f"time-{self.n}.txt"
        t = time.perf_counter()
        p = subprocess.run([TIME, "-f", "%M %U %S", "-o", str(rfile), *cmd], capture_output=True, text=True, cwd=self.work, env=self.env, check=False)
        wall = time.perf_counter() - t
        if p.returncode not in ok:
            raise SystemExit(f"{' '.join(cmd)} exited {p.returncode}:\n{p.stderr[-3000:]}")
        kib, user, system = rfile.read_text().strip().splitlines()[-1].split()
        return Run(wall, int(kib) / 1024, float(user) + float(system), p.stdout)

    def run_all(self, cmds: Sequence[Sequence[str]]) -> Run:
        """Commands one after another (skopeo image by image): total wall, the largest peak RSS."""
        t = time.perf_counter()
        runs = [self.run(c) for c in cmds]
        return Run(time.perf_counter() - t, max((r.rss_mb for r in runs), default=0.0), sum(r.cpu for r in runs))


def ensure_tools() -> None:
    missing = [t for t in ("skopeo", "docker-registry", "sha256sum", "tar") if not shutil.which(t)]
    if missing:
        raise SystemExit(f"needs {', '.join(missing)}: run scripts/install-deps.sh")
    if not os.access(TIME, os.X_OK):
        print("installing GNU time (apt package `time`) to measure each child's peak RSS …", file=sys.stderr)
        subprocess.run(["apt-get", "install", "-y", "-q", "time"], check=False, capture_output=True)
        if not os.access(TIME, os.X_OK):
            raise SystemExit("needs /usr/bin/time: apt-get install time")


def ocp_bundler() -> str:
    """The console script next to this interpreter (not a pyenv shim that re-resolves it on every call)."""
    here = Path(sys.executable).parent / "ocp-bundler"
    if here.exists():
        return str(here)
    found = shutil.which("ocp-bundler")
    if not found:
        raise SystemExit("ocp-bundler is not installed: pip install -e .")
    return found


# --------------------------------------------------------------------------------------------------------
# the machine's limits
# --------------------------------------------------------------------------------------------------------


def http_limit(url: str, images: Sequence[BenchImage], threads: int = 4) -> Dict[str, Any]:
    """GET every distinct config and layer from the source registry, sha256 on the way (manifests are a few KB)."""
    pool = urllib3.PoolManager(maxsize=threads)
    items: Dict[str, str] = {}
    for img in images:
        for d in img.blobs:
            if d not in img.manifests:
                items.setdefault(d, img.repo)

    def get(item: Tuple[str, str]) -> int:
        digest, repo = item
        resp = pool.request("GET", f"{url}/v2/{repo}/blobs/{digest}", preload_content=False)
        h = hashlib.sha256()
        n = 0
        for chunk in resp.stream(1 << 20):
            h.update(chunk)
            n += len(chunk)
        resp.release_conn()
        if resp.status != 200 or "sha256:" + h.hexdigest() != digest:
            raise SystemExit(f"http limit: {digest} came back wrong ({resp.status})")
        return n

    t = time.perf_counter()
    with ThreadPoolExecutor(threads) as ex:
        total = sum(ex.map(get, items.items()))
    return {"seconds": time.perf_counter() - t, "bytes": total}


def disk_limit(directory: Path, nbytes: int) -> Dict[str, Any]:
    """Write `nbytes` to one file in 4 MiB writes and fsync: the disk's sequential write speed."""
    buf = os.urandom(4 << 20)
    path = directory / "disk-probe"
    t = time.perf_counter()
    with open(path, "wb", buffering=0) as f:
        left = nbytes
        while left > 0:
            left -= f.write(buf[: min(left, len(buf))])
        os.fsync(f.fileno())
    seconds = time.perf_counter() - t
    path.unlink()
    return {"seconds": seconds, "bytes": nbytes}


def put_limit(url: str, layout: Path, images: Sequence[BenchImage], threads: int = 4) -> Dict[str, Any]:
    """POST + one monolithic PUT of every distinct config and layer (read from an OCI layout) into an empty
    registry: what the registry itself needs to take the bytes in (it hashes and stores every upload)."""
    pool = urllib3.PoolManager(maxsize=threads)
    items: Dict[str, int] = {}
    for img in images:
        for d, size in img.blobs.items():
            if d not in img.manifests:
                items[d] = size

    def put(item: Tuple[str, int]) -> int:
        digest, size = item
        r = pool.request("POST", f"{url}/v2/limit/blobs/uploads/", redirect=False)
        loc = urljoin(url + "/", r.headers["Location"])
        loc += ("&" if "?" in loc else "?") + "digest=" + quote(digest)

        def body() -> Any:
            with open(layout / "blobs" / "sha256" / digest.split(":", 1)[1], "rb", buffering=0) as f:
                while True:
                    chunk = f.read(1 << 20)
                    if not chunk:
                        return
                    yield chunk

        r = pool.request("PUT", loc, body=body(), headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)}, redirect=False)
        if r.status != 201:
            raise SystemExit(f"put limit: {digest}: {r.status} {r.data[:200]!r}")
        return size

    t = time.perf_counter()
    with ThreadPoolExecutor(threads) as ex:
        total = sum(ex.map(put, items.items()))
    return {"seconds": time.perf_counter() - t, "bytes": total}


def hash_limit(files: Sequence[Path]) -> Dict[str, Any]:
    """Read + sha256 of the files (page cache), cut into one range per core hashed in parallel: the fastest
    this machine can pass every byte through sha256 once (the range digests themselves mean nothing)."""
    threads = os.cpu_count() or 1
    ranges: List[Tuple[Path, int, int]] = []
    for p in files:
        size = p.stat().st_size
        step = -(-size // threads)
        ranges += [(p, off, min(step, size - off)) for off in range(0, size, step)]

    def one(item: Tuple[Path, int, int]) -> int:
        path, offset, length = item
        h = hashlib.sha256()
        buf = bytearray(4 << 20)
        view = memoryview(buf)
        n = 0
        with open(path, "rb", buffering=0) as f:
            f.seek(offset)
            while n < length:
                k = f.readinto(view[: min(len(buf), length - n)])
                if not k:
                    break
                h.update(view[:k])
                n += k
        return n

    t = time.perf_counter()
    with ThreadPoolExecutor(threads) as ex:
        total = sum(ex.map(one, ranges))
    return {"seconds": time.perf_counter() - t, "bytes": total, "threads": threads}


# --------------------------------------------------------------------------------------------------------
# the benchmark
# --------------------------------------------------------------------------------------------------------


def skopeo_to_layout(images: Sequence[BenchImage], layout: Path) -> List[List[str]]:
    return [
        ["skopeo", "copy", "--quiet", "--all", "--preserve-digests", "--src-tls-verify=false", f"docker://{i.ref}", f"oci:{layout}:{i.ref}"]
        for i in images
    ]


def skopeo_to_registry(images: Sequence[BenchImage], layout: Path, host: str) -> List[List[str]]:
    return [
        ["skopeo", "copy", "--quiet", "--all", "--preserve-digests", "--dest-tls-verify=false", f"oci:{layout}:{i.ref}", f"docker://{host}/{i.repo}:{i.tag}"]
        for i in images
    ]


def check_registry(host: str, images: Sequence[BenchImage]) -> None:
    """Spot-check: the tags read back with the source digests (skopeo as the oracle)."""
    for img in images[:: max(1, len(images) // 6)]:
        raw = subprocess.run(
            ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{host}/{img.repo}:{img.tag}"], check=True, capture_output=True
        ).stdout
        got = "sha256:" + hashlib.sha256(raw).hexdigest()
        if got != img.digest:
            raise SystemExit(f"{host}/{img.repo}:{img.tag} is {got}, expected {img.digest}")


def machine() -> Dict[str, Any]:
    def first(cmd: Sequence[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip().splitlines()[0]
        except (OSError, IndexError):
            return "?"

    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "ram_gib": round(mem / 1024**3, 1),
        "python": platform.python_version(),
        "skopeo": first(["skopeo", "--version"]),
        "kernel": platform.release(),
    }


def tree_state() -> Dict[str, Any]:
    """The commit measured, and which files differed from it (other work in the tree counts too)."""
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "changed": [l[3:] for l in git("status", "--porcelain").splitlines() if l[3:].startswith("bundler/")]}


def relay_rates(url: str, images: Sequence[BenchImage], *, streams: int = 32, part: int = 8_000_000) -> Dict[str, float]:
    """What the relay itself delivers on the day, with no client logic: one connection reading 24 MB of the
    largest blob (Range requests), then `streams` connections at once reading `part` bytes each. Bytes/s."""
    digest, repo, size = max(((d, img.repo, n) for img in images for d, n in img.blobs.items()), key=lambda t: t[2])
    pool = urllib3.PoolManager(maxsize=streams)

    def get(start: int, length: int) -> int:
        start = start % max(1, size - length)
        resp = pool.request("GET", f"{url}/v2/{repo}/blobs/{digest}", headers={"Range": f"bytes={start}-{start + length - 1}"}, preload_content=False)
        n = sum(len(c) for c in resp.stream(1 << 20))
        resp.release_conn()
        if resp.status != 206 or n != length:
            raise SystemExit(f"relay calibration: {digest} range came back {resp.status}, {n} bytes")
        return n

    one_len = min(24_000_000, size // 2)
    t = time.perf_counter()
    one = get(0, one_len) / (time.perf_counter() - t)
    part = min(part, size // 2)
    t = time.perf_counter()
    with ThreadPoolExecutor(streams) as ex:
        total = sum(ex.map(lambda i: get(i * 1_000_003, part), range(streams)))
    return {"one_connection": one, "aggregate": total / (time.perf_counter() - t), "streams": streams}


def run_link(args: argparse.Namespace, runner: "Runner", pusher: Pusher, src: RegistryServer, ocpb: str, work: Path) -> Dict[str, Any]:
    """pack (and optionally skopeo) of a release-like set through a relay shaped like an internet link."""
    from tests.infra.link import LinkRelay

    t = time.perf_counter()
    images = build_release_like(pusher, src.host, args.link_images, args.link_mb * 1_000_000)
    data = distinct_bytes(images)
    print(f"link set: {len(images)} images, {data / 1e6:.0f} MB distinct, built in {time.perf_counter() - t:.0f}s; pack over the link …", file=sys.stderr)
    out: Dict[str, Any] = {"images": len(images), "bytes": data, "floor_seconds": data / LINK["rate"], **LINK}
    with LinkRelay(src.host, rate=LINK["rate"], latency=LINK["latency"], per_connection=LINK["per_connection"]) as wire:
        proxied = [dataclasses.replace(i, ref=i.ref.replace(src.host, wire.host, 1)) for i in images]
        write_config(work / "link.yaml", proxied)
        run = runner.run([ocpb, "pack", "--config", str(work / "link.yaml"), "--out", str(work / "link-b"), "--insecure-registry", wire.host, "--json"])
        stats = wire.stats()
        fill_s = float((run.json().get("bundle") or {}).get("seconds", 0.0))
        out.update(pack=run.wall, pack_rss_mb=run.rss_mb, pack_cpu=run.cpu, connections=stats["connections"], bytes_down=stats["bytes_down"], pack_fill=fill_s)
        # What this relay moves at best on this machine: its raw rates (no client logic), and plain parallel
        # GET + sha256 of the same blobs, whole (one connection per blob)
        rates = relay_rates(wire.url, proxied)
        out["relay_rates"] = rates
        out["relay_floor_seconds"] = data / rates["aggregate"]
        relay = http_limit(wire.url, proxied, threads=32)
        out["relay_seconds"] = relay["seconds"]
        if args.link_skopeo:
            print("skopeo over the link …", file=sys.stderr)
            sk = runner.run_all(skopeo_to_layout(proxied, work / "link-skopeo"))
            out["skopeo"] = sk.wall
    out["ratio"] = out["pack"] / out["floor_seconds"]
    out["ratio_relay_floor"] = out["pack"] / out["relay_floor_seconds"]
    return out


def run_rss_blob(args: argparse.Namespace, runner: "Runner", pusher: Pusher, src: RegistryServer, ocpb: str, work: Path) -> Dict[str, Any]:
    """pack of one image whose layer is --rss-blob-mb MB: pack's peak RSS must not grow with blob size."""
    size = args.rss_blob_mb * 1_000_000
    print(f"one image with a {size / 1e6:.0f} MB layer …", file=sys.stderr)
    layer = fast_layer(size, "rss-big")
    obj = make_image(base_layers=[layer], seed="rss-big")
    pusher.push("rss/big", obj, "v1")
    del layer, obj
    (work / "rss.yaml").write_text(f"apiVersion: ocp-bundler.io/v1alpha1\nkind: ImageSet\nadditionalImages:\n  - {src.host}/rss/big:v1\n")
    run = runner.run([ocpb, "pack", "--config", str(work / "rss.yaml"), "--out", str(work / "rss-b"), "--insecure-registry", src.host, "--json"])
    shutil.rmtree(work / "rss-b", ignore_errors=True)
    return {"blob_bytes": size, "wall": run.wall, "rss_mb": run.rss_mb}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=1024, help="MB of distinct blobs in the first image set (default 1024)")
    ap.add_argument("--images", type=int, default=30, help="images in the first set (default 30)")
    ap.add_argument("--new-images", type=int, default=3, help="images the incremental pack adds (default 3)")
    ap.add_argument("--base-share", type=float, default=0.3, help="share of the bytes in the three shared base layers (default 0.3)")
    ap.add_argument("--big-mb", type=int, default=0, help="MB of one large layer (its own image) within --size-mb (default 0: none)")
    ap.add_argument("--link", action=argparse.BooleanOptionalAction, default=True, help="pack over a simulated internet link too (default on)")
    ap.add_argument("--link-images", type=int, default=60, help="release-like images for the link run (default 60)")
    ap.add_argument("--link-mb", type=int, default=300, help="MB of distinct blobs for the link run (default 300)")
    ap.add_argument("--link-skopeo", action="store_true", help="also time skopeo copy over the link (slow)")
    ap.add_argument("--link-only", action="store_true", help="only the link run (and --rss-blob-mb): no skopeo, verify or unpack")
    ap.add_argument("--rss-blob-mb", type=int, default=0, help="also pack one image with a layer of this many MB, for peak RSS (e.g. 1024)")
    ap.add_argument("--dir", type=Path, default=None, help="where to make the temp dir (default $TMPDIR)")
    ap.add_argument("--json-out", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = ap.parse_args()
    ensure_tools()
    ocpb = ocp_bundler()
    work = Path(tempfile.mkdtemp(prefix="ocpb-bench-", dir=args.dir))
    try:
        run_bench(args, ocpb, work)
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def run_bench(args: argparse.Namespace, ocpb: str, work: Path) -> None:
    # The debug log and unpack's verification records stay in the temp dir (no state from earlier runs).
    # Bytecode is cached (in the temp dir, warmed once below) as after `pip install .`, even where the
    # environment sets PYTHONDONTWRITEBYTECODE: otherwise every command would compile the package first.
    env = dict(os.environ, OCPB_DEBUG_LOG=str(work / "debug.log"), XDG_CACHE_HOME=str(work / "cache"), PYTHONPYCACHEPREFIX=str(work / "pycache"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    # The console script runs this checkout's package, whatever the editable install points at (a
    # `pip install -e` elsewhere re-points it): PYTHONPATH is searched first.
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    ran = subprocess.run([sys.executable, "-c", "import bundler; print(bundler.__file__)"], env=env, cwd=work, capture_output=True, text=True, check=True).stdout.strip()
    if Path(ran).resolve().parent.parent != ROOT:
        raise SystemExit(f"the CLI would run {ran}, not {ROOT}")
    warm = "import importlib, pkgutil, bundler\nfor m in pkgutil.walk_packages(bundler.__path__, 'bundler.'):\n    importlib.import_module(m.name)"
    subprocess.run([sys.executable, "-c", warm], check=True, env=env, cwd=work)
    load_before = os.getloadavg()
    tree_before = tree_state()
    runner = Runner(work, env)
    if args.link_only:
        with RegistryServer("plain", workdir=work / "reg-src") as src:
            pusher = Pusher(src.url)
            link_only = run_link(args, runner, pusher, src, ocpb, work)
            rss_big = run_rss_blob(args, runner, pusher, src, ocpb, work) if args.rss_blob_mb else None
        print(f"\n{ROOT} at {tree_state()['commit'][:12]}; load average {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after")
        print(json.dumps({"link": link_only, "rss_blob": rss_big}, indent=1))
        if args.json_out:
            args.json_out.write_text(json.dumps({"link": link_only, "rss_blob": rss_big, "load_average": {"before": load_before, "after": os.getloadavg()}}, indent=2))
        return
    with RegistryServer("plain", workdir=work / "reg-src") as src, RegistryServer("plain", workdir=work / "reg-ours") as reg_ours, RegistryServer(
        "plain", workdir=work / "reg-skopeo"
    ) as reg_skopeo, RegistryServer("plain", workdir=work / "reg-limit") as reg_limit:
        # ---- data set
        t = time.perf_counter()
        total = args.size_mb * 1_000_000
        big = args.big_mb * 1_000_000
        base_size = int((total - big) * args.base_share / 3)
        unique_size = int((total - big) * (1 - args.base_share) / (args.images - (1 if big else 0)))
        pusher = Pusher(src.url)
        bases = [fast_layer(base_size, f"base{i}") for i in range(3)]
        images = build_images(pusher, src.host, bases, 0, args.images - (1 if big else 0), unique_size)
        if big:
            images += build_images(pusher, src.host, bases[:1], 10**6 + 1, 1, big)  # not a multiple of 5: one layer
        new_images = build_images(pusher, src.host, bases, args.images, args.new_images, unique_size)
        del bases
        data = distinct_bytes(images)
        all_images = images + new_images
        new_data = distinct_bytes(all_images) - data
        print(f"built {len(images)} + {len(new_images)} images ({data / 1e6:.0f} MB + {new_data / 1e6:.0f} MB distinct) in {src.host} "
              f"in {time.perf_counter() - t:.0f}s", file=sys.stderr)
        write_config(work / "set.yaml", images)
        write_config(work / "set-plus.yaml", all_images)
        subprocess.run([ocpb, "keygen", "--private", str(work / "b.key"), "--public", str(work / "b.pub")], check=True, capture_output=True, env=env)
        insecure_src = ["--insecure-registry", src.host]

        # ---- the machine's limits
        http = http_limit(src.url, images)
        disk = disk_limit(work, data)
        print(f"limits: HTTP GET + sha256 {data / 1e6 / http['seconds']:.0f} MB/s, disk write {data / 1e6 / disk['seconds']:.0f} MB/s", file=sys.stderr)

        # ---- pack
        print("skopeo copy … oci: + tar …", file=sys.stderr)
        sk_copy = runner.run_all(skopeo_to_layout(images, work / "skopeo-layout"))
        sk_tar = runner.run(["tar", "-cf", str(work / "skopeo.tar"), "-C", str(work / "skopeo-layout"), "."])
        t = time.perf_counter()
        subprocess.run(["sync"], check=True)
        sk_sync = time.perf_counter() - t
        print("ocp-bundler pack …", file=sys.stderr)
        with Footprint([work / ".b1.ocp-bundler-work", work / "b1"], skip_volumes_in=work / "b1") as beside:
            pack = runner.run([ocpb, "pack", "--config", str(work / "set.yaml"), "--out", str(work / "b1"), "--sign-key", str(work / "b.key"), *insecure_src, "--json"])
        pack_json = pack.json()
        bundle = pack_json.get("bundle") or {}
        volumes = [work / "b1" / v["name"] for v in bundle.get("volumes", [])]
        bundle_bytes = sum(p.stat().st_size for p in volumes)

        # ---- verify
        print("ocp-bundler verify, sha256sum …", file=sys.stderr)
        verify = runner.run([ocpb, "verify", str(work / "b1"), "--key", str(work / "b.pub"), "--require-signature", "--json"])
        sums = runner.run(["sha256sum", *map(str, volumes)])
        hashes = hash_limit(volumes)

        # ---- unpack, no-op re-unpack
        print("ocp-bundler unpack, no-op re-unpack …", file=sys.stderr)
        unpack_cmd = [ocpb, "unpack", str(work / "b1"), "--registry", reg_ours.host, "--insecure-registry", reg_ours.host,
                      "--key", str(work / "b.pub"), "--resources-dir", str(work / "resources"), "--json"]
        unpack = runner.run(unpack_cmd)
        noop = runner.run(unpack_cmd)
        noop_nv = runner.run([*unpack_cmd, "--no-verify"])
        u1, u2, u3 = unpack.json(), noop.json(), noop_nv.json()
        n = len(images)
        if u1["totals"]["pushed"] != n or any(u["totals"]["present"] != n or u["totals"]["manifestsPushed"] or u["totals"]["bytesCopied"] for u in (u2, u3)):
            raise SystemExit(f"unexpected unpack results: {u1['totals']} / {u2['totals']} / {u3['totals']}")
        print("skopeo copy oci: → registry, and again …", file=sys.stderr)
        sk_unpack = runner.run_all(skopeo_to_registry(images, work / "skopeo-layout", reg_skopeo.host))
        sk_noop = runner.run_all(skopeo_to_registry(images, work / "skopeo-layout", reg_skopeo.host))
        check_registry(reg_ours.host, images)
        check_registry(reg_skopeo.host, images)
        puts = put_limit(reg_limit.url, work / "skopeo-layout", images)

        # ---- incremental pack: the set plus a few new images, --base the first bundle
        print("incremental packs …", file=sys.stderr)
        base_args = ["--config", str(work / "set-plus.yaml"), "--sign-key", str(work / "b.key"), "--base", str(work / "b1"), *insecure_src, "--json"]
        inc = runner.run([ocpb, "pack", "--out", str(work / "b2"), *base_args])  # README's command: its own (empty) work dir
        inc_shared = runner.run([ocpb, "pack", "--out", str(work / "b2w"), "--work-dir", str(work / ".b1.ocp-bundler-work"), *base_args])
        inc_json, inc_shared_json = inc.json(), inc_shared.json()
        marker = work / "skopeo-marker"
        marker.touch()
        time.sleep(0.02)
        sk_inc_copy = runner.run_all(skopeo_to_layout(new_images, work / "skopeo-layout"))
        new_files = work / "skopeo-new-files.txt"
        found = subprocess.run(["find", ".", "-type", "f", "-newer", str(marker)], cwd=work / "skopeo-layout", capture_output=True, text=True, check=True)
        new_files.write_text(found.stdout)
        sk_inc_tar = runner.run(["tar", "-cf", str(work / "skopeo-inc.tar"), "-C", str(work / "skopeo-layout"), "-T", str(new_files)])
        sk_inc = Run(sk_inc_copy.wall + sk_inc_tar.wall, max(sk_inc_copy.rss_mb, sk_inc_tar.rss_mb), sk_inc_copy.cpu + sk_inc_tar.cpu)
        inc_bundle_bytes = (inc_json.get("bundle") or {}).get("totalBytes", 0)

        # ---- pack over a simulated internet link; pack of one very large layer (peak RSS)
        link: Optional[Dict[str, Any]]
        link = run_link(args, runner, pusher, src, ocpb, work) if args.link else None
        rss_big = run_rss_blob(args, runner, pusher, src, ocpb, work) if args.rss_blob_mb else None

    load_after = os.getloadavg()
    # ---- report
    sk_pack = Run(sk_copy.wall + sk_tar.wall, max(sk_copy.rss_mb, sk_tar.rss_mb), sk_copy.cpu + sk_tar.cpu)
    http_rate = float(http["bytes"] / http["seconds"])
    disk_rate = float(disk["bytes"] / disk["seconds"])
    hash_rate = float(hashes["bytes"] / hashes["seconds"])
    put_rate = float(puts["bytes"] / puts["seconds"])

    def move_limit(nbytes: int) -> float:
        """Seconds the machine needs at least to move `nbytes` (the slower of HTTP+sha256 and disk write)."""
        return max(nbytes / http_rate, nbytes / disk_rate)

    sums_rate = bundle_bytes / sums.wall
    verify_rate = bundle_bytes / verify.wall
    rows: List[Dict[str, Any]] = [
        {"name": "pack: ocp-bundler pack", "run": pack, "bytes": data, "ratio": pack.wall / sk_pack.wall, "limit": move_limit(data)},
        {"name": f"pack: skopeo copy ({len(images)}×) + tar", "run": sk_pack, "bytes": data, "limit": move_limit(data)},
        {"name": "  skopeo copy into one oci: layout", "run": sk_copy, "bytes": data, "limit": move_limit(data)},
        {"name": "  tar of the layout", "run": sk_tar, "bytes": data},
        {"name": "verify: ocp-bundler verify", "run": verify, "bytes": bundle_bytes, "ratio": verify_rate / sums_rate, "limit": bundle_bytes / hash_rate},
        {"name": "verify: sha256sum of the volumes", "run": sums, "bytes": bundle_bytes, "limit": bundle_bytes / hash_rate},
        {"name": "unpack: ocp-bundler unpack", "run": unpack, "bytes": data, "ratio": unpack.wall / sk_unpack.wall, "limit": move_limit(data)},
        {"name": "unpack: skopeo copy oci: → registry", "run": sk_unpack, "bytes": data, "limit": move_limit(data)},
        {"name": "no-op: ocp-bundler unpack again", "run": noop, "ratio": noop.wall / unpack.wall},
        {"name": "  same, --no-verify (analysis)", "run": noop_nv, "ratio": noop_nv.wall / unpack.wall},
        {"name": "  skopeo copy again (reference)", "run": sk_noop, "ratio": sk_noop.wall / sk_unpack.wall},
        {"name": "incr.: pack --base (own work dir)", "run": inc, "bytes": new_data, "ratio": inc.wall / sk_inc.wall, "limit": move_limit(new_data)},
        {"name": "incr.: pack --base (1st work dir)", "run": inc_shared, "bytes": new_data, "ratio": inc_shared.wall / sk_inc.wall, "limit": move_limit(new_data)},
        {"name": "incr.: skopeo copy new + tar new", "run": sk_inc, "bytes": new_data, "limit": move_limit(new_data)},
    ]
    m = machine()
    tree = tree_state()
    moved = "" if tree == tree_before else f" (was {tree_before['commit'][:12]} {', '.join(tree_before['changed'])} when the run started)"
    print(f"\n{ROOT} at {tree['commit'][:12]}" + (f", uncommitted changes in {', '.join(tree['changed'])}" if tree["changed"] else "") + moved
          + f"; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after")
    print(f"\n{len(images)} images (+{len(new_images)} new), {data / 1e6:.0f} MB distinct (+{new_data / 1e6:.0f} MB), bundle {bundle_bytes / 1e6:.0f} MB "
          f"in {len(volumes)} volume(s); {m['cpus']} cores, {m['ram_gib']} GiB RAM, Python {m['python']}, {m['skopeo']}\n")
    print(f"{'':40} {'wall s':>8} {'ratio':>7} {'MB/s':>8} {'peak RSS MB':>12} {'% of limit':>11} {'CPU s':>7}")
    for r in rows:
        run: Run = r["run"]
        ratio = f"{r['ratio']:.3f}" if "ratio" in r else ""
        mbs = f"{r['bytes'] / 1e6 / run.wall:.1f}" if r.get("bytes") else ""
        lim = f"{r['limit'] / run.wall:.0%}" if r.get("limit") else ""
        print(f"{r['name']:40} {run.wall:8.2f} {ratio:>7} {mbs:>8} {run.rss_mb:12.0f} {lim:>11} {run.cpu:7.2f}")
    print(f"{'limit: HTTP GET + sha256 of the blobs':40} {http['seconds']:8.2f} {'':>7} {http_rate / 1e6:8.1f}")
    print(f"{'limit: raw disk write + fsync':40} {disk['seconds']:8.2f} {'':>7} {disk_rate / 1e6:8.1f}")
    print(f"{'limit: read + sha256, ' + str(hashes['threads']) + ' threads':40} {hashes['seconds']:8.2f} {'':>7} {hash_rate / 1e6:8.1f}")
    print(f"{'bound: PUT every blob into a registry':40} {puts['seconds']:8.2f} {'':>7} {put_rate / 1e6:8.1f}   (the registry's own intake; bounds unpack)")
    print(f"(skopeo + tar leave the data in the page cache; a `sync` after tar took {sk_sync:.2f}s more. pack fsyncs every volume.)")
    print("ratio: pack, unpack, incremental = wall / skopeo's; verify = throughput / sha256sum's; no-op = wall / full unpack's.")
    print("% of limit: the machine's fastest time for these bytes / wall (pack, unpack: slower of HTTP+sha256 and disk write;"
          " verify: read + sha256 on all cores). CPU s: the command's own user + system time (not the registry's).")

    rss_ours = {"pack": pack.rss_mb, "verify": verify.rss_mb, "unpack": unpack.rss_mb, "noop": noop.rss_mb, "incremental": max(inc.rss_mb, inc_shared.rss_mb)}
    checks = [
        ("pack <= 0.3x skopeo + tar", pack.wall / sk_pack.wall, TARGETS["pack"], "le"),
        ("unpack <= 0.4x skopeo", unpack.wall / sk_unpack.wall, TARGETS["unpack"], "le"),
        ("verify >= 3x sha256sum throughput", verify_rate / sums_rate, TARGETS["verify"], "ge"),
        ("no-op re-unpack <= 5% of full unpack", noop.wall / unpack.wall, TARGETS["noop"], "le"),
        ("peak RSS < 200 MB (largest command)", max(rss_ours.values()), TARGETS["rss_mb"], "lt"),
        ("disk beside the bundle <= 5% (peak)", beside.peak / max(1, bundle_bytes), TARGETS["beside"], "le"),
    ]
    if link is not None:
        checks.append(("link: pack <= 1.3x bytes / 100 MB/s", link["ratio"], TARGETS["link"], "le"))
    if rss_big is not None:
        checks.append((f"peak RSS < 200 MB, {rss_big['blob_bytes'] / 1e6:.0f} MB blob", rss_big["rss_mb"], TARGETS["rss_mb"], "lt"))
    print("\ntargets:")
    verdicts = []
    for name, value, target, how in checks:
        met = value <= target if how == "le" else value >= target if how == "ge" else value < target
        if met:
            detail = "met"
        elif how == "ge":
            detail = f"MISSED: {value:.2f}x, {1 - value / target:.1%} short of {target}x"
        else:
            detail = f"MISSED: {value:.3f} vs {target}, {value / target:.2f}x over (needs {1 - target / value:.0%} less)"
        print(f"  {name:42} {value:8.3f}  {detail}")
        verdicts.append({"target": name, "value": value, "limit": target, "met": met})
    unpack_inner = float(u1.get("seconds", 0.0))
    print(f"\nunpack breakdown: {unpack.wall:.2f}s process = verify + start-up {unpack.wall - unpack_inner:.2f}s + push/read-back/YAML {unpack_inner:.2f}s; "
          f"no-op: {noop.wall:.2f}s, of which after verify {float(u2.get('seconds', 0.0)):.2f}s")
    print(f"unpack push phase vs the registry's intake (PUT every blob, {puts['seconds']:.2f}s): {puts['seconds'] / unpack_inner:.0%}; "
          f"skopeo: {puts['seconds'] / sk_unpack.wall:.0%}" if unpack_inner else "")
    write_s = float(bundle.get("seconds", 0.0))
    print(f"pack breakdown: {pack.wall:.2f}s process = plan + start-up {pack.wall - write_s:.2f}s + fill (pull straight into the volumes) {write_s:.2f}s")
    print(f"disk beside the bundle (work dir, journal): peak {beside.peak / 1e6:.1f} MB during pack, {beside.last / 1e6:.1f} MB after "
          f"({beside.peak / max(1, bundle_bytes):.2%} / {beside.last / max(1, bundle_bytes):.2%} of the bundle)")
    if link is not None:
        sk_link = f"; skopeo {link['skopeo']:.1f}s" if "skopeo" in link else ""
        print(f"link ({link['latency'] * 2000:.0f} ms RTT, {link['per_connection'] / 1e6:.0f} MB/s per connection, {link['rate'] / 1e6:.0f} MB/s total): "
              f"{link['images']} images, {link['bytes'] / 1e6:.0f} MB distinct: pack {link['pack']:.2f}s = {link['ratio']:.2f}x the floor of "
              f"{link['floor_seconds']:.2f}s, {link['connections']} connections, peak RSS {link['pack_rss_mb']:.0f} MB{sk_link}; "
              f"the relay itself (32 plain GET + sha256 streams, one per whole blob) needs {link['relay_seconds']:.2f}s for the same blobs "
              f"(pack = {link['pack'] / link['relay_seconds']:.2f}x that)")
        rr = link["relay_rates"]
        print(f"  the relay's raw rates: {rr['one_connection'] / 1e6:.1f} MB/s on one connection, {rr['aggregate'] / 1e6:.1f} MB/s on {rr['streams']} at once; "
              f"practical floor {link['relay_floor_seconds']:.2f}s, pack = {link['ratio_relay_floor']:.2f}x that")
        print(f"  pack over the link: start-up and planning {link['pack'] - link['pack_fill']:.2f}s + fill {link['pack_fill']:.2f}s "
              f"(from the first manifest asked for to the manifest written = {link['pack_fill'] / link['floor_seconds']:.2f}x the nominal floor, "
              f"{link['pack_fill'] / link['relay_floor_seconds']:.2f}x the relay's); "
              f"CPU {link['pack_cpu']:.2f}s")
    if rss_big is not None:
        print(f"one {rss_big['blob_bytes'] / 1e6:.0f} MB layer: pack {rss_big['wall']:.2f}s, peak RSS {rss_big['rss_mb']:.0f} MB")
    inc_b = inc_json.get("bundle") or {}
    pulled = {k: int((j.get("bundle") or {}).get("bytesWritten") or 0) for k, j in (("own", inc_json), ("shared", inc_shared_json))}
    print(f"incremental bundle: {inc_bundle_bytes / 1e6:.0f} MB, {inc_b.get('blobs')} blobs written, {inc_b.get('blobsSkippedByBase')} left to the base; "
          f"wrote {pulled['own'] / 1e6:.0f} MB with its own work dir, {pulled['shared'] / 1e6:.0f} MB with the first pack's")

    if args.json_out:
        result = {
            "machine": m,
            "command": " ".join(["python", "scripts/bench.py", *sys.argv[1:]]),
            "images": len(images),
            "new_images": len(new_images),
            "distinct_bytes": data,
            "new_distinct_bytes": new_data,
            "bundle_bytes": bundle_bytes,
            "volumes": len(volumes),
            "limits": {"http_sha256": http, "disk_write": disk, "read_sha256": hashes, "registry_put": puts},
            "tree": tree,
            "tree_at_start": tree_before,
            "load_average": {"before": load_before, "after": load_after},
            "rows": [
                {"name": r["name"].strip(), "wall": r["run"].wall, "rss_mb": r["run"].rss_mb, "cpu": r["run"].cpu, "ratio": r.get("ratio"),
                 "mb_per_s": (r["bytes"] / 1e6 / r["run"].wall) if r.get("bytes") else None,
                 "fraction_of_limit": (r["limit"] / r["run"].wall) if r.get("limit") else None}
                for r in rows
            ],
            "sync_after_tar": sk_sync,
            "targets": verdicts,
            "peak_rss_mb": rss_ours,
            "unpack_seconds_after_verify": unpack_inner,
            "noop_seconds_after_verify": float(u2.get("seconds", 0.0)),
            "pack_bundle_write_seconds": write_s,
            "beside_bundle_bytes": {"peak": beside.peak, "after": beside.last},
            "link": link,
            "rss_blob": rss_big,
            "incremental": {"bundle_bytes": inc_bundle_bytes, "blobs": inc_b.get("blobs"), "blobs_skipped_by_base": inc_b.get("blobsSkippedByBase"),
                            "bytes_pulled_own_work_dir": pulled["own"], "bytes_pulled_shared_work_dir": pulled["shared"]},
        }
        args.json_out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

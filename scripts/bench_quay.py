#!/usr/bin/env python3
"""Benchmark `unpack --registry-kind quay` against `skopeo copy --all --preserve-digests`, into a real Quay.

Starts a fresh real Project Quay 3.18 (`../shared/quay`, see tests/infra/real_quay.py), builds a synthetic
image set as an OCI layout (by default 71 small images like an OpenShift release's worth of components: three
base layers shared across repositories in five organisations, a unique layer per image, every fifth image an
OCI index of two platforms; OCI-typed so skopeo 1.9.3 can preserve digests), and measures, round after round:

  * skopeo: `skopeo copy --all --preserve-digests oci:LAYOUT:REF docker://QUAY/ORG/REPO:TAG`, image after
    image, as the superuser (`$oauthtoken` + its API token), into organisations created beforehand (not timed);
  * ocp-bundler: `unpack --registry-kind quay --quay-token T` of a signed bundle of the same images, in a
    child process: organisations, robots and teams created (timed), pushes as the robots, read-back of
    every tag, cluster resources (the bundle's verification is on record, as on any unpack after `verify`).

Each side pushes into organisations of its own on the same Quay. Requests are counted from Quay's access log
(gunicorn), for each side's time window. Prints wall times, requests per image and the ratio; --json-out
writes the figures. Quay serves a few dozen requests a second on 2 cores, so the request count bounds both.

    python scripts/bench_quay.py                          # 71 images, ~1 MiB of distinct blobs
    python scripts/bench_quay.py --images 30 --size 64M --rounds 2 --json-out /tmp/bench-quay.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_unpack import ORGS, build  # noqa: E402
from bundler.base.units import parse_size  # noqa: E402
from bundler.bundle.manifest import BundleImage  # noqa: E402
from bundler.bundle.signing import generate_keypair  # noqa: E402
from bundler.bundle.volumes import BundleWriteOptions, write_bundle  # noqa: E402
from bundler.layout.store import Layout  # noqa: E402
from tests.infra.real_quay import RealQuay, ensure_installed  # noqa: E402

ACCESS = re.compile(r'\[gunicorn\.access\] \S+ - \S+ \[[^\]]+\] "(\w+) (\S+)')

OURS = r"""
import json, sys, time
from pathlib import Path
from bundler.registry.client import TransportOptions
from bundler.flows.unpack import UnpackOptions, unpack_bundle
bundle, host, token, key, workers, resources, state = sys.argv[1:]
options = UnpackOptions(registry=host, transport=TransportOptions(insecure_hosts=frozenset({host})), workers=int(workers),
                        key=Path(key), state_dir=Path(state), resources_dir=Path(resources), registry_kind="quay", quay_token=token)
t = time.perf_counter()
result = unpack_bundle(Path(bundle), options=options)
print(json.dumps({"wall": time.perf_counter() - t, "pushed": result.count("pushed"), "present": result.count("present"),
                  "organizations_created": len(result.organizations_created)}))
"""


def retarget(images: List[BundleImage], prefix: str) -> List[BundleImage]:
    """The same images in organisations `<prefix>_<org>`."""
    return [dataclasses.replace(i, target_repository=f"{prefix}_{i.target_repository}") for i in images]


class Requests:
    """Quay's access-log lines written between `start()` and `stop()`."""

    def __init__(self, quay: RealQuay) -> None:
        self.path = Path(quay.log_file)
        self.offset = 0

    def start(self) -> None:
        self.offset = self.path.stat().st_size

    def stop(self) -> Dict[str, int]:
        time.sleep(0.5)
        with self.path.open("rb") as f:
            f.seek(self.offset)
            lines = f.read().decode("utf-8", "replace").splitlines()
        counts: Dict[str, int] = {"total": 0}
        for m in filter(None, map(ACCESS.search, lines)):
            method, path = m.groups()
            kind = "auth" if path.startswith("/v2/auth") else "api" if path.startswith("/api/") else f"{method} " + (
                "manifest" if "/manifests/" in path else "upload" if "/blobs/uploads" in path else "blob" if "/blobs/" in path else path)
            counts[kind] = counts.get(kind, 0) + 1
            counts["total"] += 1
        return counts


def run_skopeo(quay: RealQuay, layout: Path, images: List[BundleImage]) -> float:
    t = time.perf_counter()
    for image in images:
        proc = subprocess.run(
            ["skopeo", "copy", "--quiet", "--all", "--preserve-digests", "--dest-tls-verify=false", "--dest-creds", f"$oauthtoken:{quay.token}",
             f"oci:{layout}:{image.source}", f"docker://{quay.host}/{image.target_repository}:{image.target_tag}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        if proc.returncode != 0:
            raise SystemExit(f"skopeo failed: {proc.stderr.decode(errors='replace')}")
    return time.perf_counter() - t


def run_ours(quay: RealQuay, bundle: Path, key: Path, workers: int, work: Path) -> Dict[str, Any]:
    args = [str(bundle), quay.host, quay.token, str(key), str(workers), str(work / "resources"), str(work / "state")]
    out = subprocess.run([sys.executable, "-c", OURS, *args], capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def check_same(quay: RealQuay, ours: List[BundleImage], theirs: List[BundleImage]) -> None:
    """Both sides left the same digests under the same tags (Quay's own tag list)."""
    for a, b in zip(ours, theirs):
        for image in (a, b):
            org, repo = image.target_repository.split("/", 1)
            got = quay.tags(org, repo).get(str(image.target_tag))
            if got != image.digest:
                raise SystemExit(f"{image.target_repository}:{image.target_tag} is {got}, expected {image.digest}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1M", help="bytes of distinct blobs (e.g. 1M, 64M, 1G)")
    ap.add_argument("--images", type=int, default=71)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=1, help="skopeo/unpack rounds, each into organisations of their own")
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args()
    if not shutil.which("skopeo"):
        raise SystemExit("needs skopeo: run scripts/install-deps.sh")
    ensure_installed()
    work = Path(tempfile.mkdtemp(prefix="ocpb-bench-quay-"))
    rounds: List[Dict[str, Any]] = []
    try:
        images, distinct = build(work / "layout", parse_size(args.size), args.images)
        generate_keypair(work / "bundle.key", work / "bundle.pub")
        print(f"{len(images)} images, {distinct / 1e6:.2f} MB of distinct blobs; starting a real Quay", file=sys.stderr)
        with RealQuay() as quay:
            log = Requests(quay)
            for r in range(args.rounds):
                theirs, ours = retarget(images, f"sk{r}"), retarget(images, f"ob{r}")
                bundle = work / f"bundle-{r}"
                write_bundle(Layout(work / "layout", create=False), ours, options=BundleWriteOptions(out_dir=bundle, sign_key=work / "bundle.key"))
                from bundler.flows.unpack import UnpackOptions, verify_once

                verify_once(bundle, UnpackOptions(registry=quay.host, key=work / "bundle.pub", state_dir=work / f"state-{r}"))
                for org in sorted({i.target_repository.split("/", 1)[0] for i in theirs}):
                    quay.create_org(org)
                log.start()
                skopeo_s = run_skopeo(quay, work / "layout", theirs)
                skopeo_req = log.stop()
                log.start()
                res = run_ours(quay, bundle, work / "bundle.pub", args.workers, work / f"ours-{r}")
                ours_req = log.stop()
                check_same(quay, ours, theirs)
                one = {
                    "skopeo": {"wall": skopeo_s, "requests": skopeo_req, "requestsPerImage": skopeo_req["total"] / len(images)},
                    "ocp_bundler": {**res, "requests": ours_req, "requestsPerImage": ours_req["total"] / len(images)},
                    "ratio": res["wall"] / skopeo_s,
                }
                rounds.append(one)
                print(
                    f"round {r + 1}: skopeo {skopeo_s:.1f}s ({skopeo_req['total']} requests, {skopeo_req['total'] / len(images):.1f}/image); "
                    f"ocp-bundler {res['wall']:.1f}s ({ours_req['total']} requests, {ours_req['total'] / len(images):.1f}/image, "
                    f"{res['organizations_created']} organisations and robots made); ratio {one['ratio']:.2f}",
                )
                print(f"  skopeo requests: {json.dumps(skopeo_req, sort_keys=True)}")
                print(f"  ocp-bundler requests: {json.dumps(ours_req, sort_keys=True)}")
        summary = {"images": len(images), "distinct_bytes": distinct, "orgs": len(ORGS), "workers": args.workers, "rounds": rounds}
        if args.json_out:
            args.json_out.write_text(json.dumps(summary, indent=1) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The demo behind `scripts/demo.sh`: OpenShift-shaped synthetic content, packed, verified and unpacked.

Starts a loopback source registry holding a release (~20 components and an image-references file, a
samples-operator image), sample images, a file-based and a sqlite operator catalog with related images, and
additional images (Docker- and OCI-typed manifest lists). Then it runs the real commands an administrator
runs — keygen, pack --sign-key, verify --key, unpack into a second registry — and prints the report and
where the cluster resources are. Everything lives under --workdir (default ./demo-out).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("BUNDLER_FIXTURES", str(ROOT.parent / "shared" / "fixtures"))

from tests.infra import openshift_images as osi  # noqa: E402
from tests.infra.images import make_image, make_index, push, random_layer  # noqa: E402
from tests.infra.registry import RegistryServer  # noqa: E402


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m" if sys.stdout.isatty() else f"\n== {text}", flush=True)


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    print("$ " + " ".join(shlex.quote(a) for a in args), flush=True)
    proc = subprocess.run(args, text=True)
    if check and proc.returncode != 0:
        raise SystemExit(f"demo: `{args[0]} {args[1]}` failed with exit code {proc.returncode}")
    return proc


def build_content(src: RegistryServer) -> Dict[str, Any]:
    say(f"Building synthetic OpenShift content in the source registry {src.host}")
    release = osi.build_release(src.url, version="4.8.0", components=20, samples_registry=src.url)
    print(f"release {release.release_ref} ({release.digest}) with {len(release.components)} components")
    base = random_layer(200_000, seed="demo-base")
    docker_list = make_index(
        [make_image(random_layers=[100_000], base_layers=[base], seed="d1", docker=True),
         make_image(random_layers=[100_000], base_layers=[base], seed="d2", docker=True, architecture="arm64")],
        docker=True,
    )
    oci_index = make_index(
        [make_image(random_layers=[100_000], base_layers=[base], seed="o1"),
         make_image(random_layers=[100_000], seed="o2", architecture="arm64")]
    )
    push(src.url, "demo/docker-app", docker_list, "v1")
    push(src.url, "demo/oci-app", oci_index, "v2")
    catalogs: List[str] = []
    try:
        from tests.infra import catalog_images  # built by the catalog tests' helpers

        catalogs = catalog_images.demo_catalogs(src, src.data_dir.parent / "catalog-build")
    except (ImportError, AttributeError) as exc:
        print(f"(operator catalogs left out of the demo: {exc})")
    return {"release": release, "additional": [f"{src.host}/demo/docker-app:v1", f"{src.host}/demo/oci-app:v2"], "catalogs": catalogs}


def write_config(path: Path, content: Dict[str, Any]) -> None:
    lines = [
        "apiVersion: ocp-bundler.io/v1alpha1",
        "kind: ImageSet",
        "target:",
        "  releaseRepository: ocp4/openshift4",
        "releases:",
        "  images:",
        f"    - {content['release'].release_ref}",
        "  signatures: false",
        "samples:",
        "  fromRelease: true",
        "additionalImages:",
        *[f"  - {ref}" for ref in content["additional"]],
    ]
    if content["catalogs"]:
        lines.append("operators:")
        for block in content["catalogs"]:
            lines.extend("  " + line for line in block.splitlines())
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=ROOT / "demo-out")
    args = ap.parse_args()
    work: Path = args.workdir.resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    started = time.monotonic()
    exe = shutil.which("ocp-bundler") or "ocp-bundler"
    with RegistryServer("plain", workdir=work / "source-registry") as src, RegistryServer("plain", workdir=work / "mirror-registry") as mirror:
        content = build_content(src)
        config = work / "image-set.yaml"
        write_config(config, content)
        say(f"The image-set config ({config})")
        print(config.read_text())

        say("Connected side: make a signing key, then pack")
        run(exe, "keygen", "--private", str(work / "bundle.key"), "--public", str(work / "bundle.pub"))
        bundle = work / "bundle"
        run(exe, "pack", "--config", str(config), "--out", str(bundle), "--sign-key", str(work / "bundle.key"),
            "--insecure-registry", src.host, "--volume-size", "300K", "--dry-run")
        run(exe, "pack", "--config", str(config), "--out", str(bundle), "--sign-key", str(work / "bundle.key"),
            "--insecure-registry", src.host, "--volume-size", "300K")
        run(exe, "inspect", str(bundle))

        say("Disconnected side: verify the bundle against the public key")
        run(exe, "verify", str(bundle), "--key", str(work / "bundle.pub"))

        say(f"Disconnected side: unpack into the mirror registry {mirror.host} (no Quay images in this demo: a plain registry)")
        resources = work / "resources"
        run(exe, "unpack", str(bundle), "--registry", mirror.host, "--insecure-registry", mirror.host,
            "--key", str(work / "bundle.pub"), "--resources-dir", str(resources))
        say("A second unpack finds everything in place")
        run(exe, "unpack", str(bundle), "--registry", mirror.host, "--insecure-registry", mirror.host, "--key", str(work / "bundle.pub"),
            "--resources-dir", str(resources))

        say("An upgrade: one more image, packed as an incremental bundle against the first one")
        push(src.url, "demo/new-app", make_image(random_layers=[150_000], seed="demo-new"), "v1")
        config2 = work / "image-set-2.yaml"
        config2.write_text(config.read_text().replace("additionalImages:\n", f"additionalImages:\n  - {src.host}/demo/new-app:v1\n"))
        bundle2 = work / "bundle-2"
        run(exe, "pack", "--config", str(config2), "--out", str(bundle2), "--base", str(bundle), "--sign-key", str(work / "bundle.key"),
            "--insecure-registry", src.host, "--volume-size", "300K")
        run(exe, "verify", str(bundle2), "--key", str(work / "bundle.pub"))
        run(exe, "unpack", str(bundle2), "--registry", mirror.host, "--insecure-registry", mirror.host, "--key", str(work / "bundle.pub"),
            "--resources-dir", str(resources))

        say("Cluster resources")
        for f in sorted(resources.iterdir()):
            print(f"  {f}")
        print(f"\nDemo finished in {time.monotonic() - started:.0f}s. Everything is under {work}.")


if __name__ == "__main__":
    main()

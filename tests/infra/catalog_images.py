"""Synthetic operator index images (file-based and sqlite) around the shared OLM fixtures.

Copies of the fixtures have their image references rewritten to point at a loopback registry (the fixture
files are never edited), and every bundle and related image they name is pushed there. Used by the catalog
tests and by the demo.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import yaml

from tests.infra.images import Image, make_config, make_image, make_layer, make_manifest, push, random_layer
from tests.infra.registry import RegistryServer

FIXTURES = Path(os.environ.get("BUNDLER_FIXTURES", str(Path(__file__).resolve().parents[3] / "shared" / "fixtures")))
SYNTH = FIXTURES / "catalog-fbc" / "synthetic"
SQLITE = FIXTURES / "catalog-sqlite"
OPM_CMD = ["serve", "/configs", "--cache-dir=/tmp/cache"]
LABEL_FBC = "operators.operatorframework.io.index.configs.v1"
LABEL_SQLITE = "operators.operatorframework.io.index.database.v1"


def _repository(ref: str) -> Tuple[str, Optional[str]]:
    """(repository, tag) of a `host/path[:tag]` reference, without importing the library under test."""
    name = ref.split("@", 1)[0]
    host, _, path = name.partition("/")
    repo, sep, tag = path.rpartition(":")
    return (repo, tag) if sep and "/" not in tag else (path, None)


def index_image(files: Mapping[str, Any], labels: Mapping[str, str], *, docker: bool = False, architecture: str = "amd64",
                cmd: Optional[List[str]] = None) -> Image:
    """An index image: a base layer (standing in for opm), the catalog layer, labels and opm's command."""
    layers = [random_layer(2048, seed=f"opm-{architecture}", docker=docker), make_layer(files, docker=docker)]
    inner: Dict[str, Any] = {"Labels": dict(labels), "Entrypoint": ["/bin/opm"], "Cmd": list(cmd or OPM_CMD)}
    config = make_config(layers, docker=docker, architecture=architecture, labels=labels,
                         extra={"config": inner, "history": [{"created_by": "base"}, {"created_by": "catalog"}]})
    return make_manifest(config, layers, docker=docker)


def rewrite_fbc(text: str, host: str, prefix: str) -> Tuple[str, List[Dict[str, Any]]]:
    """A copy of an FBC YAML stream with `test.registry/` → `HOST/PREFIX/`, inside base64 bundle objects too."""
    docs = [d for d in yaml.safe_load_all(text) if d]
    new_prefix = f"{host}/{prefix}/"
    out = []
    for d in docs:
        d = json.loads(json.dumps(d).replace("test.registry/", new_prefix))
        for p in d.get("properties") or []:
            if p.get("type") == "olm.bundle.object":
                raw = base64.b64decode(p["value"]["data"]).decode().replace("test.registry/", new_prefix)
                p["value"]["data"] = base64.b64encode(raw.encode()).decode()
        out.append(d)
    return yaml.safe_dump_all(out, sort_keys=False), out


def push_bundles(server: RegistryServer, docs: List[Dict[str, Any]]) -> Dict[str, str]:
    """Push every bundle image (with its CSV under manifests/) and related image the docs name; ref → digest."""
    pushed: Dict[str, str] = {}

    def push_ref(ref_text: str, img: Image) -> None:
        if ref_text in pushed:
            return
        repo, tag = _repository(ref_text)
        pushed[ref_text] = push(server.url, repo, img, tag)

    for d in docs:
        if d.get("schema") != "olm.bundle":
            continue
        csv = next(
            (json.loads(base64.b64decode(p["value"]["data"])) for p in d.get("properties") or []
             if p.get("type") == "olm.bundle.object" and json.loads(base64.b64decode(p["value"]["data"])).get("kind") == "ClusterServiceVersion"),
            None,
        )
        files = {"metadata/annotations.yaml": f"annotations:\n  operators.operatorframework.io.bundle.package.v1: {d['package']}\n"}
        if csv is not None:
            files[f"manifests/{d['name']}.clusterserviceversion.yaml"] = yaml.safe_dump(csv)
        push_ref(d["image"], make_image(files, labels={"operators.operatorframework.io.bundle.package.v1": d["package"]}))
        for ri in d.get("relatedImages") or []:
            if ri["image"]:
                push_ref(ri["image"], make_image(seed=ri["image"]))
    return pushed


def fbc_catalog(server: RegistryServer, prefix: str) -> Tuple[str, Dict[str, str], str]:
    """Rewritten latest.yaml; returns (index.yaml text, pushed ref → digest, catalog ref prefix)."""
    text, docs = rewrite_fbc((SYNTH / "index-declcfgs-latest.yaml").read_text(), server.host, prefix)
    return text, push_bundles(server, docs), f"{server.host}/{prefix}"


def catalog_files(index_yaml: str) -> Dict[str, Any]:
    return {
        "configs/index.yaml": index_yaml,
        "configs/README.md": "ignored by .indexignore\n",
        "configs/.indexignore": "*.md\n",
        "tmp/cache/pogreb.v1/digest": "stale\n",
    }


def sqlite_catalog(server: RegistryServer, prefix: str, tmp_path: Path) -> Tuple[Path, Dict[str, str]]:
    """A copy of the v7 fixture whose bundle paths and related images point at pushed images."""
    db = tmp_path / "index.db"
    db.write_bytes((SQLITE / "oc-catalog-testdata.v7.db").read_bytes())
    refs: Dict[str, str] = {}
    with sqlite3.connect(db) as c:
        for name, _path in c.execute("SELECT name, bundlepath FROM operatorbundle").fetchall():
            new = f"{server.host}/{prefix}/bundles/{name.split('.')[0]}:{name.split('.', 1)[1]}"
            repo, tag = _repository(new)
            refs[new] = push(server.url, repo, make_image({"manifests/x.yaml": "kind: ConfigMap\n"}, seed=name), tag)
            c.execute("UPDATE operatorbundle SET bundlepath = ? WHERE name = ?", (new, name))
        for image, bname in c.execute("SELECT image, operatorbundle_name FROM related_image").fetchall():
            repo = f"{prefix}/" + _repository(image)[0]
            digest = push(server.url, repo, make_image(seed=image), "latest")
            new = f"{server.host}/{repo}@{digest}"
            refs[new] = digest
            c.execute("UPDATE related_image SET image = ? WHERE image = ? AND operatorbundle_name = ?", (new, image, bname))
            for name, csv in c.execute("SELECT name, csv FROM operatorbundle WHERE csv IS NOT NULL").fetchall():
                c.execute("UPDATE operatorbundle SET csv = ? WHERE name = ?", (bytes(csv).replace(image.encode(), new.encode()), name))
    return db, refs


def demo_catalogs(server: RegistryServer, workdir: Path) -> List[str]:
    """Push a filtered-worthy FBC index and a sqlite index for the demo; return image-set `operators` entries (YAML)."""
    text, _, _ = fbc_catalog(server, "demo-fbc")
    fbc = index_image(catalog_files(text), {LABEL_FBC: "/configs"})
    push(server.url, "demo/fbc-index", fbc, "v4.8")
    workdir.mkdir(parents=True, exist_ok=True)
    db, _ = sqlite_catalog(server, "demo-sqlite", workdir)
    sq = index_image({"database/index.db": db.read_bytes()}, {LABEL_SQLITE: "/database/index.db"}, cmd=["registry", "serve"])
    push(server.url, "demo/sqlite-index", sq, "v4.4")
    return [
        f"- catalog: {server.host}/demo/fbc-index:v4.8\n  packages:\n    - name: foo\n    - name: bar",
        f"- catalog: {server.host}/demo/sqlite-index:v4.4\n  full: true",
    ]

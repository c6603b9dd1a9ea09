"""`graph: true`: the update-graph data image built as oc-mirror builds it (base image + the graph-data
tarball under /var/lib/cincinnati-graph-data + the copy command), carried, pushed digest-exact, and named
by digest in the UpdateService unpack writes."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path
from typing import Any, Dict

import pytest
import yaml

from bundler.base.errors import IntegrityError
from bundler.flows.pack import PackOptions, pack
from bundler.flows.unpack import UnpackOptions, unpack_bundle
from bundler.openshift.graph_image import COMMAND, graph_data_files
from bundler.registry.client import Registries, TransportOptions
from tests.infra.images import RegistryClient, make_image, make_index, push
from tests.infra.openshift_images import StaticServer, build_release
from tests.infra.registry import RegistryServer

GRAPH_PATH = "/api/upgrades_info/graph-data"


def graph_tarball(*, evil: bool = False) -> bytes:
    """A cincinnati-graph-data tarball shaped like api.openshift.com's (a top directory, channels, blocked edges)."""
    files: Dict[str, bytes] = {
        "cincinnati-graph-data/version": b"1\n",
        "cincinnati-graph-data/channels/stable-4.21.yaml": b"name: stable-4.21\nversions:\n- 4.21.0\n",
        "cincinnati-graph-data/blocked-edges/4.21.1.yaml": b"to: 4.21.1\nfrom: .*\n",
        "cincinnati-graph-data/raw/metadata.json": b"{}",
    }
    if evil:
        files["../../etc/evil"] = b"x"
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("cincinnati-graph-data/link")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
    return gzip.compress(out.getvalue(), mtime=0)


def test_graph_data_files_are_read_safely() -> None:
    files = graph_data_files(graph_tarball(evil=True))
    prefix = "var/lib/cincinnati-graph-data/"
    assert sorted(files) == sorted(
        prefix + n
        for n in (
            "cincinnati-graph-data/version", "cincinnati-graph-data/channels/stable-4.21.yaml",
            "cincinnati-graph-data/blocked-edges/4.21.1.yaml", "cincinnati-graph-data/raw/metadata.json", "etc/evil",
        )
    ), "the ../ member stays inside the data directory; the symlink is left out"
    with pytest.raises(IntegrityError, match="holds no files"):
        graph_data_files(gzip.compress(b"\0" * 1024))


def _layer_files(blob: bytes) -> Dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isreg()}  # type: ignore[union-attr]


def test_graph_true_builds_carries_and_names_the_graph_image(registry_plain: RegistryServer, fresh_registry_plain: RegistryServer, tmp_path: Path, skopeo: Any) -> None:
    base = make_index([make_image(files={"usr/bin/bash": b"#!bash"}, seed="graph-base-a"), make_image(seed="graph-base-b", architecture="arm64")])
    push(registry_plain.url, "graphbase/ubi", base, "latest")
    rel = build_release(registry_plain.url, version="4.21.0", components=5, repo="graphrel/release", component_repo="graphrel/art-dev", seed="graph")
    config = tmp_path / "isc.yaml"
    config.write_text(
        "apiVersion: mirror.openshift.io/v2alpha1\nkind: ImageSetConfiguration\nmirror:\n"
        f"  platform:\n    release: {rel.release_ref}\n    graph: true\n"
    )
    server = StaticServer({GRAPH_PATH: graph_tarball()})
    try:
        options = dict(config=config, graph_data_url=server.url + GRAPH_PATH, graph_base_image=f"{registry_plain.host}/graphbase/ubi:latest",
                       signature_store=server.url + "/signatures")
        regs = lambda: Registries(options=TransportOptions(insecure_hosts=frozenset({registry_plain.host})))  # noqa: E731
        first = pack(PackOptions(out_dir=tmp_path / "b", work_dir=tmp_path / "w", **options), registries=regs())  # type: ignore[arg-type]
        again = pack(PackOptions(out_dir=tmp_path / "b2", work_dir=tmp_path / "w2", dry_run=True, **options), registries=regs())  # type: ignore[arg-type]
    finally:
        server.close()
    graph = first.plan.reports.graph
    assert graph is not None and graph.files == 4
    assert again.plan.reports.graph is not None and again.plan.reports.graph.digest == graph.digest, "the same data builds the same digest"
    [carried] = [i for i in first.images if i.planned.kind == "graph"]
    assert (carried.planned.target_repository, carried.planned.target_tag, carried.digest) == ("openshift/graph-image", "latest", graph.digest)

    mirror = fresh_registry_plain
    unpack_bundle(tmp_path / "b", options=UnpackOptions(registry=mirror.host, transport=TransportOptions(insecure_hosts=frozenset({mirror.host})), resources_dir=tmp_path / "res"))
    assert skopeo.digest(f"{mirror.host}/openshift/graph-image:latest") == graph.digest
    client = RegistryClient(mirror.url)
    raw, _ = client.get_manifest("openshift/graph-image", "latest")
    index = json.loads(raw)
    assert len(index["manifests"]) == 2, "every platform of the base gets the graph data"
    child_raw, _ = client.get_manifest("openshift/graph-image", index["manifests"][0]["digest"])
    child = json.loads(child_raw)
    base_child = base.children[0]
    assert [layer["digest"] for layer in child["layers"][:-1]] == [layer.digest for layer in base_child.layers], "the base layers are kept as they are"
    config_doc = json.loads(client.get_blob("openshift/graph-image", child["config"]["digest"]))
    assert config_doc["config"]["Cmd"] == COMMAND
    files = _layer_files(client.get_blob("openshift/graph-image", child["layers"][-1]["digest"]))
    assert files["var/lib/cincinnati-graph-data/cincinnati-graph-data/channels/stable-4.21.yaml"].startswith(b"name: stable-4.21")
    service = yaml.safe_load((tmp_path / "res" / "updateService.yaml").read_text())
    assert service["apiVersion"] == "updateservice.operator.openshift.io/v1" and service["kind"] == "UpdateService"
    assert service["spec"] == {"replicas": 2, "releases": f"{mirror.host}/ocp4/openshift4", "graphDataImage": f"{mirror.host}/openshift/graph-image@{graph.digest}"}
    assert "oc apply -f updateService.yaml" in (tmp_path / "res" / "README.txt").read_text()

"""Pack end to end on a loopback registry: an incremental pack fetches and carries only what its base lacks,
and base + increment unpack digest-exact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bundler.bundle.volumes import Bundle
from bundler.flows.pack import PackOptions, pack
from bundler.registry.client import Registries, TransportOptions
from bundler.flows.unpack import UnpackOptions, unpack_bundle
from bundler.bundle.verify import verify_bundle
from tests.infra.faultproxy import FaultProxy
from tests.infra.images import make_image, make_index, push, random_layer
from tests.infra.registry import RegistryServer


def _config(path: Path, refs: list) -> Path:
    path.write_text("apiVersion: ocp-bundler.io/v1alpha1\nkind: ImageSet\nadditionalImages:\n" + "".join(f"  - {r}\n" for r in refs))
    return path


def test_incremental_pack_with_a_new_work_dir_fetches_only_new_blobs(registry_plain: RegistryServer, fresh_registry_plain: RegistryServer, tmp_path: Path, skopeo: Any) -> None:
    base_layer = random_layer(400_000, seed="incr-base")
    a = make_index([make_image(base_layers=[base_layer], random_layers=[200_000], seed="incr-a")])
    b = make_image(base_layers=[base_layer], random_layers=[150_000], seed="incr-b", docker=True)
    c = make_image(base_layers=[base_layer], random_layers=[300_000], seed="incr-c")
    digests = {name: push(registry_plain.url, f"incr/{name}", obj, "v1") for name, obj in (("a", a), ("b", b), ("c", c))}
    with FaultProxy(registry_plain.url) as proxy:
        refs = [f"{proxy.host}/incr/{n}:v1" for n in ("a", "b")]
        regs = lambda: Registries(options=TransportOptions(insecure_hosts=frozenset({proxy.host})))  # noqa: E731
        pack(PackOptions(config=_config(tmp_path / "base.yaml", refs), out_dir=tmp_path / "base", work_dir=tmp_path / "w1"), registries=regs())
        proxy.reset_counters()
        incr = pack(
            PackOptions(config=_config(tmp_path / "incr.yaml", refs + [f"{proxy.host}/incr/c:v1"]), out_dir=tmp_path / "incr",
                        work_dir=tmp_path / "w2", base=tmp_path / "base"),
            registries=regs(),
        )
        fetched = {t.rsplit("/", 1)[1] for (m, t, _, _) in proxy.log if m == "GET" and "/blobs/" in t}
    assert incr.bundle is not None
    c_blobs = {blob.digest for blob in c.blobs}
    assert fetched == c_blobs - {base_layer.digest}, "only the new image's own blobs are fetched"
    verify_bundle(tmp_path / "incr")
    carried = {blob.digest for blob in Bundle.open(tmp_path / "incr").manifest.blobs}
    assert base_layer.digest not in carried and c_blobs - {base_layer.digest} <= carried
    # the far side: base first, then the increment; everything digest-exact
    mirror = fresh_registry_plain
    opts = lambda: UnpackOptions(registry=mirror.host, transport=TransportOptions(insecure_hosts=frozenset({mirror.host})), write_resources=False)  # noqa: E731
    unpack_bundle(tmp_path / "base", options=opts())
    unpack_bundle(tmp_path / "incr", options=opts())
    for name, digest in digests.items():
        assert skopeo.digest(f"{mirror.host}/incr/{name}:v1") == digest

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
    carried = {str(blob.digest) for blob in Bundle.open(tmp_path / "incr").manifest.blobs}
    assert base_layer.digest not in carried and c_blobs - {base_layer.digest} <= carried
    # the far side: base first, then the increment; everything digest-exact
    mirror = fresh_registry_plain
    opts = lambda: UnpackOptions(registry=mirror.host, transport=TransportOptions(insecure_hosts=frozenset({mirror.host})), write_resources=False)  # noqa: E731
    unpack_bundle(tmp_path / "base", options=opts())
    unpack_bundle(tmp_path / "incr", options=opts())
    for name, digest in digests.items():
        assert skopeo.digest(f"{mirror.host}/incr/{name}:v1") == digest


def test_a_plan_for_quay_names_what_quay_cannot_store(registry_plain: RegistryServer, tmp_path: Path) -> None:
    """`--target-kind quay`: the plan (dry run) and the pack name the Docker schema2 image with an
    uncompressed layer (Quay: 400 MANIFEST_INVALID) with the reason; an OCI image with the same kind of
    layer is fine; without a declared target nothing is said."""
    from tests.test_unpack import cli

    refused = make_image(base_layers=[random_layer(20_000, seed="tk-tar", compressed=False, docker=True)], docker=True, seed="tk-refused")
    fine = make_image(random_layers=[20_000], compressed=False, seed="tk-oci")
    push(registry_plain.url, "tk/refused", refused, "v1")
    push(registry_plain.url, "tk/fine", fine, "v1")
    config = _config(tmp_path / "c.yaml", [f"{registry_plain.host}/tk/refused:v1", f"{registry_plain.host}/tk/fine:v1"])
    base = ["pack", "--config", str(config), "--out", str(tmp_path / "out"), "--insecure-registry", registry_plain.host]

    plain = cli(*base, "--dry-run")
    assert plain.returncode == 0 and "Quay" not in plain.stdout.decode() + plain.stderr.decode()
    dry = cli(*base, "--dry-run", "--target-kind", "quay")
    out, err = dry.stdout.decode(), dry.stderr.decode()
    assert dry.returncode == 0, err
    refused_lines = [line for line in out.splitlines() if "REFUSED by quay" in line]
    assert len(refused_lines) == 1 and "tk/refused:v1" in refused_lines[0], out
    assert "rootfs.diff.tar: Quay takes only gzip layers" in refused_lines[0]
    assert "tk/refused:v1" in err and "unpack into Quay will refuse it" in err

    done = pack(PackOptions(config=config, out_dir=tmp_path / "out", target_kind="quay"), registries=Registries(options=TransportOptions(insecure_hosts=frozenset({registry_plain.host}))))
    assert [i.planned.target_repository for i in done.images if i.refused] == ["tk/refused"]


def _ranged_setup(registry: RegistryServer, monkeypatch: Any, name: str) -> Any:
    """An image with one 3 MB layer, and ranges of at least 256 KiB: the layer is fetched in parts."""
    from bundler.bundle import fill

    monkeypatch.setattr(fill, "MIN_PART", 256 * 1024)
    layer = random_layer(3_000_000, seed=f"ranged-{name}")
    img = make_image(base_layers=[layer], random_layers=[20_000], seed=f"ranged-{name}")
    push(registry.url, f"ranged/{name}", img, "v1")
    return layer


def _pack_through(proxy: FaultProxy, tmp_path: Path, name: str, out: str = "b") -> Any:
    regs = Registries(options=TransportOptions(insecure_hosts=frozenset({proxy.host})))
    return pack(PackOptions(config=_config(tmp_path / f"{out}.yaml", [f"{proxy.host}/ranged/{name}:v1"]), out_dir=tmp_path / out,
                            work_dir=tmp_path / f"{out}.work"), registries=regs)


def _layer_ranges(proxy: FaultProxy, digest: str) -> list:
    return [r for t, r in proxy.ranges if t.endswith(f"/blobs/{digest}")]


def test_a_large_blob_is_fetched_in_byte_ranges_and_its_digest_proven(registry_plain: RegistryServer, tmp_path: Path, monkeypatch: Any) -> None:
    """docker-registry serves ranges: the layer arrives as bounded ranges that tile it exactly, on several
    requests, and the bundle verifies (every blob's digest) and unpacks digest-exact."""
    layer = _ranged_setup(registry_plain, monkeypatch, "served")
    with FaultProxy(registry_plain.url) as proxy:
        _pack_through(proxy, tmp_path, "served")
        ranges = _layer_ranges(proxy, layer.digest)
    spans = sorted((int(a), int(b)) for a, b in (r[len("bytes="):].split("-") for r in ranges))
    assert len(spans) >= 4, ranges
    assert spans[0][0] == 0 and spans[-1][1] == layer.size - 1
    assert all(nxt[0] == cur[1] + 1 for cur, nxt in zip(spans, spans[1:])), spans
    verify_bundle(tmp_path / "b")


def test_a_source_that_ignores_ranges_gets_the_blob_as_one_stream(registry_plain: RegistryServer, tmp_path: Path, monkeypatch: Any) -> None:
    """A proxy that drops the Range header (the registry answers 200 with the whole blob): pack asked for
    ranges, falls back to one stream, and the bundle verifies."""
    layer = _ranged_setup(registry_plain, monkeypatch, "ignored")
    with FaultProxy(registry_plain.url, ignore_range=True) as proxy:
        _pack_through(proxy, tmp_path, "ignored")
        ranges = _layer_ranges(proxy, layer.digest)
        statuses = [st for (m, t, _, st) in proxy.log if m == "GET" and t.endswith(f"/blobs/{layer.digest}")]
    assert ranges, "ranges were asked for"
    assert statuses and set(statuses) == {200}
    verify_bundle(tmp_path / "b")
    assert layer.digest in {str(b.digest) for b in Bundle.open(tmp_path / "b").manifest.blobs}


def test_a_corrupted_later_range_fails_the_blob_and_a_rerun_fetches_it_again(registry_plain: RegistryServer, tmp_path: Path, monkeypatch: Any) -> None:
    """One byte flipped in a range that is not the first (hashed from the page cache, not as it streams):
    the blob's digest does not match, pack names it and journals nothing for it; the rerun fetches it again
    and the bundle verifies."""
    import pytest

    from bundler.base.errors import PartialFailureError

    layer = _ranged_setup(registry_plain, monkeypatch, "corrupt")
    with FaultProxy(registry_plain.url) as proxy:
        proxy.script("corrupt", match=lambda m, t: m == "GET" and t.endswith(f"/blobs/{layer.digest}"),
                     when_range=lambda r: r.startswith("bytes=") and not r.startswith("bytes=0-"))
        with pytest.raises(PartialFailureError) as failed:
            _pack_through(proxy, tmp_path, "corrupt")
        assert proxy.counts["corrupt"] == 1
        assert layer.digest in str(failed.value) and "does not match" in str(failed.value)
        proxy.reset_counters()
        _pack_through(proxy, tmp_path, "corrupt")
        again = _layer_ranges(proxy, layer.digest)
    assert again and again[0] != "" and any(r.startswith("bytes=0-") for r in again), "the whole blob is fetched again"
    verify_bundle(tmp_path / "b")


def test_blobs_stream_while_signatures_are_looked_up(registry_plain: RegistryServer, tmp_path: Path) -> None:
    """The image blobs start streaming once the manifests are known: the signature look-ups (slow here:
    the proxy holds every cosign tag look-up 1.5 s) run beside them, not before them, and the bundle still
    verifies with every image."""
    from tests.infra.faultproxy import STALL

    for name in ("a", "b"):
        push(registry_plain.url, f"overlap/{name}", make_image(random_layers=[300_000], seed=f"overlap-{name}"), "v1")
    with FaultProxy(registry_plain.url) as proxy:
        proxy.script(STALL, lambda method, target: method == "HEAD" and target.endswith(".sig"), times=2, stall_seconds=1.5)
        regs = Registries(options=TransportOptions(insecure_hosts=frozenset({proxy.host})))
        result = pack(PackOptions(config=_config(tmp_path / "o.yaml", [f"{proxy.host}/overlap/{n}:v1" for n in ("a", "b")]), out_dir=tmp_path / "b",
                                  work_dir=tmp_path / "w"), registries=regs)
        log = list(proxy.log)
    assert result.bundle is not None and result.plan.reports.signatures is not None and result.plan.reports.signatures.checked == 2
    done = [("sig" if t.endswith(".sig") else "blob") for m, t, _, _ in log if t.endswith(".sig") or "/blobs/" in t]
    assert done.count("sig") == 2 and "blob" in done
    assert done.index("blob") < len(done) - 1 - done[::-1].index("sig"), f"every blob waited for the signature look-ups: {done}"
    verify_bundle(tmp_path / "b")

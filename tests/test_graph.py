"""The one manifest-graph walk: order, each manifest once, pruning by the fetch callable, digest checks."""

from __future__ import annotations

import json
from typing import Dict, List, Optional

import pytest

from bundler.base.errors import DigestMismatchError
from bundler.oci.digest import Digest
from bundler.oci.graph import graph_sizes, walk_manifests
from bundler.oci.media import OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST, Descriptor, FetchedManifest


def _blob(seed: str, media_type: str) -> Dict[str, object]:
    data = seed.encode()
    return {"mediaType": media_type, "digest": str(Digest.of(data)), "size": len(data)}


def _image(seed: str) -> FetchedManifest:
    raw = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": _blob(seed + "c", OCI_CONFIG), "layers": [_blob(seed + "l", OCI_LAYER_GZIP)]}).encode()
    return FetchedManifest(raw, OCI_MANIFEST, Digest.of(raw))


def _index(*children: FetchedManifest) -> FetchedManifest:
    entries = [{"mediaType": c.media_type, "digest": str(c.digest), "size": len(c.raw)} for c in children]
    raw = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()
    return FetchedManifest(raw, OCI_INDEX, Digest.of(raw))


class Store:
    def __init__(self, *manifests: FetchedManifest) -> None:
        self.by_digest = {str(m.digest): m for m in manifests}
        self.fetched: List[str] = []

    def fetch(self, d: Descriptor) -> Optional[FetchedManifest]:
        self.fetched.append(str(d.digest))
        return self.by_digest.get(str(d.digest))


def test_parents_first_or_children_first_each_manifest_once() -> None:
    a, b = _image("a"), _image("b")
    inner = _index(b)
    top = _index(a, inner, a)  # `a` listed twice: visited and fetched once
    store = Store(a, b, inner)
    order = [n.manifest.digest for n in walk_manifests(top, store.fetch)]
    assert order == [top.digest, a.digest, inner.digest, b.digest]
    assert sorted(store.fetched) == sorted(str(d) for d in (a.digest, inner.digest, b.digest))
    post = list(walk_manifests(top, Store(a, b, inner).fetch, children_first=True))
    assert [n.manifest.digest for n in post] == [a.digest, b.digest, inner.digest, top.digest]
    assert [n.top for n in post] == [False, False, False, True]
    assert [n.depth for n in post] == [2, 3, 2, 1]
    assert [len(n.blobs) for n in post] == [2, 2, 0, 0] and len(post[-1].children) == 3


def test_fetch_none_prunes_and_a_wrong_child_is_an_error() -> None:
    a, b = _image("a"), _image("b")
    inner = _index(b)
    top = _index(a, inner)
    store = Store(a)  # `inner` is left out: nothing below it is visited
    assert [n.manifest.digest for n in walk_manifests(top, store.fetch)] == [top.digest, a.digest]
    assert str(b.digest) not in store.fetched

    def wrong(d: Descriptor) -> FetchedManifest:
        return b
    with pytest.raises(DigestMismatchError, match="child .* arrived as"):
        list(walk_manifests(_index(a), wrong))


def test_graph_sizes_count_each_blob_once() -> None:
    a, b = _image("a"), _image("b")
    top = _index(a, b, a)  # `a` twice: its blobs once
    sizes = graph_sizes(top, Store(a, b).fetch)
    assert len(sizes) == 3 + 2 * 2  # three manifests, two configs, two layers
    assert sizes[str(top.digest)] == len(top.raw)
    assert len(graph_sizes(top, Store(a, b).fetch, manifests=False)) == 4

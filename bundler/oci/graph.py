"""The one walk over an image's manifest graph: an index, its child manifests, and each one's config and layers.

`walk_manifests` visits every manifest below a top-level one once, fetching children with a callable the
caller supplies (from a registry, a layout, a bundle), and checks that each child arrives with the digest
its parent named. Blobs are not fetched: each visited `ManifestNode` names them (`blobs`), and the caller
decides what to do with them (copy, count, check). The fetch callable may return None to leave a child
(and everything below it) out: already present in a sink, not carried, unreadable and reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Set, Tuple

from bundler.base.errors import DigestMismatchError
from bundler.oci.media import Descriptor, FetchedManifest, ParsedManifest, check_nesting, is_index, parse_manifest

__all__ = ["Fetch", "ManifestNode", "graph_sizes", "walk_manifests"]

#: Fetch a child manifest by its descriptor; None leaves it (and what is below it) out of the walk.
Fetch = Callable[[Descriptor], Optional[FetchedManifest]]


@dataclass(frozen=True)
class ManifestNode:
    """One manifest of the graph, as fetched, with what it points at."""

    manifest: FetchedManifest
    parsed: ParsedManifest
    depth: int
    """1 for the top-level manifest the walk started from, 2 for its children, and so on."""

    @property
    def top(self) -> bool:
        return self.depth == 1

    @property
    def children(self) -> Tuple[Descriptor, ...]:
        """Child manifests (an index's); empty for an image manifest."""
        return self.parsed.children if is_index(self.manifest.media_type) else ()

    @property
    def blobs(self) -> Tuple[Descriptor, ...]:
        """Config and layers (an image manifest's); empty for an index."""
        return self.parsed.blobs


def walk_manifests(
    top: FetchedManifest, fetch: Fetch, *, children_first: bool = False, description: str = "image"
) -> Iterator[ManifestNode]:
    """Every manifest of the graph below `top` (included), each digest once, depth first.

    Parents come before their children, or after them with `children_first` (the order a sink needs:
    nothing is pushed before what it points at). Children are fetched lazily, as the walk reaches them.
    Raises `DigestMismatchError` when a child arrives with another digest than its parent named
    (`description` names the image in that message), and `UnsupportedError` for manifest lists nested
    deeper than `MAX_INDEX_NESTING` (nothing below that depth is fetched).
    """
    seen: Set[str] = {str(top.digest)}

    def node(manifest: FetchedManifest, depth: int) -> ManifestNode:
        return ManifestNode(manifest, parse_manifest(manifest.raw, manifest.media_type), depth)

    def fetch_children(parent: ManifestNode) -> List[FetchedManifest]:
        out: List[FetchedManifest] = []
        if parent.children:
            check_nesting(parent.depth, description)
        for child in parent.children:
            if str(child.digest) in seen:
                continue
            seen.add(str(child.digest))
            fetched = fetch(child)
            if fetched is None:
                continue
            if fetched.digest != child.digest:
                raise DigestMismatchError(f"{description}: child {child.digest} arrived as {fetched.digest}")
            out.append(fetched)
        return out

    if not children_first:
        stack: List[ManifestNode] = [node(top, 1)]
        while stack:
            current = stack.pop()
            yield current
            stack.extend(node(m, current.depth + 1) for m in reversed(fetch_children(current)))
        return

    # Post-order: a node is yielded once all of its children have been.
    pending: List[Tuple[ManifestNode, bool]] = [(node(top, 1), False)]
    while pending:
        current, expanded = pending.pop()
        if expanded:
            yield current
            continue
        pending.append((current, True))
        pending.extend((node(m, current.depth + 1), False) for m in reversed(fetch_children(current)))


def graph_sizes(top: FetchedManifest, fetch: Fetch, *, manifests: bool = True, description: str = "image") -> Dict[str, int]:
    """Digest -> size of every blob the graph below `top` is made of, each once: configs and layers, and
    (with `manifests`) the manifests themselves. What an image weighs in a layout, a bundle or a registry."""
    sizes: Dict[str, int] = {}
    for node in walk_manifests(top, fetch, description=description):
        if manifests:
            sizes[str(node.manifest.digest)] = len(node.manifest.raw)
        for blob in node.blobs:
            sizes.setdefault(str(blob.digest), blob.size)
    return sizes

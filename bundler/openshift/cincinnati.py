"""The OpenShift update graph (Cincinnati) and the plain HTTPS GETs of public OpenShift endpoints.

Owns (PROTOCOL-NOTES §5 "Release payload"; oc-mirror's channel semantics):

* `HttpFetcher`: a small urllib3 client for non-registry endpoints (the update service, the release
  signature store), honouring `TransportOptions` (extra CA file, per-host insecure TLS, timeouts) with
  bounded retries on connection errors, 429 and 5xx. Failures are `RegistryError`s (exit 5) with the URL
  redacted.
* `fetch_graph`: ``GET <graph-url>?channel=<name>&arch=<go arch>`` with ``Accept: application/json``, parsed
  into an `UpdateGraph` (``nodes: [{version, payload, metadata}]``, ``edges: [[from, to], ...]``).
* `UpdateGraph.channels`: the channel names the nodes' metadata lists
  (``io.openshift.upgrades.graph.release.channels``, comma-separated), as oc-mirror's ``list releases --channels``
  reads them.
* `select_releases`: which nodes of a channel a `ChannelSpec` asks for:

  - neither ``full`` nor a bound: the latest version of the channel (oc-mirror's heads-only default);
  - a bound (``minVersion`` and/or ``maxVersion``) or ``full``: every version in ``[min, max]``, a missing
    bound being the channel's lowest / highest version;
  - ``shortestPath``: the versions on the shortest upgrade path from min to max (BFS over the edges; among
    equally short paths the one through the newest intermediate versions).

Nothing here talks to a registry or reads images; `bundler.openshift.release` does that with what this returns.
"""

from __future__ import annotations

import collections
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import urlencode, urlsplit


from bundler.base.errors import RegistryError, UsageError
from bundler.base.jsonlimits import JsonTooDeepError, loads_bounded
from bundler.openshift.image_set import ChannelSpec, Version
from bundler.registry.http import RETRY_STATUSES as _RETRY_STATUSES
from bundler.registry.http import USER_AGENT, HttpPools, TransportOptions, redact, send_with_retries

log = logging.getLogger(__name__)

DEFAULT_GRAPH_URL = "https://api.openshift.com/api/upgrades_info/v1/graph"
#: The OKD update service (oc-mirror uses it for ``type: okd`` channels).
DEFAULT_OKD_GRAPH_URL = "https://amd64.origin.releases.ci.openshift.org/graph"
MAX_GRAPH_BYTES = 64 << 20
#: Node metadata naming every channel a release is in (comma-separated).
CHANNELS_METADATA = "io.openshift.upgrades.graph.release.channels"


# --------------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    data: bytes
    url: str


class HttpFetcher:
    """GETs against public HTTP(S) endpoints that are not registries (update graph, signature store)."""

    def __init__(self, options: TransportOptions = TransportOptions()) -> None:
        self.options = options
        self._pools = HttpPools(options)

    def close(self) -> None:
        self._pools.close()

    def __enter__(self) -> "HttpFetcher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, url: str, *, headers: Optional[Mapping[str, str]] = None, what: str = "", max_bytes: int = MAX_GRAPH_BYTES) -> HttpAnswer:
        """GET `url`; retried on connection errors, 429 and 5xx. Any final status is returned, not raised."""
        what = what or redact(url)
        hdrs = {"User-Agent": USER_AGENT, **(headers or {})}
        host = urlsplit(url).netloc
        resp = send_with_retries(
            self._pools.for_url(url), self.options, "GET", url, hdrs, None, what=what, host=host, preload=True, max_body=max_bytes
        )
        return HttpAnswer(resp.status, bytes(resp.data or b""), url)


# --------------------------------------------------------------------------------------------------
# The graph
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GraphNode:
    """One release in the update graph: its version, digest-pinned payload and metadata."""

    version: Version
    payload: str
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class UpdateGraph:
    """The releases of one channel for one architecture, and the upgrade edges between them."""

    channel: str
    arch: str
    nodes: Tuple[GraphNode, ...]
    edges: Tuple[Tuple[int, int], ...]
    url: str = ""

    def node(self, version: Version) -> Optional[GraphNode]:
        for n in self.nodes:
            if n.version == version:
                return n
        return None

    def channels(self) -> List[str]:
        """Every channel named in the nodes' metadata, ordered by the version in its name, then by name
        (``candidate-4.17``, ``eus-4.18``, ``fast-4.18``, …); names without a version come last."""
        names = {c.strip() for n in self.nodes for c in n.metadata.get(CHANNELS_METADATA, "").split(",") if c.strip()}
        return sorted(names, key=channel_sort_key)

    def latest(self) -> GraphNode:
        if not self.nodes:
            raise self._empty()
        return max(self.nodes, key=lambda n: n.version)

    def between(self, low: Optional[Version], high: Optional[Version]) -> List[GraphNode]:
        """Every node with low <= version <= high (a missing bound is open), oldest first."""
        chosen = [n for n in self.nodes if (low is None or n.version >= low) and (high is None or n.version <= high)]
        return sorted(chosen, key=lambda n: n.version)

    def shortest_path(self, start: Version, end: Version) -> List[GraphNode]:
        """Nodes on the shortest upgrade path from `start` to `end` (both included).

        Breadth-first over the edges; neighbours are visited newest first, so among equally short paths the
        one through the newest intermediate releases wins (they carry the most fixes).
        """
        index = {n.version: i for i, n in enumerate(self.nodes)}
        missing = [str(v) for v in (start, end) if v not in index]
        if missing:
            raise UsageError(
                f"update graph of channel {self.channel} ({self.arch}) has no release {' or '.join(missing)}",
                hint=f"pick versions the channel lists (it has {_version_span(self.nodes)})",
            )
        src, dst = index[start], index[end]
        neighbours: Dict[int, List[int]] = collections.defaultdict(list)
        for a, b in self.edges:
            neighbours[a].append(b)
        for targets in neighbours.values():
            targets.sort(key=lambda i: self.nodes[i].version, reverse=True)
        previous: Dict[int, int] = {src: src}
        queue = collections.deque([src])
        while queue:
            here = queue.popleft()
            if here == dst:
                break
            for nxt in neighbours.get(here, ()):
                if nxt not in previous:
                    previous[nxt] = here
                    queue.append(nxt)
        if dst not in previous:
            raise UsageError(
                f"channel {self.channel} ({self.arch}) has no upgrade path from {start} to {end}",
                hint="check minVersion/maxVersion, or drop shortestPath to carry every version in the range",
            )
        path = [dst]
        while path[-1] != src:
            path.append(previous[path[-1]])
        return [self.nodes[i] for i in reversed(path)]

    def _empty(self) -> UsageError:
        return UsageError(
            f"channel {self.channel} has no releases for architecture {self.arch} at {redact(self.url) if self.url else 'the update service'}",
            hint="check the channel name (e.g. stable-4.14) and the architectures",
        )


def _version_span(nodes: Sequence[GraphNode]) -> str:
    if not nodes:
        return "no releases"
    versions = sorted(n.version for n in nodes)
    return f"{len(versions)} releases, {versions[0]} to {versions[-1]}"


def channel_sort_key(name: str) -> Tuple[int, int, int, str]:
    """Order channels by the MAJOR.MINOR their name ends with (`stable-4.9` before `stable-4.18`), then by name."""
    match = re.search(r"-(\d+)\.(\d+)$", name)
    if match is None:
        return (1, 0, 0, name)
    return (0, int(match.group(1)), int(match.group(2)), name)


def parse_graph(raw: bytes, *, channel: str, arch: str, url: str = "") -> UpdateGraph:
    """Parse a Cincinnati graph document; nodes whose version is not semver are skipped (logged)."""
    where = f"update graph for {channel} ({arch}) from {redact(url) if url else 'the update service'}"
    try:
        doc = loads_bounded(raw)
    except JsonTooDeepError as exc:
        raise RegistryError(f"{where}: {exc}", url=redact(url) if url else "") from None
    except ValueError:
        raise RegistryError(f"{where} is not JSON", url=redact(url) if url else "", hint="check --graph-url / graphURL") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("nodes"), list):
        raise RegistryError(f"{where} is not an update graph (no 'nodes' list)", url=redact(url) if url else "")
    raw_nodes: List[Any] = doc["nodes"]
    raw_edges: Any = doc.get("edges") or []
    nodes: List[GraphNode] = []
    remap: Dict[int, int] = {}
    seen: Dict[Version, int] = {}
    for i, obj in enumerate(raw_nodes):
        if not isinstance(obj, dict) or not isinstance(obj.get("version"), str) or not isinstance(obj.get("payload"), str):
            raise RegistryError(f"{where}: node {i} lacks a version or payload", url=redact(url) if url else "")
        try:
            version = Version.parse(obj["version"])
        except ValueError:
            log.debug("%s: skipping node %d with version %r", where, i, obj["version"])
            continue
        if version in seen:
            remap[i] = seen[version]
            continue
        metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
        remap[i] = seen[version] = len(nodes)
        nodes.append(GraphNode(version, obj["payload"], {str(k): str(v) for k, v in (metadata or {}).items()}))
    edges: List[Tuple[int, int]] = []
    if not isinstance(raw_edges, list):
        raise RegistryError(f"{where}: 'edges' is not a list", url=redact(url) if url else "")
    for edge in raw_edges:
        if not (isinstance(edge, list) and len(edge) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in edge)):
            raise RegistryError(f"{where}: malformed edge {edge!r}", url=redact(url) if url else "")
        a, b = edge
        if a in remap and b in remap and remap[a] != remap[b]:
            edges.append((remap[a], remap[b]))
        elif not (0 <= a < len(raw_nodes) and 0 <= b < len(raw_nodes)):
            raise RegistryError(f"{where}: edge {edge!r} points outside the {len(raw_nodes)} nodes", url=redact(url) if url else "")
    return UpdateGraph(channel, arch, tuple(nodes), tuple(sorted(set(edges))), url)


def default_graph_url(channel: ChannelSpec) -> str:
    return DEFAULT_OKD_GRAPH_URL if channel.type == "okd" else DEFAULT_GRAPH_URL


def fetch_graph(
    channel: str, arch: str, *, url: str = DEFAULT_GRAPH_URL, fetcher: Optional[HttpFetcher] = None, max_bytes: int = MAX_GRAPH_BYTES
) -> UpdateGraph:
    """Fetch the update graph of `channel` for `arch` (Go name: amd64, arm64, ..., multi); an answer over
    `max_bytes` is refused."""
    full = url + ("&" if "?" in url else "?") + urlencode({"channel": channel, "arch": arch})
    own = fetcher is None
    http = fetcher or HttpFetcher()
    try:
        answer = http.get(full, headers={"Accept": "application/json"}, what=f"update graph of {channel} ({arch})", max_bytes=max_bytes)
    finally:
        if own:
            http.close()
    if answer.status != 200:
        detail = answer.data[:200].decode("utf-8", "replace").strip()
        raise RegistryError(
            f"update service {redact(url)} answered HTTP {answer.status} for channel {channel} ({arch})" + (f": {detail}" if detail else ""),
            status=answer.status,
            url=redact(url),
            temporary=answer.status in _RETRY_STATUSES,
            hint="check the channel name and the graph URL",
        )
    graph = parse_graph(answer.data, channel=channel, arch=arch, url=url)
    log.debug("update graph %s (%s): %d nodes, %d edges", channel, arch, len(graph.nodes), len(graph.edges))
    return graph


def _bound(text: Optional[str], what: str, channel: str) -> Optional[Version]:
    if text is None:
        return None
    try:
        return Version.parse(text)
    except ValueError:
        raise UsageError(f"channel {channel}: {what} {text!r} is not a version like 4.8.0") from None


def select_releases(graph: UpdateGraph, channel: ChannelSpec) -> List[GraphNode]:
    """The nodes of `graph` that `channel` selects, oldest first (see the module docstring)."""
    if not graph.nodes:
        raise graph._empty()
    low = _bound(channel.min_version, "minVersion", channel.name)
    high = _bound(channel.max_version, "maxVersion", channel.name)
    if low is not None and high is not None and low > high:
        raise UsageError(f"channel {channel.name}: minVersion {low} is greater than maxVersion {high}")
    if channel.shortest_path:
        start = low if low is not None else min(n.version for n in graph.nodes)
        end = high if high is not None else graph.latest().version
        return graph.shortest_path(start, end)
    if low is None and high is None and not channel.full:
        return [graph.latest()]
    chosen = graph.between(low, high)
    if not chosen:
        raise UsageError(
            f"channel {channel.name} ({graph.arch}) has no release between {low or 'its first'} and {high or 'its latest'}",
            hint=f"the channel has {_version_span(graph.nodes)}",
        )
    return chosen

"""What OpenShift releases exist (`ocp-bundler list releases`), as oc-mirror's ``list releases`` tells it.

Owns three questions and their result types:

* `list_channel_releases`: the versions in a channel for one or more architectures, from the update service
  (`bundler.openshift.cincinnati.fetch_graph`), sorted by semver; optionally only one ``MAJOR.MINOR``;
* `list_channels`: the channels the update service knows around a ``MAJOR.MINOR``: every channel the
  releases of ``stable-MAJOR.MINOR`` are in (node metadata ``io.openshift.upgrades.graph.release.channels``);
* `list_minor_versions`: the ``MAJOR.MINOR`` versions a release repository has tags for (oc-mirror's
  ``list releases`` with neither a channel nor a version).

The update service is reached with the project's one HTTP stack (TLS policy, proxies, bounded reads).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from bundler.base.errors import UsageError
from bundler.oci.platform import GO_ARCHITECTURES, MULTI, go_arch
from bundler.oci.reference import Reference
from bundler.openshift.cincinnati import DEFAULT_GRAPH_URL, MAX_GRAPH_BYTES, HttpFetcher, fetch_graph
from bundler.registry.client import Registries
from bundler.registry.http import TransportOptions, redact

__all__ = [
    "ARCHITECTURES", "DEFAULT_RELEASE_REPOSITORY", "ArchitectureReleases", "ChannelListing", "ChannelsListing", "ListedRelease",
    "MinorVersions", "list_channel_releases", "list_channels", "list_minor_versions", "minor_version", "parse_architectures",
]

#: The architectures the update service answers for (Go names), as oc-mirror's ``--filter-by-archs``.
ARCHITECTURES: Tuple[str, ...] = GO_ARCHITECTURES + (MULTI,)
#: Where OpenShift release images are published (their tags name the versions).
DEFAULT_RELEASE_REPOSITORY = "quay.io/openshift-release-dev/ocp-release"

_MINOR = re.compile(r"(\d+)\.(\d+)")


@dataclass(frozen=True)
class ListedRelease:
    version: str
    payload: str

    def to_json(self) -> Dict[str, Any]:
        return {"version": self.version, "payload": self.payload}


@dataclass(frozen=True)
class ArchitectureReleases:
    architecture: str
    releases: Tuple[ListedRelease, ...]
    """Oldest first, by semver precedence."""

    def to_json(self) -> Dict[str, Any]:
        return {"architecture": self.architecture, "releases": [r.to_json() for r in self.releases]}


@dataclass(frozen=True)
class ChannelListing:
    channel: str
    graph_url: str
    version: Optional[str]
    """The ``MAJOR.MINOR`` the list was narrowed to, if any."""
    architectures: Tuple[ArchitectureReleases, ...]

    def to_json(self) -> Dict[str, Any]:
        return {
            "channel": self.channel, "graphURL": self.graph_url, "version": self.version,
            "architectures": [a.to_json() for a in self.architectures],
        }


@dataclass(frozen=True)
class ChannelsListing:
    version: str
    channel: str
    """The channel whose graph was read (``stable-<version>``)."""
    architecture: str
    graph_url: str
    channels: Tuple[str, ...]

    def to_json(self) -> Dict[str, Any]:
        return {
            "version": self.version, "channel": self.channel, "architecture": self.architecture, "graphURL": self.graph_url,
            "channels": list(self.channels),
        }


@dataclass(frozen=True)
class MinorVersions:
    repository: str
    versions: Tuple[str, ...]
    """``MAJOR.MINOR``, oldest first."""

    def to_json(self) -> Dict[str, Any]:
        return {"repository": self.repository, "versions": list(self.versions)}


def minor_version(text: str) -> str:
    """`text` checked as a ``MAJOR.MINOR`` version like 4.18."""
    if not re.fullmatch(r"\d+\.\d+", text):
        raise UsageError(f"version {text!r} is not a MAJOR.MINOR version like 4.18")
    return text


def parse_architectures(values: Sequence[str]) -> Tuple[str, ...]:
    """Architectures as given (repeated and/or comma-separated; either spelling), as Go names, in order, once
    each; none given: amd64. An unknown one is a usage error naming the known ones."""
    wanted: List[str] = []
    for value in values:
        for part in value.split(","):
            name = go_arch(part.strip())
            if not name:
                continue
            if name not in ARCHITECTURES:
                raise UsageError(f"unknown architecture {part.strip()!r}", hint=f"use one of {', '.join(ARCHITECTURES)}")
            if name not in wanted:
                wanted.append(name)
    return tuple(wanted) or ("amd64",)


def list_channel_releases(
    channel: str,
    architectures: Sequence[str] = ("amd64",),
    *,
    version: Optional[str] = None,
    graph_url: str = DEFAULT_GRAPH_URL,
    options: TransportOptions = TransportOptions(),
    max_bytes: int = MAX_GRAPH_BYTES,
) -> ChannelListing:
    """The releases of `channel` for each architecture, oldest first; with `version` (``MAJOR.MINOR``) only
    that minor's. A channel without releases (for an architecture, or for `version`) is a usage error."""
    minor = minor_version(version) if version is not None else None
    per_arch: List[ArchitectureReleases] = []
    with HttpFetcher(options) as http:
        for arch in parse_architectures(architectures):
            graph = fetch_graph(channel, arch, url=graph_url, fetcher=http, max_bytes=max_bytes)
            if not graph.nodes:
                raise graph._empty()
            nodes = sorted(graph.nodes, key=lambda n: n.version)
            if minor is not None:
                nodes = [n for n in nodes if f"{n.version.major}.{n.version.minor}" == minor]
                if not nodes:
                    raise UsageError(
                        f"channel {channel} ({arch}) has no {minor} releases at {redact(graph_url)}",
                        hint=f"it has {len(graph.nodes)} releases, {min(n.version for n in graph.nodes)} to {graph.latest().version}",
                    )
            per_arch.append(ArchitectureReleases(arch, tuple(ListedRelease(str(n.version), n.payload) for n in nodes)))
    return ChannelListing(channel, redact(graph_url), minor, tuple(per_arch))


def list_channels(
    version: str,
    *,
    architecture: str = "amd64",
    graph_url: str = DEFAULT_GRAPH_URL,
    options: TransportOptions = TransportOptions(),
    max_bytes: int = MAX_GRAPH_BYTES,
) -> ChannelsListing:
    """The channels named by the releases in ``stable-<version>`` (as oc-mirror's ``--channels``)."""
    minor = minor_version(version)
    (arch,) = parse_architectures([architecture])
    channel = f"stable-{minor}"
    with HttpFetcher(options) as http:
        graph = fetch_graph(channel, arch, url=graph_url, fetcher=http, max_bytes=max_bytes)
    if not graph.nodes:
        raise graph._empty()
    channels = graph.channels()
    if not channels:
        raise UsageError(
            f"the releases of {channel} ({arch}) at {redact(graph_url)} name no channels in their metadata",
            hint=f"list the channel itself: ocp-bundler list releases --channel {channel}",
        )
    return ChannelsListing(minor, channel, arch, redact(graph_url), tuple(channels))


def list_minor_versions(registries: Registries, repository: str = DEFAULT_RELEASE_REPOSITORY) -> MinorVersions:
    """The ``MAJOR.MINOR`` versions that `repository`'s tags start with (signature tags skipped), oldest first."""
    ref = Reference.parse(repository)
    if ref.tag or ref.digest:
        raise UsageError(f"release repository {repository!r} names a tag or digest", hint="give the repository only, e.g. " + DEFAULT_RELEASE_REPOSITORY)
    tags = registries.client(ref.registry).list_tags(ref.repository)
    found = set()
    for tag in tags:
        if tag.endswith((".sig", ".att", ".sbom")):
            continue
        match = _MINOR.match(tag)
        if match:
            found.add((int(match.group(1)), int(match.group(2))))
    if not found:
        raise UsageError(f"{ref.name} has no tags that start with a version (it has {len(tags)} tags)", hint="check --release-repo")
    return MinorVersions(ref.name, tuple(f"{a}.{b}" for a, b in sorted(found)))

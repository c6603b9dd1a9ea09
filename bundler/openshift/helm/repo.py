"""Helm chart repositories: the ``index.yaml`` and the chart archives it lists.

Owns reading a classic (HTTP) chart repository (https://helm.sh/docs/topics/chart_repository/):
``<url>/index.yaml`` has ``entries: {<chart>: [{version, urls, digest, type}]}``; a chart's ``urls`` are
absolute or relative to the index. A version in the config is an exact version or a semver constraint
(``>=1.2 <2``); none means the newest version that is not a pre-release, as ``helm pull`` does; a
repository with no ``charts`` list means every chart and version of the index (library charts excepted),
as oc-mirror does. Archives are checked against the index's ``digest`` when it gives one. All requests
go through the project's HTTP stack (proxies, TLS policy, retries, bounded reads).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Dict, List, Optional
from urllib.parse import urljoin

import yaml

from bundler.base.errors import IntegrityError, RegistryError
from bundler.openshift.cincinnati import HttpFetcher
from bundler.openshift.helm.chart import ChartError
from bundler.openshift.helm.semver import parse_version, semver_compare, version_key
from bundler.registry.client import redact

MAX_INDEX_BYTES = 64 << 20
MAX_ARCHIVE_BYTES = 64 << 20


@dataclass(frozen=True)
class IndexEntry:
    name: str
    version: str
    urls: List[str]
    digest: Optional[str]
    library: bool


def index_url(url: str) -> str:
    return url if url.endswith("/index.yaml") else url.rstrip("/") + "/index.yaml"


def fetch_index(http: HttpFetcher, url: str, *, repo: str) -> Dict[str, List[IndexEntry]]:
    where = index_url(url)
    answer = http.get(where, what=f"helm repository {repo} index", max_bytes=MAX_INDEX_BYTES)
    if answer.status != 200:
        raise RegistryError(f"helm repository {repo}: {redact(where)} answered HTTP {answer.status}", status=answer.status, url=redact(where), hint="check the repository's url")
    try:
        doc: Any = yaml.safe_load(answer.data)
    except yaml.YAMLError as exc:
        raise ChartError(f"helm repository {repo}: {redact(where)} is not an index.yaml: {str(exc).splitlines()[0]}") from None
    entries = doc.get("entries") if isinstance(doc, dict) else None
    if not isinstance(entries, dict):
        raise ChartError(f"helm repository {repo}: {redact(where)} has no entries", hint="check the repository's url")
    out: Dict[str, List[IndexEntry]] = {}
    for name, versions in entries.items():
        for v in versions or []:
            if not isinstance(v, dict) or not v.get("urls"):
                continue
            out.setdefault(str(name), []).append(
                IndexEntry(str(name), str(v.get("version", "")), [str(u) for u in v["urls"]], str(v["digest"]) if v.get("digest") else None, v.get("type") == "library")
            )
    return out


def _newest(entries: List[IndexEntry]) -> Optional[IndexEntry]:
    good = []
    for e in entries:
        try:
            key = version_key(parse_version(e.version))
        except ValueError:
            continue
        if key[3]:  # stable releases only, as helm pull without --devel
            good.append((key, e))
    return max(good, key=lambda p: p[0])[1] if good else None


def select(index: Dict[str, List[IndexEntry]], name: str, version: Optional[str], *, repo: str) -> IndexEntry:
    """The index entry for chart `name` at `version` (exact, a constraint, or the newest)."""
    entries = index.get(name)
    if not entries:
        raise ChartError(f"helm repository {repo}: no chart {name!r} in its index", hint="check the chart name")
    if not version:
        found = _newest(entries)
    else:
        exact = [e for e in entries if e.version in (version, version.lstrip("v"))]
        found = exact[0] if exact else None
        if found is None and any(c in version for c in "<>=~^*xX|, "):
            matching = []
            for e in entries:
                try:
                    if semver_compare(version, e.version):
                        matching.append(e)
                except ValueError:
                    continue
            found = _newest(matching) or (matching[-1] if matching else None)
    if found is None:
        versions = ", ".join(e.version for e in entries[:10])
        raise ChartError(f"helm repository {repo}: chart {name!r} has no version {version or '(stable)'}; it has {versions}", hint="check the chart version")
    return found


def fetch_archive(http: HttpFetcher, url: str, entry: IndexEntry, *, repo: str) -> bytes:
    where = urljoin(index_url(url), entry.urls[0])
    what = f"helm chart {entry.name}-{entry.version} from {repo}"
    answer = http.get(where, what=what, max_bytes=MAX_ARCHIVE_BYTES)
    if answer.status != 200:
        raise RegistryError(f"{what}: {redact(where)} answered HTTP {answer.status}", status=answer.status, url=redact(where), hint="check the repository")
    if entry.digest:
        got = hashlib.sha256(answer.data).hexdigest()
        if got != entry.digest.replace("sha256:", ""):
            raise IntegrityError(f"{what}: the archive's sha256 is {got}, the index says {entry.digest}", hint="the repository serves a changed archive; retry later or report it")
    return answer.data

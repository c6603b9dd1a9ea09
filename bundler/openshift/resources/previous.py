"""Day 2: the resources an earlier run left in the directory, read back (bounded, refusing files that
are not ours) and merged into this run's, and what changed against them."""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bundler.base.errors import UsageError
from bundler.openshift.resources.model import (
    CatalogInfo, INSTALL_CONFIG_FILE, MAPPING_FILE, ResourcesChanges, SAMPLES_PATCH_FILE,
    _PREVIOUS_FILE_LIMIT, _Plan, _SAFE_LOADER, _parse_reference, _under_registry,
)

log = logging.getLogger(__name__)


# --- day 2: the resources an earlier run left in the directory ----------------------------------------


@dataclass
class _Previous:
    """What the directory already holds, read back from the files this module writes."""

    digest_mirrors: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    tag_mirrors: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    release_mirrors: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    catalogs: dict[str, CatalogInfo] = field(default_factory=dict)
    mapping: set[str] = field(default_factory=set)
    samples: bool = False


def _read_previous(out_dir: Path, *, registry: str) -> _Previous:
    """Read back the cluster resources of earlier runs in `out_dir` (nothing when it does not exist)."""
    previous = _Previous()
    if not out_dir.is_dir():
        return previous
    lists = (
        ("imageDigestMirrorSet-*.yaml", "imageDigestMirrors", previous.digest_mirrors),
        ("imageContentSourcePolicy-*.yaml", "repositoryDigestMirrors", previous.digest_mirrors),
        ("imageTagMirrorSet-*.yaml", "imageTagMirrors", previous.tag_mirrors),
    )
    for pattern, key, target in lists:
        for path in sorted(out_dir.glob(pattern)):
            for document in _load_previous(path):
                spec = document.get("spec") if isinstance(document, dict) else None
                _collect_entries(spec.get(key) if isinstance(spec, dict) else None, target, path=path)
    install_config = out_dir / INSTALL_CONFIG_FILE
    if install_config.is_file():
        for document in _load_previous(install_config):
            sources = document.get("imageDigestSources") if isinstance(document, dict) else None
            _collect_entries(sources, previous.release_mirrors, path=install_config)
    for path in sorted(out_dir.glob("catalogSource-*.yaml")):
        for document in _load_previous(path):
            catalog = _catalog_from(document)
            if catalog is None:
                raise _not_ours(path)
            previous.catalogs[catalog.name] = catalog
    for path in sorted(out_dir.glob("clusterCatalog-*.yaml")):
        for document in _load_previous(path):
            named = _cluster_catalog_from(document)
            if named is None:
                raise _not_ours(path)
            name, ref = named
            catalog = previous.catalogs.get(name)
            if catalog is None:
                continue  # no CatalogSource of that name: the file stays, nothing to carry on
            try:
                mine = _parse_reference(catalog.target, what=f"catalog {name} image").repository
                theirs = _parse_reference(ref, what=f"catalog {name} image")
            except UsageError as error:
                raise _not_ours(path) from error
            if theirs.repository == mine and theirs.digest is not None:
                previous.catalogs[name] = dataclasses.replace(catalog, digest=theirs.digest)
    mapping = out_dir / MAPPING_FILE
    if mapping.is_file():
        text = _read_bounded(mapping).decode("utf-8", "replace")
        previous.mapping.update(line for line in text.splitlines() if "=" in line)
    previous.samples = (out_dir / SAMPLES_PATCH_FILE).is_file()
    for mirrors in (previous.digest_mirrors, previous.tag_mirrors, previous.release_mirrors):
        for source, targets in mirrors.items():
            for mirror in targets:
                if not _under_registry(mirror, registry):
                    raise UsageError(
                        f"{out_dir} holds cluster resources for another mirror ({source} -> {mirror})",
                        hint="write into another --resources-dir, or start a new set there with --resources-fresh",
                    )
    for catalog in previous.catalogs.values():
        try:
            repository = _parse_reference(catalog.target, what=f"catalog {catalog.name} image").repository
        except UsageError as error:
            raise _not_ours(out_dir / f"catalogSource-{catalog.name}.yaml") from error
        if not _under_registry(repository, registry):
            raise UsageError(
                f"{out_dir} holds a CatalogSource for another mirror ({catalog.name}: {catalog.target})",
                hint="write into another --resources-dir, or start a new set there with --resources-fresh",
            )
    return previous


def _read_bounded(path: Path) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read(_PREVIOUS_FILE_LIMIT + 1)
    except OSError as error:
        raise UsageError(f"cannot read the earlier cluster resource {path}: {error.strerror or error}") from error
    if len(data) > _PREVIOUS_FILE_LIMIT:
        raise _not_ours(path)
    return data


def _load_previous(path: Path) -> list[Any]:
    try:
        return [doc for doc in yaml.load_all(_read_bounded(path), Loader=_SAFE_LOADER) if doc is not None]
    except yaml.YAMLError as error:
        raise _not_ours(path) from error


def _collect_entries(entries: Any, into: defaultdict[str, set[str]], *, path: Path) -> None:
    if not isinstance(entries, list):
        raise _not_ours(path)
    for entry in entries:
        source = entry.get("source") if isinstance(entry, dict) else None
        mirrors = entry.get("mirrors") if isinstance(entry, dict) else None
        if not isinstance(source, str) or not isinstance(mirrors, list) or not all(isinstance(m, str) for m in mirrors):
            raise _not_ours(path)
        into[source].update(mirrors)


def _catalog_from(document: Any) -> CatalogInfo | None:
    if not isinstance(document, dict) or document.get("kind") != "CatalogSource":
        return None
    metadata, spec = document.get("metadata"), document.get("spec")
    if not isinstance(metadata, dict) or not isinstance(spec, dict):
        return None
    name, image, display = metadata.get("name"), spec.get("image"), spec.get("displayName", "")
    if not isinstance(name, str) or not isinstance(image, str) or not isinstance(display, str):
        return None
    return CatalogInfo(name=name, source=image, target=image, display_name=display)


def _cluster_catalog_from(document: Any) -> tuple[str, str] | None:
    """(name, image ref) of a ClusterCatalog as `_cluster_catalog` writes it, None for anything else."""
    if not isinstance(document, dict) or document.get("kind") != "ClusterCatalog":
        return None
    metadata, spec = document.get("metadata"), document.get("spec")
    source = spec.get("source") if isinstance(spec, dict) else None
    image = source.get("image") if isinstance(source, dict) else None
    name = metadata.get("name") if isinstance(metadata, dict) else None
    ref = image.get("ref") if isinstance(image, dict) else None
    if not isinstance(name, str) or not isinstance(ref, str):
        return None
    return name, ref


def _not_ours(path: Path) -> UsageError:
    return UsageError(
        f"{path} is not a cluster resource file as ocp-bundler writes it, so the earlier set cannot be carried on",
        hint="move it out of the directory, or start a new set with --resources-fresh",
    )


def _pairs(digest: dict[str, set[str]], tag: dict[str, set[str]], release: dict[str, set[str]]) -> set[tuple[str, str, str]]:
    return {
        (kind, source, mirror)
        for kind, mirrors in (("digest", digest), ("tag", tag), ("release", release))
        for source, targets in mirrors.items()
        for mirror in targets
    }


def _changes(previous: _Previous, plan: _Plan, catalogs: Sequence[CatalogInfo], *, fresh: bool) -> ResourcesChanges:
    old = _pairs(previous.digest_mirrors, previous.tag_mirrors, previous.release_mirrors)
    new = _pairs(plan.digest_mirrors, plan.tag_mirrors, plan.release_mirrors)
    names = {catalog.name: catalog for catalog in catalogs}
    added = tuple(sorted(n for n in names if n not in previous.catalogs))
    updated = tuple(sorted(n for n in names if n in previous.catalogs and _moved(previous.catalogs[n], names[n])))
    kept = [n for n in previous.catalogs if n not in names]
    unchanged = sorted(n for n in names if n in previous.catalogs and n not in updated)
    if not fresh:
        unchanged = sorted(unchanged + kept)
    return ResourcesChanges(
        mirrors_added=len(new - old),
        mirrors_unchanged=len(old) if not fresh else len(new & old),
        mirrors_removed=len(old - new) if fresh else 0,
        catalogs_added=added,
        catalogs_updated=updated,
        catalogs_unchanged=tuple(unchanged),
        catalogs_removed=tuple(sorted(kept)) if fresh else (),
    )


def _moved(before: CatalogInfo, now: CatalogInfo) -> bool:
    """Whether a catalog of the same name now names another image (another target, or a new digest)."""
    if before.target != now.target:
        return True
    return before.digest is not None and now.digest is not None and before.digest != now.digest


def _merge_previous(plan: _Plan, catalogs: list[CatalogInfo], previous: _Previous) -> list[CatalogInfo]:
    """Fold the earlier set into this run's plan; returns every catalog (this run's win on a name)."""
    for mine, theirs in (
        (plan.digest_mirrors, previous.digest_mirrors),
        (plan.tag_mirrors, previous.tag_mirrors),
        (plan.release_mirrors, previous.release_mirrors),
    ):
        for source, targets in theirs.items():
            mine[source].update(targets)
    plan.mapping.update(previous.mapping)
    plan.samples_carried = plan.samples_carried or previous.samples
    names = {catalog.name for catalog in catalogs}
    return catalogs + [catalog for name, catalog in sorted(previous.catalogs.items()) if name not in names]

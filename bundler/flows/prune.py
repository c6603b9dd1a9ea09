"""prune: remove from a mirror the images no kept bundle needs, and only images unpack put there.

The candidates are the tags of the mirror ledger (`bundler.flows.ledger`, written by unpack) that no
`--keep` bundle maps an image to. A candidate is deleted only while the registry still holds the digest
unpack recorded at that tag: a tag someone moved since is left alone. Deletion goes tags first (DELETE by
tag, as Quay and OCI 1.1 registries allow); where a registry deletes manifests by digest only
(docker-registry), the digest is deleted when no kept bundle uses it in that repository and no other tag
there points at it. Then what garbage collection can reclaim: the children of deleted manifest lists that
no kept bundle uses. Blobs are left to the registry's own garbage collection (docker-registry's
`garbage-collect`, Quay's GC workers).

Nothing is deleted unless `apply=True`; the plan is the same either way.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple

from bundler.base.errors import BundlerError, ImageNotFoundError, PartialFailureError, UsageError
from bundler.bundle.manifest import BundleManifest
from bundler.bundle.volumes import load_base_manifest
from bundler.flows.ledger import LedgerEntry, latest_by_tag, optional_path, read_ledger, drop_from_ledger
from bundler.oci.media import is_index
from bundler.flows.unpack import split_registry
from bundler.registry.client import Registries, RegistryClient

log = logging.getLogger(__name__)

__all__ = ["PruneAction", "PruneOptions", "PruneResult", "prune"]

GC_HINT = (
    "blobs are reclaimed by the registry's garbage collection: docker-registry garbage-collect "
    "--delete-untagged CONFIG (registry stopped or read-only); Quay's GC workers do it on their own"
)


@dataclass(frozen=True)
class PruneOptions:
    """`registry` is `host[:port]` (with `prefix` or a `/prefix` suffix, as given to unpack); `keep` the
    bundles (directories or manifest files) whose images stay; `apply=False` only plans."""

    registry: str
    keep: Tuple[Path, ...]
    prefix: str = ""
    ledger: Optional[Path] = None
    apply: bool = False


@dataclass(frozen=True)
class PruneAction:
    """One tag or manifest and what prune does (or would do) with it.

    `action`: `delete-tag`, `delete-manifest` (by digest), `delete-child` (a child of a deleted list),
    `keep` (another tag or a kept bundle still uses the digest: only possible by tag), `skip-moved` (the
    tag now points at other content), `gone` (already absent). `done` tells whether it happened."""

    repository: str
    reference: str
    digest: str
    action: str
    reason: str = ""
    tag: str = ""
    """The ledger tag this action settles (for a child: the tag of its list)."""
    done: bool = False
    error: str = ""

    def to_json(self) -> Dict[str, object]:
        return {
            "repository": self.repository, "reference": self.reference, "digest": self.digest, "tag": self.tag,
            "action": self.action, "reason": self.reason, "done": self.done, "error": self.error or None,
        }


@dataclass(frozen=True)
class PruneResult:
    registry: str
    applied: bool
    kept_tags: int
    actions: Tuple[PruneAction, ...] = ()
    ledger: str = ""

    def count(self, action: str) -> int:
        return sum(1 for a in self.actions if a.action == action)

    @property
    def failed(self) -> Tuple[PruneAction, ...]:
        return tuple(a for a in self.actions if a.error)

    def to_json(self) -> Dict[str, object]:
        return {
            "registry": self.registry, "applied": self.applied, "keptTags": self.kept_tags, "ledger": self.ledger,
            "actions": [a.to_json() for a in self.actions], "gcHint": GC_HINT,
        }


@dataclass
class _Kept:
    tags: Set[Tuple[str, str]] = field(default_factory=set)
    digests: Dict[str, Set[str]] = field(default_factory=dict)  # repository -> top-level digests
    manifests: Set[str] = field(default_factory=set)  # every manifest digest a kept bundle carries


class PrunePartialFailureError(PartialFailureError):
    """Some deletions failed; the rest happened. Carries the result."""

    def __init__(self, message: str, *, result: PruneResult) -> None:
        super().__init__(message, hint="rerun prune: what is gone is not asked again")
        self.result = result


def prune(options: PruneOptions, registries: Registries) -> PruneResult:
    """Plan (and with `apply`, carry out) the removal of what no kept bundle needs."""
    host, prefix = split_registry(options.registry, options.prefix)
    registry_path = host + (f"/{prefix}" if prefix else "")
    if not options.keep:
        raise UsageError("prune needs at least one --keep bundle", hint="name every bundle whose images must stay")
    kept = _kept(options.keep, prefix)
    ledger_path = optional_path(options.ledger, registry_path)
    entries = read_ledger(ledger_path)
    if not entries:
        raise UsageError(
            f"no record of images unpacked into {registry_path} in {ledger_path}",
            hint="prune only removes what unpack pushed from this machine; give the ledger with --ledger",
        )
    client = registries.client(host)
    actions: List[PruneAction] = []
    candidates = [e for e in latest_by_tag(entries) if (e.repository, e.tag) not in kept.tags]
    by_repo: Dict[str, List[LedgerEntry]] = {}
    for entry in candidates:
        by_repo.setdefault(entry.repository, []).append(entry)
    for repo in sorted(by_repo):
        actions.extend(_plan_repository(client, repo, by_repo[repo], kept, apply=options.apply))
    result = PruneResult(
        registry=registry_path, applied=options.apply, kept_tags=len(kept.tags), actions=tuple(actions),
        ledger=str(ledger_path),
    )
    if options.apply:
        settled = ("delete-tag", "delete-manifest")
        removed = {(a.repository, a.tag) for a in actions if (a.done and a.action in settled) or a.action == "gone"}
        drop_from_ledger(ledger_path, [e for e in entries if (e.repository, e.tag) in removed])
        if result.failed:
            raise PrunePartialFailureError(
                f"{len(result.failed)} of {len(actions)} deletions in {registry_path} failed: {result.failed[0].error}",
                result=result,
            )
    return result


def _kept(bundles: Sequence[Path], prefix: str) -> _Kept:
    kept = _Kept()
    for path in bundles:
        manifest: BundleManifest = load_base_manifest(path)
        for image in manifest.images:
            repo = f"{prefix}/{image.target_repository}" if prefix else image.target_repository
            kept.tags.add((repo, image.target_tag))
            kept.digests.setdefault(repo, set()).add(str(image.digest))
            kept.manifests.add(str(image.digest))
        for blob in list(manifest.blobs) + list(manifest.base_blobs):
            kept.manifests.add(str(blob.digest))
    return kept


def _plan_repository(client: RegistryClient, repo: str, entries: List[LedgerEntry], kept: _Kept, *, apply: bool) -> List[PruneAction]:
    actions: List[PruneAction] = []
    live: List[Tuple[LedgerEntry, str]] = []
    for entry in entries:
        head = client.head_manifest(repo, entry.tag)
        if head is None:
            actions.append(PruneAction(repo, entry.tag, entry.digest, "gone", "the tag is no longer there", tag=entry.tag))
        elif head.digest is not None and str(head.digest) != entry.digest:
            actions.append(PruneAction(repo, entry.tag, entry.digest, "skip-moved", f"the tag now points at {head.digest}, not what unpack pushed", tag=entry.tag))
        else:
            live.append((entry, entry.digest))
    if not live:
        return actions
    # Children of lists to delete, read before anything goes.
    children: Dict[str, List[str]] = {}
    for entry, digest in live:
        children[digest] = _children(client, repo, digest)
    dropping = {e.tag for e, _ in live}
    other_tags: Optional[Dict[str, Set[str]]] = None
    for entry, digest in live:
        action = PruneAction(repo, entry.tag, digest, "delete-tag", f"no kept bundle maps an image to {repo}:{entry.tag}", tag=entry.tag)
        if apply:
            action = _delete(client, action, entry.tag)
        if action.action == "delete-tag" and action.error == "unsupported":
            # The registry deletes by digest only: allowed when nothing kept or tagged otherwise uses it.
            if other_tags is None:
                other_tags = _digests_of_other_tags(client, repo, dropping)
            users = sorted(t for t, ds in other_tags.items() if digest in ds)
            if digest in kept.digests.get(repo, set()) or users:
                why = f"{repo}@{digest} is still used by " + (f"tag {users[0]}" if users else "a kept bundle")
                action = replace(action, action="keep", error="", reason=f"this registry deletes by digest only and {why}")
            else:
                action = _delete(client, replace(action, action="delete-manifest", reference=digest, error="", reason=f"the registry deletes by digest only; only tag {entry.tag} held it"), digest)
        actions.append(action)
        if action.action in ("delete-tag", "delete-manifest"):
            for child in children.get(digest, []):
                if child in kept.manifests:
                    continue
                child_action = PruneAction(repo, child, child, "delete-child", f"a child of {repo}:{entry.tag} no kept bundle uses", tag=entry.tag)
                if apply and action.done:
                    child_action = _delete(client, child_action, child)
                actions.append(child_action)
    return actions


def _delete(client: RegistryClient, action: PruneAction, reference: str) -> PruneAction:
    try:
        outcome = client.delete_manifest(action.repository, reference)
    except BundlerError as exc:
        return replace(action, error=str(exc))
    if outcome == "unsupported":
        return replace(action, error="unsupported")
    log.info("pruned %s %s:%s (%s)", action.action, action.repository, reference, outcome)
    return replace(action, done=True)


def _children(client: RegistryClient, repo: str, digest: str) -> List[str]:
    try:
        fetched = client.get_manifest(repo, digest)
    except ImageNotFoundError:
        return []
    if not is_index(fetched.media_type):
        return []
    try:
        document = json.loads(fetched.raw)
    except ValueError:
        return []
    return [str(m.get("digest")) for m in document.get("manifests", []) if isinstance(m, dict) and m.get("digest")]


def _digests_of_other_tags(client: RegistryClient, repo: str, dropping: Set[str]) -> Dict[str, Set[str]]:
    found: Dict[str, Set[str]] = {}
    for tag in client.list_tags(repo):
        if tag in dropping:
            continue
        head = client.head_manifest(repo, tag)
        if head is not None and head.digest is not None:
            found.setdefault(tag, set()).add(str(head.digest))
    return found

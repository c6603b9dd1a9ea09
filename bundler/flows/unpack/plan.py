"""What unpack has to do: the bundle's images as targets in the mirror, which tags already point at the
packed digests (one manifest HEAD each), every blob below the targets still to push (read from the bundle's
manifests), and, for an incremental bundle, proof that the blobs it leaves to its base are in the registry.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, Iterable, List, Mapping, Sequence, Tuple

from bundler.base.errors import BundlerError, IntegrityError, RegistryError, RegistryUnreachableError, UsageError
from bundler.base.progress import Progress
from bundler.bundle.manifest import BundleImage
from bundler.flows.unpack.model import Graph, OpenBundle, Target
from bundler.oci.digest import Digest
from bundler.oci.graph import walk_manifests
from bundler.oci.reference import Reference
from bundler.registry.client import RegistryClient

log = logging.getLogger(__name__)


def make_targets(images: Iterable[BundleImage], *, host: str, prefix: str) -> List[Target]:
    """One target per bundle image (two may share one, with the same digest)."""
    targets: List[Target] = []
    seen: Dict[str, Target] = {}
    for image in images:
        if not image.target_tag or not image.target_repository:
            raise UsageError(f"bundle image {image.source} has no target repository or tag", hint="the bundle is malformed; pack it again")
        repo = f"{prefix}/{image.target_repository}" if prefix else str(image.target_repository)
        text = f"{host}/{repo}:{image.target_tag}"
        reference = Reference.parse(text)
        if reference.registry != host or reference.repository != repo or reference.tag != image.target_tag:
            raise UsageError(f"bundle image {image.source}: target {text} is not a valid image reference")
        digest = image.digest  # checked when the bundle manifest was read
        target = Target(image=image, reference=reference, digest=digest)
        earlier = seen.setdefault(target.text, target)
        if earlier.digest != digest:
            raise UsageError(
                f"two bundle images go to {target.text} with different digests ({earlier.image.source}, {image.source})",
                hint="the bundle is inconsistent; pack it again",
            )
        targets.append(target)
    return targets


def head_threads(count: int, *, workers: int, most: int) -> int:
    """Threads for a batch of HEADs: starting a thread costs about as much as a loopback HEAD."""
    return max(1, min(most, max(workers, count // 8), count))


def check_tags(
    client: RegistryClient,
    targets: Sequence[Target],
    *,
    threads: int,
    explain: Callable[[BundlerError, Target], BundlerError],
    dry_run: bool,
    progress: Progress,
    where: str,
) -> Dict[str, Any]:
    """One manifest HEAD per target tag: its digest, None when absent, or the (explained) error.

    The HEAD asks a token for what comes next (PROTOCOL-NOTES §4): `pull,push` when pushing, so that Quay
    (which grants a `pull`-only token nothing on a repository that does not exist yet, and then answers 401)
    says 404; a dry run asks `pull` only (a `pull,push` token makes Quay create the repository) and takes a
    refusal as "absent"."""

    def head(target: Target) -> Tuple[str, Any]:
        scopes = None if dry_run else (f"repository:{target.repo}:pull,push",)
        try:
            found = client.head_manifest(target.repo, target.tag, scopes=scopes)
        except RegistryUnreachableError:
            raise
        except RegistryError as exc:
            return target.text, None if dry_run else explain(exc, target)
        return target.text, (found.digest if found is not None else None)

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tag-check") as pool:
        current = dict(pool.map(head, targets))
    present = [t for t in targets if current[t.text] == t.digest]
    log.info("%d of %d images already in %s", len(present), len(targets), where)
    for t in present:
        progress.item_done(t.text, "present")
    return current


def walk(bundle: OpenBundle, targets: Sequence[Target], *, workers: int) -> Dict[str, Graph]:
    """Every manifest and blob below each target, from the manifests in the bundle."""

    def one(target: Target) -> Tuple[str, Graph]:
        source = bundle.image_source(target.image)
        graph = Graph()
        top = source.resolve()
        if top.digest != target.digest:
            raise IntegrityError(f"bundle image {target.image.source}: its manifest is {top.digest}, the bundle manifest says {target.digest}")
        for node in walk_manifests(top, source.fetch_manifest, description=f"bundle image {target.image.source}"):
            graph.manifest_bytes += len(node.manifest.raw)
            graph.manifests.append(node.manifest)
            for blob in node.blobs:
                graph.blobs.setdefault(str(blob.digest), blob)
        return target.text, graph

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="walk") as pool:
        return dict(pool.map(one, targets))


def check_base_blobs(
    client: RegistryClient,
    bundle: OpenBundle,
    targets: Sequence[Target],
    graphs: Mapping[str, Graph],
    needed: Iterable[str],
    *,
    workers: int,
    where: str,
    elsewhere: Sequence[Target] = (),
) -> None:
    """An incremental bundle leaves some blobs to its base: each must be in the registry already, in a
    repository that needs it or in one of `elsewhere`'s (images already in place) whose image uses it.

    A blob found is remembered by the client, so repositories lacking it mount it from there."""
    wanted = set(needed)
    if not wanted:
        return
    users: Dict[str, List[Target]] = {}
    for target in targets:
        for digest in graphs[target.text].blobs:
            if digest in wanted:
                users.setdefault(digest, []).append(target)
    if not users:
        return

    holders: Dict[str, List[str]] = {}
    for target in elsewhere:
        graph = graphs.get(target.text)
        for digest in graph.blobs if graph is not None else ():
            if digest in wanted:
                holders.setdefault(digest, []).append(target.repo)

    def find(item: Tuple[str, List[Target]]) -> Tuple[str, bool]:
        digest, using = item
        for repo in dict.fromkeys([*(t.repo for t in using), *holders.get(digest, [])]):
            if client.has_blob(repo, Digest.parse(digest), scopes=(f"repository:{repo}:pull,push",)):
                return digest, True
        return digest, False

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="base-check") as pool:
        missing = sorted(d for d, ok in pool.map(find, sorted(users.items())) if not ok)
    log.info("%d blobs come from the base bundle; %d of them missing in %s", len(users), len(missing), client.host)
    if missing:
        base = bundle.manifest.base_id or "(unknown)"
        lines = [f"{d} (needed by {', '.join(sorted({t.text for t in users[d]}))})" for d in missing]
        raise UsageError(
            f"this incremental bundle needs {len(missing)} blob(s) from its base bundle {base} that "
            f"{where} does not have: " + "; ".join(lines),
            hint=f"unpack the base bundle {base} first (same registry and prefix), then rerun",
        )


def refusals(targets: Sequence[Target], graphs: Mapping[str, Graph], check: Callable[[bytes, str], List[str]]) -> Dict[str, str]:
    """Targets whose manifests the registry is known to refuse (`check` gives the reasons): target text → why."""
    out: Dict[str, str] = {}
    for target in targets:
        reasons = [f"manifest {m.digest} ({m.media_type}): {r}" for m in graphs[target.text].manifests for r in check(m.raw, m.media_type)]
        if reasons:
            out[target.text] = "cannot be stored digest-exact: " + "; ".join(reasons)
    return out

"""The unpack run: verify (once per unchanged bundle), prepare Quay, plan, push, read back, then write the
cluster resources; and how failures become errors (`UnpackPartialFailureError`, `UnpackIntegrityError`,
`ReadBackMismatchError`, or `AuthenticationError` when nothing could be pushed for lack of rights).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple

from bundler.base.errors import AuthenticationError, BundlerError, IntegrityError, RegistryError, UsageError
from bundler.flows.unpack import plan, quay_prep
from bundler.flows.unpack.model import (
    DEFAULT_RESOURCES_DIR,
    PULL_SECRET_FILE,
    REGISTRY_KINDS,
    Graph,
    OpenBundle,
    Outcome,
    ReadBackMismatchError,
    Target,
    UnpackedImage,
    UnpackIntegrityError,
    UnpackOptions,
    UnpackPartialFailureError,
    UnpackResult,
    image_entry,
    known_size,
    size_of,
    split_registry,
)
from bundler.flows.unpack.push import push
from bundler.flows.unpack.readback import ReadBack
from bundler.flows.unpack.resources import write_pull_secret, write_resources
from bundler.flows.unpack.verification import verify_once
from bundler.registry.auth import CredentialStore
from bundler.registry.client import Registries, RegistryClient
from bundler.transfer.copy import CopyStats

log = logging.getLogger(__name__)

#: Where a registry takes an upload in one request (Quay), blobs up to this size are sent without asking first.
UPLOAD_UNCHECKED = 1 << 20


def unpack_bundle(directory: Path, *, options: UnpackOptions) -> UnpackResult:
    """Verify the bundle in `directory`, push every image into `options.registry`, read back, write YAML.

    Raises `IntegrityError` (bundle or read-back, exit 3), `UsageError` (options; an incremental bundle
    whose base is not in the registry, exit 2), `RegistryError` (cannot reach or log in, exit 5),
    `UnpackPartialFailureError` (some images failed, exit 4; a rerun pushes only what is missing).
    """
    directory = Path(directory)
    check_options(options)
    warnings: List[str] = []
    verified = False
    if not options.verify:
        verification = "skipped (--no-verify)"
        message = (
            "bundle verification skipped (--no-verify): volumes and signature were NOT checked; the registry "
            "still checks every blob's digest and the read-back every manifest's"
        )
        log.warning("%s", message)
        warnings.append(message)
    elif options.dry_run:
        verification = "not done (dry run)"
        warnings.append("dry run: the bundle was not verified")
    else:
        verification, verify_warnings = verify_once(directory, options)
        warnings.extend(verify_warnings)
        verified = True
    if options.quay_up and not options.dry_run:
        options, quay_warnings = quay_prep.bring_up_quay(directory, options)
        warnings.extend(quay_warnings)
    from bundler.bundle.volumes import Bundle

    bundle = Bundle.open(directory)
    return Unpacker(bundle, options, verified=verified, verification=verification, warnings=warnings).run()


def unpack_open_bundle(bundle: OpenBundle, *, options: UnpackOptions, verified: bool = False) -> UnpackResult:
    """`unpack_bundle` for a bundle the caller has opened (and verified, when it says `verified`)."""
    check_options(options)
    return Unpacker(bundle, options, verified=verified, verification="by the caller" if verified else "not done", warnings=[]).run()


def check_options(options: UnpackOptions) -> None:
    if options.registry_kind not in REGISTRY_KINDS:
        raise UsageError(f"registry kind {options.registry_kind!r} is not one of {', '.join(REGISTRY_KINDS)}")
    if options.workers < 1 or options.image_workers < 0:
        raise UsageError("workers must be at least 1")
    if options.require_signature and not options.verify:
        raise UsageError("--require-signature cannot be combined with --no-verify")
    if options.registry_kind == "plain" and (options.quay_token or options.quay_up):
        raise UsageError("Quay options were given but --registry-kind is plain", hint="use --registry-kind quay or auto")
    split_registry(options.registry, options.prefix)


class Unpacker:
    """One unpack run over an open bundle."""

    def __init__(self, bundle: OpenBundle, options: UnpackOptions, *, verified: bool, verification: str, warnings: List[str]) -> None:
        self.bundle = bundle
        self.options = options
        self.verified = verified
        self.verification = verification
        self.warnings = warnings
        self.host, self.prefix = split_registry(options.registry, options.prefix)
        self.registry_path = self.host + (f"/{self.prefix}" if self.prefix else "")
        self.workers = max(1, options.workers)
        self.blob_threads = 4 * self.workers
        self.image_threads = 2 * self.workers
        self.started = time.monotonic()
        self.quay: Optional[quay_prep.QuaySide] = None
        self.errors: List[BundlerError] = []

    @property
    def kind(self) -> str:
        return "quay" if self.quay is not None else "plain"

    def explain(self, exc: BundlerError, target: Target) -> BundlerError:
        return quay_prep.explain(exc, target, host=self.host, quay=self.quay)

    def head_threads(self, count: int) -> int:
        return plan.head_threads(count, workers=self.workers, most=self.blob_threads)

    # -- orchestration ----------------------------------------------------------------------------------

    def run(self) -> UnpackResult:
        every = plan.make_targets(self.bundle.manifest.images, host=self.host, prefix=self.prefix)  # one per bundle image
        targets = list({t.text: t for t in reversed(every)}.values())[::-1]  # one per target, first kept
        orgs = tuple(sorted({t.org for t in targets}))
        credentials = quay_prep.OrgCredentials(CredentialStore(self.options.authfile), self.host)
        transport = self.options.transport
        threads = self.blob_threads + (self.options.image_workers or self.image_threads)
        if transport.pool_size < threads:  # one kept-alive connection per thread that may talk at once
            transport = dataclasses.replace(transport, pool_size=threads)
        self.quay = quay_prep.detect_quay(self.options, self.host, credentials, self.warnings)
        if self.quay is not None and transport.tls.ca_file is None and self.quay.data.ca_file is not None:
            transport = dataclasses.replace(transport, tls=transport.tls.with_ca_file(self.quay.data.ca_file))
        registries = Registries(credentials=credentials, options=transport)
        mismatches: List[str] = []
        try:
            if self.quay is not None:
                self.quay.prepare(orgs, credentials, dry_run=self.options.dry_run)
                self.warnings.extend(self.quay.warnings)
            client = registries.client(self.host)
            if self.quay is not None:
                client.use_scheme(self.quay.api.scheme)
            graphs, refused = self._refusals(targets)
            checked = [t for t in targets if t.text not in refused]
            if not self.options.dry_run:
                self._share_tokens(client, credentials, checked)
            # an organisation this run created holds no tags yet: nothing to ask about its targets
            created = set(self.quay.organizations_created) if self.quay is not None else set()
            current: Dict[str, Any] = {t.text: None for t in checked if t.org in created}
            current.update(plan.check_tags(
                client, [t for t in checked if t.org not in created], threads=self.head_threads(len(checked)), explain=self.explain,
                dry_run=self.options.dry_run, progress=self.options.progress, where=self.registry_path,
            ))
            pending = [t for t in checked if not isinstance(current[t.text], BundlerError) and current[t.text] != t.digest]
            needed = {str(d) for d in self.bundle.blobs_needed_from_base()} if pending else set()
            # an incremental bundle's base blobs may sit in repositories of images already in place: walk those too
            to_walk = list(checked) if needed else [t for t in pending if self.options.dry_run and known_size(t) is None]
            graphs.update(plan.walk(self.bundle, [t for t in to_walk if t.text not in graphs], workers=self.workers))
            if self.options.dry_run:
                return self._result(self._dry_images(every, current, refused, graphs), orgs)
            plan.check_base_blobs(client, self.bundle, pending, graphs, needed, workers=self.workers, where=self.registry_path, elsewhere=checked)
            reader = ReadBack(client)
            absent = {t.text for t in pending if current[t.text] is None}
            outcomes = self._push(client, pending, graphs, absent=absent, on_pushed=reader.check)
            mismatches = reader.apply([t for t in pending if outcomes[t.text].status == "pushed"], outcomes)
            for text, why in refused.items():
                current[text] = None
                outcomes[text] = Outcome("refused", CopyStats(), why, RegistryError(why, codes=["MANIFEST_INVALID"]))
            images = self._images(every, current, outcomes, graphs)
        finally:
            registries.close()
            if self.quay is not None:
                self.quay.close()
        result = self._result(images, orgs)
        self._record(targets, result)
        self._raise_for_failures(result, mismatches)
        if self.options.write_resources:
            result = self._write_resources(result, every)
        return result

    def _refusals(self, targets: Sequence[Target]) -> Tuple[Dict[str, Graph], Dict[str, str]]:
        """On Quay, every target's manifests (read from the bundle) checked against what Quay refuses to store
        (`bundler.quay.compat`): the graphs walked, and the refused targets with the reason. Said loudly."""
        if self.quay is None:
            return {}, {}
        from bundler.quay.compat import quay_refusals

        graphs = plan.walk(self.bundle, targets, workers=self.workers)
        refused = plan.refusals(targets, graphs, quay_refusals)
        for text, why in refused.items():
            log.warning("%s: not pushed: Quay %s", text, why)
        return graphs, refused

    def _dry_images(self, every: Sequence[Target], current: Mapping[str, Any], refused: Mapping[str, str], graphs: Mapping[str, Graph]) -> List[UnpackedImage]:
        out: List[UnpackedImage] = []
        for t in every:
            if t.text in refused:
                out.append(image_entry(t, "refused", size=size_of(t, graphs), error=refused[t.text]))
            else:
                out.append(image_entry(t, "present" if current[t.text] == t.digest else "would-push", size=size_of(t, graphs)))
        return out

    def _share_tokens(self, client: RegistryClient, credentials: CredentialStore, targets: Sequence[Target]) -> None:
        """One token per organisation and set of credentials (Quay robots are per organisation), learnt with
        one API check instead of a 401 on each first request; Quay also takes a whole upload in one POST."""
        groups: Dict[Tuple[str, str], List[str]] = {}
        for t in targets:
            creds = credentials.lookup(self.host, t.repo)
            groups.setdefault((t.org, creds.username if creds else ""), []).append(t.repo)
        client.share_tokens(groups.values())
        client.learn_challenge()
        if self.quay is not None:
            client.monolithic_post = True

    def _push(
        self, client: RegistryClient, targets: Sequence[Target], graphs: Mapping[str, Graph], *, absent: Set[str], on_pushed: Callable[[Target], None]
    ) -> Dict[str, Outcome]:
        return push(
            client, self.bundle, targets, graphs,
            workers=self.workers, blob_threads=self.blob_threads, image_workers=self.options.image_workers or self.image_threads,
            same_org_first=self.kind == "quay", upload_unchecked=UPLOAD_UNCHECKED if client.monolithic_post else 0,
            progress=self.options.progress, explain=self.explain, absent=absent, on_pushed=on_pushed,
        )

    # -- errors -------------------------------------------------------------------------------------------------

    def _raise_for_failures(self, result: UnpackResult, mismatches: Sequence[str]) -> None:
        if mismatches:
            raise ReadBackMismatchError(
                f"{len(mismatches)} image(s) read back with another digest than the signed bundle manifest's: " + "; ".join(mismatches),
                result=result,
                hint="something else writes these tags or the registry alters manifests; investigate, then rerun to push them again",
            )
        failed = [i for i in result.images if i.status in ("failed", "refused")]
        if not failed:
            return
        lines = _grouped(failed)
        errors = self.errors
        broken = [str(e) for e in errors if isinstance(e, IntegrityError)]
        if broken:
            others = len(failed) - len(broken)
            raise UnpackIntegrityError(
                f"{len(broken)} image(s) could not be pushed because their content is not what the bundle says: " + "; ".join(broken)
                + (f" ({others} more failed for other reasons)" if others else ""),
                result=result,
                hint="run ocp-bundler verify on the bundle; copy the damaged volumes again, then rerun",
            )
        if len(failed) == len(result.images) and errors and all(isinstance(e, AuthenticationError) for e in errors):
            # nothing could be pushed, all for lack of rights: that is a registry/auth failure (exit 5)
            distinct = list(dict.fromkeys(str(e) for e in errors))
            first = errors[0]
            assert isinstance(first, AuthenticationError)
            raise AuthenticationError(
                "no image could be pushed: " + "; ".join(distinct[:5]) + (f"; … and {len(distinct) - 5} more" if len(distinct) > 5 else ""),
                status=first.status,
                codes=first.codes,
                url=first.url,
            )
        hint = "everything else is in the registry; fix the cause and rerun the same command: it pushes only what is missing"
        if any(i.status == "refused" for i in failed):
            hint = (
                "everything else is in the registry; what Quay refuses cannot be mirrored into it unchanged: "
                "mirror those images into another registry, or have them rebuilt with gzip layers or as OCI images"
            )
        raise UnpackPartialFailureError(f"{len(failed)} of {len(result.images)} images failed: " + "; ".join(lines), result=result, failures=lines, hint=hint)

    # -- results ------------------------------------------------------------------------------------------------

    def _images(self, targets: Sequence[Target], current: Mapping[str, Any], outcomes: Mapping[str, Outcome], graphs: Mapping[str, Graph]) -> List[UnpackedImage]:
        """One entry per bundle image; an image sharing its target with an earlier one shares its status
        (its transfer counts are the earlier one's, reported once)."""
        images: List[UnpackedImage] = []
        seen: Set[str] = set()
        for t in targets:
            first = t.text not in seen
            seen.add(t.text)
            found = current[t.text]
            if isinstance(found, BundlerError):
                if first:
                    self.errors.append(found)
                images.append(image_entry(t, "failed", size=size_of(t, graphs), error=str(found)))
            elif found == t.digest:
                images.append(image_entry(t, "present", size=size_of(t, graphs)))
            else:
                outcome = outcomes[t.text]
                if outcome.exception is not None and first:
                    self.errors.append(outcome.exception)
                stats = outcome.stats if first else CopyStats()
                images.append(image_entry(t, outcome.status, size=size_of(t, graphs), stats=stats, error=outcome.error))
        return images

    def _result(self, images: Sequence[UnpackedImage], orgs: Tuple[str, ...]) -> UnpackResult:
        return UnpackResult(
            bundle_id=str(self.bundle.manifest.id),
            base_id=self.bundle.manifest.base_id,
            registry=self.registry_path,
            registry_kind=self.kind,
            dry_run=self.options.dry_run,
            verified=self.verified,
            verification=self.verification,
            images=tuple(images),
            organizations=orgs,
            organizations_created=tuple(self.quay.organizations_created if self.quay else ()),
            organizations_to_create=tuple(self.quay.organizations_to_create if self.quay else ()),
            warnings=tuple(self.warnings),
            seconds=time.monotonic() - self.started,
        )

    def _record(self, targets: Sequence[Target], result: UnpackResult) -> None:
        """Write the tags now in place into the mirror ledger, so `prune` knows what unpack put there."""
        from bundler.flows.ledger import LedgerEntry, optional_path, record

        done = {image.target for image in result.images if image.status in ("pushed", "present")}
        entries = [
            LedgerEntry(repository=t.repo, tag=t.tag, digest=str(t.digest), bundle=result.bundle_id)
            for t in targets
            if t.text in done
        ]
        record(optional_path(self.options.ledger, self.registry_path), entries)

    def _write_resources(self, result: UnpackResult, targets: Sequence[Target]) -> UnpackResult:
        out_dir = Path(self.options.resources_dir or DEFAULT_RESOURCES_DIR)
        written = write_resources(self.bundle, targets, registry_path=self.registry_path, out_dir=out_dir, icsp=self.options.icsp, fresh=self.options.resources_fresh)
        pull_secret: Optional[Path] = None
        warnings = result.warnings + written.warnings
        if self.quay is not None and self.quay.readers:
            pull_secret, missing = write_pull_secret(out_dir / PULL_SECRET_FILE, self.host, targets, self.quay.readers)
            if missing:
                warnings += (f"no read-only robot for organisation(s) {', '.join(missing)}: add pull credentials for them to the cluster's pull secret (rerun with --quay-token)",)
        return dataclasses.replace(
            result,
            resources_dir=out_dir,
            pull_secret_file=pull_secret,
            resource_files=written.files,
            resource_changes=written.changes,
            warnings=warnings,
            seconds=time.monotonic() - self.started,
        )


def _grouped(failed: Sequence[UnpackedImage]) -> List[str]:
    """One line per distinct reason (an organisation's refusal is said once, with the images it concerns)."""
    by_reason: Dict[str, List[str]] = {}
    for image in failed:
        by_reason.setdefault(str(image.error), []).append(image.target)
    lines = []
    for reason, targets in by_reason.items():
        if len(targets) == 1:
            lines.append(f"{targets[0]}: {reason}")
        else:
            lines.append(f"{reason} ({len(targets)} images: {', '.join(targets[:3])}{', …' if len(targets) > 3 else ''})")
    return lines

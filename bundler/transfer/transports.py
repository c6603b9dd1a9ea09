"""Where images come from and go to: a registry repository or an OCI layout, behind one small interface.

`ImageSource` and `ImageSink` are what the copy engine needs, nothing more (the containers/image idea:
differences between backends are capability answers, never type switches in the engine). Obligations:
blobs are put before the manifest that needs them, child manifests before their list; a sink makes a
blob visible only when it is complete and verified.

`parse_location` reads the command-line forms `docker://REF` and `oci:DIR[:REF|@DIGEST]`; `parse_layout_source`
reads an image-set config's `oci://DIR[:REF|@DIGEST]` (oc-mirror's scheme, skopeo's image selection), and
`select_layout_image` is the one rule for which image of a layout that names (refusing an ambiguous layout). `registry_source` is how
every pull opens a registry image: through registries.conf (`Registries.conf`), so a `location` rewrite
applies, mirrors are tried first where they apply, and a blocked registry is refused.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager, Iterator, List, Optional, Protocol, Union

from bundler.oci.digest import Digest, Readable
from bundler.base.errors import BundlerError, DigestMismatchError, ImageNotFoundError, InvalidReferenceError, UsageError
from bundler.layout.store import Layout
from bundler.oci.media import REF_NAME, Descriptor, detect_media_type
from bundler.oci.reference import Reference
from bundler.registry.client import FetchedManifest, ManifestHead, RegistryClient, Registries
from bundler.registry.registries_conf import PullSource

log = logging.getLogger(__name__)

Opener = Callable[[int], ContextManager[Readable]]


class ImageSource(Protocol):
    description: str

    def resolve(self) -> FetchedManifest:
        """The top-level manifest this source names (tag or digest), raw."""

    def fetch_manifest(self, descriptor: Descriptor) -> FetchedManifest:
        """A child manifest, by digest; verified."""

    def open_blob(self, descriptor: Descriptor, offset: int) -> ContextManager[Readable]:
        """The blob's bytes from `offset`."""


class ImageSink(Protocol):
    description: str
    blob_scope: str
    """Two sinks with the same scope share blobs (one layout, or one registry repository)."""

    def has_blob(self, descriptor: Descriptor) -> bool: ...

    def put_blob(self, descriptor: Descriptor, opener: Opener, on_bytes: Optional[Callable[[int], None]]) -> str:
        """Store a blob; returns "copied" or "mounted"."""

    def has_manifest(self, digest: Digest) -> bool:
        """Whether the manifest (and so, by bottom-up order, everything below it) is present."""

    def put_manifest(self, manifest: FetchedManifest, *, top: bool) -> None:
        """Store a manifest's raw bytes; `top` ones get this sink's tag / ref name."""

    def top_is_current(self, manifest: FetchedManifest) -> bool:
        """Whether this sink's tag / ref name already points at `manifest`."""


class RegistryRepository:
    """A repository in a registry, as a source (pull) or a sink (push)."""

    def __init__(self, client: RegistryClient, reference: Reference, *, tag_must_agree: bool = False) -> None:
        self.client = client
        self.reference = reference
        #: for a source reference someone wrote as `repo:tag@digest`: check the tag still names the digest
        self.tag_must_agree = tag_must_agree
        self.repo = reference.repository
        self.description = str(reference)
        self.blob_scope = f"{client.host}/{self.repo}"

    # source
    def resolve(self) -> FetchedManifest:
        ref = self.reference
        if ref.tag and ref.digest is not None and self.tag_must_agree:
            self._check_tag_agrees(ref.tag, ref.digest)
        return self.client.get_manifest(self.repo, ref.identifier)

    def _check_tag_agrees(self, tag: str, digest: Digest) -> None:
        """`repo:tag@digest`: the digest is what is copied and the tag what it is called in the mirror, so a
        tag that names other content at the source would make the mirror's tag lie. Refused; a tag the
        source no longer has is only warned about (the digest still says exactly what to copy).

        Only for references a person wrote (`copy`, `additionalImages`, `registryImages`): references
        taken from catalogs and release payloads are pinned by their publisher and taken by digest, as
        oc-mirror does (their tags move upstream, and checking each would cost a request per image)."""
        head = self.client.head_manifest(self.repo, tag)
        if head is None:
            log.warning("%s: the source has no tag %s any more; copying the pinned digest", self.description, tag)
            return
        current = head.digest or self.client.get_manifest(self.repo, tag).digest
        if current != digest:
            raise UsageError(
                f"{self.description}: tag {tag} is {current} at the source, not the pinned {digest}",
                hint=f"drop the tag to copy by digest, or pin {tag}'s current digest",
            )

    def fetch_manifest(self, descriptor: Descriptor) -> FetchedManifest:
        return self.client.get_manifest(self.repo, str(descriptor.digest))

    def open_blob(self, descriptor: Descriptor, offset: int) -> ContextManager[Readable]:
        return self.client.open_blob(self.repo, descriptor.digest, offset)

    # sink
    def has_blob(self, descriptor: Descriptor) -> bool:
        return self.client.has_blob(self.repo, descriptor.digest, scopes=(f"repository:{self.repo}:pull,push",))

    def put_blob(self, descriptor: Descriptor, opener: Opener, on_bytes: Optional[Callable[[int], None]]) -> str:
        elsewhere = self.client.known_blobs.get(str(descriptor.digest))
        mount_from = elsewhere if elsewhere and elsewhere != self.repo else None
        how = self.client.upload_blob(self.repo, descriptor, opener, mount_from=mount_from, on_bytes=on_bytes)
        return "copied" if how == "uploaded" else how

    def has_manifest(self, digest: Digest) -> bool:
        head = self.client.head_manifest(self.repo, str(digest), scopes=(f"repository:{self.repo}:pull,push",))
        return head is not None

    def _tag(self) -> Optional[str]:
        return self.reference.tag

    def put_manifest(self, manifest: FetchedManifest, *, top: bool) -> None:
        tag = self._tag()
        ref = tag if top and tag else str(manifest.digest)
        self.client.put_manifest(self.repo, ref, manifest.raw, manifest.media_type)

    def top_is_current(self, manifest: FetchedManifest) -> bool:
        tag = self._tag()
        if not tag:
            return True
        head = self.client.head_manifest(self.repo, tag, scopes=(f"repository:{self.repo}:pull,push",))
        return head is not None and head.digest == manifest.digest


class MirroredRepository:
    """A registry image pulled from the first of its pull sources (registries.conf mirrors in order, then the
    registry itself) that has its manifest; manifests and blobs then all come from that one source."""

    def __init__(self, registries: Registries, reference: Reference, sources: List[PullSource], *, tag_must_agree: bool = False) -> None:
        self.reference = reference
        self.description = str(reference)
        self._candidates = [
            RegistryRepository(registries.client(s.reference.registry), s.reference, tag_must_agree=tag_must_agree) for s in sources
        ]
        self._chosen: Optional[RegistryRepository] = None
        self._top: Optional[FetchedManifest] = None

    def resolve(self) -> FetchedManifest:
        if self._chosen is not None and self._top is not None:
            return self._top
        last = len(self._candidates) - 1
        for i, candidate in enumerate(self._candidates):
            try:
                top = candidate.resolve()
            except BundlerError as exc:
                if i == last:
                    raise
                log.info("mirror %s does not serve %s (%s); trying the next source", candidate.description, self.reference, exc)
                continue
            if i < last:
                log.info("%s: pulled from mirror %s", self.reference, candidate.description)
            self._chosen, self._top = candidate, top
            return top
        raise AssertionError("no pull source")  # pragma: no cover - the registry itself is always last

    def _source(self) -> RegistryRepository:
        if self._chosen is None:
            self.resolve()
        assert self._chosen is not None
        return self._chosen

    def fetch_manifest(self, descriptor: Descriptor) -> FetchedManifest:
        return self._source().fetch_manifest(descriptor)

    def open_blob(self, descriptor: Descriptor, offset: int) -> ContextManager[Readable]:
        return self._source().open_blob(descriptor, offset)


def registry_source(registries: Registries, reference: Reference, *, tag_must_agree: bool = False) -> Union[RegistryRepository, MirroredRepository]:
    """The image `reference` names, to pull: through registries.conf (rewrites, mirrors, blocked entries).
    `tag_must_agree`: see `RegistryRepository`."""
    sources = registries.conf.pull_sources(reference)
    if len(sources) == 1:
        ref = sources[0].reference
        return RegistryRepository(registries.client(ref.registry), ref, tag_must_agree=tag_must_agree)
    return MirroredRepository(registries, reference, sources, tag_must_agree=tag_must_agree)


def registry_head(registries: Registries, reference: Reference) -> Optional[ManifestHead]:
    """HEAD of the manifest `reference` names, asked of its pull sources in order (see `registry_source`);
    None when no source has it."""
    sources = registries.conf.pull_sources(reference)
    for i, source in enumerate(sources):
        ref = source.reference
        try:
            head = registries.client(ref.registry).head_manifest(ref.repository, ref.identifier)
        except BundlerError as exc:
            if i == len(sources) - 1:
                raise
            log.info("mirror %s: %s; trying the next source", ref, exc)
            continue
        if head is not None:
            return head
    return None


def pull_location(registries: Registries, reference: Reference) -> Reference:
    """Where `reference` is really pulled from (see `registry_source`): the first pull source that has its
    manifest, for lookups next to the image (signature tags, referrers). Without mirrors, no request."""
    sources = registries.conf.pull_sources(reference)
    for source in sources[:-1]:
        ref = source.reference
        try:
            if registries.client(ref.registry).head_manifest(ref.repository, ref.identifier) is not None:
                return ref
        except BundlerError as exc:
            log.info("mirror %s: %s; trying the next source", ref, exc)
    return sources[-1].reference


def select_layout_image(layout: Layout, *, ref_name: Optional[str] = None, digest: Optional[Digest] = None, what: str = "") -> Descriptor:
    """The image of `layout` that a source names: the `index.json` entry whose
    `org.opencontainers.image.ref.name` is `ref_name`, or whose digest is `digest`, or else the only entry.
    A layout with no image, a name or digest it does not hold, and several images with nothing to choose
    among them are usage errors that list what the layout holds and say how to name one."""
    where = what or f"oci:{layout.root}"
    entries = layout.entries()
    names = [e.annotations.get(REF_NAME) for e in entries]
    listed = ", ".join(f"{n or '(no name)'} ({e.digest})" for n, e in list(zip(names, entries))[:5]) + (", …" if len(entries) > 5 else "")
    if not entries:
        raise UsageError(f"{where}: the OCI layout {layout.root} holds no image", hint="copy the image into it first (skopeo copy … oci:DIR:TAG)")
    if ref_name is not None:
        found = [e for n, e in zip(names, entries) if n == ref_name]
        if not found:
            raise ImageNotFoundError(f"{where}: the OCI layout {layout.root} has no image named {ref_name!r}; it holds {listed}",
                                     hint="name one of those after the directory (DIR:NAME)")
        return found[0]
    if digest is not None:
        found = [e for e in entries if e.digest == digest]
        if not found:
            raise ImageNotFoundError(f"{where}: the OCI layout {layout.root} has no image {digest}; it holds {listed}")
        return found[0]
    if len(entries) > 1:
        raise UsageError(
            f"{where}: the OCI layout {layout.root} holds {len(entries)} images, not one: {listed}",
            hint="name one by its org.opencontainers.image.ref.name (DIR:NAME) or its digest (DIR@sha256:…), or give the image a layout of its own",
        )
    return entries[0]


class LayoutImage:
    """One named image in an OCI layout (`org.opencontainers.image.ref.name`), as a source or a sink.

    As a source, `ref_name` None means the entry with `digest`, or the layout's only image
    (`select_layout_image`)."""

    def __init__(self, layout: Layout, ref_name: Optional[str], *, digest: Optional[Digest] = None) -> None:
        self.layout = layout
        self.ref_name = ref_name
        self.digest = digest
        self.description = f"oci:{layout.root}" + (f":{ref_name}" if ref_name else f"@{digest}" if digest else "")
        self.blob_scope = f"oci:{layout.root.resolve()}"

    # source
    def resolve(self) -> FetchedManifest:
        if self.ref_name is None:
            d = select_layout_image(self.layout, digest=self.digest, what=self.description)
        else:
            d = self.layout.resolve(self.ref_name)
        return self.fetch_manifest(d)

    def fetch_manifest(self, descriptor: Descriptor) -> FetchedManifest:
        raw = self.layout.read_blob(descriptor.digest)
        return FetchedManifest(raw, detect_media_type(raw, descriptor.media_type or None), descriptor.digest)

    @contextlib.contextmanager
    def open_blob(self, descriptor: Descriptor, offset: int) -> Iterator[Readable]:
        with self.layout.open_blob(descriptor.digest, offset) as f:
            yield f

    # sink
    def has_blob(self, descriptor: Descriptor) -> bool:
        return self.layout.has_blob(descriptor.digest, descriptor.size)

    def put_blob(self, descriptor: Descriptor, opener: Opener, on_bytes: Optional[Callable[[int], None]]) -> str:
        self.layout.write_blob(descriptor, opener, on_bytes=on_bytes)
        return "copied"

    def has_manifest(self, digest: Digest) -> bool:
        return self.layout.has_blob(digest)

    def put_manifest(self, manifest: FetchedManifest, *, top: bool) -> None:
        self.layout.put_bytes(manifest.raw, manifest.digest)
        if top and self.ref_name:
            self.layout.add_refs([(self.ref_name, _descriptor(manifest))])

    def top_is_current(self, manifest: FetchedManifest) -> bool:
        if not self.ref_name:
            return True
        try:
            return self.layout.resolve(self.ref_name).digest == manifest.digest
        except UsageError:
            return False


def _descriptor(manifest: FetchedManifest) -> Descriptor:
    return Descriptor(media_type=manifest.media_type, digest=manifest.digest, size=len(manifest.raw))


@dataclass(frozen=True)
class Location:
    """A parsed command-line image location."""

    kind: str  # "docker" or "oci"
    reference: Optional[Reference] = None
    directory: Optional[Path] = None
    ref_name: Optional[str] = None
    digest: Optional[Digest] = None
    """For `oci:DIR@DIGEST`: the layout's image with this digest."""

    def __str__(self) -> str:
        if self.kind == "docker":
            return f"docker://{self.reference}"
        return f"oci:{self.directory}" + (f":{self.ref_name}" if self.ref_name else f"@{self.digest}" if self.digest else "")


#: oc-mirror's scheme for an image in a local OCI layout, in image-set configs.
OCI_SCHEME = "oci://"


def parse_location(text: str) -> Location:
    if text.startswith("docker://"):
        return Location("docker", reference=Reference.parse(text[len("docker://") :]))
    if text.startswith("oci:"):
        return _layout_location(text, text[len("oci:") :], "oci:DIR[:REF|@sha256:DIGEST]")
    raise UsageError(f"invalid location {text!r}", hint="expected docker://HOST/REPO[:TAG|@DIGEST] or oci:DIR[:REF]")


def parse_layout_source(text: str) -> Location:
    """An image-set config's `oci://DIR` (also `oci:DIR`), optionally with `:REF` (the image's
    `org.opencontainers.image.ref.name`, skopeo's `oci:DIR:REF`) or `@sha256:<hex>` (its digest). The directory
    ends at the first `:` or `@`, as in skopeo."""
    if not text.startswith("oci:"):
        raise UsageError(f"{text!r} is not an oci:// source", hint="expected oci:///path/to/layout[:REF]")
    rest = text[len(OCI_SCHEME) :] if text.startswith(OCI_SCHEME) else text[len("oci:") :]
    return _layout_location(text, rest, "oci:///path/to/layout[:REF|@sha256:DIGEST]")


def _layout_location(text: str, rest: str, form: str) -> Location:
    at = rest.find("@")
    colon = rest.find(":")
    if at >= 0 and (colon < 0 or at < colon):
        directory, digest_text = rest[:at], rest[at + 1 :]
        try:
            digest: Optional[Digest] = Digest.parse(digest_text)
        except InvalidReferenceError:
            raise UsageError(f"invalid location {text!r}: {digest_text!r} is not a digest", hint=f"expected {form}") from None
        ref_name: Optional[str] = None
    else:
        directory, _, ref_name = rest.partition(":")
        digest, ref_name = None, ref_name or None
    if not directory or any(c.isspace() for c in rest):
        raise UsageError(f"invalid location {text!r}", hint=f"expected {form}")
    return Location("oci", directory=Path(directory), ref_name=ref_name, digest=digest)


def open_source(loc: Location, registries: Registries) -> Union[RegistryRepository, MirroredRepository, LayoutImage]:
    if loc.kind == "docker":
        assert loc.reference is not None
        return registry_source(registries, loc.reference, tag_must_agree=True)
    assert loc.directory is not None
    return LayoutImage(Layout(loc.directory, create=False), loc.ref_name, digest=loc.digest)


def open_sink(loc: Location, registries: Registries, *, source: Location) -> Union[RegistryRepository, LayoutImage]:
    """A sink for `loc`; names default from the source (its tag for registries, its reference for layouts)."""
    if loc.kind == "docker":
        assert loc.reference is not None
        ref = loc.reference
        if ref.tag is None and ref.digest is None:
            src_tag = source.reference.tag if source.reference is not None else None
            src_tag = src_tag or (source.ref_name.rsplit(":", 1)[-1] if source.ref_name and ":" in source.ref_name.split("/")[-1] else None)
            ref = ref.with_tag(src_tag or "latest")
        registries.conf.check_not_blocked(ref)
        return RegistryRepository(registries.client(ref.registry), ref)
    assert loc.directory is not None
    name = loc.ref_name or (str(source.reference) if source.reference is not None else source.ref_name)
    return LayoutImage(Layout(loc.directory, create=True), name)


def check_pinned(loc: Location, manifest: FetchedManifest) -> None:
    """A destination pinned by digest must receive exactly that digest."""
    if loc.reference is not None and loc.reference.digest is not None and loc.reference.digest != manifest.digest:
        raise DigestMismatchError(f"{loc} names digest {loc.reference.digest} but the source is {manifest.digest}")

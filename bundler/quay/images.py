"""The images a Quay bring-up runs (Quay, PostgreSQL, Redis), from a bundle or any OCI layout into podman.

Owns finding the registry images in a bundle (`images_from_bundle`, `registry_role`) and loading them
(`load_image`, `ensure_images`). An `ImageSource` is copied with `Copier` into a temporary OCI layout holding
only the host platform's image (picked from a list), written as an `oci-archive` tar and `podman load`ed, then
tagged with a stable local name. The archive keeps the manifest bytes and the config, so podman's image ID is
the config digest and its recorded digest is the manifest's digest, for OCI- and Docker-typed images alike
(podman 4.3.1 / containers/image 5.23 reads a Docker schema-2 manifest inside an OCI layout; what it cannot
handle is skopeo writing Docker *lists* into `oci:`, which we never ask of it: lists are resolved here). An
image podman already has (same ID) is not loaded again.
"""

from __future__ import annotations

import contextlib
import logging
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from bundler.base.errors import IntegrityError, UsageError
from bundler.layout.store import Layout
from bundler.oci.media import Descriptor, is_index, parse_manifest
from bundler.oci.platform import Platform, choose_child, host_platform
from bundler.quay.podman import Podman, PodmanError
from bundler.registry.client import FetchedManifest
from bundler.transfer.copy import Copier, CopyOptions
from bundler.transfer.transports import ImageSource, LayoutImage

log = logging.getLogger(__name__)

ROLES = ("postgres", "redis", "quay")
LOCAL_REPOSITORY = "localhost/ocp-bundler"

Step = Callable[[str], None]
"""Told, in a few words, what a bring-up step is doing now."""


def no_step(message: str) -> None:
    pass


@dataclass(frozen=True)
class RegistryImage:
    """One image the registry needs: its role, where to read it, and the local name to give it."""

    role: str  # "quay", "postgres" or "redis"
    source: ImageSource
    local_name: str


@dataclass(frozen=True)
class LoadedImage:
    role: str
    name: str
    image_id: str
    manifest_digest: str
    loaded: bool
    """False when podman already had the image (same ID) and nothing was loaded."""

    def to_json(self) -> Dict[str, Any]:
        return {"role": self.role, "name": self.name, "id": self.image_id, "manifestDigest": self.manifest_digest, "loaded": self.loaded}


def _pick_child(source: ImageSource, top: FetchedManifest, want: Platform) -> FetchedManifest:
    parsed = parse_manifest(top.raw, top.media_type)
    available = [str(child.platform) for child in parsed.children if child.platform is not None]
    fallback = choose_child(parsed.children, want)
    if fallback is None:
        raise UsageError(
            f"{source.description} has no image for {want} (it has: {', '.join(available) or 'no platforms'})",
            hint="pack the registry images for this machine's architecture",
        )
    chosen = source.fetch_manifest(fallback)
    if chosen.digest != fallback.digest:
        raise IntegrityError(f"{source.description}: child {fallback.digest} arrived as {chosen.digest}")
    if is_index(chosen.media_type):
        return _pick_child(source, chosen, want)
    return chosen


class _ChosenImage:
    """An `ImageSource` whose top manifest is one chosen child of another source's list."""

    def __init__(self, source: ImageSource, manifest: FetchedManifest) -> None:
        self._source = source
        self._manifest = manifest
        self.description = source.description

    def resolve(self) -> FetchedManifest:
        return self._manifest

    def fetch_manifest(self, descriptor: Descriptor) -> FetchedManifest:
        return self._source.fetch_manifest(descriptor)

    def open_blob(self, descriptor: Descriptor, offset: int) -> Any:
        return self._source.open_blob(descriptor, offset)


def write_oci_archive(layout_root: Path, archive: Path, *, consume: bool = False) -> None:
    """Tar an OCI layout (`oci-layout`, `index.json`, `blobs/`) as podman's `oci-archive:` reads it.
    With `consume`, each blob is deleted once it is in the archive (peak disk use ≈ one copy)."""
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(str(layout_root / "oci-layout"), arcname="oci-layout")
        tar.add(str(layout_root / "index.json"), arcname="index.json")
        blobs = layout_root / "blobs"
        tar.add(str(blobs), arcname="blobs", recursive=False)
        for alg_dir in sorted(p for p in blobs.iterdir() if p.is_dir()):
            tar.add(str(alg_dir), arcname=f"blobs/{alg_dir.name}", recursive=False)
            for blob in sorted(alg_dir.iterdir()):
                if blob.name.startswith("."):
                    continue
                tar.add(str(blob), arcname=f"blobs/{alg_dir.name}/{blob.name}")
                if consume:
                    blob.unlink()


def load_image(
    podman: Podman,
    image: RegistryImage,
    *,
    work_dir: Path,
    platform: Optional[Platform] = None,
    copier: Optional[Copier] = None,
) -> LoadedImage:
    """Make `image` available in podman under `image.local_name`; load it only when podman lacks its ID."""
    source = image.source
    top = source.resolve()
    manifest = _pick_child(source, top, platform or host_platform()) if is_index(top.media_type) else top
    parsed = parse_manifest(manifest.raw, manifest.media_type)
    if parsed.config is None:
        raise IntegrityError(f"{source.description}: the image has no config")
    image_id = parsed.config.digest.encoded
    loaded = False
    if not podman.image_exists(image_id):
        work_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f"load-{image.role}-", dir=work_dir) as tmp:
            layout = Layout(Path(tmp) / "layout")
            sink = LayoutImage(layout, image.local_name)
            own = copier is None
            c = copier or Copier(CopyOptions(workers=4))
            try:
                c.copy(_ChosenImage(source, manifest), sink, expected=manifest.digest)
            finally:
                if own:
                    c.close()
            archive = Path(tmp) / "image.oci.tar"
            write_oci_archive(layout.root, archive, consume=True)
            log.info("loading %s (%s) into podman", image.local_name, manifest.digest)
            podman.load(archive)
        if not podman.image_exists(image_id):
            raise PodmanError(
                f"podman loaded {source.description} but has no image with ID {image_id[:12]}",
                hint="the image config was changed on the way; check the podman version (4.3 or newer is needed)",
            )
        loaded = True
    podman.tag(image_id, image.local_name)
    return LoadedImage(image.role, image.local_name, image_id, str(manifest.digest), loaded)


def registry_role(name: str, annotations: Mapping[str, str] = {}) -> Optional[str]:
    """Which part of the registry an image is: an explicit `io.ocp-bundler.registry.client-role` annotation, or
    its repository name (…quay…, …postgres…, …redis…)."""
    explicit = annotations.get("io.ocp-bundler.registry.client-role")
    if explicit in ROLES:
        return explicit
    repo = name.split("@", 1)[0].lower()
    last = repo.rsplit("/", 1)[-1].split(":", 1)[0]
    for role, words in (("postgres", ("postgres",)), ("redis", ("redis",)), ("quay", ("quay",))):
        if any(w in last for w in words):
            return role
    return None


def images_from_bundle(bundle_dir: Path) -> List[RegistryImage]:
    """The registry images (kind `registry`) of a bundle, one per role, with their local names."""
    try:
        from bundler.bundle.volumes import Bundle
    except ImportError:
        raise UsageError("this ocp-bundler build cannot read bundles yet", hint="update ocp-bundler") from None
    bundle = Bundle.open(bundle_dir)
    found: Dict[str, RegistryImage] = {}
    for img in bundle.manifest.images:
        if img.kind != "registry":
            continue
        name = img.target_repository or img.source
        role = registry_role(name, img.annotations) or registry_role(img.source, img.annotations)
        if role is None or role in found:
            continue
        tag = img.target_tag or "latest"
        found[role] = RegistryImage(role, bundle.image_source(img), f"{LOCAL_REPOSITORY}/{role}:{tag}")
    missing = [r for r in ROLES if r not in found]
    if missing:
        raise UsageError(
            f"the bundle in {bundle_dir} does not carry the {', '.join(missing)} image(s) needed to run Quay",
            hint="pack with registry images enabled (registryImages: {enabled: true} in the image-set config)",
        )
    return [found[r] for r in ROLES]


def ensure_images(pm: Podman, images: Sequence[RegistryImage], state: Mapping[str, Any], work_dir: Path, on_step: Step) -> Dict[str, LoadedImage]:
    """Each role's image in podman: loaded from `images` when given, else the one an earlier run loaded
    (recorded in the state file)."""
    given = {img.role: img for img in images}
    unknown = [r for r in given if r not in ROLES]
    if unknown:
        raise UsageError(f"unknown registry image role(s): {', '.join(unknown)}")
    out: Dict[str, LoadedImage] = {}
    known = state.get("images") if isinstance(state.get("images"), dict) else {}
    copier: Optional[Copier] = None
    try:
        for role in ROLES:
            if role in given:
                on_step(f"loading the {role} image ({given[role].source.description})")
                if copier is None:
                    copier = Copier(CopyOptions(workers=4))
                out[role] = load_image(pm, given[role], work_dir=work_dir, copier=copier)
                continue
            entry = known.get(role) if isinstance(known, dict) else None
            if isinstance(entry, dict) and entry.get("id") and pm.image_exists(str(entry["id"])):
                name = str(entry.get("name") or f"{LOCAL_REPOSITORY}/{role}:latest")
                pm.tag(str(entry["id"]), name)
                out[role] = LoadedImage(role, name, str(entry["id"]), str(entry.get("manifest_digest", "")), False)
                continue
            raise UsageError(
                f"podman has no {role} image for Quay",
                hint="pass --bundle DIR with a bundle packed with registry images (registryImages: {enabled: true})",
            )
    finally:
        if copier is not None:
            copier.close()
    with contextlib.suppress(OSError):
        work_dir.rmdir()
    return out

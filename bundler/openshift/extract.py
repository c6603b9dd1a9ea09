"""Take `openshift-install` or `oc` out of a carried release, as `oc adm release extract --command` does.

Owns PROTOCOL-NOTES §5 "Binaries":

* which component and path hold a command for a platform (oc's table of extract targets):
  ``openshift-install`` for the release's own architecture is ``usr/bin/openshift-install`` in
  ``installer``; other platforms are ``usr/share/openshift/<os>_<arch>/openshift-install`` (``mac``,
  ``mac_arm64``, ``linux_amd64``, ``linux_arm64``) in ``installer-artifacts``; ``oc`` is ``usr/bin/oc`` in
  ``cli`` and ``usr/share/openshift/...`` (also ``windows/oc.exe``) in ``cli-artifacts``;
* streaming the file out of the component's layers (newest layer wins, whiteouts honoured:
  `bundler.transfer.image_files.extract_file`) into a temp file next to the destination, fsync, chmod 0755, rename;
* stamping the binary on the way, byte for byte as oc's ``copyAndReplace`` does: the first occurrence of
  the marker ``\\x00_RELEASE_IMAGE_LOCATION_\\x00`` + 300 × ``X`` + ``\\x00`` (327 bytes) is overwritten from
  its first byte by the release pull spec followed by one NUL; the rest of the marker is left as it was
  (the installer reads up to the first NUL). Likewise ``\\x00_RELEASE_VERSION_LOCATION_\\x00`` + 64 × ``X``
  + ``\\x00`` gets the release version (both commands). A value longer than the marker minus one byte is an
  error; a marker that is not found is a warning in the result (oc warns too).

The release pull spec stamped into ``openshift-install`` is the mirror's
``<registry>[/<prefix>]/<release repository>@<release digest>`` when a registry is given
(`mirror_pull_spec`), else the release's own source by digest (what oc stamps when extracting upstream).

This module is written against an `ImageSource` lookup (`find_component(name) -> ImageSource`) so it works
on a bundle, a layout or a registry alike.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, List, Mapping, Optional, Protocol, Sequence, Tuple

from bundler.base.errors import UsageError
from bundler.oci.digest import Digest
from bundler.oci.platform import go_arch, linux_platform
from bundler.transfer.image_files import extract_file, open_image
from bundler.transfer.transports import ImageSource

log = logging.getLogger(__name__)

#: Marker compiled into openshift-install for the release image location (openshift/installer
#: pkg/asset/releaseimage/default.go, searched for by openshift/oc pkg/cli/admin/release/extract_tools.go).
RELEASE_IMAGE_MARKER = b"\x00_RELEASE_IMAGE_LOCATION_\x00" + b"X" * 300 + b"\x00"
#: Marker compiled into oc and openshift-install for the release version name.
RELEASE_VERSION_MARKER = b"\x00_RELEASE_VERSION_LOCATION_\x00" + b"X" * 64 + b"\x00"
COMMANDS = ("openshift-install", "oc")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ReleaseIdentity:
    """What extract needs to know about the release the binary comes from."""

    version: str
    arch: str
    """Release spelling: x86_64, aarch64, ppc64le, s390x or multi."""
    digest: str
    source: str
    """The release's upstream reference (`registry/repository[:tag][@digest]`)."""

    def source_pull_spec(self) -> str:
        """`registry/repository@digest` of the upstream release (what oc stamps when extracting upstream)."""
        name = self.source.split("@", 1)[0]
        last = name.rsplit("/", 1)
        if len(last) == 2 and ":" in last[1]:
            name = name[: name.rfind(":")]
        return f"{name}@{self.digest}"


@dataclass(frozen=True)
class ExtractTarget:
    command: str
    os: str
    arch: str
    """Go name, or `release` for the release's own architecture."""
    component: str
    path: str
    stamp_image: bool
    stamp_version: bool = True


_RELEASE = "release"
TARGETS: Tuple[ExtractTarget, ...] = (
    ExtractTarget("oc", "linux", _RELEASE, "cli", "usr/bin/oc", False),
    ExtractTarget("oc", "darwin", "amd64", "cli-artifacts", "usr/share/openshift/mac/oc", False),
    ExtractTarget("oc", "darwin", "arm64", "cli-artifacts", "usr/share/openshift/mac_arm64/oc", False),
    ExtractTarget("oc", "linux", "amd64", "cli-artifacts", "usr/share/openshift/linux_amd64/oc", False),
    ExtractTarget("oc", "linux", "arm64", "cli-artifacts", "usr/share/openshift/linux_arm64/oc", False),
    ExtractTarget("oc", "windows", "amd64", "cli-artifacts", "usr/share/openshift/windows/oc.exe", False),
    ExtractTarget("openshift-install", "linux", _RELEASE, "installer", "usr/bin/openshift-install", True),
    ExtractTarget("openshift-install", "darwin", "amd64", "installer-artifacts", "usr/share/openshift/mac/openshift-install", True),
    ExtractTarget("openshift-install", "darwin", "arm64", "installer-artifacts", "usr/share/openshift/mac_arm64/openshift-install", True),
    ExtractTarget("openshift-install", "linux", "amd64", "installer-artifacts", "usr/share/openshift/linux_amd64/openshift-install", True),
    ExtractTarget("openshift-install", "linux", "arm64", "installer-artifacts", "usr/share/openshift/linux_arm64/openshift-install", True),
)

def parse_platform(text: Optional[str], release: ReleaseIdentity) -> Tuple[str, str]:
    """`OS/ARCH` (Go names; `mac` = darwin, `x86_64`/`aarch64` accepted) -> (os, arch); None: linux on the release's arch."""
    if not text:
        arch = go_arch(release.arch)
        return "linux", "amd64" if arch == "multi" else arch
    os_, sep, arch = text.partition("/")
    if not sep:
        os_, arch = text, "amd64"  # oc: --command-os=linux means linux/amd64
    os_ = {"mac": "darwin", "macos": "darwin"}.get(os_.lower(), os_.lower())
    arch = go_arch(arch.lower())
    return os_, arch


def select_target(command: str, os_: str, arch: str, release: ReleaseIdentity) -> ExtractTarget:
    """The component and path holding `command` for `os_/arch`; the release's own component wins ties."""
    if command not in COMMANDS:
        raise UsageError(f"unknown command {command!r}", hint="the supported commands are 'oc' and 'openshift-install'")
    rel_arch = go_arch(release.arch)
    candidates = [t for t in TARGETS if t.command == command and t.os == os_]
    for t in candidates:
        if t.arch == _RELEASE and (arch == rel_arch or (rel_arch == "multi" and arch == "amd64")):
            return t
    for t in candidates:
        if t.arch == arch:
            return t
    have = sorted({f"{t.os}/{rel_arch if t.arch == _RELEASE else t.arch}" for t in TARGETS if t.command == command})
    raise UsageError(f"{command} is not available for {os_}/{arch} in release {release.version}", hint=f"available: {', '.join(have)}")


def mirror_pull_spec(registry: str, repository: str, digest: str, *, prefix: Optional[str] = None) -> str:
    """`<registry>[/<prefix>]/<repository>@<digest>`: the release as the mirror serves it."""
    parts = [registry.rstrip("/")]
    if prefix:
        parts.append(prefix.strip("/"))
    parts.append(repository.strip("/"))
    return "/".join(parts) + f"@{digest}"


# --------------------------------------------------------------------------------------------------
# Stamping while streaming
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Replacement:
    name: str
    marker: bytes
    value: bytes

    def check(self) -> None:
        if len(self.value) > len(self.marker) - 1:
            raise UsageError(
                f"the {self.name} value has {len(self.value)} bytes, but the maximum replacement length is {len(self.marker) - 1}",
                hint="use a shorter registry host or prefix",
            )


class ReplacingWriter:
    """A writer that replaces the first occurrence of each marker, oc's `copyAndReplace` semantics.

    The value is written from the marker's first byte, followed by one NUL; the remaining marker bytes are
    left unchanged. Markers spanning write boundaries are found: the last `len(longest marker) - 1` bytes
    are held back until more data arrives or `close()` flushes them.
    """

    def __init__(self, dest: IO[bytes], replacements: Sequence[Replacement], *, on_write: Optional[Callable[[bytes], None]] = None) -> None:
        for r in replacements:
            r.check()
        self._dest = dest
        self._pending = list(replacements)
        self.done: List[str] = []
        self._keep = max((len(r.marker) for r in replacements), default=1) - 1
        self._buf = bytearray()
        self._on_write = on_write

    def _emit(self, data: bytes) -> None:
        if data:
            self._dest.write(data)
            if self._on_write is not None:
                self._on_write(data)

    def write(self, data: bytes) -> int:
        if not self._pending:
            self._emit(bytes(data))
            return len(data)
        self._buf += data
        for r in list(self._pending):
            at = self._buf.find(r.marker)
            if at >= 0:
                self._buf[at : at + len(r.value) + 1] = r.value + b"\x00"
                self._pending.remove(r)
                self.done.append(r.name)
                log.debug("stamped %s at offset %d of the current window", r.name, at)
        if not self._pending:
            out, self._buf = bytes(self._buf), bytearray()
            self._emit(out)
        elif len(self._buf) > self._keep:
            cut = len(self._buf) - self._keep
            out = bytes(self._buf[:cut])
            del self._buf[:cut]
            self._emit(out)
        return len(data)

    def close(self) -> None:
        out, self._buf = bytes(self._buf), bytearray()
        self._emit(out)

    @property
    def missing(self) -> List[str]:
        return [r.name for r in self._pending]


# --------------------------------------------------------------------------------------------------
# Extract
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExtractResult:
    path: Path
    command: str
    platform: str
    component: str
    source_path: str
    size: int
    sha256: str
    release_pull_spec: Optional[str]
    """The pull spec stamped into the binary (openshift-install only)."""
    stamped: Tuple[str, ...]
    """Replacements made: "release image", "release version"."""
    not_stamped: Tuple[str, ...]
    """Replacements asked for whose marker the binary does not carry (oc warns about these too)."""


def extract_command(
    find_component: Callable[[str], ImageSource],
    release: ReleaseIdentity,
    *,
    command: str,
    to: Path,
    platform: Optional[str] = None,
    release_pull_spec: Optional[str] = None,
) -> ExtractResult:
    """Write `command` for `platform` from the release's components into directory `to`.

    `find_component(name)` returns the source of a release component (`installer`, `cli`, ...); it raises
    (`ImageNotFoundError`, `UsageError`) when the component is not available. `release_pull_spec` is
    stamped into openshift-install; None stamps the release's upstream source by digest.
    """
    os_, arch = parse_platform(platform, release)
    target = select_target(command, os_, arch, release)
    pull_spec = (release_pull_spec or release.source_pull_spec()) if target.stamp_image else None
    replacements: List[Replacement] = []
    if target.stamp_image:
        assert pull_spec is not None
        replacements.append(Replacement("release image", RELEASE_IMAGE_MARKER, pull_spec.encode()))
    if target.stamp_version:
        replacements.append(Replacement("release version", RELEASE_VERSION_MARKER, release.version.encode()))
    for r in replacements:
        r.check()  # before any download

    source = find_component(target.component)
    image_platform = linux_platform(release.arch)
    image = open_image(source, platform=image_platform)

    name = command + (".exe" if os_ == "windows" else "")
    to.mkdir(parents=True, exist_ok=True)
    final = to / name
    fd, tmp = tempfile.mkstemp(dir=to, prefix=f".{name}.", suffix=".partial")
    hasher = hashlib.sha256()
    size = 0

    def count(data: bytes) -> None:
        nonlocal size
        hasher.update(data)
        size += len(data)

    try:
        with os.fdopen(fd, "wb") as f:
            writer = ReplacingWriter(f, replacements, on_write=count)
            member = extract_file(image, target.path, writer)  # type: ignore[arg-type]
            if member is None:
                raise UsageError(
                    f"the {target.component} image of release {release.version} does not contain {target.path}",
                    hint=f"is {source.description} really the {target.component} component?",
                )
            writer.close()
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o755)
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    for missing in writer.missing:
        log.warning("%s: no %s marker found; the binary was written unchanged there", final, missing)
    return ExtractResult(
        path=final,
        command=command,
        platform=f"{os_}/{arch}",
        component=target.component,
        source_path=target.path,
        size=size,
        sha256=hasher.hexdigest(),
        release_pull_spec=pull_spec,
        stamped=tuple(writer.done),
        not_stamped=tuple(writer.missing),
    )


# --------------------------------------------------------------------------------------------------
# From a bundle
# --------------------------------------------------------------------------------------------------


class CarriedImage(Protocol):
    """What extract reads from a bundle manifest entry (`bundler.bundle.volumes.BundleImage`)."""

    @property
    def source(self) -> str: ...
    @property
    def digest(self) -> Digest: ...
    @property
    def kind(self) -> str: ...
    @property
    def target_repository(self) -> str: ...
    @property
    def target_tag(self) -> str: ...
    @property
    def annotations(self) -> Mapping[str, str]: ...


def choose_release(images: Sequence[CarriedImage], selector: Optional[str] = None) -> CarriedImage:
    """The release image among `images`: the only one, or the one `selector` names (version, version-arch or tag)."""
    releases = [i for i in images if i.kind == "release"]
    if selector:
        releases = [
            i
            for i in releases
            if selector in (i.annotations.get("version"), f"{i.annotations.get('version')}-{i.annotations.get('arch')}", i.target_tag, str(i.digest))
        ]
    if len(releases) == 1:
        return releases[0]
    have = ", ".join(sorted(f"{i.annotations.get('version')}-{i.annotations.get('arch')}" for i in images if i.kind == "release"))
    if not releases:
        if selector:
            raise UsageError(f"the bundle carries no release {selector}", hint=f"it carries: {have or 'no release at all'}")
        raise UsageError("the bundle carries no release payload", hint="pack it with releases.images or releases.channels")
    raise UsageError(f"the bundle carries {len(releases)} releases", hint=f"choose one with --release ({have})")


def release_identity(image: CarriedImage) -> ReleaseIdentity:
    version = image.annotations.get("version") or image.target_tag.rsplit("-", 1)[0]
    arch = image.annotations.get("arch") or image.target_tag.rsplit("-", 1)[-1]
    return ReleaseIdentity(version=version, arch=arch, digest=str(image.digest), source=image.source)


def component_finder(images: Sequence[CarriedImage], release: CarriedImage, open_source: Callable[[CarriedImage], ImageSource]) -> Callable[[str], ImageSource]:
    """A `find_component` over carried images: components of `release` by their `component` annotation."""
    version, arch = release.annotations.get("version"), release.annotations.get("arch")

    def find(name: str) -> ImageSource:
        for image in images:
            if image.kind != "release-component" or image.annotations.get("component") != name:
                continue
            belongs = image.annotations.get("release") == str(release.digest) or (
                image.annotations.get("version") == version and image.annotations.get("arch") == arch
            )
            if belongs:
                return open_source(image)
        raise UsageError(
            f"the bundle does not carry the {name} component of release {version} ({arch})",
            hint="pack the whole release payload to extract its tools",
        )

    return find


def extract_from_bundle(
    bundle_dir: Path,
    *,
    command: str,
    to: Path,
    platform: Optional[str] = None,
    registry: Optional[str] = None,
    prefix: Optional[str] = None,
    release: Optional[str] = None,
) -> ExtractResult:
    """`extract_command` on a bundle directory; `registry` (+ `prefix`) stamps the mirror's pull spec."""
    from bundler.bundle.volumes import (
        Bundle,  # the bundle reader sits beside this module; imported when used
    )

    bundle: Any = Bundle.open(bundle_dir)
    images: Sequence[CarriedImage] = list(bundle.manifest.images)
    chosen = choose_release(images, release)
    identity = release_identity(chosen)
    pull_spec = mirror_pull_spec(registry, chosen.target_repository, str(chosen.digest), prefix=prefix) if registry else None
    return extract_command(
        component_finder(images, chosen, bundle.image_source),
        identity,
        command=command,
        to=to,
        platform=platform,
        release_pull_spec=pull_spec,
    )

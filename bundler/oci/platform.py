"""Platforms: the one architecture-name map, and the one rule for choosing a platform's child of an index.

Architectures have two spellings: Go's (``amd64``, ``arm64``; image configs, manifest lists, the update
graph, oc-mirror configs) and the kernel's (``x86_64``, ``aarch64``; ``uname -m``, OpenShift release tags).
`go_arch` and `release_arch` convert between them; ``ppc64le``, ``s390x`` and ``multi`` (a multi-architecture
release) are spelled alike in both. `choose_child` picks the child of an index a platform asks for.
"""

from __future__ import annotations

import platform as _host
from dataclasses import dataclass
from typing import Mapping, Optional, Protocol, Sequence, Tuple, TypeVar

__all__ = [
    "GO_ARCHITECTURES",
    "MULTI",
    "Platform",
    "choose_child",
    "go_arch",
    "host_platform",
    "linux_platform",
    "release_arch",
]

#: Go architecture names of the platforms OpenShift ships.
GO_ARCHITECTURES: Tuple[str, ...] = ("amd64", "arm64", "ppc64le", "s390x")

#: Go name -> kernel/release spelling, where they differ.
_RELEASE_SPELLING: Mapping[str, str] = {"amd64": "x86_64", "arm64": "aarch64"}
_GO_SPELLING: Mapping[str, str] = {v: k for k, v in _RELEASE_SPELLING.items()}

#: A multi-architecture payload (a manifest list) is read on this architecture.
MULTI = "multi"
_MULTI_READ_ARCH = "amd64"


def go_arch(arch: str) -> str:
    """`x86_64` -> `amd64`, `aarch64` -> `arm64`; Go names (and unknown names) are kept."""
    return _GO_SPELLING.get(arch, arch)


def release_arch(arch: str) -> str:
    """`amd64` -> `x86_64`, `arm64` -> `aarch64`; names already in release spelling are kept."""
    return _RELEASE_SPELLING.get(arch, arch)


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: Optional[str] = None

    def __str__(self) -> str:
        out = f"{self.os}/{self.architecture}"
        return f"{out}/{self.variant}" if self.variant else out

    @classmethod
    def parse(cls, text: str) -> "Platform":
        """`os/arch[/variant]` (the architecture in either spelling)."""
        os_, _, rest = text.partition("/")
        arch, _, variant = rest.partition("/")
        return cls(os_, go_arch(arch), variant or None)


def linux_platform(arch: str) -> str:
    """The platform an image for `arch` (either spelling, or `multi`) is read on: `linux/<Go arch>`."""
    return f"linux/{_MULTI_READ_ARCH if arch == MULTI else go_arch(arch)}"


def host_platform() -> Platform:
    """This machine's Linux platform, in Go names."""
    machine = _host.machine().lower()
    return Platform("linux", go_arch(machine))


class _HasPlatform(Protocol):
    @property
    def platform(self) -> Optional[Platform]: ...


_Child = TypeVar("_Child", bound=_HasPlatform)


def choose_child(children: Sequence[_Child], want: Platform) -> Optional[_Child]:
    """The child of an index for `want`: same os and architecture; with a variant asked for, that variant,
    else a child that names none. The first match wins; None when no child fits."""
    fallback: Optional[_Child] = None
    for child in children:
        p = child.platform
        if p is None or p.os != want.os or p.architecture != want.architecture:
            continue
        if want.variant is None or p.variant == want.variant:
            return child
        if p.variant is None and fallback is None:
            fallback = child
    return fallback

"""Image references: parse and normalise `host[:port]/path[:tag][@sha256:...]`.

Follows the distribution reference grammar (docker/distribution `reference/regexp.go`) and the Docker Hub
defaults containers/image applies: a first component without `.` or `:` (and not `localhost`) is a path on
`docker.io`, and a single-component Docker Hub path lives under `library/`.

The grammar's pieces (`HOST`, `REPOSITORY`, `TAG`, `DIGEST`, `QUALIFIED_REFERENCE_RE`, `is_registry_host`)
are the one copy in the project: the image-set schema, the cluster resources and the samples planner
compose theirs from these.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Optional

from bundler.oci.digest import Digest
from bundler.base.errors import InvalidReferenceError

DOCKER_HUB = "docker.io"

# The grammar, as unanchored patterns to compose (match whole strings with `re.fullmatch`).
PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REPOSITORY = rf"{PATH_COMPONENT}(?:/{PATH_COMPONENT})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:.]+\])(?::[0-9]{{1,5}})?"
TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
DIGEST = r"(?:sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})"

_PATH_RE = re.compile(rf"^{REPOSITORY}\Z")
_HOST_RE = re.compile(rf"^{HOST}\Z")
_TAG_RE = re.compile(rf"^{TAG}\Z")
#: `host/path[:tag][@digest]` with the host spelled out; groups `host`, `repository`, `tag`, `digest`.
QUALIFIED_REFERENCE_RE = re.compile(
    rf"^(?P<host>{HOST})/(?P<repository>{REPOSITORY})(?::(?P<tag>{TAG}))?(?:@(?P<digest>{DIGEST}))?\Z"
)


def is_registry_host(component: str) -> bool:
    """Whether the first path component of a reference names a registry (else the path is on Docker Hub)."""
    return "." in component or ":" in component or component == "localhost" or component.startswith("[")


@dataclass(frozen=True)
class Reference:
    registry: str
    repository: str
    tag: Optional[str] = None
    digest: Optional[Digest] = None

    @classmethod
    def parse(cls, text: str) -> "Reference":
        original = text
        if not text or text != text.strip():
            raise InvalidReferenceError(f"invalid image reference {original!r}: empty or has spaces")
        digest: Optional[Digest] = None
        if "@" in text:
            text, _, digest_text = text.partition("@")
            try:
                digest = Digest.parse(digest_text)
            except InvalidReferenceError:
                raise InvalidReferenceError(
                    f"invalid image reference {original!r}: bad digest {digest_text!r}",
                    hint="expected NAME@sha256:<64 hex digits>",
                ) from None
        tag: Optional[str] = None
        slash = text.rfind("/")
        colon = text.rfind(":")
        if colon > slash:
            text, tag = text[:colon], text[colon + 1 :]
            if not _TAG_RE.match(tag):
                raise InvalidReferenceError(f"invalid image reference {original!r}: bad tag {tag!r}")
        first, sep, rest = text.partition("/")
        if sep and is_registry_host(first):
            registry, path = first, rest
        else:
            registry, path = DOCKER_HUB, text
        if registry in ("index.docker.io", "registry-1.docker.io"):
            registry = DOCKER_HUB
        try:
            registry = parse_host(registry)
        except InvalidReferenceError as exc:
            raise InvalidReferenceError(f"invalid image reference {original!r}: {exc.message}", hint=exc.hint) from None
        if registry == DOCKER_HUB and "/" not in path:
            path = f"library/{path}"
        if not path or not _PATH_RE.match(path):
            raise InvalidReferenceError(
                f"invalid image reference {original!r}",
                hint="expected HOST[:PORT]/PATH[:TAG][@sha256:DIGEST] with a lowercase path",
            )
        if len(registry) + 1 + len(path) > 255:
            raise InvalidReferenceError(f"invalid image reference {original!r}: name longer than 255 characters")
        return cls(registry=registry, repository=path, tag=tag, digest=digest)

    @property
    def name(self) -> str:
        """`registry/repository`, without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def identifier(self) -> str:
        """What to ask the registry for: the digest when pinned, else the tag (default `latest`)."""
        if self.digest is not None:
            return str(self.digest)
        return self.tag or "latest"

    def with_digest(self, digest: Digest) -> "Reference":
        return replace(self, digest=digest)

    def with_tag(self, tag: Optional[str]) -> "Reference":
        return replace(self, tag=tag)

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += f":{self.tag}"
        if self.digest is not None:
            out += f"@{self.digest}"
        return out


def parse_host(text: str) -> str:
    """A registry `HOST[:PORT]` (IPv6 in brackets) checked: a valid name and a port from 1 to 65535.

    The one check of host names and ports; `Reference.parse`, `--registry` and `--insecure-registry` use it."""
    if text.startswith("["):  # [v6]:port
        after = text.partition("]")[2]
        port = after[1:] if after.startswith(":") else ""
    else:
        port = text.rpartition(":")[2] if ":" in text else ""
    if port.isdigit() and not 1 <= int(port) <= 65535:
        raise InvalidReferenceError(f"port {port} of registry {text!r} is out of range", hint="a port is a number from 1 to 65535")
    if not _HOST_RE.match(text):
        raise InvalidReferenceError(f"bad registry host {text!r}", hint="expected HOST or HOST:PORT, e.g. mirror.example.com:8443")
    return text


def is_valid_tag(tag: str) -> bool:
    return bool(_TAG_RE.match(tag))


def is_valid_repository_path(path: str) -> bool:
    """A repository path without host (`ocp4/openshift4`): lowercase components, at most 255 characters."""
    return len(path) <= 255 and bool(_PATH_RE.match(path))

"""What Quay refuses to store digest-exact: manifest checks made before anything is pushed.

Quay validates every manifest it is given against its own schemas (Project Quay 3.18,
`image/docker/schema2/manifest.py`, `image/docker/schema2/list.py`; observed on the real server, see
PROTOCOL-NOTES §4). Docker schema2 is held to the enums of Docker's original specification:

- a Docker schema2 image may only have gzip layers (`...rootfs.diff.tar.gzip`, or the foreign
  `...rootfs.foreign.diff.tar.gzip`) and a Docker config (`...container.image.v1+json`): an uncompressed or
  zstd Docker layer, or an OCI config inside a Docker manifest, is answered 400 MANIFEST_INVALID;
- a Docker manifest list may only hold Docker schema2 (or schema1) manifests.

OCI manifests and indexes are stored byte for byte with any layer type. Nothing can make a refused manifest
acceptable without changing its bytes, and so its digest: the only honest answer is to name it with the
reason before pushing, and leave the choice (another registry, or the image rebuilt upstream as OCI) to
the user.
"""

from __future__ import annotations

from typing import List

from bundler.base.errors import BundlerError
from bundler.oci.media import DOCKER_CONFIG, DOCKER_LAYER_GZIP, DOCKER_LIST, DOCKER_MANIFEST, DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED, parse_manifest

DOCKER_FOREIGN_LAYER_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOCKER_LAYERS_QUAY_TAKES = frozenset({DOCKER_LAYER_GZIP, DOCKER_FOREIGN_LAYER_GZIP})
DOCKER_LIST_CHILDREN_QUAY_TAKES = frozenset({DOCKER_MANIFEST, DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED})


def quay_refusals(raw: bytes, media_type: str) -> List[str]:
    """Why Quay would refuse this manifest (400 MANIFEST_INVALID), one reason per problem; [] when it takes it."""
    if media_type not in (DOCKER_MANIFEST, DOCKER_LIST):
        return []
    try:
        parsed = parse_manifest(raw, media_type)
    except BundlerError:
        return []  # not ours to judge here: the push reports what the registry says
    reasons: List[str] = []
    if media_type == DOCKER_MANIFEST:
        if parsed.config is not None and parsed.config.media_type != DOCKER_CONFIG:
            reasons.append(f"its config is {parsed.config.media_type or 'untyped'}, Quay takes only {DOCKER_CONFIG} in a Docker schema2 manifest")
        for kind in sorted({layer.media_type for layer in parsed.layers} - DOCKER_LAYERS_QUAY_TAKES):
            count = sum(1 for layer in parsed.layers if layer.media_type == kind)
            reasons.append(f"{count} layer(s) of type {kind or 'untyped'}: Quay takes only gzip layers in a Docker schema2 manifest")
    else:
        for kind in sorted({child.media_type for child in parsed.children} - DOCKER_LIST_CHILDREN_QUAY_TAKES):
            reasons.append(f"it lists a {kind or 'untyped'} manifest: Quay takes only Docker manifests in a Docker manifest list")
    return reasons


__all__ = ["quay_refusals"]

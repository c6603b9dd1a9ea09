"""Bundle volumes: the one import point for writing and reading them.

The work is split by job: `bundler.bundle.members` plans the layout (which member goes in which volume, at
which offset, under which tar header), `bundler.bundle.encoding` decides how each item is stored (raw or
zstd), `bundler.bundle.fill` writes a bundle straight from the sources into preallocated volumes (what pack
uses), `bundler.bundle.writer` writes one from an OCI layout on disk, and `bundler.bundle.reader` serves
blobs in place. This module re-exports their public names.
"""

from __future__ import annotations

from bundler.bundle.members import (
    CHUNK,
    DEFAULT_VOLUME_SIZE,
    END_OF_ARCHIVE,
    MEMBER_MAX,
    MIN_VOLUME_SIZE,
    STATE_NAME,
    assign_volumes,
    Item,
    blob_role,
)
from bundler.bundle.reader import Bundle, BundleImageSource, load_base_manifest, read_manifest, read_part_header
from bundler.bundle.writer import BundlePlan, BundleWriteOptions, BundleWriteResult, plan_bundle, write_bundle

__all__ = [
    "CHUNK",
    "DEFAULT_VOLUME_SIZE",
    "END_OF_ARCHIVE",
    "MEMBER_MAX",
    "MIN_VOLUME_SIZE",
    "STATE_NAME",
    "Bundle",
    "BundleImageSource",
    "BundlePlan",
    "BundleWriteOptions",
    "BundleWriteResult",
    "Item",
    "assign_volumes",
    "blob_role",
    "load_base_manifest",
    "plan_bundle",
    "read_manifest",
    "read_part_header",
    "write_bundle",
]

"""Build a pruned catalog image in the work OCI layout, on top of the original index image.

Owns the one place where ocp-bundler *makes* an image instead of copying one (the update-graph data image,
`bundler.openshift.graph_image`, is built here too, on its base image). The original image must
already be in the layout (copied digest-exact). For each image manifest (each platform child of a list)
the result is: the original layers, plus one new layer holding the pruned catalog; a new config (the
layer's diff_id appended to `rootfs.diff_ids`, a history entry when the original has history, labels
kept); a new manifest of the same media-type family (OCI stays OCI, Docker stays Docker). A list gets a
new list of the same media type over the new children; attestation children (platform `unknown/unknown`)
describe the original image and are left out. The new top manifest is named in `index.json` with
`add_refs`.

The layer is deterministic (sorted members, mtime 0, root-owned, gzip without timestamp), so a rerun
builds the same digest. A directory replaced as a whole (the FBC root) gets an opaque whiteout
(`.wh..wh..opq`, image-spec `layer.md`) so the original files below it are hidden.

File-based catalog images usually start `opm serve /configs --cache-dir=/tmp/cache`; with a cache dir and
without `--cache-only`, opm enforces cache integrity by default, and the pre-built cache describes the
unpruned catalog, so the catalog would not start. `drop_cache_args` removes `--cache-dir` (and
`--cache-enforce-integrity`) from the command so opm builds its cache from the pruned content at start.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import re
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union, cast

from bundler.oci.digest import Digest
from bundler.base.errors import UnsupportedError
from bundler.layout.store import Layout
from bundler.oci.media import (
    DOCKER_LAYER_GZIP,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    Descriptor,
    is_index,
)

log = logging.getLogger(__name__)

LayerSource = Union[bytes, Path]

HISTORY_CREATED_BY = "ocp-bundler: pruned operator catalog"


@dataclass(frozen=True)
class BuiltLayer:
    path: Path
    digest: Digest
    size: int
    diff_id: str


@dataclass(frozen=True)
class BuiltImage:
    descriptor: Descriptor
    """The new top manifest (image or list)."""
    children: Tuple[Descriptor, ...] = ()
    dropped: Tuple[Descriptor, ...] = ()
    """Children of the original list that were left out (attestations)."""


class _HashingWriter:
    def __init__(self, target: Any, hasher: "hashlib._Hash") -> None:
        self._target = target
        self._hasher = hasher
        self.count = 0

    def write(self, data: bytes) -> int:
        self._hasher.update(data)
        self._target.write(data)
        self.count += len(data)
        return len(data)

    def flush(self) -> None:
        self._target.flush()


def _add_dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info)


def _add_file(tar: tarfile.TarFile, name: str, source: LayerSource, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.mode = mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if isinstance(source, Path):
        info.size = source.stat().st_size
        with open(source, "rb") as f:
            tar.addfile(info, f)
    else:
        info.size = len(source)
        tar.addfile(info, io.BytesIO(source))


def build_layer(files: Mapping[str, LayerSource], *, opaque_dirs: Sequence[str] = (), workdir: Path) -> BuiltLayer:
    """A gzip tar layer with `files` (path → bytes or a file to read); `opaque_dirs` hide what lower layers hold there."""
    fd, name = tempfile.mkstemp(dir=workdir, prefix="layer-", suffix=".tar.gz")
    path = Path(name)
    gz_hash = hashlib.sha256()
    tar_hash = hashlib.sha256()
    with os.fdopen(fd, "wb") as raw:
        gz_out = _HashingWriter(raw, gz_hash)
        with gzip.GzipFile(fileobj=cast(Any, gz_out), mode="wb", compresslevel=6, mtime=0, filename="") as gz:
            tar_out = _HashingWriter(gz, tar_hash)
            with tarfile.open(fileobj=cast(Any, tar_out), mode="w|", format=tarfile.PAX_FORMAT) as tar:
                dirs: Dict[str, bool] = {}
                for d in opaque_dirs:
                    dirs[d.strip("/")] = True
                for f in files:
                    parts = f.strip("/").split("/")[:-1]
                    for i in range(1, len(parts) + 1):
                        dirs.setdefault("/".join(parts[:i]), False)
                for d in sorted(dirs):
                    _add_dir(tar, d)
                    if dirs[d]:
                        _add_file(tar, f"{d}/.wh..wh..opq", b"")
                for f in sorted(files):
                    _add_file(tar, f.strip("/"), files[f])
        raw.flush()
        os.fsync(raw.fileno())
        size = gz_out.count
    return BuiltLayer(path, Digest("sha256", gz_hash.hexdigest()), size, "sha256:" + tar_hash.hexdigest())


def drop_cache_args(args: Optional[List[Any]]) -> Tuple[Optional[List[Any]], bool]:
    """`args` without opm's `--cache-dir X` / `--cache-dir=X` / `--cache-enforce-integrity[=…]`; and whether any went."""
    if not args:
        return args, False
    out: List[Any] = []
    changed = False
    skip_next = False
    for a in args:
        if skip_next:
            skip_next = False
            changed = True
            continue
        if not isinstance(a, str):
            out.append(a)
            continue
        if a == "--cache-dir":
            skip_next = True
            changed = True
            continue
        if a.startswith("--cache-dir=") or a.startswith("--cache-enforce-integrity"):
            changed = True
            continue
        if " --cache-dir" in a or " --cache-enforce-integrity" in a:  # a shell command line
            new = re.sub(r"\s--cache-dir(=|\s+)\S+", "", a)
            new = re.sub(r"\s--cache-enforce-integrity(=\S+)?", "", new)
            changed = changed or new != a
            out.append(new)
            continue
        out.append(a)
    return out, changed


def _layer_media_type(manifest_media_type: str) -> str:
    return DOCKER_LAYER_GZIP if manifest_media_type == DOCKER_MANIFEST else OCI_LAYER_GZIP


def _put_json(layout: Layout, obj: Any) -> Tuple[bytes, Digest]:
    raw = json.dumps(obj, separators=(",", ":")).encode()
    return raw, layout.put_bytes(raw)


def _rebuild_image(
    layout: Layout, desc: Descriptor, layer: BuiltLayer, *, drop_cache: bool, notes: List[str], cmd: Optional[List[str]] = None, created_by: str = HISTORY_CREATED_BY
) -> Descriptor:
    raw = layout.read_blob(desc.digest)
    manifest = json.loads(raw)
    media_type = desc.media_type or manifest.get("mediaType") or OCI_MANIFEST
    if media_type not in (OCI_MANIFEST, DOCKER_MANIFEST):
        raise UnsupportedError(f"image manifest {desc.digest.short} has media type {media_type!r}; cannot add a layer to it")
    cfg_desc = manifest["config"]
    config = json.loads(layout.read_blob(Digest.parse(cfg_desc["digest"])))
    rootfs = config.setdefault("rootfs", {"type": "layers", "diff_ids": []})
    rootfs.setdefault("diff_ids", []).append(layer.diff_id)
    if isinstance(config.get("history"), list) and config["history"]:
        entry: Dict[str, Any] = {"created_by": created_by}
        if config.get("created"):
            entry["created"] = config["created"]
        config["history"].append(entry)
    if cmd is not None:
        config.setdefault("config", {})["Cmd"] = list(cmd)
    if drop_cache:
        inner = config.get("config") or {}
        for key in ("Cmd", "Entrypoint"):
            new, changed = drop_cache_args(inner.get(key))
            if changed:
                inner[key] = new
                notes.append(f"removed opm's --cache-dir from the image {key} (the pre-built cache is for the unpruned catalog; opm rebuilds it at start)")
    cfg_raw, cfg_digest = _put_json(layout, config)
    manifest["config"] = {**cfg_desc, "digest": str(cfg_digest), "size": len(cfg_raw)}
    manifest["layers"] = list(manifest.get("layers") or []) + [
        {"mediaType": _layer_media_type(media_type), "digest": str(layer.digest), "size": layer.size}
    ]
    man_raw, man_digest = _put_json(layout, manifest)
    return Descriptor(media_type=media_type, digest=man_digest, size=len(man_raw), platform=desc.platform, annotations=desc.annotations)


def build_pruned_image(
    layout: Layout,
    original: Descriptor,
    *,
    files: Mapping[str, LayerSource],
    opaque_dirs: Sequence[str] = (),
    ref_name: str,
    drop_cache: bool = False,
    notes: Optional[List[str]] = None,
    cmd: Optional[List[str]] = None,
    created_by: str = HISTORY_CREATED_BY,
) -> BuiltImage:
    """Add one layer with `files` on top of the image (or every platform image of the list) `original`;
    `cmd` replaces the image's command, `created_by` names the step in the config's history."""
    notes = notes if notes is not None else []
    scratch = layout.root / "ingest"  # the layout's scratch area, beside partial downloads
    scratch.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch, prefix="catalog-build-") as tmp:
        layer = build_layer(files, opaque_dirs=opaque_dirs, workdir=Path(tmp))
        layer_desc = Descriptor(media_type=OCI_LAYER_GZIP, digest=layer.digest, size=layer.size)

        def opener(offset: int) -> IO[bytes]:
            f = open(layer.path, "rb")
            f.seek(offset)
            return f

        layout.write_blob(layer_desc, opener)
    built_notes: List[str] = []
    if not is_index(original.media_type):
        top = _rebuild_image(layout, original, layer, drop_cache=drop_cache, notes=built_notes, cmd=cmd, created_by=created_by)
        result = BuiltImage(top)
    else:
        raw = layout.read_blob(original.digest)
        index = json.loads(raw)
        children: List[Descriptor] = []
        dropped: List[Descriptor] = []
        entries: List[Dict[str, Any]] = []
        for entry in index.get("manifests") or []:
            child = Descriptor.from_json(entry, where="catalog manifest list")
            if child.platform is not None and child.platform.os == "unknown":
                dropped.append(child)
                continue
            if child.media_type not in (OCI_MANIFEST, DOCKER_MANIFEST):
                raise UnsupportedError(f"manifest list child {child.digest.short} has media type {child.media_type!r}")
            new = _rebuild_image(layout, child, layer, drop_cache=drop_cache, notes=built_notes, cmd=cmd, created_by=created_by)
            children.append(new)
            entries.append({**entry, "digest": str(new.digest), "size": new.size})
        if not entries:
            raise UnsupportedError(f"manifest list {original.digest.short} has no platform image to rebuild")
        index["manifests"] = entries
        media_type = original.media_type if original.media_type in (OCI_INDEX, DOCKER_LIST) else OCI_INDEX
        idx_raw, idx_digest = _put_json(layout, index)
        result = BuiltImage(Descriptor(media_type=media_type, digest=idx_digest, size=len(idx_raw)), tuple(children), tuple(dropped))
        if dropped:
            notes.append(f"left out {len(dropped)} attestation manifest(s) of the original list (they describe the unpruned image)")
    for n in built_notes:
        if n not in notes:
            notes.append(n)
    layout.add_refs([(ref_name, Descriptor(media_type=result.descriptor.media_type, digest=result.descriptor.digest, size=result.descriptor.size))])
    return result

"""The update-graph data image (oc-mirror's `platform.graph: true`) for the OpenShift Update Service (OSUS).

Owns what a disconnected cluster needs to upgrade through OSUS: the Cincinnati graph data (the
`cincinnati-graph-data` repository as a gzip tarball, served at `DEFAULT_GRAPH_DATA_URL`) packed into a
container image the way oc-mirror v2 builds it:

* the base image (`DEFAULT_GRAPH_BASE_IMAGE`, UBI 9: the image must have `bash` and `cp`) as it is;
* one more layer with every file of the tarball under ``/var/lib/cincinnati-graph-data/`` (root-owned,
  mode 0644, deterministic, so a rerun with the same data builds the same digest);
* the command ``/bin/bash -c "exec cp -rp /var/lib/cincinnati-graph-data/* /var/lib/cincinnati/graph-data"``,
  which the UpdateService's init container runs to hand the data to the graph builder.

The image is built into the work layout (`bundler.openshift.catalog.build`) and carried as kind ``graph``
at ``openshift/graph-image:latest``; unpack writes an ``UpdateService`` naming it by digest
(`bundler.openshift.resources`). The tarball is read member by member: only regular files and
directories are taken, names are normalised under the data directory (no ``..``, no absolute paths).
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

from bundler.base.errors import IntegrityError, RegistryError
from bundler.layout.store import Layout
from bundler.oci.media import Descriptor
from bundler.oci.planned import ImageFacts, PlannedImage
from bundler.openshift.catalog.build import build_pruned_image
from bundler.openshift.cincinnati import HttpFetcher
from bundler.registry.client import TransportOptions, redact
from bundler.transfer.image_files import iter_layer, normalise
from bundler.transfer.transports import ImageSource

log = logging.getLogger(__name__)

DEFAULT_GRAPH_DATA_URL = "https://api.openshift.com/api/upgrades_info/graph-data"
DEFAULT_GRAPH_BASE_IMAGE = "registry.access.redhat.com/ubi9/ubi:latest"
GRAPH_IMAGE_REPOSITORY = "openshift/graph-image"
GRAPH_IMAGE_TAG = "latest"
GRAPH_KIND = "graph"
DATA_DIR = "var/lib/cincinnati-graph-data"
MOUNT_PATH = "/var/lib/cincinnati/graph-data"
COMMAND = ["/bin/bash", "-c", f"exec cp -rp /{DATA_DIR}/* {MOUNT_PATH}"]
LAYOUT_REF = "ocp-bundler/graph-image"
MAX_GRAPH_DATA_BYTES = 512 << 20


@dataclass(frozen=True)
class GraphImageReport:
    data_url: str
    base_image: str
    files: int
    data_bytes: int
    digest: str

    def to_json(self) -> Dict[str, object]:
        return {"dataURL": self.data_url, "baseImage": self.base_image, "files": self.files, "dataBytes": self.data_bytes, "digest": self.digest}


def fetch_graph_data(url: str = DEFAULT_GRAPH_DATA_URL, *, options: TransportOptions = TransportOptions()) -> bytes:
    """The graph-data tarball (gzip) from `url`."""
    with HttpFetcher(options) as http:
        answer = http.get(url, what="update graph data", max_bytes=MAX_GRAPH_DATA_BYTES)
    if answer.status != 200:
        raise RegistryError(
            f"update graph data {redact(url)}: HTTP {answer.status}",
            status=answer.status,
            url=redact(url),
            hint="check --graph-data-url, or set graph: false",
        )
    return answer.data


def graph_data_files(tarball: bytes) -> Dict[str, bytes]:
    """Every regular file of the graph-data tarball, keyed by its path under `DATA_DIR`."""
    files: Dict[str, bytes] = {}
    for member, f in iter_layer(io.BytesIO(tarball)):
        if f is None:
            continue
        name = normalise(member.name)
        if not name:
            continue
        files[f"{DATA_DIR}/{name}"] = f.read()
    if not files:
        raise IntegrityError("the update graph data holds no files", hint="check --graph-data-url: it must serve the graph-data tarball")
    return files


def plan_graph_image(
    *,
    layout: Layout,
    stage: Callable[[str], ImageSource],
    options: TransportOptions,
    data_url: Optional[str] = None,
    base_image: Optional[str] = None,
) -> Tuple[PlannedImage, GraphImageReport]:
    """Fetch the graph data, build the graph-data image on `base_image` in the work layout, and plan it."""
    url = data_url or DEFAULT_GRAPH_DATA_URL
    base = base_image or DEFAULT_GRAPH_BASE_IMAGE
    tarball = fetch_graph_data(url, options=options)
    files = graph_data_files(tarball)
    top = stage(base).resolve()
    built = build_pruned_image(
        layout,
        Descriptor(media_type=top.media_type, digest=top.digest, size=len(top.raw)),
        files=files,
        ref_name=LAYOUT_REF,
        cmd=COMMAND,
        created_by="ocp-bundler: update graph data",
    )
    digest = str(built.descriptor.digest)
    log.info("graph-data image %s: %d files from %s on %s", digest, len(files), redact(url), base)
    image = PlannedImage(
        source=f"{GRAPH_IMAGE_REPOSITORY}:{GRAPH_IMAGE_TAG}",
        kind=GRAPH_KIND,
        target_repository=GRAPH_IMAGE_REPOSITORY,
        target_tag=GRAPH_IMAGE_TAG,
        digest=digest,
        in_layout=True,
        annotations={"base-image": base, "graph-data": redact(url)},
        facts=ImageFacts(layout_ref=LAYOUT_REF),
    )
    return image, GraphImageReport(url, base, len(files), len(tarball), digest)

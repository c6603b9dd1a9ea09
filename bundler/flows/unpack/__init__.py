"""The `unpack` use-case: a verified bundle → a registry holding exactly what was packed, proof, and YAML.

Owns the disconnected-side flow of ARCHITECTURE "The data flow" (bundle ──► copy ──► read back ──►
cluster resources):

1. verify the bundle (`bundler.bundle.verify.verify_bundle`) unless told not to (loudly); a full verification is
   recorded, and a rerun on the very same files (manifest and signature bytes, each volume's device,
   inode, size, mtime and ctime) checks the signature again but does not re-hash the volumes;
2. on a Quay target (PROTOCOL-NOTES §4) create every organisation the targets need (the first path
   component of each target repository, prefix applied) and give each a robot that may create
   repositories there (Quay robots only get rights inside their own organisation); push as those robots;
3. check each target tag with one manifest HEAD (full Accept, PROTOCOL-NOTES §2): a tag that already
   points at the packed digest is done, so a no-op rerun costs one HEAD per image and no blob HEADs;
4. for incremental bundles, prove that every blob the bundle leaves to its base is in the registry;
5. push the rest with the copy engine (bottom-up, raw bytes, always with a tag, blobs read in place from
   the volumes), with one upload per blob for the whole registry: a repository that needs a blob another
   repository is uploading waits for that upload and then mounts it (cross-repository mount, §2). At most
   `workers` uploads move bytes at once; checks, mounts and waiting repositories run on other threads;
6. read back every pushed tag (HEAD → `Docker-Content-Digest`) and compare with the signed bundle manifest;
7. write the cluster resources (`bundler.openshift.resources`) for the registry actually used (host and prefix).

Failures: images that still fail after the client's retries are listed and the rest is done
(`UnpackPartialFailureError`, exit 4); a read-back mismatch is `ReadBackMismatchError` (exit 3); both carry
the full `UnpackResult` so the CLI can still print the report. Cluster resources are written only when
every image is in the registry. Nothing here imports click or tqdm; secrets never reach logs or results.

The package's modules each own one job: `model` (options, results, errors, targets), `verification`
(verify once per unchanged bundle), `quay_prep` (Quay detection, organisations, robots), `plan` (targets,
tag checks, blob graphs, base blobs), `push` (the copy engine into the registry, one upload per blob),
`readback`, `resources` (cluster resources) and `run` (the run and how failures become errors).
"""

from bundler.flows.unpack.model import (
    DEFAULT_RESOURCES_DIR,
    REGISTRY_KINDS,
    OpenBundle,
    ReadBackMismatchError,
    UnpackedImage,
    UnpackIntegrityError,
    UnpackOptions,
    UnpackPartialFailureError,
    UnpackResult,
    split_registry,
)
from bundler.flows.unpack.quay_prep import ROBOT_NAME, QuayData, load_quay_data
from bundler.flows.unpack.resources import dns1123_label
from bundler.flows.unpack.run import check_options, unpack_bundle, unpack_open_bundle
from bundler.flows.unpack.verification import bundle_fingerprint, default_state_dir, record_verification, verify_once

__all__ = [
    "DEFAULT_RESOURCES_DIR",
    "REGISTRY_KINDS",
    "ROBOT_NAME",
    "OpenBundle",
    "QuayData",
    "ReadBackMismatchError",
    "UnpackIntegrityError",
    "UnpackOptions",
    "UnpackPartialFailureError",
    "UnpackResult",
    "UnpackedImage",
    "bundle_fingerprint",
    "check_options",
    "default_state_dir",
    "dns1123_label",
    "load_quay_data",
    "record_verification",
    "split_registry",
    "unpack_bundle",
    "unpack_open_bundle",
    "verify_once",
]

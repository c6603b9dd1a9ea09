"""`ocp-bundler keygen`, `verify` and `inspect`: thin click glue over `bundler.bundle.signing`, `bundler.bundle.verify`
and `bundler.bundle.volumes` (each command parses flags, calls one library function, renders its result)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional

import click

from bundler.cli.support import CONTEXT, CliProgress, command_body, common_options, emit_json, human_bytes

if TYPE_CHECKING:
    from bundler.bundle.manifest import BundleManifest
    from bundler.bundle.volumes import Bundle


@click.command(context_settings=CONTEXT)
@click.option("--private", "private_path", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Where to write the private key (PEM, mode 0600). Keep it on the connected side.")
@click.option("--public", "public_path", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Where to write the public key (PEM). Carry it across separately from the bundle.")
@common_options
@command_body
def keygen(private_path: Path, public_path: Path, verbose: int, as_json: bool) -> None:
    """Create an Ed25519 key pair for signing bundles.

    \b
    Example:
      ocp-bundler keygen --private bundle.key --public bundle.pub
      ocp-bundler pack --config image-set.yaml --out /media/usb --sign-key bundle.key
      ocp-bundler verify /media/usb --key bundle.pub          (on the far side)
    """
    from bundler.bundle.signing import generate_keypair, key_id, load_public_key

    generate_keypair(private_path, public_path)
    kid = key_id(load_public_key(public_path))
    if as_json:
        emit_json({"private": str(private_path), "public": str(public_path), "keyId": kid})
    else:
        click.echo(f"Wrote private key {private_path} (mode 0600: keep it secret) and public key {public_path}")
        click.echo(f"Key id: {kid}")
        click.echo("Carry the public key to the far side separately from the bundle (so a forged bundle cannot bring its own key).")


@click.command(context_settings=CONTEXT)
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--key", type=click.Path(path_type=Path), help="Public key (keygen --public) the bundle must be signed with.")
@click.option("--require-signature", is_flag=True, help="Fail unless the bundle is signed and the signature matches --key.")
@click.option("--workers", type=click.IntRange(1, 64), default=2, show_default=True, help="Volumes checked in parallel.")
@common_options
@command_body
def verify(directory: Path, key: Optional[Path], require_signature: bool, workers: int, verbose: int, as_json: bool) -> None:
    """Check a bundle completely: signature, every volume (size, sha256, tar members), every blob digest.

    Exit 0 when intact; exit 3 with every problem listed (which volume to re-copy, which blob is bad,
    whether the manifest was tampered with) otherwise.

    \b
    Example:
      ocp-bundler verify /media/usb --key bundle.pub --require-signature
    """
    from bundler.bundle.verify import verify_bundle

    progress = CliProgress("verify", enabled=not as_json)
    try:
        from bundler.flows.unpack import bundle_fingerprint, record_verification

        before = bundle_fingerprint(directory)
        result = verify_bundle(directory, key=key, require_signature=require_signature, progress=progress, workers=workers)
        record_verification(directory, result, fingerprint=before)  # unpack then need not hash the volumes again
    finally:
        progress.close()
    if as_json:
        emit_json(result.to_json())
        return
    # result.warnings were already logged (warning: …) on stderr by verify_bundle itself.
    click.echo(
        f"OK: bundle {result.bundle_id} in {result.directory} is intact: {result.volumes_checked} volumes, "
        f"{result.blobs_checked} blobs, {result.files_checked} files, {human_bytes(result.bytes)} in {result.seconds:.1f}s "
        f"({result.mb_per_s:.0f} MB/s)"
    )
    if result.signed:
        click.echo(f"Signature: valid (key {result.key_id})")
    else:
        click.echo("Signature: NOT checked (see the warning above)")


@dataclass(frozen=True)
class _Totals:
    """What `inspect` sums up over a bundle manifest."""

    images: int
    blobs: int
    blob_bytes: int
    stored_bytes: int
    zstd_blobs: int
    volumes: int
    volume_bytes: int
    blobs_needed_from_base: int
    bytes_needed_from_base: int

    @classmethod
    def of(cls, m: BundleManifest) -> "_Totals":
        return cls(
            images=len(m.images),
            blobs=len(m.blobs),
            blob_bytes=sum(b.size for b in m.blobs),
            stored_bytes=sum(b.stored_size for b in m.blobs),
            zstd_blobs=sum(1 for b in m.blobs if b.encoding == "zstd"),
            volumes=len(m.volumes),
            volume_bytes=m.stored_bytes,
            blobs_needed_from_base=len(m.base_blobs),
            bytes_needed_from_base=sum(b.size for b in m.base_blobs),
        )

    def to_json(self) -> Dict[str, int]:
        return {
            "images": self.images,
            "blobs": self.blobs,
            "blobBytes": self.blob_bytes,
            "storedBytes": self.stored_bytes,
            "zstdBlobs": self.zstd_blobs,
            "volumes": self.volumes,
            "volumeBytes": self.volume_bytes,
            "blobsNeededFromBase": self.blobs_needed_from_base,
            "bytesNeededFromBase": self.bytes_needed_from_base,
        }


def _inspect_json(bundle: Bundle) -> Dict[str, Any]:
    m = bundle.manifest
    return {
        "directory": str(bundle.directory),
        "id": m.id,
        "created": m.created,
        "toolVersion": m.tool_version,
        "baseId": m.base_id,
        "signature": bundle.is_signed,
        "images": [
            {
                "source": i.source,
                "kind": i.kind,
                "target": i.target,
                "digest": str(i.digest),
                "mediaType": i.media_type,
                "totalSize": i.total_size,
                "annotations": i.recorded_annotations(),
            }
            for i in m.images
        ],
        "volumes": [{"name": v.name, "size": v.size, "sha256": v.sha256} for v in m.volumes],
        "files": [{"name": f.name, "size": f.size} for f in m.files],
        "totals": _Totals.of(m).to_json(),
    }


def _table(rows: List[List[str]], headers: List[str]) -> List[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    for r in rows:
        out.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return out


@click.command(context_settings=CONTEXT)
@click.argument("directory", type=click.Path(path_type=Path))
@common_options
@command_body
def inspect(directory: Path, verbose: int, as_json: bool) -> None:
    """Show what a bundle holds (images with kinds, targets and sizes; volumes; base bundle; totals).

    Reads only the bundle manifest: run verify to check the content.

    \b
    Examples:
      ocp-bundler inspect /media/usb
      ocp-bundler inspect /media/usb --json | jq -r '.images[].target'
    """
    from bundler.bundle.volumes import Bundle

    bundle = Bundle.open(directory)
    if as_json:
        emit_json(_inspect_json(bundle))
        return
    m = bundle.manifest
    t = _Totals.of(m)
    click.echo(f"Bundle {m.id} in {bundle.directory}")
    click.echo(f"Created {m.created} by ocp-bundler {m.tool_version}")
    if m.base_id:
        click.echo(f"Incremental: base bundle {m.base_id}; {t.blobs_needed_from_base} blobs ({human_bytes(t.bytes_needed_from_base)}) must already be in the target registry")
    else:
        click.echo("Complete bundle (no base)")
    click.echo("Signature: " + ("present (check it with: ocp-bundler verify DIR --key PUB)" if bundle.is_signed else "NONE (unsigned)"))
    click.echo("")
    click.echo(f"Images ({len(m.images)}):")
    rows = [
        [i.kind, i.target, str(i.digest)[:19] + "…", human_bytes(i.total_size) if i.total_size is not None else "?", i.source]
        for i in sorted(m.images, key=lambda i: (i.kind, i.target))
    ]
    for line in _table(rows, ["KIND", "TARGET", "DIGEST", "SIZE", "SOURCE"]):
        click.echo("  " + line)
    click.echo("")
    click.echo(f"Volumes ({len(m.volumes)}):")
    for line in _table([[v.name, human_bytes(v.size), v.sha256[:23] + "…" if v.sha256 else "(blob digests)"] for v in m.volumes], ["NAME", "SIZE", "SHA256"]):
        click.echo("  " + line)
    if m.files:
        click.echo("")
        click.echo(f"Files ({len(m.files)}):")
        for line in _table([[f.name, human_bytes(f.size)] for f in m.files], ["NAME", "SIZE"]):
            click.echo("  " + line)
    click.echo("")
    click.echo(
        f"Totals: {t.images} images, {t.blobs} blobs ({human_bytes(t.blob_bytes)}, stored as {human_bytes(t.stored_bytes)}; "
        f"{t.zstd_blobs} zstd-compressed), {t.volumes} volumes ({human_bytes(t.volume_bytes)})"
    )

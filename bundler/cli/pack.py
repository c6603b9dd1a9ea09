"""`ocp-bundler pack`: the connected side's one command."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

import click

from bundler.base.errors import ImageNotFoundError
from bundler.cli.support import CONTEXT, CliProgress, command_body, common_options, emit_json, human_bytes, make_registries, registry_options, warn

if TYPE_CHECKING:
    from bundler.flows.pack import PackedImage, PackResult


@click.command(context_settings=CONTEXT)
@click.option("--config", "config", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Image-set config (ours, or oc-mirror's ImageSetConfiguration).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Directory the bundle is written to (e.g. the removable disk).")
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path), help="Small cache of what planning reads (release payloads, catalogs) and rebuilt catalogs. Default: .<out>.ocp-bundler-work beside --out.")
@click.option("--volume-size", default=None, metavar="SIZE", help="Largest volume file: 4G (FAT32-safe default 4 GiB - 1), 4.7GB for a DVD, 650MB …")
@click.option("--sign-key", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Ed25519 private key (ocp-bundler keygen) to sign the bundle manifest.")
@click.option("--base", type=click.Path(exists=True, path_type=Path), help="An earlier bundle (directory or manifest): write only what it does not have.")
@click.option("--dry-run", is_flag=True, help="Resolve everything and print what would be packed, with sizes; check free space; write no bundle.")
@click.option("--graph-url", help="Update-graph (Cincinnati) endpoint for release channels.")
@click.option("--signature-store", help="Where release signatures are fetched from.")
@click.option("--graph-data-url", help="Where the update-graph data (graph: true) is fetched from. Default: api.openshift.com's graph-data.")
@click.option("--graph-base-image", metavar="REF", help="Base of the update-graph data image (needs bash and cp). Default: registry.access.redhat.com/ubi9/ubi:latest.")
@click.option("--remove-signatures", is_flag=True, help="Leave sigstore signatures (cosign .sig tags, OCI 1.1 referrers) out of the bundle.")
@click.option("--release-key", "release_keys", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Check every release's signatures against this public key (cosign PEM or OpenPGP); repeatable.")
@click.option("--target-kind", type=click.Choice(["any", "quay"]), default="any", show_default=True,
              help="The registry the bundle is for: quay names, in the plan, every image Quay cannot store digest-exact, with the reason.")
@registry_options
@common_options
@command_body
def pack(
    config: Path, out_dir: Path, work_dir: Optional[Path], volume_size: Optional[str], sign_key: Optional[Path], base: Optional[Path],
    dry_run: bool, graph_url: Optional[str], signature_store: Optional[str],
    graph_data_url: Optional[str], graph_base_image: Optional[str], remove_signatures: bool, release_keys: Tuple[Path, ...],
    target_kind: str, authfile: Optional[Path], ca_file: Optional[Path], proxy: Optional[str], insecure: Tuple[str, ...], workers: int, timeout: float,
    retry_times: int,
    verbose: int, as_json: bool,
) -> None:
    """Resolve an image-set config and stream every image straight into a signed bundle.

    \b
    The release payload, sample imagestreams, operator catalogs (filtered and pruned), additional images
    and the images that run Quay on the far side are planned first (every manifest fetched), then each
    blob streams digest-exact into its place in volumes of at most --volume-size; a journal beside the
    volumes lets a rerun resume, fetching nothing that was finished.

    \b
    Examples:
      ocp-bundler keygen --private bundle.key --public bundle.pub
      ocp-bundler pack --config image-set.yaml --out /media/usb --sign-key bundle.key
      ocp-bundler pack --config image-set.yaml --out /media/usb2 --base /media/usb   # an incremental bundle
    """
    from bundler.openshift.image_set import load_image_set
    from bundler.bundle.volumes import DEFAULT_VOLUME_SIZE
    from bundler.flows.pack import PackOptions
    from bundler.flows.pack import pack as run_pack
    from bundler.base.units import parse_size

    size = parse_size(volume_size, what="--volume-size") if volume_size else None
    if size is None:
        size = load_image_set(config).volume_size_hint or DEFAULT_VOLUME_SIZE
    registries = make_registries(authfile, ca_file, insecure, workers, timeout, retry_times, proxy=proxy)
    progress = CliProgress("pack", enabled=not as_json)
    try:
        result = run_pack(
            PackOptions(
                config=config, out_dir=out_dir, work_dir=work_dir, volume_size=size, sign_key=sign_key, base=base,
                dry_run=dry_run, workers=workers, graph_url=graph_url, signature_store=signature_store,
                graph_data_url=graph_data_url, graph_base_image=graph_base_image, remove_signatures=remove_signatures, release_keys=tuple(release_keys),
                target_kind=target_kind, progress=progress,
            ),
            registries=registries,
        )
    finally:
        progress.close()
        registries.close()
    failed = [img for img in result.images if img.status == "failed"]
    if as_json:
        emit_json(result.to_json())
        if dry_run and failed:
            raise ImageNotFoundError(f"{len(failed)} of {len(result.images)} planned images cannot be resolved (see the JSON)")
        return
    _echo_images(result, config=config, target_kind=target_kind, dry_run=dry_run)
    _echo_reports(result, release_keys_given=bool(release_keys))
    if dry_run and failed:
        raise ImageNotFoundError(
            f"{len(failed)} of {len(result.images)} planned images cannot be resolved (listed above)", hint="fix the config or the credentials"
        )
    click.echo(f"Total: {human_bytes(result.total_bytes)} (unique blobs)")
    if not dry_run:
        _echo_written(result, out_dir=out_dir, base=base, signed=bool(sign_key))


def _echo_images(result: "PackResult", *, config: Path, target_kind: str, dry_run: bool) -> None:
    """The plan's warnings, then every image (a dry run) or how many of each kind."""
    for w in result.plan.warnings:
        warn(w)
    by_kind: Dict[str, List[PackedImage]] = {}
    for img in result.images:
        by_kind.setdefault(img.planned.kind, []).append(img)
    if dry_run:
        click.echo(f"Plan for {config} (dry run, nothing written):")
        for img in result.images:
            status = "" if img.status != "failed" else f"  FAILED: {img.error}"
            status += f"  REFUSED by {target_kind}: {img.refused}" if img.refused else ""
            click.echo(f"  {img.planned.kind:18} {img.planned.source} -> {img.planned.target_repository}:{img.planned.target_tag}  {human_bytes(img.bytes_needed)}{status}")
    click.echo("Images: " + ", ".join(f"{len(v)} {k}" for k, v in sorted(by_kind.items())))


def _echo_reports(result: "PackResult", *, release_keys_given: bool) -> None:
    """What planning found about catalogs, the update graph and signatures."""
    for cat in result.plan.reports.catalogs or []:
        size_text = f", {human_bytes(cat.bytes)}" if cat.bytes else ""
        how = f"{cat.format}, {cat.mode}" + (", pruned image built" if cat.pruned else ", copied as is")
        click.echo(
            f"Catalog {cat.catalog} ({how}): {cat.packages} packages, {cat.channels} channels, "
            f"{cat.bundles} bundles, {cat.images} images{size_text}; {len(cat.recovered)} recovered from CSVs"
        )
        for rec in cat.recovered:
            click.echo(f"  recovered (value: instead of image: in the CSV): {rec.to_json()}")
    graph = result.plan.reports.graph
    if graph is not None:
        click.echo(f"Update graph: {graph.files} files ({human_bytes(graph.data_bytes)}) from {graph.data_url}, built on {graph.base_image} as {graph.digest}")
    for chart in result.plan.reports.helm or []:
        click.echo(f"Helm chart {chart.name} {chart.version} from {chart.source}: {len(chart.images)} images; carried as {chart.file} and pushed as {chart.artifact}")
    sigs = result.plan.reports.signatures
    if sigs is not None:
        click.echo(sigs.summary())
        for line in sigs.verification:
            click.echo(f"  {line}")
    if not release_keys_given and result.plan.reports.releases:
        warn("release signatures were NOT verified (no --release-key given); they are carried as published")


def _echo_written(result: "PackResult", *, out_dir: Path, base: Optional[Path], signed: bool) -> None:
    """Where the bundle went, what an incremental one left to its base, and what to do next."""
    click.echo(f"Bundle written to {out_dir} in {result.seconds:.1f}s")
    assert result.bundle is not None
    if base is not None:
        click.echo(f"Incremental against {base}: {result.bundle.blobs_written} blobs carried, {result.bundle.blobs_skipped_by_base} left to the base bundle")
    if not signed:
        warn("the bundle is not signed; use --sign-key so the far side can prove it is yours")
    click.echo(f"Next: carry {out_dir} across, then run: ocp-bundler verify {out_dir}" + (" --key <public key>" if signed else ""))

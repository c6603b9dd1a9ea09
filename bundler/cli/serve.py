"""`ocp-bundler serve`: a bundle as a read-only registry, in the foreground, with an access summary."""

from __future__ import annotations

import signal
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, List, Optional, Tuple

import click

from bundler.cli.support import CONTEXT, CliProgress, command_body, common_options, emit_json, warn

if TYPE_CHECKING:
    from bundler.flows.serve import RegistryServer


@click.command("serve", context_settings=CONTEXT)
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--base", "bases", multiple=True, type=click.Path(path_type=Path), help="An earlier bundle an incremental bundle leaves blobs to (repeatable).")
@click.option("--listen", default="127.0.0.1:5000", show_default=True, metavar="HOST:PORT", help="Address to serve on (0.0.0.0:PORT for every interface; port 0 picks one).")
@click.option("--prefix", default="", help="Repository prefix, as unpack would use it: images appear at PREFIX/<repository>.")
@click.option("--tls-cert", type=click.Path(dir_okay=False, path_type=Path), help="Serve HTTPS with this certificate (PEM, leaf first).")
@click.option("--tls-key", type=click.Path(dir_okay=False, path_type=Path), help="The certificate's private key (PEM).")
@click.option("--key", type=click.Path(path_type=Path), help="Public key the bundle must be signed with.")
@click.option("--require-signature", is_flag=True, help="Refuse to serve unless the bundle is signed and the signature matches --key.")
@click.option("--no-verify", is_flag=True, help="Serve without verifying the volumes first (NOT recommended; a loud warning is printed).")
@click.option(
    "--resources-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Also write the cluster resources (IDMS/ITMS or ICSP, CatalogSources, ...) for pulls from this server, as unpack does.",
)
@click.option(
    "--advertise",
    metavar="HOST:PORT",
    help="The name clusters reach this server by, for --resources-dir. Default: the --listen address (required when it is 0.0.0.0).",
)
@click.option("--icsp", is_flag=True, help="With --resources-dir: ImageContentSourcePolicy (OCP 4.4-4.12) instead of IDMS/ITMS.")
@click.option(
    "--systemd-unit",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a systemd service unit that runs this same serve command at boot, then exit without serving.",
)
@common_options
@command_body
def serve(
    directory: Path,
    bases: Tuple[Path, ...],
    listen: str,
    prefix: str,
    tls_cert: Optional[Path],
    tls_key: Optional[Path],
    key: Optional[Path],
    require_signature: bool,
    no_verify: bool,
    resources_dir: Optional[Path],
    advertise: Optional[str],
    icsp: bool,
    systemd_unit: Optional[Path],
    verbose: int,
    as_json: bool,
) -> None:
    """Serve a bundle as a read-only registry, reading blobs in place from its volumes.

    Images appear at the names unpack would give them (with --prefix). Pull with podman, skopeo, crane,
    a cluster's CRI-O or `ocp-bundler copy`; pushes are refused (405). The bundle is verified first
    (signature and every volume) unless --no-verify. Stop with Ctrl-C (or SIGTERM): a summary follows.

    \b
    Examples:
      ocp-bundler serve /media/usb --key bundle.pub --listen 0.0.0.0:5000
      skopeo copy --all --src-tls-verify=false docker://HOST:5000/ocp4/openshift4:4.4.5-x86_64 oci:/tmp/x
      ocp-bundler serve /media/usb2 --base /media/usb --tls-cert mirror.crt --tls-key mirror.key --listen :8443
      ocp-bundler serve /media/usb --key bundle.pub --listen 0.0.0.0:5000 --systemd-unit ocp-bundler-serve.service
      ocp-bundler serve /media/usb --listen 0.0.0.0:5000 --advertise edge1.example.com:5000 --resources-dir ./resources
    """
    if systemd_unit is not None:
        unit_args = _serve_args(directory, bases, listen=listen, prefix=prefix, tls_cert=tls_cert, tls_key=tls_key, key=key)
        _write_systemd_unit(systemd_unit, unit_args + (["--require-signature"] if require_signature else []) + (["--no-verify"] if no_verify else []))
        return

    from bundler.flows.serve import ServeOptions, missing_note, open_server

    _verify_first(directory, bases, key=key, require_signature=require_signature, no_verify=no_verify, as_json=as_json)
    server = open_server(directory, ServeOptions(listen=listen, prefix=prefix, bases=bases, tls_cert=tls_cert, tls_key=tls_key))
    if resources_dir is not None:
        _write_resources(server, directory, advertise=advertise, prefix=prefix, out_dir=resources_dir, icsp=icsp, as_json=as_json)
    for note in missing_note(server.index):
        warn(note)
    _serve_until_stopped(server, directory, as_json=as_json)


def _serve_args(
    directory: Path, bases: Tuple[Path, ...], *, listen: str, prefix: str, tls_cert: Optional[Path], tls_key: Optional[Path], key: Optional[Path]
) -> List[str]:
    """This serve command's arguments, paths made absolute (for a unit that runs it at boot)."""
    args = [str(directory.resolve()), "--listen", listen]
    for base in bases:
        args += ["--base", str(base.resolve())]
    for flag, value in (("--prefix", prefix), ("--tls-cert", tls_cert), ("--tls-key", tls_key), ("--key", key)):
        if value:
            args += [flag, str(Path(value).resolve()) if isinstance(value, Path) else str(value)]
    return args


def _write_systemd_unit(path: Path, args: List[str]) -> None:
    from bundler.base.fsutil import atomic_write
    from bundler.flows.serve import systemd_unit_text

    atomic_write(path, systemd_unit_text(args).encode())
    click.echo(f"wrote {path}: sudo cp {path} /etc/systemd/system/ && sudo systemctl daemon-reload && sudo systemctl enable --now {path.name}")


def _verify_first(directory: Path, bases: Tuple[Path, ...], *, key: Optional[Path], require_signature: bool, no_verify: bool, as_json: bool) -> None:
    """The bundle and its bases verified (signature and every volume), or a loud warning with --no-verify."""
    import logging

    log = logging.getLogger("bundler.serve")
    if no_verify:
        log.warning("serving %s WITHOUT verifying it (--no-verify): damaged or altered content may be served", directory)
        return
    from bundler.bundle.verify import verify_bundle

    for path in (directory, *bases):
        progress = CliProgress("verify", enabled=not as_json)
        try:
            verify_bundle(path, key=key, require_signature=require_signature, progress=progress)
        finally:
            progress.close()


def _write_resources(
    server: "RegistryServer", directory: Path, *, advertise: Optional[str], prefix: str, out_dir: Path, icsp: bool, as_json: bool
) -> None:
    """The cluster resources for pulls from this server (--resources-dir)."""
    from bundler.base.errors import UsageError
    from bundler.flows.serve import write_served_resources

    name = advertise or server.address
    if name.startswith(("0.0.0.0:", "[::]:", ":")):
        server.httpd.server_close()
        raise UsageError("--resources-dir needs the name clusters reach this server by", hint="add --advertise HOST:PORT")
    written = write_served_resources(directory, registry=name, prefix=prefix, out_dir=out_dir, icsp=icsp)
    if not as_json:
        click.echo(f"cluster resources for {name} in {out_dir} (see README.txt there); {written.changes.summary()}")


def _serve_until_stopped(server: "RegistryServer", directory: Path, *, as_json: bool) -> None:
    """Serve in the foreground until Ctrl-C or SIGTERM, then print the access summary."""
    from bundler.flows.serve import summary

    def stop(signum: int, frame: Optional[FrameType]) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    images = sum(len(tags) for tags in server.index.tags.values())
    if as_json:
        emit_json({"url": server.url, "repositories": len(server.index.tags), "images": images})
    else:
        click.echo(f"serving {images} images in {len(server.index.tags)} repositories of {directory} at {server.url} (read-only); Ctrl-C stops")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()
    if not as_json:
        click.echo(f"stopped: {summary(server.stats)}")

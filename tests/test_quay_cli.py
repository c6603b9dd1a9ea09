"""`ocp-bundler quay ...` as users run it: one clear error line with the right exit code when something is
missing, and `quay up --bundle` end to end from a real bundle (written by `bundler.bundle.volumes`) of stand-in
images; plus the layering rule (no click below the CLI)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from bundler.cli import main
from bundler.quay.bringup import LOCAL_REPOSITORY, QuayPaths, images_from_bundle, quay_down, registry_role
from bundler.oci.digest import Digest
from tests.conftest import require_tool, cli_runner


def _run(args: List[str], **env: str) -> "subprocess.CompletedProcess[str]":
    import os

    full_env = {**os.environ, **env}
    return subprocess.run([sys.executable, "-m", "bundler.cli", *args], capture_output=True, text=True, env=full_env, timeout=120)


def test_podman_missing_is_one_line_and_exit_2(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    proc = _run(["quay", "up", "--hostname", "mirror.example.com", "--data-dir", str(tmp_path / "d")], PATH=str(empty))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == ["error: podman is not installed: install podman 4.3 or newer (dnf install podman / apt-get install podman runc) and rerun"]
    assert not (tmp_path / "d").exists()
    proc = _run(["quay", "status"], PATH=str(empty))
    assert proc.returncode == 2 and proc.stderr.startswith("error: podman is not installed")


def test_usage_errors_are_exit_2(tmp_path: Path) -> None:
    runner = cli_runner()
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    out = runner.invoke(main, ["quay", "up", "--hostname", "h", "--ssl-cert", str(cert), "--data-dir", str(tmp_path / "d")])
    assert out.exit_code == 2 and "--ssl-cert and --ssl-key go together" in out.output
    out = runner.invoke(main, ["quay", "up", "--hostname", "bad host", "--data-dir", str(tmp_path / "d")])
    assert out.exit_code == 2 and "invalid --hostname" in out.output
    out = runner.invoke(main, ["quay", "up", "--hostname", "h", "--s3-host", "minio", "--data-dir", str(tmp_path / "d")])
    assert out.exit_code == 2 and "S3 storage needs --s3-bucket" in out.output
    out = runner.invoke(main, ["quay", "up", "--hostname", "h", "--bundle", str(tmp_path), "--data-dir", str(tmp_path / "d")])
    assert out.exit_code == 2 and out.output.startswith("error: ") and len(out.output.strip().splitlines()) == 1
    out = runner.invoke(main, ["quay", "down", "--purge", "--yes", "--data-dir", str(tmp_path)])
    if out.exit_code != 2:  # podman may be absent here: then that is the one-line error
        pytest.fail(out.output)
    assert "is not a Quay data directory made by ocp-bundler" in out.output or "podman is not installed" in out.output
    assert tmp_path.exists()


def test_registry_roles_from_repository_names() -> None:
    assert registry_role("registry.redhat.io/quay/quay-rhel8:v3.12.1") == "quay"
    assert registry_role("quay/quay-rhel8") == "quay"
    assert registry_role("registry.redhat.io/rhel9/postgresql-15:latest") == "postgres"
    assert registry_role("rhel9/redis-7") == "redis"
    assert registry_role("quay.io/openshift/origin-cli") is None
    assert registry_role("example.com/x/db", {"io.ocp-bundler.registry.client-role": "postgres"}) == "postgres"


def test_library_modules_do_not_import_click() -> None:
    code = (
        "import sys; import bundler.quay.bringup, bundler.quay.api, bundler.quay.config, bundler.quay.certs, bundler.quay.podman; "
        "bad = [m for m in ('click', 'tqdm') if m in sys.modules]; print(','.join(bad))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == ""


# -- quay up --bundle, end to end --------------------------------------------------------------------------


@pytest.fixture
def bundle_of_stand_ins(tmp_path: Path) -> Iterator[Path]:
    """A real bundle whose `registry` images are the podman test stand-ins."""
    require_tool("podman")
    from bundler.bundle.volumes import BundleWriteOptions, write_bundle
    from bundler.bundle.manifest import BundleImage
    from bundler.layout.store import Layout
    from tests.test_quay_podman import POSTGRES_SCRIPT, REDIS_SCRIPT, _busybox_image, _quay_stand_in
    from tests.infra.images import Manifestish, make_index, write_oci_layout

    tag = f"t{uuid.uuid4().hex[:8]}"
    objs: Dict[str, Manifestish] = {
        "rhel9/postgresql-15": make_index([_busybox_image(POSTGRES_SCRIPT + f" # {tag}", role="postgres", docker=True)], docker=True),
        "rhel9/redis-7": _busybox_image(REDIS_SCRIPT + f" # {tag}", role="redis"),
        "quay/quay-rhel8": make_index([_quay_stand_in()]),
    }
    layout_dir = tmp_path / "layout"
    write_oci_layout(layout_dir, [(f"registry.redhat.io/{repo}:{tag}", obj) for repo, obj in objs.items()])
    images = [
        BundleImage(
            source=f"registry.redhat.io/{repo}:{tag}",
            digest=Digest.parse(obj.digest),
            media_type=obj.media_type,
            size=obj.size,
            kind="registry",
            target_repository=repo,
            target_tag=tag,
        )
        for repo, obj in objs.items()
    ]
    out = tmp_path / "bundle"
    write_bundle(Layout(layout_dir, create=False), images, options=BundleWriteOptions(out_dir=out))
    yield out
    config_ids = [img.config.digest.split(":", 1)[1] for obj in objs.values() for img in obj.images]
    for image_id in config_ids:
        subprocess.run(["podman", "rmi", "--force", image_id], capture_output=True)


def test_quay_up_from_a_bundle_with_the_cli(bundle_of_stand_ins: Path, real_quay: Any, tmp_path: Path) -> None:
    """The podman part runs the stand-in images; the REST part is the real Quay (`--api-url`, with its
    superuser's token in `--api-token-file`)."""
    from bundler.quay.certs import ensure_certificates

    found = images_from_bundle(bundle_of_stand_ins)
    assert [i.role for i in found] == ["postgres", "redis", "quay"]
    assert found[2].local_name.startswith(f"{LOCAL_REPOSITORY}/quay:t")

    name = f"ocpbt-cli-{uuid.uuid4().hex[:6]}"
    org = f"cli{uuid.uuid4().hex[:6]}"
    data = tmp_path / "quay"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    paths = QuayPaths(data)
    ensure_certificates(paths.certificates, hostname="127.0.0.1")
    token_file = tmp_path / "token"
    token_file.write_text(real_quay.token + "\n")
    args = [
        "quay", "up", "--bundle", str(bundle_of_stand_ins), "--hostname", "127.0.0.1", "--port", str(port),
        "--bind-address", "127.0.0.1", "--data-dir", str(data), "--name", name, "--timeout", "60",
        "--health-path", "/v2/", "--skip-database-setup", "--org", org,
        "--api-url", real_quay.url, "--api-token-file", str(token_file),
    ]  # fmt: skip
    runner = cli_runner()
    try:
        out = runner.invoke(main, [*args, "--json"])
        assert out.exit_code == 0, out.output
        doc = json.loads(out.output)
        assert [i["loaded"] for i in doc["images"]] == [True, True, True]
        assert doc["robots"] == [f"{org}+bundler"] and doc["server"] == f"127.0.0.1:{port}"
        assert doc["readers"] == [f"{org}+cluster_pull"] and doc["pullSecretFile"] == str(paths.pull_secret_file)
        assert real_quay.api("GET", f"/api/v1/organization/{org}")[0] == 200

        out = runner.invoke(main, args)
        assert out.exit_code == 0, out.output
        assert f"Quay is running at https://127.0.0.1:{port} (pod {name}); nothing changed" in out.output
        assert f"/etc/containers/certs.d/127.0.0.1:{port}/ca.crt" in out.output
        assert "update-ca-trust" in out.output
        assert f"ocp-bundler pull-secret --file pull-secret.json --from {paths.pull_secret_file}" in out.output
        secrets = json.loads(paths.secrets_file.read_text())
        for key in ("init_password", "secret_key", "database_secret_key"):
            assert secrets[key] not in out.output
        for token in [real_quay.token, *secrets["robot_tokens"].values(), *secrets["reader_tokens"].values()]:
            assert token not in out.output
    finally:
        quay_down(name=name, stop_timeout=2)

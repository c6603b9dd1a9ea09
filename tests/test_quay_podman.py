"""`quay up|status|down` for real with podman, on stand-in images built here (no internet).

The orchestration is real (load, pod with a published port, volumes, env files, health wait, REST calls,
auth file, systemd units, rerun, status, down, purge); only the images are stand-ins:

- "quay": the host's `docker-registry` binary (+ libc and ld-linux) serving HTTPS on 8443 with the
  `ssl.cert`/`ssl.key` that `quay up` writes into the config volume, storing into `/datastorage`; it refuses
  to start without `config.yaml` in the config volume. It answers `/v2/`, not `/health/instance`, so the
  tests set `health_path="/v2/"`. The REST calls (organisations, robots, teams, permissions) go to the
  real Project Quay of the `real_quay` fixture (`api_url`, plain HTTP on loopback): that part needs no
  container image. The real Quay was initialised by its fixture, so the bring-up uses its API token
  (`api_token`); the bring-up initialising a fresh Quay itself is proven in `test_quay_real_config`.
- "postgres" / "redis": busybox images that exit 3 unless the POSTGRESQL_* / REDIS_PASSWORD variables
  arrive, and stop promptly on SIGTERM; `database_setup=False` because they have no `psql`.

Every name (pod, containers, image tags) is unique per run, and each image carries a per-run label so
its ID (the config digest) is unique too; everything created is removed at the end.
"""

from __future__ import annotations

import base64
import json
import socket
import stat
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional

import pytest
import urllib3

from bundler.layout.store import Layout
from bundler.quay.bringup import (
    LOCAL_REPOSITORY,
    QuayHealthError,
    QuayPaths,
    QuayStartError,
    QuayUpOptions,
    RegistryImage,
    host_platform,
    load_image,
    quay_down,
    quay_status,
    quay_up,
)
from bundler.quay.certs import ensure_certificates
from bundler.quay.podman import Podman
from bundler.transfer.transports import LayoutImage
from tests.conftest import require_tool, cli_runner
from tests.infra.images import Image, make_config, make_image, make_index, make_layer, make_manifest, write_oci_layout

RUN = uuid.uuid4().hex[:8]
ARCH = host_platform().architecture

REGISTRY_CONFIG = """version: 0.1
log: {level: info, accesslog: {disabled: true}}
storage:
  filesystem: {rootdirectory: /datastorage/registry}
http:
  addr: ":8443"
  secret: quay-stand-in
  tls: {certificate: /quay-registry/conf/stack/ssl.cert, key: /quay-registry/conf/stack/ssl.key}
"""

QUAY_SCRIPT = (
    "test -f /quay-registry/conf/stack/config.yaml || { echo 'quay stand-in: no config.yaml in the config volume' >&2; exit 4; }; "
    "echo 'quay stand-in: starting'; "
    "trap 'kill -TERM $pid; wait $pid; exit 0' TERM INT; "
    "/usr/bin/docker-registry serve /etc/registry.yml & pid=$!; wait $pid"
)
NEVER_HEALTHY_SCRIPT = (
    "trap 'exit 0' TERM INT; echo 'quay stand-in: starting'; "
    "while :; do echo 'quay stand-in: database migration pending, not listening yet'; sleep 1; done"
)
POSTGRES_SCRIPT = (
    'for v in POSTGRESQL_USER POSTGRESQL_PASSWORD POSTGRESQL_DATABASE POSTGRESQL_ADMIN_PASSWORD; do '
    'eval "test -n \\"\\$$v\\"" || { echo "postgres stand-in: $v is not set" >&2; exit 3; }; done; '
    "echo ok > /var/lib/pgsql/data/stand-in-was-here; echo 'postgres stand-in: ready'; "
    "trap 'exit 0' TERM INT; while :; do sleep 1; done"
)
CRASHING_POSTGRES_SCRIPT = "echo 'FATAL: data directory has wrong ownership' >&2; exit 1"
REDIS_SCRIPT = (
    'test -n "$REDIS_PASSWORD" || { echo "redis stand-in: REDIS_PASSWORD is not set" >&2; exit 3; }; '
    "echo 'redis stand-in: ready'; trap 'exit 0' TERM INT; while :; do sleep 1; done"
)


def _busybox_image(script: str, *, role: str, docker: bool = False, files: Optional[Mapping[str, bytes]] = None, arch: str = ARCH) -> Image:
    content: Dict[str, bytes] = {"bin/busybox": Path("/bin/busybox").read_bytes(), "tmp/": b"", **(files or {})}
    modes = {"bin/busybox": 0o755, "tmp": 0o1777}
    for name in files or {}:
        if name.startswith("usr/bin/") or ".so" in name:
            modes[name] = 0o755
    layer = make_layer(content, modes=modes, docker=docker)
    config = make_config(
        [layer],
        docker=docker,
        architecture=arch,
        extra={
            "config": {
                "Env": ["PATH=/usr/bin:/bin"],
                "Entrypoint": ["/bin/busybox", "sh", "-c", script],
                "Labels": {"io.ocp-bundler.test-run": RUN, "io.ocp-bundler.test-role": role},
                "ExposedPorts": {"8443/tcp": {}} if role == "quay" else {},
            }
        },
    )
    return make_manifest(config, [layer], docker=docker)


def _quay_stand_in() -> Image:
    files = {
        "usr/bin/docker-registry": Path("/usr/bin/docker-registry").read_bytes(),
        "lib/x86_64-linux-gnu/libc.so.6": Path("/lib/x86_64-linux-gnu/libc.so.6").read_bytes(),
        "lib64/ld-linux-x86-64.so.2": Path("/lib64/ld-linux-x86-64.so.2").read_bytes(),
        "etc/registry.yml": REGISTRY_CONFIG.encode(),
    }
    return _busybox_image(QUAY_SCRIPT, role="quay", files=files)


@dataclass
class StandIns:
    layout_dir: Path
    images: Dict[str, Image]  # role -> the single-platform image podman gets
    tops: Dict[str, object]  # role -> what the layout names (image or list)

    def registry_image(self, role: str, ref: Optional[str] = None) -> RegistryImage:
        name = ref or role
        return RegistryImage(role.split("-")[0], LayoutImage(Layout(self.layout_dir, create=False), name), f"{LOCAL_REPOSITORY}/test-{RUN}-{name}:v1")

    def standard(self) -> List[RegistryImage]:
        return [self.registry_image("postgres"), self.registry_image("redis"), self.registry_image("quay")]


@pytest.fixture(scope="module")
def podman_ready() -> Podman:
    require_tool("podman")
    if not Path("/etc/containers/containers.conf").exists():
        pytest.fail("/etc/containers/containers.conf is missing: run scripts/install-deps.sh (runc and ulimits are required here)")
    if ARCH != "amd64" or not Path("/usr/bin/docker-registry").exists():
        require_tool("docker-registry")
    return Podman()


@pytest.fixture(scope="module")
def stand_ins(podman_ready: Podman, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandIns]:
    layout_dir = tmp_path_factory.mktemp("standins") / "layout"
    # postgres: a Docker-typed manifest list with a foreign-platform sibling (the loader must pick ours)
    pg = _busybox_image(POSTGRES_SCRIPT, role="postgres", docker=True)
    other = "arm64" if ARCH != "arm64" else "amd64"
    pg_list = make_index([make_image(seed=f"other-{RUN}", docker=True, architecture=other), pg], docker=True)
    # redis: a single OCI manifest; quay: an OCI index with only our platform
    redis = _busybox_image(REDIS_SCRIPT, role="redis")
    quay = _quay_stand_in()
    quay_index = make_index([quay])
    never = _busybox_image(NEVER_HEALTHY_SCRIPT, role="quay-never")
    crash = _busybox_image(CRASHING_POSTGRES_SCRIPT, role="postgres-crash")
    tops = {"postgres": pg_list, "redis": redis, "quay": quay_index, "quay-never": never, "postgres-crash": crash}
    write_oci_layout(layout_dir, [(name, obj) for name, obj in tops.items()])  # type: ignore[misc]
    images = {"postgres": pg, "redis": redis, "quay": quay, "quay-never": never, "postgres-crash": crash}
    yield StandIns(layout_dir, images, tops)
    for img in images.values():
        podman_ready.remove_image(img.config.digest.split(":", 1)[1], force=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def pod_name(podman_ready: Podman) -> Iterator[str]:
    name = f"ocpbt-{RUN}-{uuid.uuid4().hex[:6]}"
    yield name
    quay_down(name=name, podman=podman_ready, stop_timeout=2)


def _options(data_dir: Path, name: str, port: int, **kw: object) -> QuayUpOptions:
    base = dict(
        hostname="127.0.0.1",
        data_dir=data_dir,
        port=port,
        bind_address="127.0.0.1",
        name=name,
        health_path="/v2/",
        health_timeout=60.0,
        database_setup=False,
    )
    base.update(kw)
    return QuayUpOptions(**base)  # type: ignore[arg-type]


def _inspect(ref: str) -> dict:  # type: ignore[type-arg]
    out = subprocess.run(["podman", "image", "inspect", ref], capture_output=True, text=True, check=True).stdout
    return json.loads(out)[0]  # type: ignore[no-any-return]


# -- loading -------------------------------------------------------------------------------------------------


def test_load_image_keeps_config_and_digest_for_docker_list_and_oci_image(podman_ready: Podman, stand_ins: StandIns, tmp_path: Path) -> None:
    for role in ("postgres", "redis"):
        image = stand_ins.images[role]
        reg = stand_ins.registry_image(role)
        first = load_image(podman_ready, reg, work_dir=tmp_path / "work")
        image_id = image.config.digest.split(":", 1)[1]
        assert first.image_id == image_id
        assert first.manifest_digest == image.digest  # the host platform's child, not the list
        info = _inspect(reg.local_name)
        assert info["Id"] == image_id  # image ID = config digest: the config arrived unchanged
        assert info["Digest"] == image.digest  # oci-archive keeps the manifest bytes too
        assert info["Config"]["Entrypoint"][:2] == ["/bin/busybox", "sh"]
        assert info["Config"]["Labels"]["io.ocp-bundler.test-run"] == RUN
        assert info["Architecture"] == ARCH
        again = load_image(podman_ready, reg, work_dir=tmp_path / "work")
        assert again.loaded is False and again.image_id == image_id
    assert not list((tmp_path / "work").iterdir())  # temporary layouts and archives are gone


# -- up / rerun / status / down ------------------------------------------------------------------------------


def _creds(auth_file: Path, key: str) -> str:
    user, _, token = base64.b64decode(json.loads(auth_file.read_text())["auths"][key]["auth"]).decode().partition(":")
    return f"{user}:{token}"


def test_quay_up_rerun_status_down_purge(podman_ready: Podman, stand_ins: StandIns, pod_name: str, real_quay: Any, tmp_path: Path) -> None:

    from bundler.cli import main

    data = tmp_path / "quay"
    port = _free_port()
    paths = QuayPaths(data)
    ensure_certificates(paths.certificates, hostname="127.0.0.1")
    cert_before = paths.certificates.server_cert.read_bytes()
    orgs = (f"up{RUN}a", f"up{RUN}b")
    rest = dict(api_url=real_quay.url, api_token=real_quay.token, organizations=orgs)
    opts = _options(data, pod_name, port, systemd_dir=tmp_path / "units", **rest)
    steps: List[str] = []
    result = quay_up(opts, stand_ins.standard(), podman=podman_ready, on_step=steps.append)

    assert result.server == f"127.0.0.1:{port}"
    assert not result.initialized_now  # the real Quay's fixture initialised it
    assert result.robots == [f"{orgs[0]}+bundler", f"{orgs[1]}+bundler"]
    assert result.readers == [f"{orgs[0]}+cluster_pull", f"{orgs[1]}+cluster_pull"]
    assert any("created pod" in c for c in result.changes)
    assert paths.certificates.server_cert.read_bytes() == cert_before  # reused, not re-issued

    # pod and containers
    pod = podman_ready.pod_inspect(pod_name)
    assert pod is not None and ("127.0.0.1", port, 8443) in pod.published
    infos = {role: podman_ready.container_inspect(name) for role, name in result.containers.items()}
    assert all(i is not None and i.running for i in infos.values())
    quay_info = infos["quay"]
    assert quay_info is not None
    assert (str(paths.config_dir), "/quay-registry/conf/stack") in quay_info.mounts
    assert (str(paths.storage_dir), "/datastorage") in quay_info.mounts
    assert (paths.postgres_dir / "stand-in-was-here").exists()  # the PostgreSQL volume is mounted
    assert quay_info.image_id == stand_ins.images["quay"].config.digest.split(":", 1)[1]

    # the published port speaks TLS with the certificate for 127.0.0.1, verified with our CA
    http = urllib3.PoolManager(cert_reqs="CERT_REQUIRED", ca_certs=str(paths.certificates.ca_cert))
    assert http.request("GET", f"https://127.0.0.1:{port}/v2/", retries=False).status == 200

    # secrets: 0600, used in config.yaml and in the env files, never in the output
    assert stat.S_IMODE(paths.secrets_file.stat().st_mode) == 0o600
    secrets_before = paths.secrets_file.read_bytes()
    secrets = json.loads(secrets_before)
    config_text = paths.config_file.read_text()
    assert secrets["database_secret_key"] in config_text and secrets["secret_key"] in config_text
    assert f"SERVER_HOSTNAME: 127.0.0.1:{port}" in config_text
    for env in (paths.env_dir / "postgres.env", paths.env_dir / "redis.env"):
        assert stat.S_IMODE(env.stat().st_mode) == 0o600
    shown = json.dumps(result.to_json()) + "\n".join(result.next_steps()) + "\n".join(steps)
    hidden = [secrets[k] for k in ("database_secret_key", "secret_key", "postgres_password", "redis_password", "init_password")]
    hidden += list(secrets["robot_tokens"].values()) + list(secrets["reader_tokens"].values()) + [real_quay.token]
    assert len(hidden) == 10 and not [h for h in hidden if h in shown]

    # REST on the real Quay: organisations, push robots in the creator team, read-only robots in a member team
    for org in orgs:
        assert real_quay.api("GET", f"/api/v1/organization/{org}")[0] == 200
        status, team = real_quay.api("GET", f"/api/v1/organization/{org}/team/mirror-creators/members")
        assert status == 200 and [m["name"] for m in team["members"]] == [f"{org}+bundler"]
        status, team = real_quay.api("GET", f"/api/v1/organization/{org}/team/mirror-readers/members")
        assert status == 200 and [m["name"] for m in team["members"]] == [f"{org}+cluster_pull"]
    assert real_quay.api("GET", f"/api/v1/organization/{orgs[1]}")[1]["teams"]["mirror-readers"]["role"] == "member"
    # the auth files: push robots in auth.json, read-only robots in pull-secret.json, both 0600
    server = f"127.0.0.1:{port}"
    auth_path, pull_path = result.auth_file, result.pull_secret_file
    assert auth_path == paths.auth_file and pull_path == paths.pull_secret_file
    for path in (auth_path, pull_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert set(json.loads(path.read_text())["auths"]) == {server, f"{server}/{orgs[0]}", f"{server}/{orgs[1]}"}
    # their credentials work on the real Quay: the push robot pushes, the read-only robot pulls only
    layout = write_oci_layout(tmp_path / "img", [("x", make_image(seed=f"up-{RUN}"))])
    target = f"docker://{real_quay.host}/{orgs[1]}/app:x"
    pushed = subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", "--dest-creds", _creds(auth_path, f"{server}/{orgs[1]}"), f"oci:{layout}:x", target], capture_output=True, text=True)
    assert pushed.returncode == 0, pushed.stderr
    reader = _creds(pull_path, f"{server}/{orgs[1]}")
    assert reader.startswith(f"{orgs[1]}+cluster_pull:")
    assert subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", "--creds", reader, target], capture_output=True).returncode == 0
    refused = subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", "--dest-creds", reader, f"oci:{layout}:x", target + "2"], capture_output=True, text=True)
    assert refused.returncode != 0 and "unauthorized" in refused.stderr.lower()
    assert "ocp-bundler pull-secret --file pull-secret.json --from " + str(pull_path) in "\n".join(result.next_steps())

    # systemd units
    names = sorted(p.name for p in result.systemd_units)
    assert f"pod-{pod_name}.service" in names and f"container-{pod_name}-app.service" in names
    assert all(p.exists() for p in result.systemd_units)

    # rerun: nothing changes, nothing breaks
    ids_before = {role: i.id for role, i in infos.items() if i is not None}
    config_before = paths.config_file.read_bytes()
    auth_before = auth_path.read_bytes()
    ca_before = paths.certificates.ca_cert.read_bytes()
    pull_before = pull_path.read_bytes()
    again = quay_up(_options(data, pod_name, port, systemd_dir=tmp_path / "units", **rest), stand_ins.standard(), podman=podman_ready)
    assert again.changes == []
    assert sorted(p.name for p in again.systemd_units) == sorted(p.name for p in result.systemd_units)
    assert not again.initialized_now
    assert all(not i.loaded for i in again.images)
    assert {role: podman_ready.container_inspect(n).id for role, n in again.containers.items()} == ids_before  # type: ignore[union-attr]
    assert paths.secrets_file.read_bytes() == secrets_before
    assert paths.config_file.read_bytes() == config_before
    assert auth_path.read_bytes() == auth_before
    assert pull_path.read_bytes() == pull_before
    assert paths.certificates.ca_cert.read_bytes() == ca_before

    # a rerun without --bundle uses the images podman already has
    third = quay_up(_options(data, pod_name, port, **rest), [], podman=podman_ready)
    assert third.changes == []

    # after a stop (a reboot without the units): the same containers start again, nothing else changes
    podman_ready.pod_stop(pod_name, timeout=2)
    restarted = quay_up(_options(data, pod_name, port, **rest), [], podman=podman_ready)
    assert sorted(restarted.changes) == sorted(f"started container {n}" for n in result.containers.values())
    assert {role: podman_ready.container_inspect(n).id for role, n in restarted.containers.items()} == ids_before  # type: ignore[union-attr]
    assert paths.secrets_file.read_bytes() == secrets_before

    # status, library and CLI
    st = quay_status(name=pod_name, data_dir=data, podman=podman_ready)
    assert st.running and st.healthy is True  # polled on the health path `quay up` was given
    runner = cli_runner()
    out = runner.invoke(main, ["quay", "status", "--name", pod_name, "--data-dir", str(data), "--json"])
    doc = json.loads(out.output)
    assert doc["running"] is True and doc["containers"]["quay"]["state"] == "running"
    assert doc["pod"]["state"] == "Running" and doc["healthy"] is True
    assert out.exit_code == 0, out.output
    out = runner.invoke(main, ["quay", "status", "--name", pod_name, "--data-dir", str(data)])
    assert f"Quay https://127.0.0.1:{port}: healthy" in out.output and f"{pod_name}-app running" in out.output

    # down keeps the data; down --purge --yes deletes it
    out = runner.invoke(main, ["quay", "down", "--name", pod_name, "--data-dir", str(data)])
    assert out.exit_code == 0, out.output
    assert podman_ready.pod_inspect(pod_name) is None
    assert all(podman_ready.container_inspect(n) is None for n in result.containers.values())
    assert paths.secrets_file.exists()
    out = runner.invoke(main, ["quay", "down", "--name", pod_name, "--data-dir", str(data), "--purge"])
    assert out.exit_code == 2 and "--yes" in out.output and data.exists()  # no TTY, no --yes: refused
    out = runner.invoke(main, ["quay", "down", "--name", pod_name, "--data-dir", str(data), "--purge", "--yes"])
    assert out.exit_code == 0, out.output
    assert not data.exists()


def test_quay_up_names_the_container_that_never_becomes_healthy(podman_ready: Podman, stand_ins: StandIns, pod_name: str, tmp_path: Path) -> None:
    images = [stand_ins.registry_image("postgres"), stand_ins.registry_image("redis"), stand_ins.registry_image("quay-never")]
    opts = _options(tmp_path / "quay", pod_name, _free_port(), health_timeout=4.0, api_url="https://127.0.0.1:9")
    with pytest.raises(QuayHealthError) as info:
        quay_up(opts, images, podman=podman_ready)
    err = info.value
    assert err.container == f"{pod_name}-app"
    assert err.exit_code == 5
    text = str(err)
    assert f"{pod_name}-app" in text.splitlines()[0]
    assert "database migration pending" in err.log_tail
    assert "podman logs --tail 30" in text


def test_quay_up_names_the_container_that_exits(podman_ready: Podman, stand_ins: StandIns, pod_name: str, tmp_path: Path) -> None:
    images = [stand_ins.registry_image("postgres-crash"), stand_ins.registry_image("redis"), stand_ins.registry_image("quay")]
    opts = _options(tmp_path / "quay", pod_name, _free_port(), health_timeout=20.0, api_url="https://127.0.0.1:9")
    with pytest.raises(QuayStartError) as info:
        quay_up(opts, images, podman=podman_ready)
    err = info.value
    assert err.container == f"{pod_name}-postgres"
    assert err.exit_code == 2
    assert "wrong ownership" in err.log_tail


def test_quay_up_port_taken_is_one_clear_error(podman_ready: Podman, stand_ins: StandIns, pod_name: str, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        with pytest.raises(QuayStartError) as info:
            quay_up(_options(tmp_path / "quay", pod_name, port), stand_ins.standard(), podman=podman_ready)
    assert f"port {port} is already in use" in str(info.value)
    assert info.value.exit_code == 2
    assert podman_ready.pod_inspect(pod_name) is None


def test_missing_image_without_bundle_is_a_usage_error(podman_ready: Podman, pod_name: str, tmp_path: Path) -> None:
    from bundler.base.errors import UsageError

    with pytest.raises(UsageError) as info:
        quay_up(_options(tmp_path / "quay", pod_name, _free_port()), [], podman=podman_ready)
    assert "no postgres image" in str(info.value) and "--bundle" in str(info.value)


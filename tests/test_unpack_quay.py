"""`unpack` into Quay (PROTOCOL-NOTES §4), against the Quay REST double in front of a real docker-registry.

The double refuses pushes into organisations that do not exist with 401 UNAUTHORIZED, as Quay does, and
lets a robot write only inside its own organisation. What arrives is checked with skopeo on the
docker-registry behind the double (the oracle reads the storage, not our code's view of it).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List, Sequence, Tuple

import pytest

from bundler.base.errors import AuthenticationError, ExitCode
from bundler.quay.api import QuayAPI
from bundler.quay.config import QuaySecrets, save_secrets
from bundler.registry.client import TransportOptions
from bundler.flows.unpack import UnpackOptions, UnpackPartialFailureError, unpack_bundle
from tests.infra.quay_double import QuayDouble
from tests.test_unpack import FAST, PUBLIC_KEY, Entry, check_resources, cli, content, make_bundle, signature_files

PASSWORD = "init-password-1"


@pytest.fixture
def quay(require_tool: Any) -> Any:
    require_tool("docker-registry")
    with QuayDouble(tls=True) as double:
        yield double


def orgs_of(entries: Sequence[Entry], prefix: str = "") -> List[str]:
    return sorted({(f"{prefix}/{e.repository}" if prefix else e.repository).split("/", 1)[0] for e in entries})


def quay_options(quay: Any, tmp_path: Path, **kw: Any) -> UnpackOptions:
    kw.setdefault("key", PUBLIC_KEY)
    kw.setdefault("state_dir", tmp_path / "state")
    return UnpackOptions(
        registry=quay.host,
        transport=TransportOptions(ca_file=quay.ca_file, **FAST),  # type: ignore[arg-type]
        resources_dir=tmp_path / "resources",
        workers=4,
        **kw,
    )


def initialise(quay: Any) -> str:
    with QuayAPI(quay.url, ca_file=quay.ca_file) as api:
        token = api.initialize_user("init", PASSWORD, "init@example.com")
    assert token
    return token


def write_authfile(path: Path, host: str, user: str, password: str) -> Path:
    import base64

    path.write_text(json.dumps({"auths": {host: {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}}}))
    return path


def expect_in_quay(skopeo: Any, quay: Any, prefix: str, entries: Sequence[Entry]) -> None:
    behind = quay.registry.host
    for e in entries:
        repo = f"{prefix}/{e.repository}" if prefix else e.repository
        assert skopeo.digest(f"{behind}/{repo}:{e.tag}") == e.digest, repo


def test_missing_organisations_get_a_clear_error(quay: Any, tmp_path: Path, skopeo: Any) -> None:
    """No API token: unpack cannot create organisations; pushes into missing ones fail with 401 and the
    error says which organisation is missing and how to fix it. The one that exists is filled (exit 4)."""
    entries = content("quay-missing")
    bundle = make_bundle(tmp_path / "bundle", entries)
    token = initialise(quay)
    with QuayAPI(quay.url, ca_file=quay.ca_file, token=token) as api:
        api.ensure_organization("ocp4")  # owned by init, who pushes
    auth = write_authfile(tmp_path / "auth.json", quay.host, "init", PASSWORD)
    base = ["unpack", str(bundle), "--registry", quay.host, "--ca-file", str(quay.ca_file), "--authfile", str(auth), "--resources-dir", str(tmp_path / "res")]
    base += ["--key", str(PUBLIC_KEY)]

    proc = cli(*base)
    stderr = proc.stderr.decode()
    assert proc.returncode == ExitCode.PARTIAL, stderr
    for org in ("rhscl", "myorg", "ocs4", "redhat"):
        assert f"organisation '{org}' does not exist on {quay.host}: create it or rerun with --registry-kind quay and a token" in stderr
    assert "organisation 'ocp4'" not in stderr
    assert "no API token" in stderr  # warned up front
    expect_in_quay(skopeo, quay, "", [e for e in entries if e.repository.startswith("ocp4/")])

    # nothing can be pushed at all: the same message, as a registry/authentication failure (exit 5)
    proc = cli(*base, "--prefix", "elsewhere")
    stderr = proc.stderr.decode()
    assert proc.returncode == ExitCode.REGISTRY, stderr
    assert f"organisation 'elsewhere' does not exist on {quay.host}: create it or rerun with --registry-kind quay and a token" in stderr
    assert PASSWORD not in stderr + proc.stdout.decode()


def test_with_a_token_organisations_and_robots_are_created_then_pushes_succeed(quay: Any, tmp_path: Path, skopeo: Any) -> None:
    entries = content("quay-token")
    bundle = make_bundle(tmp_path / "bundle", entries, files=signature_files(entries))
    token = initialise(quay)
    orgs = orgs_of(entries)

    dry = unpack_bundle(bundle, options=quay_options(quay, tmp_path, registry_kind="quay", quay_token=token, dry_run=True))
    assert dry.registry_kind == "quay" and list(dry.organizations_to_create) == orgs
    assert quay.organizations == set()

    result = unpack_bundle(bundle, options=quay_options(quay, tmp_path, registry_kind="quay", quay_token=token))
    assert result.registry_kind == "quay"
    assert sorted(result.organizations_created) == orgs
    assert quay.organizations == set(orgs)
    for org in orgs:  # one robot per organisation, allowed to create repositories there
        assert f"{org}+ocp_bundler" in quay.robots
        assert f"{org}+ocp_bundler" in quay.team_members(org, "mirror-creators")
    assert [i.status for i in result.images] == ["pushed"] * len(entries)
    expect_in_quay(skopeo, quay, "", entries)
    check_resources(tmp_path / "resources", quay.host, entries)
    assert token not in json.dumps(result.to_json())

    again = unpack_bundle(bundle, options=quay_options(quay, tmp_path, quay_token=token))  # auto-detected
    assert again.registry_kind == "quay" and again.organizations_created == ()
    assert {i.status for i in again.images} == {"present"}


def test_quay_up_then_unpack_with_its_robots(quay: Any, tmp_path: Path, skopeo: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--quay-up`: unpack asks the bring-up for every organisation the bundle needs, then pushes as the
    bring-up's robots (read from its data dir). The podman part is `bundler.quay.bringup`'s (tested there); here a
    stand-in does what it does through the REST API on the double and writes its data dir."""
    import bundler.quay.bringup as quay_module

    entries = content("quay-up")
    bundle = make_bundle(tmp_path / "bundle", entries)
    data_dir = tmp_path / "quay-data"
    calls: List[Any] = []

    def fake_quay_up(options: Any, images: Any, **_: Any) -> Any:
        calls.append(options)
        paths = quay_module.QuayPaths(Path(options.data_dir))
        paths.ca_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(quay.ca_file, paths.certificates.ca_cert)
        secrets = QuaySecrets.generate()
        with QuayAPI(quay.url, ca_file=quay.ca_file) as api:
            secrets.admin_token = api.initialize_user("init", secrets.init_password, "init@example.com")
            for org in options.organizations:
                api.ensure_organization(org)
                robot = api.ensure_robot(org, options.robot)
                api.grant_creator(org, robot.name)
                secrets.robot_tokens[robot.name] = robot.token
        save_secrets(paths.secrets_file, secrets)
        return SimpleNamespace(server=quay.host, ca_file=paths.certificates.ca_cert, changes=["stand-in"], warnings=[])

    monkeypatch.setattr(quay_module, "quay_up", fake_quay_up)
    monkeypatch.setattr(quay_module, "images_from_bundle", lambda directory: [])
    options = UnpackOptions(
        registry=quay.host,
        prefix="mirror",
        quay_up=True,
        quay_data_dir=data_dir,
        transport=TransportOptions(**FAST),  # type: ignore[arg-type]
        resources_dir=tmp_path / "resources",
        key=PUBLIC_KEY,
        state_dir=tmp_path / "state",
        workers=4,
    )
    result = unpack_bundle(bundle, options=options)
    assert len(calls) == 1
    assert calls[0].hostname == "127.0.0.1" and calls[0].port == quay.port and calls[0].organizations == ("mirror",)
    assert result.registry == f"{quay.host}/mirror" and result.registry_kind == "quay"
    # the bring-up's push robot was used, no other push robot was made; the stand-in bring-up made no
    # read-only robot, so unpack made one for the cluster's pull secret
    assert set(quay.robots) == {"mirror+bundler", "mirror+cluster_pull"}
    assert [i.status for i in result.images] == ["pushed"] * len(entries)
    expect_in_quay(skopeo, quay, "mirror", entries)

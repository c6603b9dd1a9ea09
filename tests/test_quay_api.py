"""`bundler.quay.api.QuayAPI` against `tests.infra.quay_double.QuayDouble` (Quay's REST answers, and a
registry behind it that refuses pushes into organisations that do not exist or belong to someone else)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Iterator

import pytest

from bundler.base.errors import AuthenticationError, ExitCode, RegistryError, RegistryUnreachableError, UsageError
from bundler.quay.api import CREATOR_TEAM, QuayAPI, RobotAccount
from tests.conftest import require_tool
from tests.infra.images import PushError, make_image, push, write_oci_layout
from tests.infra.quay_double import QuayDouble


@pytest.fixture
def quay() -> Iterator[QuayDouble]:
    require_tool("docker-registry")
    with QuayDouble() as double:
        yield double


def _admin(quay: QuayDouble) -> QuayAPI:
    api = QuayAPI(quay.url, ca_file=quay.ca_file)
    assert api.initialize_user("init", "password-123", "init@example.com")
    return api


def test_detects_quay_and_not_a_plain_registry(quay: QuayDouble, registry_plain: object) -> None:
    assert QuayAPI(quay.url, ca_file=quay.ca_file).is_quay()
    assert not QuayAPI(registry_plain.url).is_quay()  # type: ignore[attr-defined]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RegistryUnreachableError) as info:
        QuayAPI(f"https://127.0.0.1:{port}").is_quay()
    assert info.value.exit_code == ExitCode.REGISTRY


def test_tls_is_verified(quay: QuayDouble, tmp_path: Path) -> None:
    with pytest.raises(RegistryUnreachableError, match="TLS"):
        QuayAPI(quay.url).is_quay()  # the double's CA is not in the default trust store
    # reach it by a name its certificate carries while connecting to an address
    assert QuayAPI(f"https://localhost:{quay.port}", ca_file=quay.ca_file, connect_to="127.0.0.1").is_quay()
    assert QuayAPI(quay.url, insecure=True).is_quay()


def test_initialize_user_once_then_already_initialised(quay: QuayDouble) -> None:
    api = QuayAPI(quay.url, ca_file=quay.ca_file)
    token = api.initialize_user("init", "password-123", "init@example.com")
    assert token and api.token == token and token in quay.admin_tokens
    assert QuayAPI(quay.url, ca_file=quay.ca_file).initialize_user("init", "password-123", "init@example.com") is None
    assert QuayAPI(quay.url, ca_file=quay.ca_file).initialize_user("someone", "password-456", "x@example.com") is None
    with pytest.raises(UsageError, match="8 characters"):
        api.initialize_user("init", "short", "init@example.com")


def test_initialize_user_failure_is_not_mistaken_for_already_initialised(quay: QuayDouble) -> None:
    with pytest.raises(RegistryError, match="Failed to initialize user"):
        QuayAPI(quay.url, ca_file=quay.ca_file).initialize_user("X bad name", "password-123", "init@example.com")


def test_organisations_robots_and_rights_are_idempotent(quay: QuayDouble) -> None:
    api = _admin(quay)
    assert api.ensure_organization("ocp4") is True
    assert api.ensure_organization("ocp4") is False
    assert quay.organizations == {"ocp4"}
    with pytest.raises(RegistryError, match="taken by a user"):
        api.ensure_organization("init")

    robot = api.ensure_robot("ocp4", "bundler")
    assert isinstance(robot, RobotAccount) and robot.name == "ocp4+bundler" and robot.organization == "ocp4"
    assert robot.token not in repr(robot)
    assert api.ensure_robot("ocp4", "ocp4+bundler") == robot  # existing robot: same token, not re-created
    with pytest.raises(UsageError, match="belongs to"):
        api.ensure_robot("ocp4", "olm+bundler")

    api.grant_creator("ocp4", "bundler")
    api.grant_creator("ocp4", robot.name)
    assert quay.team_role("ocp4", CREATOR_TEAM) == "creator"
    assert quay.team_members("ocp4", CREATOR_TEAM) == {"ocp4+bundler"}
    protos = quay.prototypes("ocp4")
    assert len(protos) == 1 and protos[0]["role"] == "write" and protos[0]["delegate"]["name"] == "ocp4+bundler"

    assert api.login_check(robot.name, robot.token)
    assert not api.login_check(robot.name, "wrong")
    assert api.login_check("init", "password-123")


def test_missing_or_expired_token_is_an_authentication_error(quay: QuayDouble) -> None:
    api = _admin(quay)
    with pytest.raises(AuthenticationError, match="needs a Quay API token"):
        QuayAPI(quay.url, ca_file=quay.ca_file).ensure_organization("ocp4")
    with pytest.raises(AuthenticationError) as info:
        QuayAPI(quay.url, ca_file=quay.ca_file, token="not-a-token").ensure_organization("ocp4")
    assert info.value.status == 401 and "--api-token-file" in str(info.value)
    assert info.value.exit_code == ExitCode.REGISTRY
    quay.expire_tokens()
    with pytest.raises(AuthenticationError):
        api.ensure_robot("ocp4", "bundler")
    assert "not-a-token" not in str(info.value)


def test_registry_refuses_pushes_into_missing_or_foreign_organisations(quay: QuayDouble) -> None:
    api = _admin(quay)
    api.ensure_organization("ocp4")
    api.ensure_organization("olm")
    robot = api.ensure_robot("ocp4", "bundler")
    api.grant_creator("ocp4", robot.name)
    bare = api.ensure_robot("olm", "nogrant")  # exists, but has no rights
    img = make_image(seed="quay-double", random_layers=[2048])
    auth = (robot.name, robot.token)

    # into its own organisation, with deeper paths: accepted and stored by the real registry behind
    digest = push(quay.url, "ocp4/openshift4/release", img, tag="v1", ca_file=quay.ca_file, auth=auth)
    assert digest == img.digest
    assert quay.registry is not None
    from tests.infra.images import RegistryClient

    with RegistryClient(quay.registry.url) as direct:
        raw, _ = direct.get_manifest("ocp4/openshift4/release", "v1")
    assert raw == img.raw

    for repo, creds in (("nope/app", auth), ("olm/app", auth), ("olm/app", (bare.name, bare.token)), ("ocp4/app", (robot.name, "bad-token"))):
        with pytest.raises(PushError) as info:
            push(quay.url, repo, img, tag="v1", ca_file=quay.ca_file, auth=creds)
        assert "401" in str(info.value), repo
        if creds[1] != "bad-token":
            assert "UNAUTHORIZED" in str(info.value)
    # the organisation's creator (the first user) may push there
    push(quay.url, "olm/app", img, tag="v1", ca_file=quay.ca_file, auth=("init", "password-123"))


def test_bundler_copy_pushes_through_the_double_with_a_robot_auth_file(quay: QuayDouble, tmp_path: Path) -> None:
    """What unpack will do: bundler's own registry client, credentials from a docker auth file."""
    import base64

    from bundler.registry.auth import CredentialStore
    from bundler.transfer.copy import Copier
    from bundler.layout.store import Layout
    from bundler.oci.reference import Reference
    from bundler.registry.client import Registries, TransportOptions
    from bundler.transfer.transports import LayoutImage, RegistryRepository

    api = _admin(quay)
    api.ensure_organization("ocp4")
    robot = api.ensure_robot("ocp4", "bundler")
    api.grant_creator("ocp4", robot.name)
    authfile = tmp_path / "auth.json"
    authfile.write_text(json.dumps({"auths": {quay.host: {"auth": base64.b64encode(f"{robot.name}:{robot.token}".encode()).decode()}}}))
    img = make_image(seed="copy-through-double", random_layers=[4096, 1024])
    write_oci_layout(tmp_path / "layout", [("app:v1", img)])

    registries = Registries(credentials=CredentialStore(authfile), options=TransportOptions(ca_file=quay.ca_file))
    try:
        with Copier() as copier:
            src = LayoutImage(Layout(tmp_path / "layout", create=False), "app:v1")
            ok = copier.copy(src, RegistryRepository(registries.client(quay.host), Reference.parse(f"{quay.host}/ocp4/app:v1")))
            assert str(ok.digest) == img.digest
            with pytest.raises(BaseException) as info:
                copier.copy(src, RegistryRepository(registries.client(quay.host), Reference.parse(f"{quay.host}/missing/app:v1")))
            assert isinstance(info.value, RegistryError) and info.value.status == 401
    finally:
        registries.close()

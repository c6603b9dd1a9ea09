"""`bundler.quay.api.QuayAPI` against a real Project Quay 3.18 (`real_quay`, ../shared/quay).

The real Quay serves plain HTTP on loopback, so TLS verification alone is tested against the Quay REST double
(`tests.infra.quay_double`, which speaks TLS with a test CA): nothing real here speaks Quay's API over TLS.
The shared Quay's superuser is initialised by its fixture; a first initialisation on an empty Quay is
tested by the bring-up's tests on a Quay of their own.
"""

from __future__ import annotations

import base64
import json
import socket
from pathlib import Path
from typing import Any, Iterator

import pytest

from bundler.base.errors import AuthenticationError, ExitCode, RegistryError, RegistryUnreachableError, UsageError
from bundler.quay.api import CREATOR_TEAM, QuayAPI, RobotAccount
from tests.conftest import require_tool
from tests.infra.images import PushError, make_image, push, write_oci_layout
from tests.infra.quay_double import QuayDouble


@pytest.fixture
def double() -> Iterator[QuayDouble]:
    require_tool("docker-registry")
    with QuayDouble() as quay:
        yield quay


def admin(quay: Any) -> QuayAPI:
    return QuayAPI(quay.url, token=quay.token)


def test_detects_quay_and_not_a_plain_registry(real_quay: Any, registry_plain: Any) -> None:
    assert QuayAPI(real_quay.url).is_quay()
    assert not QuayAPI(registry_plain.url).is_quay()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RegistryUnreachableError, match=f"cannot reach 127.0.0.1:{port}") as info:
        QuayAPI(f"http://127.0.0.1:{port}", timeout=2).is_quay()
    assert info.value.exit_code == ExitCode.REGISTRY


def test_tls_is_verified(double: QuayDouble) -> None:
    """The double: the real Quay here has no TLS."""
    with pytest.raises(RegistryUnreachableError, match="TLS"):
        QuayAPI(double.url).is_quay()  # the double's CA is not in the default trust store
    # reach it by a name its certificate carries while connecting to an address
    assert QuayAPI(f"https://localhost:{double.port}", ca_file=double.ca_file, connect_to="127.0.0.1").is_quay()
    assert QuayAPI(double.url, insecure=True).is_quay()


def test_initialising_an_initialised_quay_is_not_a_failure(real_quay: Any) -> None:
    api = QuayAPI(real_quay.url)
    assert api.initialize_user("someone", "password-456", "x@example.com") is None  # already has users
    with pytest.raises(UsageError, match="8 characters"):
        api.initialize_user("init", "short", "init@example.com")


def test_organisations_robots_and_rights_are_idempotent(real_quay: Any) -> None:
    api = admin(real_quay)
    assert api.ensure_organization("apiorg") is True
    assert api.ensure_organization("apiorg") is False
    assert api.organization_exists("apiorg") and not api.organization_exists("apiorg_missing")
    with pytest.raises(RegistryError, match="taken by a user"):
        api.ensure_organization(real_quay.username)

    robot = api.ensure_robot("apiorg", "bundler")
    assert isinstance(robot, RobotAccount) and robot.name == "apiorg+bundler" and robot.organization == "apiorg"
    assert robot.token not in repr(robot)
    assert api.ensure_robot("apiorg", "apiorg+bundler") == robot  # existing robot: same token, not re-created
    with pytest.raises(UsageError, match="belongs to"):
        api.ensure_robot("apiorg", "olm+bundler")

    api.grant_creator("apiorg", "bundler")
    api.grant_creator("apiorg", robot.name)
    status, team = real_quay.api("GET", f"/api/v1/organization/apiorg/team/{CREATOR_TEAM}/members")
    assert status == 200 and [m["name"] for m in team["members"]] == ["apiorg+bundler"]
    status, org = real_quay.api("GET", "/api/v1/organization/apiorg")
    assert org["teams"][CREATOR_TEAM]["role"] == "creator"
    status, protos = real_quay.api("GET", "/api/v1/organization/apiorg/prototypes")
    assert [(p["role"], p["delegate"]["name"]) for p in protos["prototypes"]] == [("write", "apiorg+bundler")]

    assert api.login_check(robot.name, robot.token)
    assert not api.login_check(robot.name, "wrong")
    assert api.login_check(real_quay.username, real_quay.password)


def test_missing_or_wrong_token_is_an_authentication_error(real_quay: Any) -> None:
    with pytest.raises(AuthenticationError, match="needs a Quay API token"):
        QuayAPI(real_quay.url).ensure_organization("apitoken")
    with pytest.raises(AuthenticationError) as info:
        QuayAPI(real_quay.url, token="not-a-token").ensure_organization("apitoken")
    assert info.value.status in (401, 403) and "--api-token-file" in str(info.value)  # Quay 3.18: 403 "CSRF token was invalid or missing"
    assert info.value.exit_code == ExitCode.REGISTRY
    assert "not-a-token" not in str(info.value)


def test_registry_refuses_pushes_into_missing_or_foreign_organisations(real_quay: Any) -> None:
    """What the notes say of Quay, on the real one: a robot pushes only where it may create repositories."""
    api = admin(real_quay)
    api.ensure_organization("pushown")
    api.ensure_organization("pushother")
    robot = api.ensure_robot("pushown", "bundler")
    api.grant_creator("pushown", robot.name)
    bare = api.ensure_robot("pushother", "nogrant")  # exists, but has no rights
    img = make_image(seed="quay-real-push", random_layers=[2048])
    auth = (robot.name, robot.token)

    # into its own organisation, with deeper paths
    assert push(real_quay.url, "pushown/openshift4/release", img, tag="v1", auth=auth) == img.digest
    assert real_quay.tags("pushown", "openshift4/release") == {"v1": img.digest}

    for repo, creds in (("pushnope/app", auth), ("pushother/app", auth), ("pushother/app", (bare.name, bare.token)), ("pushown/app", (robot.name, "bad-token"))):
        with pytest.raises(PushError) as info:
            push(real_quay.url, repo, img, tag="v1", auth=creds)
        assert "401" in str(info.value), repo
    # the superuser who owns the organisation may push there
    push(real_quay.url, "pushother/app", img, tag="v1", auth=(real_quay.username, real_quay.password))


def test_bundler_copy_pushes_into_quay_with_a_robot_auth_file(real_quay: Any, tmp_path: Path) -> None:
    """What unpack does: bundler's own registry client, credentials from a docker auth file."""
    from bundler.layout.store import Layout
    from bundler.oci.reference import Reference
    from bundler.registry.auth import CredentialStore
    from bundler.registry.client import Registries, TransportOptions
    from bundler.transfer.copy import Copier
    from bundler.transfer.transports import LayoutImage, RegistryRepository

    api = admin(real_quay)
    api.ensure_organization("copyorg")
    robot = api.ensure_robot("copyorg", "bundler")
    api.grant_creator("copyorg", robot.name)
    authfile = tmp_path / "auth.json"
    authfile.write_text(json.dumps({"auths": {real_quay.host: {"auth": base64.b64encode(f"{robot.name}:{robot.token}".encode()).decode()}}}))
    img = make_image(seed="copy-into-quay", random_layers=[4096, 1024])
    write_oci_layout(tmp_path / "layout", [("app:v1", img)])

    registries = Registries(credentials=CredentialStore(authfile), options=TransportOptions(insecure_hosts=frozenset({real_quay.host})))
    try:
        with Copier() as copier:
            src = LayoutImage(Layout(tmp_path / "layout", create=False), "app:v1")
            ok = copier.copy(src, RegistryRepository(registries.client(real_quay.host), Reference.parse(f"{real_quay.host}/copyorg/app:v1")))
            assert str(ok.digest) == img.digest
            with pytest.raises(RegistryError) as info:
                copier.copy(src, RegistryRepository(registries.client(real_quay.host), Reference.parse(f"{real_quay.host}/copymissing/app:v1")))
            assert info.value.status == 401
    finally:
        registries.close()
    assert real_quay.tags("copyorg", "app") == {"v1": img.digest}

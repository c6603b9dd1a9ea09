"""`unpack` into a real Project Quay 3.18 (`real_quay`, ../shared/quay; PROTOCOL-NOTES §4).

Every test uses organisations of its own (one Quay serves the whole run). What arrives is checked with skopeo
(`--tls-verify=false`, as the superuser) and with Quay's own REST API; the request counts come from Quay's
access log. The only stand-in left is the podman bring-up in `test_quay_up_then_unpack_with_its_robots`: no
Quay container image can run here, so the bring-up's REST work is done on the real Quay by a stand-in.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List, Sequence, Tuple

import pytest

from bundler.base.errors import ExitCode
from bundler.flows.unpack import UnpackOptions, UnpackPartialFailureError, unpack_bundle
from bundler.quay.api import QuayAPI
from bundler.quay.config import QuaySecrets, save_secrets
from bundler.registry.client import TransportOptions
from tests.infra.images import make_image, make_index, random_layer
from tests.test_unpack import FAST, PUBLIC_KEY, Entry, cli, content, make_bundle, signature_files


def scoped(entries: Sequence[Entry], tag: str) -> List[Entry]:
    """The same images in organisations of this test's own (`<tag>_<org>`)."""
    return [dataclasses.replace(e, repository=f"{tag}_{e.repository}") for e in entries]


def orgs_of(entries: Sequence[Entry]) -> List[str]:
    return sorted({e.repository.split("/", 1)[0] for e in entries})


def options(quay: Any, tmp_path: Path, **kw: Any) -> UnpackOptions:
    kw.setdefault("key", PUBLIC_KEY)
    kw.setdefault("state_dir", tmp_path / "state")
    kw.setdefault("resources_dir", tmp_path / "resources")
    return UnpackOptions(
        registry=quay.host,
        transport=TransportOptions(insecure_hosts=frozenset({quay.host}), **FAST),  # type: ignore[arg-type]
        workers=4,
        **kw,
    )


def base_args(quay: Any, bundle: Path, tmp_path: Path) -> List[str]:
    return ["unpack", str(bundle), "--registry", quay.host, "--insecure-registry", quay.host, "--key", str(PUBLIC_KEY), "--resources-dir", str(tmp_path / "res")]


def expect_in_quay(skopeo: Any, quay: Any, entries: Sequence[Entry]) -> None:
    """skopeo reads every tag back digest-exact; Quay's API lists the tag at that digest."""
    creds = f"$oauthtoken:{quay.token}"
    for e in entries:
        assert skopeo.digest(f"{quay.host}/{e.repository}:{e.tag}", creds=creds) == e.digest, e.repository
        org, repo = e.repository.split("/", 1)
        assert quay.tags(org, repo).get(e.tag) == e.digest, e.repository


class AccessLog:
    """Requests Quay served from now on (gunicorn's access log): who asked what."""

    LINE = re.compile(r'\[gunicorn\.access\] \S+ - (\S+) \[[^\]]+\] "(\w+) (\S+)')

    def __init__(self, quay: Any) -> None:
        self.path = Path(quay.log_file)
        self.offset = self.path.stat().st_size

    def requests(self) -> List[Tuple[str, str, str]]:
        time.sleep(0.3)  # gunicorn writes the access line after the answer
        with self.path.open("rb") as f:
            f.seek(self.offset)
            text = f.read().decode("utf-8", "replace")
        return [m.groups() for m in map(self.LINE.search, text.splitlines()) if m]  # type: ignore[misc]


def robot_login(quay: Any, org: str, name: str) -> Tuple[str, str]:
    status, body = quay.api("GET", f"/api/v1/organization/{org}/robots/{name}")
    assert status == 200, body
    return str(body["name"]), str(body["token"])


def test_fresh_quay_with_a_token_creates_organisations_and_robots_pushes_as_the_robots_and_reruns_as_a_noop(real_quay: Any, tmp_path: Path, skopeo: Any) -> None:
    entries = scoped(content("q-fresh"), "fresh")
    bundle = make_bundle(tmp_path / "bundle", entries, files=signature_files(entries))
    orgs = orgs_of(entries)

    dry = unpack_bundle(bundle, options=options(real_quay, tmp_path, registry_kind="quay", quay_token=real_quay.token, dry_run=True))
    assert dry.registry_kind == "quay" and list(dry.organizations_to_create) == orgs
    assert {i.status for i in dry.images} == {"would-push"}
    assert all(real_quay.api("GET", f"/api/v1/organization/{org}")[0] == 404 for org in orgs)  # a dry run creates nothing

    log = AccessLog(real_quay)
    result = unpack_bundle(bundle, options=options(real_quay, tmp_path, registry_kind="quay", quay_token=real_quay.token))
    requests = log.requests()
    assert sorted(result.organizations_created) == orgs
    assert [i.status for i in result.images] == ["pushed"] * len(entries)
    for org in orgs:  # a robot per organisation, in a team with role creator
        status, team = real_quay.api("GET", f"/api/v1/organization/{org}/team/mirror-creators/members")
        assert status == 200 and [m["name"] for m in team["members"]] == [f"{org}+ocp_bundler"], team
        status, info = real_quay.api("GET", f"/api/v1/organization/{org}/team/mirror-creators/permissions")
        assert status == 200
    registry_users = {user for user, _, path in requests if path.startswith("/v2/auth")}
    assert registry_users == {f"{org}+ocp_bundler" for org in orgs}  # everything pushed as the robots
    assert sum(1 for _, _, path in requests if path.startswith("/v2/auth")) == len(orgs)  # one token per organisation
    pushes = [(m, p) for _, m, p in requests if p.startswith("/v2/") and not p.startswith("/v2/auth")]
    assert not [p for m, p in pushes if m == "HEAD" and "/blobs/" in p]  # small blobs: no HEAD before the upload
    expect_in_quay(skopeo, real_quay, entries)
    mapping = (tmp_path / "resources" / "mapping.txt").read_text().splitlines()
    assert sorted(mapping) == sorted(f"{e.source}={real_quay.host}/{e.repository}:{e.tag}" for e in entries)
    assert real_quay.token not in json.dumps(result.to_json())

    log = AccessLog(real_quay)
    proc = cli(*base_args(real_quay, bundle, tmp_path), "--quay-token", real_quay.token, "--json")  # auto-detected
    assert proc.returncode == 0, proc.stderr.decode()
    again = json.loads(proc.stdout)
    assert again["registryKind"] == "quay" and again["organizationsCreated"] == []
    assert again["totals"]["present"] == len(entries) and again["totals"]["pushed"] == 0
    writes = [(m, p) for _, m, p in log.requests() if m in ("POST", "PUT", "PATCH") and p.startswith("/v2/")]
    assert writes == []  # nothing pushed


def test_wrong_token_is_exit_5_in_one_line(real_quay: Any, tmp_path: Path) -> None:
    entries = scoped(content("q-wrong")[:1], "wrong")
    bundle = make_bundle(tmp_path / "bundle", entries)
    proc = cli(*base_args(real_quay, bundle, tmp_path), "--registry-kind", "quay", "--quay-token", "X" * 40)
    stderr = proc.stderr.decode()
    assert proc.returncode == ExitCode.REGISTRY, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    assert "X" * 40 not in stderr + proc.stdout.decode()


def write_authfile(path: Path, host: str, user: str, password: str) -> Path:
    import base64

    path.write_text(json.dumps({"auths": {host: {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}}}))
    return path


def test_existing_organisations_and_a_robot_only_each_organisation_reported_on_its_own(real_quay: Any, tmp_path: Path, skopeo: Any) -> None:
    """No token: an enterprise Quay where an administrator made the organisations and a robot. Where the
    robot may create repositories, everything arrives; where it lacks rights, and where the organisation
    does not exist, each organisation gets its own message; nothing else is blocked (exit 4)."""
    entries = scoped(content("q-robot"), "ent")
    bundle = make_bundle(tmp_path / "bundle", entries)
    ok_org, weak_org = "ent_ocp4", "ent_rhscl"
    real_quay.create_org(ok_org)
    real_quay.create_org(weak_org)
    robot, token = real_quay.create_robot(ok_org, "pusher", team_role="creator")
    weak, weak_token = real_quay.create_robot(weak_org, "reader", team_role=None)  # no rights at all
    auth = tmp_path / "auth.json"
    auth.write_text(json.dumps({"auths": {
        f"{real_quay.host}/{ok_org}": {"auth": _b64(f"{robot}:{token}")},
        f"{real_quay.host}/{weak_org}": {"auth": _b64(f"{weak}:{weak_token}")},
        real_quay.host: {"auth": _b64(f"{robot}:{token}")},
    }}))
    proc = cli(*base_args(real_quay, bundle, tmp_path), "--registry-kind", "quay", "--authfile", str(auth))
    stderr = proc.stderr.decode()
    assert proc.returncode == ExitCode.PARTIAL, stderr
    assert "no API token" in stderr
    for org in ("ent_ocs4", "ent_redhat", "ent_myorg"):
        assert f"organisation '{org}'" in stderr, stderr
    assert f"organisation '{weak_org}'" in stderr
    assert f"organisation '{ok_org}'" not in stderr
    expect_in_quay(skopeo, real_quay, [e for e in entries if e.repository.startswith(ok_org + "/")])
    assert token not in stderr + proc.stdout.decode() and weak_token not in stderr


def _b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()


def refusable_entries(tag: str) -> List[Entry]:
    """A Docker schema2 image with an uncompressed layer (Quay: 400 MANIFEST_INVALID), beside an OCI image
    with the same uncompressed layer (stored), and a Docker list of gzip images (stored)."""
    plain = random_layer(30_000, seed=f"{tag}-tar", compressed=False, docker=True)
    refused = make_image(base_layers=[plain], docker=True, seed=f"{tag}-refused")
    oci = make_image(random_layers=[20_000], compressed=False, seed=f"{tag}-oci")
    docker_list = make_index([make_image(random_layers=[10_000], docker=True, seed=f"{tag}-l{i}", architecture=a) for i, a in enumerate(("amd64", "arm64"))], docker=True)
    return [
        Entry(refused, f"quay.io/x/refused:1@{refused.digest}", "additional", f"{tag}_x/refused", "1"),
        Entry(oci, "quay.io/x/oci:1", "additional", f"{tag}_x/oci", "1"),
        Entry(docker_list, "quay.io/x/list:1", "additional", f"{tag}_x/list", "1"),
    ]


def test_what_quay_refuses_is_named_before_pushing(real_quay: Any, tmp_path: Path, skopeo: Any) -> None:
    entries = refusable_entries("refuse")
    bundle = make_bundle(tmp_path / "bundle", entries)
    args = [*base_args(real_quay, bundle, tmp_path), "--registry-kind", "quay", "--quay-token", real_quay.token]

    dry = cli(*args, "--dry-run")
    out = dry.stdout.decode()
    assert dry.returncode == 0, dry.stderr.decode()
    assert re.search(r"refused\s+\S+refuse_x/refused:1", out), out
    assert "rootfs.diff.tar: Quay takes only gzip layers" in out
    assert "1 that quay refuses" in out

    log = AccessLog(real_quay)
    proc = cli(*args)
    stderr = proc.stderr.decode()
    assert proc.returncode == ExitCode.PARTIAL, stderr
    assert "refuse_x/refused:1" in stderr and "Quay takes only gzip layers" in stderr
    assert not [p for _, _, p in log.requests() if "/refuse_x/refused/" in p]  # never tried
    expect_in_quay(skopeo, real_quay, entries[1:])


def test_children_of_lists_are_kept_by_the_list_tag_and_single_images_by_their_own(real_quay: Any, tmp_path: Path, skopeo: Any) -> None:
    """Quay holds a manifest pushed by digest only under a hidden temporary tag that expires (an hour by
    default). Expire every hidden tag now (in Quay's database): every child is still there through its
    list's tag, and every image is still reachable by its tag."""
    entries = scoped(content("q-keep"), "keep")
    bundle = make_bundle(tmp_path / "bundle", entries)
    result = unpack_bundle(bundle, options=options(real_quay, tmp_path, registry_kind="quay", quay_token=real_quay.token))
    assert {i.status for i in result.images} == {"pushed"}
    psql = shutil.which("psql")
    assert psql, "psql (postgresql-client) is installed with the real Quay"
    past = int(time.time() * 1000) - 1000
    subprocess.run(
        [psql, "-h", "127.0.0.1", "-p", str(real_quay.pg_port), "-U", "quay", "-d", "quay", "-qAt", "-c",
         f"UPDATE tag SET lifetime_end_ms = {past} WHERE hidden AND (lifetime_end_ms IS NULL OR lifetime_end_ms > {past})"],
        check=True, env={"PGPASSWORD": "quay", "PATH": "/usr/bin:/bin"},
    )
    creds = f"$oauthtoken:{real_quay.token}"
    for e in entries:
        assert skopeo.digest(f"{real_quay.host}/{e.repository}:{e.tag}", creds=creds) == e.digest
        for child in getattr(e.obj, "children", ()):
            assert skopeo.digest(f"{real_quay.host}/{e.repository}@{child.digest}", creds=creds) == child.digest


def test_quay_up_then_unpack_with_its_robots(real_quay: Any, tmp_path: Path, skopeo: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--quay-up`: unpack asks the bring-up for every organisation the bundle needs, then pushes as the
    bring-up's robots (read from its data dir). A stand-in replaces only the podman part (no Quay container
    image can run here; `bundler.quay.bringup` is tested with stand-in images in test_quay_podman): it does
    the bring-up's REST work on the real Quay and writes the data dir as the bring-up does."""
    import bundler.quay.bringup as quay_module

    entries = content("q-up")
    bundle = make_bundle(tmp_path / "bundle", entries)
    data_dir = tmp_path / "quay-data"
    calls: List[Any] = []

    def fake_quay_up(opts: Any, images: Any, **_: Any) -> Any:
        calls.append(opts)
        paths = quay_module.QuayPaths(Path(opts.data_dir))
        paths.root.mkdir(parents=True, exist_ok=True)
        secrets = QuaySecrets.generate()
        secrets.admin_token = real_quay.token
        with QuayAPI(real_quay.url, token=real_quay.token) as api:
            for org in opts.organizations:
                api.ensure_organization(org)
                robot = api.ensure_robot(org, opts.robot)
                api.grant_creator(org, robot.name)
                secrets.robot_tokens[robot.name] = robot.token
        save_secrets(paths.secrets_file, secrets)
        return SimpleNamespace(server=real_quay.host, ca_file=None, changes=["stand-in"], warnings=[])

    monkeypatch.setattr(quay_module, "quay_up", fake_quay_up)
    monkeypatch.setattr(quay_module, "images_from_bundle", lambda directory: [])
    result = unpack_bundle(bundle, options=options(real_quay, tmp_path, prefix="upmirror", quay_up=True, quay_data_dir=data_dir))
    assert len(calls) == 1
    assert calls[0].hostname == "127.0.0.1" and calls[0].port == real_quay.port and calls[0].organizations == ("upmirror",)
    assert result.registry == f"{real_quay.host}/upmirror" and result.registry_kind == "quay"
    status, robots = real_quay.api("GET", "/api/v1/organization/upmirror/robots")
    assert status == 200 and [r["name"] for r in robots["robots"]] == [f"upmirror+{calls[0].robot}"]  # the bring-up's robot, no other
    assert [i.status for i in result.images] == ["pushed"] * len(entries)
    expect_in_quay(skopeo, real_quay, [dataclasses.replace(e, repository=f"upmirror/{e.repository}") for e in entries])


def test_partial_failure_keeps_the_result(real_quay: Any, tmp_path: Path) -> None:
    """The library raises `UnpackPartialFailureError` carrying the result when an organisation is missing."""
    entries = scoped(content("q-part")[:2], "part")
    bundle = make_bundle(tmp_path / "bundle", entries)
    org = orgs_of(entries)[0]
    real_quay.create_org(org)
    robot, token = real_quay.create_robot(org, "pusher")
    auth = write_authfile(tmp_path / "auth.json", real_quay.host, robot, token)
    extra = scoped(content("q-part2")[5:], "partmissing")
    bundle = make_bundle(tmp_path / "bundle2", [*entries, *extra])
    with pytest.raises(UnpackPartialFailureError) as info:
        unpack_bundle(bundle, options=options(real_quay, tmp_path, registry_kind="quay", authfile=auth))
    statuses: Dict[str, str] = {i.target.split("/", 1)[1]: i.status for i in info.value.result.images}
    assert statuses == {**{f"{e.repository}:{e.tag}": "pushed" for e in entries}, **{f"{e.repository}:{e.tag}": "failed" for e in extra}}

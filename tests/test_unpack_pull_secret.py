"""`unpack` into a real Quay writes the cluster's pull secret with read-only robots, never a superuser.

On the real Project Quay 3.18 (`real_quay`): unpack, given the superuser's API token, makes a read-only robot
in each organisation it pushes into and writes their credentials into the resources directory. The file
carries no superuser credential; its robots pull every image (the children of a list too) and push nothing.

The repositories exist before unpack runs (pushed by the organisations' push robots with skopeo), so the
read-only robots must be given read on repositories that already exist, not only on new ones; and the run
needs no push of its own.
"""

from __future__ import annotations

import base64
import json
import stat
import subprocess
import uuid
from pathlib import Path
from typing import Any, Dict, List

from bundler.flows.unpack import PULL_SECRET_FILE, UnpackOptions, unpack_bundle
from bundler.registry.client import TransportOptions
from tests.infra.images import make_image, make_index, write_oci_layout
from tests.test_unpack import FAST, PUBLIC_KEY, Entry, cli, make_bundle


def _skopeo(*args: str) -> "subprocess.CompletedProcess[str]":
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120)


def test_unpack_into_quay_writes_the_read_only_robots_pull_secret(real_quay: Any, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    apps, release_org = f"ps{run}a", f"ps{run}b"
    release = make_image(seed=f"{run}-release")
    multi = make_index([make_image(seed=f"{run}-amd"), make_image(seed=f"{run}-arm", architecture="arm64")])
    app = make_image(seed=f"{run}-app")
    entries = [
        Entry(release, f"quay.io/openshift-release-dev/ocp-release:{run}", "release", f"{release_org}/release", "4.8.0-x86_64"),
        Entry(multi, f"registry.example.com/x/multi:{run}", "additional", f"{apps}/multi", "1"),
        Entry(app, f"registry.example.com/x/app:{run}", "additional", f"{apps}/app", "1.0"),
    ]
    host = real_quay.host
    layout = write_oci_layout(tmp_path / "oci", [(e.tag, e.obj) for e in entries])
    for org in (apps, release_org):
        real_quay.create_org(org)
        name, token = real_quay.create_robot(org, "ocp_bundler", team_role="creator")
        for e in entries:
            if e.repository.startswith(org + "/"):
                done = _skopeo("copy", "--all", "--preserve-digests", "--dest-tls-verify=false", "--dest-creds", f"{name}:{token}", f"oci:{layout}:{e.tag}", f"docker://{host}/{e.repository}:{e.tag}")
                assert done.returncode == 0, done.stderr

    resources = tmp_path / "resources"
    result = unpack_bundle(
        make_bundle(tmp_path / "bundle", entries),
        options=UnpackOptions(
            registry=host,
            registry_kind="quay",
            quay_token=real_quay.token,
            transport=TransportOptions(insecure_hosts=(host,), **FAST),  # type: ignore[arg-type]
            resources_dir=resources,
            key=PUBLIC_KEY,
            state_dir=tmp_path / "state",
            ledger=tmp_path / "ledger.jsonl",
            workers=2,
        ),
    )
    assert {i.status for i in result.images} == {"present"}
    path = resources / PULL_SECRET_FILE
    assert result.pull_secret_file == path and not PULL_SECRET_FILE.endswith((".json", ".yaml", ".yml"))  # `oc apply -f DIR` skips it
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert real_quay.token not in text and real_quay.password not in text
    auths: Dict[str, Any] = json.loads(text)["auths"]
    creds = {key: base64.b64decode(value["auth"]).decode() for key, value in auths.items()}
    users = {key: value.split(":", 1)[0] for key, value in creds.items()}
    # The release's organisation is the host-wide entry (for nodes that read only host:port).
    assert users == {host: f"{release_org}+cluster_pull", f"{host}/{release_org}": f"{release_org}+cluster_pull", f"{host}/{apps}": f"{apps}+cluster_pull"}
    assert json.loads(json.dumps(result.to_json()))["resources"]["pullSecret"] == str(path)

    pulled: List[str] = []
    for e in entries:
        reader = creds[f"{host}/{e.repository.split('/', 1)[0]}"]
        refs = [f"{e.repository}:{e.tag}"] + [f"{e.repository}@{child.digest}" for child in getattr(e.obj, "children", [])]
        for ref in refs:
            done = _skopeo("inspect", "--raw", "--tls-verify=false", "--creds", reader, f"docker://{host}/{ref}")
            assert done.returncode == 0, (ref, done.stderr)
            pulled.append(ref)
        refused = _skopeo("copy", "--dest-tls-verify=false", "--dest-creds", reader, f"oci:{layout}:{entries[0].tag}", f"docker://{host}/{e.repository}:pushed-by-reader")
        assert refused.returncode != 0 and "unauthorized" in refused.stderr.lower(), refused.stderr
    assert len(pulled) == 5
    assert real_quay.tags(apps, "app") == {"1.0": app.digest}  # nothing else arrived

    # A rerun (the CLI) keeps the same robots (no new tokens), so a pull secret already on a cluster stays
    # valid, and says where the file is and how to use it.
    proc = cli(
        "unpack", str(tmp_path / "bundle"), "--registry", host, "--registry-kind", "quay", "--quay-token", real_quay.token,
        "--insecure-registry", host, "--resources-dir", str(resources), "--key", str(PUBLIC_KEY), "--ledger", str(tmp_path / "ledger.jsonl"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.decode()
    assert f"cluster pull secret (read-only robots) in {path}: ocp-bundler pull-secret --file pull-secret.json --from {path}" in out
    assert real_quay.token not in out + proc.stderr.decode()
    assert path.read_text() == text

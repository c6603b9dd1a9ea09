"""registries.conf: the TOML subset, the search order, pull sources, and real pulls through mirrors,
rewrites, insecure and blocked entries, with skopeo in the same set-up as the oracle.

The "upstream" registry in the real tests is a name nothing resolves (`upstream.invalid`), as in an
enclave where only the mirror is reachable.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest

from bundler.base.errors import ConfigError, UsageError
from bundler.oci.reference import Reference
from bundler.registry.registries_conf import RegistriesConf, search_paths
from bundler.registry.tomlsubset import TomlError, loads, loads_subset
from tests.infra.images import make_image, make_index, push
from tests.infra.registry import RegistryServer

tomllib: Any = None
if sys.version_info >= (3, 11):
    import tomllib


def _tomllib_loads(doc: str) -> Any:
    """The standard library's TOML reader as the oracle: in this interpreter from 3.11 on, otherwise in a
    newer `python3` of the machine (the Python 3.9 run of the suite has no tomllib of its own)."""
    if tomllib is not None:
        return tomllib.loads(doc)
    code = "import json, sys, tomllib; print(json.dumps(tomllib.loads(sys.stdin.read())))"
    for candidate in filter(None, map(shutil.which, ("python3", "python3.13", "python3.12", "python3.11"))):
        done = subprocess.run([candidate, "-c", code], input=doc.encode(), capture_output=True)
        if done.returncode == 0:
            return json.loads(done.stdout)
    pytest.fail("no Python 3.11 or newer on this machine to read TOML with tomllib", pytrace=False)

DOCS = [
    '''# comment
unqualified-search-registries = ["registry.fedoraproject.org", 'quay.io',]
short-name-mode = "enforcing"

[[registry]]
prefix = "example.com/foo"   # trailing comment
location = "internal.example.com:5000/bar"
insecure = true
blocked = false
mirror-by-digest-only = false

[[registry.mirror]]
location = "m1.example.com/x"
pull-from-mirror = "digest-only"

[[registry.mirror]]
location = "m2.example.com"
insecure = true

[[registry]]
location = "plain.example.com"
mirror = [ { location = "inline.example.com", insecure = false }, ]

[aliases]
  "fedora" = "registry.fedoraproject.org/fedora"
  "a.b/c" = 'quay.io/x/y'
''',
    '''[registries.search]
registries = ['docker.io', "quay.io"]
[registries.insecure]
registries = [
  "a.example:5000",  # comment inside
  "b.example",
]
[registries.block]
registries = []
''',
    'x = 1\ny = -2_000\nz = 0x1F\nf = 1.5e3\ns = "tab\\t\\u00e9\\"q\\""\ndotted.key = true\n',
]


@pytest.mark.parametrize("doc", DOCS + [Path("/etc/containers/registries.conf.d/shortnames.conf")], ids=["v2", "v1", "scalars", "system-shortnames"])
def test_subset_reader_agrees_with_tomllib(doc: Any) -> None:
    if isinstance(doc, Path):
        if not doc.is_file():
            pytest.skip("no system shortnames.conf")
        doc = doc.read_text()
    assert loads_subset(doc) == _tomllib_loads(doc)


@pytest.mark.parametrize("bad", ['a = """x"""', "a = 1979-05-27", "[t]\na=1\n[t]\nb=2", "a = 1\na = 2", "a = [1, 2", "a = \"x", "= 1"])
def test_subset_reader_refuses_what_it_does_not_cover_with_the_line(bad: str) -> None:
    with pytest.raises(TomlError, match="line"):
        loads_subset(bad)
    if '"""' not in bad and "1979" not in bad:  # TOML, just not the subset: tomllib reads those
        with pytest.raises(TomlError):
            loads(bad)


def _conf(tmp_path: Path, text: str, name: str = "registries.conf") -> RegistriesConf:
    path = tmp_path / name
    path.write_text(text)
    return RegistriesConf.load(env={"CONTAINERS_REGISTRIES_CONF": str(path), "HOME": str(tmp_path / "home")})


D = "sha256:" + "a" * 64


def _sources(conf: RegistriesConf, ref: str) -> List[str]:
    return [str(s.reference) for s in conf.pull_sources(Reference.parse(ref))]


def test_pull_sources_rewrites_and_mirror_policies(tmp_path: Path) -> None:
    conf = _conf(
        tmp_path,
        '''
[[registry]]
prefix = "quay.io/openshift-release-dev"
location = "mirror.corp/ocp"
[[registry.mirror]]
location = "m-all.corp/ocp"
[[registry.mirror]]
location = "m-digest.corp/ocp"
pull-from-mirror = "digest-only"
[[registry.mirror]]
location = "m-tag.corp/ocp"
pull-from-mirror = "tag-only"

[[registry]]
prefix = "quay.io"
location = "quay.io"
mirror-by-digest-only = true
[[registry.mirror]]
location = "m-quay.corp"

[[registry]]
prefix = "*.redhat.io"
[[registry.mirror]]
location = "m-rh.corp"
''',
    )
    assert _sources(conf, f"quay.io/openshift-release-dev/ocp-release@{D}") == [
        f"m-all.corp/ocp/ocp-release@{D}", f"m-digest.corp/ocp/ocp-release@{D}", f"mirror.corp/ocp/ocp-release@{D}",
    ]
    assert _sources(conf, "quay.io/openshift-release-dev/ocp-release:4.4.5") == [
        "m-all.corp/ocp/ocp-release:4.4.5", "m-tag.corp/ocp/ocp-release:4.4.5", "mirror.corp/ocp/ocp-release:4.4.5",
    ]
    # the longest prefix wins; mirror-by-digest-only keeps tag pulls off the mirrors
    assert _sources(conf, "quay.io/other/app:v1") == ["quay.io/other/app:v1"]
    assert _sources(conf, f"quay.io/other/app@{D}") == [f"m-quay.corp/other/app@{D}", f"quay.io/other/app@{D}"]
    # "quay.io/openshift-release-devX" does not match the longer prefix (a path component must end)
    assert _sources(conf, f"quay.io/openshift-release-devx/a@{D}")[0] == f"m-quay.corp/openshift-release-devx/a@{D}"
    # a wildcard prefix: the registry itself stays where it is
    assert _sources(conf, f"registry.redhat.io/ubi8/ubi@{D}") == [f"m-rh.corp/ubi8/ubi@{D}", f"registry.redhat.io/ubi8/ubi@{D}"]
    assert _sources(conf, "docker.io/library/busybox:1") == ["docker.io/library/busybox:1"]


def test_blocked_insecure_and_errors(tmp_path: Path) -> None:
    conf = _conf(tmp_path, '[[registry]]\nlocation = "bad.example"\nblocked = true\n[[registry]]\nlocation = "old.example:5000/x"\ninsecure = true\n[[registry.mirror]]\nlocation = "m.example:81"\ninsecure = true\n')
    with pytest.raises(UsageError, match=r"registry 'bad.example' is blocked \(blocked = true in .*registries.conf\)"):
        conf.pull_sources(Reference.parse("bad.example/a:b"))
    assert conf.insecure_hosts() == {"old.example:5000", "m.example:81"}
    with pytest.raises(ConfigError, match="pull-from-mirror"):
        _conf(tmp_path, '[[registry]]\nlocation = "a.example"\n[[registry.mirror]]\nlocation = "m"\npull-from-mirror = "sometimes"\n')
    with pytest.raises(ConfigError, match="not valid TOML"):
        _conf(tmp_path, "[[registry]\n")
    with pytest.raises(ConfigError, match="mixes"):
        _conf(tmp_path, '[registries.block]\nregistries = ["x"]\n[[registry]]\nlocation = "y"\n')
    v1 = _conf(tmp_path, '[registries.block]\nregistries = ["blocked.example"]\n[registries.insecure]\nregistries = ["in.example:5000"]\n')
    assert v1.insecure_hosts() == {"in.example:5000"}
    with pytest.raises(UsageError, match="blocked"):
        v1.check_not_blocked(Reference.parse("blocked.example/a:b"))


def test_search_order_and_drop_ins(tmp_path: Path) -> None:
    home = tmp_path / "home"
    user_file = home / ".config/containers/registries.conf"
    env_file = tmp_path / "env.conf"
    # nothing in HOME, no variable: the system file
    main, dirs = search_paths({"HOME": str(home)}, home)
    assert main == Path("/etc/containers/registries.conf") and dirs == [Path("/etc/containers/registries.conf.d"), home / ".config/containers/registries.conf.d"]
    user_file.parent.mkdir(parents=True)
    user_file.write_text('[[registry]]\nlocation = "user.example"\ninsecure = true\n[[registry]]\nlocation = "over.example"\ninsecure = true\n')
    assert search_paths({"HOME": str(home)}, home) == (user_file, [home / ".config/containers/registries.conf.d"])
    env_file.write_text('[[registry]]\nlocation = "env.example"\ninsecure = true\n')
    assert search_paths({"HOME": str(home), "CONTAINERS_REGISTRIES_CONF": str(env_file)}, home)[0] == env_file
    # drop-ins in name order; the same prefix replaces the earlier entry
    d = home / ".config/containers/registries.conf.d"
    d.mkdir()
    (d / "20-b.conf").write_text('[[registry]]\nlocation = "over.example"\ninsecure = false\n')
    (d / "10-a.conf").write_text('[[registry]]\nlocation = "drop.example"\ninsecure = true\n')
    conf = RegistriesConf.load(env={"HOME": str(home)}, home=home)
    assert conf.insecure_hosts() == {"user.example", "drop.example"}
    assert [p.name for p in conf.files] == ["registries.conf", "10-a.conf", "20-b.conf"]


# -- real registries ------------------------------------------------------------------------------------------

UPSTREAM = "upstream.invalid:5000"


def _env(tmp_path: Path, conf_text: str) -> Dict[str, str]:
    """A clean HOME whose ~/.config/containers/registries.conf is `conf_text` (skopeo 1.9.3 reads it there too)."""
    home = tmp_path / "home"
    path = home / ".config" / "containers" / "registries.conf"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(conf_text)
    base = {k: v for k, v in os.environ.items() if k not in ("CONTAINERS_REGISTRIES_CONF", "HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy")}
    return {**base, "HOME": str(home), "OCPB_DEBUG_LOG": "/dev/null"}


def _cli(env: Dict[str, str], *args: str) -> "subprocess.CompletedProcess[str]":
    return subprocess.run([sys.executable, "-m", "bundler.cli", *args], capture_output=True, text=True, timeout=180, env=env)


def _skopeo(env: Dict[str, str], *args: str) -> "subprocess.CompletedProcess[bytes]":
    return subprocess.run(["skopeo", *args], capture_output=True, timeout=120, env=env)


def test_by_digest_pull_is_served_by_the_mirror_like_skopeo(fresh_registry_plain: RegistryServer, tmp_path: Path, skopeo: Any) -> None:
    mirror = fresh_registry_plain
    img = make_index([make_image(random_layers=[40_000], seed="mirror", docker=True)], docker=True)
    digest = push(mirror.url, "ocp/app", img, "v1")
    env = _env(
        tmp_path,
        f'''[[registry]]
location = "{UPSTREAM}/org"
[[registry.mirror]]
location = "{mirror.host}/ocp"
insecure = true
pull-from-mirror = "digest-only"
''',
    )
    ref = f"{UPSTREAM}/org/app@{digest}"
    # no --insecure-registry: the mirror is plain HTTP because registries.conf says insecure = true
    r = _cli(env, "copy", f"docker://{ref}", f"oci:{tmp_path}/l", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["digest"] == digest
    sk = _skopeo(env, "inspect", "--raw", f"docker://{ref}")
    assert sk.returncode == 0, sk.stderr
    assert "sha256:" + hashlib.sha256(sk.stdout).hexdigest() == digest
    # a by-tag pull may not use a digest-only mirror: upstream is asked, and it does not exist
    r = _cli(env, "copy", f"docker://{UPSTREAM}/org/app:v1", f"oci:{tmp_path}/t")
    assert r.returncode == 5 and "upstream.invalid" in r.stderr, r.stderr
    assert _skopeo(env, "inspect", "--raw", f"docker://{UPSTREAM}/org/app:v1").returncode != 0

    # pack: the bundle records the image under its own name; its bytes came from the mirror
    config = tmp_path / "set.yaml"
    config.write_text(f"apiVersion: ocp-bundler.io/v1alpha1\nkind: ImageSet\nadditionalImages:\n  - {ref}\n")
    r = _cli(env, "pack", "--config", str(config), "--out", str(tmp_path / "bundle"), "--json")
    assert r.returncode == 0, r.stderr
    images = json.loads(r.stdout)["images"]
    assert [(i["source"], i["digest"]) for i in images] == [(ref, digest)]


def test_location_rewrite_tag_pull_and_blocked_entries(fresh_registry_plain: RegistryServer, tmp_path: Path, skopeo: Any) -> None:
    reg = fresh_registry_plain
    digest = push(reg.url, "real/app", make_image(seed="rewrite"), "v2")
    env = _env(
        tmp_path,
        f'''[[registry]]
prefix = "example.invalid/team"
location = "{reg.host}/real"
insecure = true

[[registry]]
prefix = "{reg.host}/forbidden"
location = "{reg.host}/forbidden"
blocked = true
''',
    )
    r = _cli(env, "copy", "docker://example.invalid/team/app:v2", f"oci:{tmp_path}/l", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["digest"] == digest
    sk = _skopeo(env, "inspect", "--raw", "docker://example.invalid/team/app:v2")
    assert sk.returncode == 0 and "sha256:" + hashlib.sha256(sk.stdout).hexdigest() == digest

    push(reg.url, "forbidden/app", make_image(seed="blocked"), "v1")
    r = _cli(env, "copy", f"docker://{reg.host}/forbidden/app:v1", f"oci:{tmp_path}/b")
    assert r.returncode == 2, r.stderr
    assert f"registry '{reg.host}/forbidden' is blocked" in r.stderr and "registries.conf" in r.stderr
    sk = _skopeo(env, "inspect", "--raw", f"docker://{reg.host}/forbidden/app:v1")
    assert sk.returncode != 0 and b"blocked" in sk.stderr
    # pushing there is refused as well (as skopeo does)
    r = _cli(env, "copy", f"oci:{tmp_path}/l", f"docker://{reg.host}/forbidden/app:v2")
    assert r.returncode == 2 and "blocked" in r.stderr, r.stderr
    sk = _skopeo(env, "copy", "--dest-tls-verify=false", f"oci:{tmp_path}/l", f"docker://{reg.host}/forbidden/app:v3")
    assert sk.returncode != 0 and b"blocked" in sk.stderr, sk.stderr

"""Hostile media and concurrent runs on the local side: every case ends in time with one clear line.

Each case runs the real command line in a child process with a time limit and an address-space limit, as
an operator (or an attacker preparing the media) would meet it: bundles whose files are links to
`/dev/zero`, FIFOs or unreadable; manifests nested thousands deep or with impossible fields; two runs
writing the same thing at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Sequence, Tuple

import pytest

from bundler.bundle.manifest import MANIFEST_NAME, SIGNATURE_NAME
from bundler.base.errors import ExitCode, IntegrityError, UsageError
from bundler.bundle.verify import verify_bundle
from bundler.flows.pack import PackOptions, pack
from bundler.registry.client import Registries, TransportOptions
from tests.infra.faultproxy import BLOB_RACE, STALL, FaultProxy
from tests.infra import peak_rss
from tests.infra.images import RegistryClient, make_image, push
from tests.infra.registry import RegistryServer
from tests.test_bundle import bundle_copy, keys, layout_objs, signed_bundle  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parent.parent
MEMORY_LIMIT = 1536 * 1024 * 1024
"""Address-space ceiling of each child: a runaway read fails fast instead of filling the machine."""
PEAK_RSS_LIMIT_KIB = 300 * 1024
"""What a case may really use (peak resident set size), as the hostile suite demands."""

def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def run_cli(args: Sequence[str], *, timeout: float = 60, env: "dict[str, str] | None" = None) -> Tuple[int, str, str]:
    """Run `ocp-bundler ARGS` in a child, bounded in time and memory (peak RSS under 300 MiB is asserted);
    (exit code, stdout, stderr)."""
    with tempfile.NamedTemporaryFile(prefix="ocpb-rss-") as rss:
        full_env = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
        command = peak_rss.wrap([sys.executable, "-m", "bundler.cli", *args], Path(rss.name))
        proc = subprocess.run(command, capture_output=True, timeout=timeout, env=full_env, preexec_fn=_limits, cwd=str(ROOT))
        peak = peak_rss.read_kib(Path(rss.name))
    assert peak < PEAK_RSS_LIMIT_KIB, f"ocp-bundler {' '.join(args[:1])} peaked at {peak // 1024} MiB"
    return proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")


def one_line_error(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith("WARNING")]
    assert "Traceback" not in stderr, stderr
    assert lines, stderr
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------
# device-backed and link-backed bundles
# --------------------------------------------------------------------------------------------------------


def _replace(path: Path, how: str) -> None:
    path.unlink()
    if how == "zero-link":
        path.symlink_to("/dev/zero")
    elif how == "fifo":
        os.mkfifo(path)
    else:
        raise AssertionError(how)


@pytest.mark.parametrize("how", ["zero-link", "fifo"])
@pytest.mark.parametrize("which", ["volume", "manifest", "signature"])
def test_verify_refuses_links_fifos_and_devices_in_a_bundle(which: str, how: str, bundle_copy: Path, keys: Tuple[Path, Path]) -> None:
    name = {"volume": "bundle-0002.tar", "manifest": MANIFEST_NAME, "signature": SIGNATURE_NAME}[which]
    _replace(bundle_copy / name, how)
    started = time.monotonic()
    code, _, err = run_cli(["verify", str(bundle_copy), "--key", str(keys[1])], timeout=60)
    assert time.monotonic() - started < 60
    assert code == ExitCode.INTEGRITY, err
    kind = "symbolic link" if how == "zero-link" else "FIFO"
    assert f"{name}" in err and kind in err and "not a regular file" in err, err
    one_line_error(err)


@pytest.mark.parametrize("option", ["--key", "--config"])
def test_file_options_pointing_at_a_device_are_refused(option: str, bundle_copy: Path, tmp_path: Path) -> None:
    if option == "--key":
        args = ["verify", str(bundle_copy), "--key", "/dev/zero"]
    else:
        args = ["pack", "--config", "/dev/zero", "--out", str(tmp_path / "out")]
    code, _, err = run_cli(args, timeout=60)
    assert code == ExitCode.USAGE, err
    assert "/dev/zero is a character device, not a regular file" in one_line_error(err)


def test_unreadable_volume_is_reported_unreadable_not_missing(bundle_copy: Path, keys: Tuple[Path, Path]) -> None:
    os.chmod(bundle_copy / "bundle-0002.tar", 0o000)
    # root reads anything: drop the capabilities that let it (setpriv, util-linux) for the child
    prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    proc = subprocess.run(
        [*prefix, sys.executable, "-m", "bundler.cli", "verify", str(bundle_copy), "--key", str(keys[1])],
        capture_output=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT)), preexec_fn=_limits,
    )
    err = proc.stderr.decode()
    assert proc.returncode == ExitCode.INTEGRITY, err
    assert "bundle-0002.tar cannot be read (Permission denied)" in err and "bundle-0002.tar is missing" not in err, err


# --------------------------------------------------------------------------------------------------------
# the bundle manifest: parsed before the signature is checked, so it must be safe to parse
# --------------------------------------------------------------------------------------------------------


def test_deeply_nested_bundle_manifest_is_one_clear_line(bundle_copy: Path, keys: Tuple[Path, Path]) -> None:
    depth = 200_000
    (bundle_copy / MANIFEST_NAME).write_text('{"kind": "ocp-bundler/bundle", "x": ' + "[" * depth + "]" * depth + "}")
    for command in (["verify", str(bundle_copy), "--key", str(keys[1])], ["inspect", str(bundle_copy)]):
        code, _, err = run_cli(command)
        assert code == ExitCode.INTEGRITY, err
        assert "nested deeper than" in one_line_error(err), err


def test_deeply_nested_pull_secret_is_a_usage_error(tmp_path: Path) -> None:
    from bundler.base.errors import UsageError
    from bundler.openshift.pullsecret import add_registry_credentials

    path = tmp_path / "pull-secret.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(UsageError, match="nested deeper than"):
        add_registry_credentials(path, registry="mirror.example:8443", username="u", password="p")


@pytest.mark.parametrize("style", ["flow", "block"])
def test_deeply_nested_config_is_a_config_error(style: str, tmp_path: Path) -> None:
    config = tmp_path / "deep.yaml"
    depth = 5000 if style == "flow" else 1500  # block style grows with the square of the depth
    body = "[" * depth + "]" * depth if style == "flow" else "".join(" " * i + "- \n" for i in range(depth))
    config.write_text("apiVersion: ocp-bundler.io/v1alpha1\nkind: ImageSet\nadditionalImages: " + ("" if style == "flow" else "\n") + body + "\n")
    code, _, err = run_cli(["pack", "--config", str(config), "--out", str(tmp_path / "out"), "--dry-run"])
    assert code == ExitCode.USAGE, err
    assert "nested deeper than 64 levels" in one_line_error(err), err


def _tamper(bundle: Path, change: "Callable[[Dict[str, Any]], None]") -> None:
    path = bundle / MANIFEST_NAME
    doc = json.loads(path.read_bytes())
    change(doc)
    path.write_text(json.dumps(doc))
    (bundle / SIGNATURE_NAME).unlink()  # an attacker re-signs, or strips the signature of an unsigned-policy site


def _set_first(key: str, field: str, value: Any) -> "Callable[[Dict[str, Any]], None]":
    def change(doc: Dict[str, Any]) -> None:
        doc[key][0][field] = value

    return change


def _set(field: str, value: Any) -> "Callable[[Dict[str, Any]], None]":
    def change(doc: Dict[str, Any]) -> None:
        doc[field] = value

    return change


SCHEMA_LIES = {
    "volume-size-2^60": (_set_first("volumes", "size", 2**60), "volumes[0].size must be a whole number from 0 to"),
    "schemaVersion-true": (_set("schemaVersion", True), "schemaVersion must be the number 1"),
    "schemaVersion-1.0": (_set("schemaVersion", 1.0), "schemaVersion must be the number 1"),
    "target-traversal": (_set_first("images", "targetRepository", "../../../v2/evil"), "images[0].targetRepository is not a repository path"),
    "target-uppercase-host": (_set_first("images", "targetRepository", "Evil.example.com/x"), "images[0].targetRepository is not a repository path"),
    "target-tag": (_set_first("images", "targetTag", "v1/../x"), "images[0].targetTag is not a valid tag"),
    "unknown-field": (_set("exec", "rm -rf /"), "document has unknown fields exec"),
    "media-type": (_set_first("images", "mediaType", "x" * 5000), "images[0].mediaType is longer than 255"),
}


@pytest.mark.parametrize("lie", list(SCHEMA_LIES))
def test_manifest_schema_is_validated_before_use(lie: str, bundle_copy: Path) -> None:
    change, message = SCHEMA_LIES[lie]
    _tamper(bundle_copy, change)
    with pytest.raises(IntegrityError) as e:
        verify_bundle(bundle_copy)
    assert message in str(e.value)


def test_volume_size_lie_with_the_right_hash_is_caught(bundle_copy: Path) -> None:
    _tamper(bundle_copy, lambda doc: doc["volumes"][-1].update(size=doc["volumes"][-1]["size"] + 10 * 1024**3))
    with pytest.raises(IntegrityError) as e:
        verify_bundle(bundle_copy)
    assert "bundle-manifest.json records bundle-" in str(e.value) and "with the recorded sha256: the manifest was altered" in str(e.value), str(e.value)


# --------------------------------------------------------------------------------------------------------
# pack: --out over its own --base, and two runs into one --out
# --------------------------------------------------------------------------------------------------------


def _pack_config(path: Path, refs: Sequence[str]) -> Path:
    path.write_text("apiVersion: ocp-bundler.io/v1alpha1\nkind: ImageSet\nadditionalImages:\n" + "".join(f"  - {r}\n" for r in refs))
    return path


def test_pack_refuses_to_write_over_its_own_base(registry_plain: RegistryServer, tmp_path: Path) -> None:
    push(registry_plain.url, "hostile/base", make_image(random_layers=[20_000], seed="hostile-base"), "v1")
    config = _pack_config(tmp_path / "c.yaml", [f"{registry_plain.host}/hostile/base:v1"])
    regs = lambda: Registries(options=TransportOptions(insecure_hosts=frozenset({registry_plain.host})))  # noqa: E731
    base = tmp_path / "base"
    pack(PackOptions(config=config, out_dir=base, work_dir=tmp_path / "w"), registries=regs())
    before = (base / MANIFEST_NAME).read_bytes()
    (tmp_path / "link").symlink_to(base)
    for out, given_base in ((base, base), (tmp_path / "link", base), (base, base / MANIFEST_NAME), (tmp_path / "link" / ".", tmp_path / "base")):
        with pytest.raises(UsageError, match="is the --base bundle's own directory"):
            pack(PackOptions(config=config, out_dir=out, work_dir=tmp_path / "w", base=given_base), registries=regs())
    assert (base / MANIFEST_NAME).read_bytes() == before
    verify_bundle(base)


def test_two_packs_into_one_out_one_stops_with_the_lock_named(registry_plain: RegistryServer, tmp_path: Path) -> None:
    push(registry_plain.url, "hostile/two", make_image(random_layers=[50_000, 50_000], seed="hostile-two"), "v1")
    with FaultProxy(registry_plain.url, rate=1.0, kinds=[STALL], stall_seconds=2.0, match=lambda m, t: "/blobs/" in t) as proxy:
        config = _pack_config(tmp_path / "c.yaml", [f"{proxy.host}/hostile/two:v1"])
        out = tmp_path / "out"
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        args = [sys.executable, "-m", "bundler.cli", "pack", "--config", str(config), "--out", str(out), "--insecure-registry", proxy.host]
        procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, preexec_fn=_limits) for _ in range(2)]
        outcomes = [(p.wait(timeout=120), p.stderr.read().decode() if p.stderr else "") for p in procs]
        for p in procs:
            for stream in (p.stdout, p.stderr):
                if stream:
                    stream.close()
    codes = sorted(code for code, _ in outcomes)
    assert codes == [0, ExitCode.USAGE], outcomes
    loser = next(err for code, err in outcomes if code == ExitCode.USAGE)
    assert f"the bundle directory {out} is in use by another ocp-bundler run (pid" in loser and ".ocp-bundler.lock" in one_line_error(loser), loser
    verify_bundle(out)
    assert not (out / ".ocp-bundler.lock").exists()


def test_twenty_parallel_pull_secret_runs_lose_no_entry(tmp_path: Path) -> None:
    secret = tmp_path / "pull-secret.json"
    secret.write_text('{"auths": {"quay.io": {"auth": "dTpw"}}}\n')
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = []
    for i in range(20):
        args = [sys.executable, "-m", "bundler.cli", "pull-secret", "--file", str(secret), "--registry", f"mirror{i}.example:8443", "--username", f"u{i}", "--password-stdin"]
        procs.append(subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env))
    for p in procs:
        assert p.stdin is not None
        p.stdin.write(b"secret\n")
        p.stdin.close()
    results = [(p.wait(timeout=120), p.stderr.read().decode() if p.stderr else "") for p in procs]
    for p in procs:
        if p.stderr:
            p.stderr.close()
    assert all(code == 0 for code, _ in results), results
    auths = json.loads(secret.read_text())["auths"]
    assert set(auths) == {"quay.io"} | {f"mirror{i}.example:8443" for i in range(20)}
    assert not list(tmp_path.glob(".*.lock")) and oct(secret.stat().st_mode & 0o777) == "0o600"


# --------------------------------------------------------------------------------------------------------
# image-set configs: linear parsing and a size cap
# --------------------------------------------------------------------------------------------------------


def test_repeated_references_are_removed_in_linear_time() -> None:
    from bundler.openshift.image_set.model import AdditionalImage
    from bundler.openshift.image_set.schema import Ctx, Loc, dedupe
    from bundler.openshift.image_set.sections import unique_images

    refs = [f"quay.io/org/app{i}@sha256:{i:064x}" for i in range(40_000)] + ["quay.io/org/app7@sha256:" + f"{7:064x}"]
    images = tuple(AdditionalImage(name=r) for r in refs[:10_000]) + (AdditionalImage(name=refs[7]),)
    ctx = Ctx("config.yaml", None)
    started = time.process_time()
    out = dedupe(ctx, refs, Loc("releases.images", 3), "image")
    unique = unique_images(ctx, images, Loc("additionalImages", 9))
    assert time.process_time() - started < 2.0  # a list scan took about 8 s for the references, 20 s for the images
    assert len(out) == 40_000 and out[7] == refs[7] and len(unique) == 10_000 and unique[7] == images[7]
    assert len(ctx.warnings) == 2


def test_config_over_the_size_cap_is_refused_before_parsing(tmp_path: Path) -> None:
    from bundler.base.errors import ConfigError
    from bundler.openshift.image_set import MAX_CONFIG_BYTES, load_image_set

    config = tmp_path / "huge.yaml"
    with open(config, "wb") as f:
        f.write(b"apiVersion: ocp-bundler.io/v1alpha1\nkind: ImageSet\nadditionalImages:\n")
        f.truncate(MAX_CONFIG_BYTES + 1)
    started = time.monotonic()
    with pytest.raises(ConfigError, match=f"more than the {MAX_CONFIG_BYTES} bytes allowed"):
        load_image_set(config)
    assert time.monotonic() - started < 1.0


# --------------------------------------------------------------------------------------------------------
# quay down --purge deletes only a bring-up's data directory
# --------------------------------------------------------------------------------------------------------


def _fake_data_dir(root: Path, *, state: str, extra: Sequence[str] = (), dirs: Sequence[str] = ("config", "ca", "env")) -> Path:
    root.mkdir()
    for d in dirs:
        (root / d).mkdir()
    (root / "state.json").write_text(state)
    for name in extra:
        (root / name).write_text("precious\n")
    return root


GOOD_STATE = json.dumps({"version": 1, "name": "ocpb-quay", "hostname": "mirror.example", "server": "mirror.example:8443", "images": {}})


@pytest.mark.parametrize(
    "case, state, extra, dirs, why",
    [
        ("empty-state-only", "{}", (), (), "it lacks ca, config, env"),
        ("empty-state-in-a-home", "{}", ("thesis.tex", ".bashrc"), ("config", "ca", "env"), "it holds thesis.tex, which quay up never writes"),
        ("empty-state-shaped-dir", "{}", (), ("config", "ca", "env"), "neither its state.json nor its secrets.json"),
        ("wrong-version", GOOD_STATE.replace('"version": 1', '"version": true'), (), ("config", "ca", "env"), "neither its state.json"),
        ("good-state-foreign-files", GOOD_STATE, ("notes.txt",), ("config", "ca", "env"), "it holds notes.txt"),
    ],
)
def test_quay_down_purge_deletes_only_a_bring_up_data_directory(case: str, state: str, extra: Sequence[str], dirs: Sequence[str], why: str, tmp_path: Path) -> None:
    from bundler.quay.bringup import quay_down

    data = _fake_data_dir(tmp_path / case, state=state, extra=extra, dirs=dirs)
    before = sorted(p.name for p in data.iterdir())
    with pytest.raises(UsageError) as e:
        quay_down(name="ocpb-hostile-absent", data_dir=data, purge=True)
    assert f"{data} is not a Quay data directory made by ocp-bundler: {why}" in str(e.value) and "nothing was removed" in str(e.value)
    assert sorted(p.name for p in data.iterdir()) == before


def test_a_bring_up_data_directory_is_recognised(tmp_path: Path) -> None:
    from bundler.quay.bringup import QuayPaths

    data = _fake_data_dir(tmp_path / "quay", state=GOOD_STATE, dirs=("config", "ca", "env", "storage", "postgres"))
    assert QuayPaths(data).not_ours_because() is None


# --------------------------------------------------------------------------------------------------------
# pack: disk space against the plan before pulling, and a disk that fills up while pulling
# --------------------------------------------------------------------------------------------------------


def _lying_image(registry: RegistryServer, repo: str, claimed: int) -> None:
    """An image whose manifest claims its one layer is `claimed` bytes (the blob itself is small)."""
    real = make_image(random_layers=[10_000], seed=f"lying-{repo}")
    doc = json.loads(real.raw)
    doc["layers"][0]["size"] = claimed
    raw = json.dumps(doc).encode()
    with RegistryClient(registry.url) as client:
        for blob in real.blobs:
            client.push_blob(repo, blob)
        client.push_manifest(repo, "v1", raw, real.media_type)


def test_pack_checks_space_against_the_plan_before_pulling(registry_plain: RegistryServer, tmp_path: Path) -> None:
    _lying_image(registry_plain, "hostile/exabyte", 10**18)
    with FaultProxy(registry_plain.url) as proxy:
        config = _pack_config(tmp_path / "c.yaml", [f"{proxy.host}/hostile/exabyte:v1"])
        code, _, err = run_cli(["pack", "--config", str(config), "--out", str(tmp_path / "out"), "--work-dir", str(tmp_path / "w"), "--insecure-registry", proxy.host])
        blob_gets = [t for (m, t, _, _) in proxy.log if m == "GET" and "/blobs/" in t]
    assert code == ExitCode.USAGE, err
    line = one_line_error(err)
    # Blobs stream straight into the bundle: the plan's bytes must fit in --out (the work directory only
    # holds what planning reads).
    assert "(100000000000000" in line and " is free" in line and "nothing was pulled" in line, line
    assert f"{tmp_path / 'out'}" in line
    assert blob_gets == [], "no layer is pulled when the plan cannot fit"


@pytest.fixture
def small_disk(tmp_path: Path) -> "Iterator[Path]":
    """A 4 MiB tmpfs (root only, as on the machines the suite runs on)."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_work_dir_disk_filling_up_while_pulling_does_not_stop_pack(registry_plain: RegistryServer, tmp_path: Path, small_disk: Path) -> None:
    push(registry_plain.url, "hostile/fill", make_image(random_layers=[600_000, 600_000], seed="hostile-fill"), "v1")
    with FaultProxy(registry_plain.url, rate=1.0, kinds=[STALL], stall_seconds=3.0, match=lambda m, t: m == "GET" and "/blobs/" in t) as proxy:
        config = _pack_config(tmp_path / "c.yaml", [f"{proxy.host}/hostile/fill:v1"])
        args = [sys.executable, "-m", "bundler.cli", "pack", "--config", str(config), "--out", str(tmp_path / "out"), "--work-dir", str(small_disk / "w"), "--insecure-registry", proxy.host]
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=str(ROOT)), preexec_fn=_limits)
        deadline = time.monotonic() + 30
        while sum("/manifests/" in t for (m, t, _, _) in proxy.log if m == "GET") < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)  # measured for the space check, then fetched to copy: the blobs come next (stalled 3 s)
        with open(small_disk / "someone-else", "wb") as f:  # another program fills the disk meanwhile
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * 65536)
        _, err_bytes = proc.communicate(timeout=120)
    err = err_bytes.decode()
    # Layers stream straight into --out, not through the work directory: a full disk under the work
    # directory does not stop the pack (it holds only what planning reads, and the run's own report).
    assert proc.returncode == 0, err
    verify_bundle(tmp_path / "out")


# --------------------------------------------------------------------------------------------------------
# unpack: two runs into one registry at once
# --------------------------------------------------------------------------------------------------------


def test_concurrent_unpacks_into_one_registry_all_succeed(registry_factory: "Callable[..., RegistryServer]", tmp_path: Path) -> None:
    from tests.test_unpack import PUBLIC_KEY, content, make_bundle

    entries = content("race", scale=8)
    bundle = make_bundle(tmp_path / "bundle", entries)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for round_ in range(int(os.environ.get("RACE_ROUNDS", "4"))):
        mirror = registry_factory("plain")
        procs = []
        for i in range(int(os.environ.get("RACE_RUNS", "3"))):
            args = [
                sys.executable, "-m", "bundler.cli", "unpack", str(bundle), "--registry", mirror.host, "--insecure-registry", mirror.host,
                "--key", str(PUBLIC_KEY), "--registry-kind", "plain", "--resources-dir", str(tmp_path / f"res-{round_}-{i}"),
            ]
            procs.append(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(env, XDG_CACHE_HOME=str(tmp_path / f"cache-{i}")), preexec_fn=_limits))
        outcomes = [(p.wait(timeout=180), p.stderr.read().decode() if p.stderr else "") for p in procs]
        for p in procs:
            for stream in (p.stdout, p.stderr):
                if stream:
                    stream.close()
        for code, err in outcomes:
            assert "damaged" not in err, err
            assert code == 0, (round_, outcomes)


@pytest.mark.parametrize("times", [1, 100])
def test_registry_side_conflict_is_retried_then_reported_as_such(times: int, registry_factory: "Callable[..., RegistryServer]", tmp_path: Path) -> None:
    from bundler.flows.unpack import UnpackIntegrityError, UnpackPartialFailureError, unpack_bundle
    from tests.test_unpack import content, make_bundle, options

    bundle = make_bundle(tmp_path / "bundle", content("conflict"))
    mirror = registry_factory("plain")
    with FaultProxy(mirror.url) as proxy:
        proxy.script(BLOB_RACE, match=lambda m, t: m == "PUT" and "/manifests/" in t and "openshift4" in t, times=times)
        opts = options(proxy.host, tmp_path, prefix="race", write_resources=False)
        if times == 1:
            unpack_bundle(bundle, options=opts)  # pushed again, and in place
            return
        with pytest.raises(UnpackPartialFailureError) as e:
            unpack_bundle(bundle, options=opts)
    assert not isinstance(e.value, UnpackIntegrityError) and e.value.exit_code == ExitCode.PARTIAL
    text = str(e.value)
    assert "the registry lost track of blobs it had accepted while another run wrote the same repositories" in text and "damaged" not in text, text
    assert "the bundle is intact" in text


# --------------------------------------------------------------------------------------------------------
# small ones: file options that are devices
# --------------------------------------------------------------------------------------------------------


def test_authfile_that_is_a_device_is_named_as_such(tmp_path: Path) -> None:
    config = _pack_config(tmp_path / "c.yaml", ["127.0.0.1:9/x/y:v1"])
    code, _, err = run_cli(["pack", "--config", str(config), "--out", str(tmp_path / "out"), "--authfile", "/dev/zero", "--dry-run"])
    assert code == ExitCode.USAGE, err
    line = one_line_error(err)
    assert "auth file /dev/zero is a character device, not a regular file" in line and "does not exist" not in line, line


def test_pull_secret_file_that_is_a_device_is_refused(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bundler.cli", "pull-secret", "--file", "/dev/zero", "--registry", "m.example:8443", "--username", "u", "--password-stdin"],
        input=b"p\n", capture_output=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT)), preexec_fn=_limits,
    )
    err = proc.stderr.decode()
    assert proc.returncode == ExitCode.USAGE, err
    assert "pull secret /dev/zero is a character device, not a regular file" in one_line_error(err), err


def test_prune_keeps_ledger_entries_an_unpack_records_while_it_runs(fresh_registry_plain: RegistryServer, tmp_path: Path) -> None:
    from bundler.flows.ledger import LedgerEntry, read_ledger, record
    from tests.test_prune import _bundles
    from tests.test_unpack import PRIVATE_KEY, PUBLIC_KEY, cli, unpack_args

    registry = fresh_registry_plain
    one, _, two, _ = _bundles(tmp_path, PRIVATE_KEY)
    ledger = tmp_path / "ledger.jsonl"
    for bundle in (one, two):
        done = cli(*unpack_args(bundle, registry.host, "p", tmp_path, PUBLIC_KEY, "--ledger", str(ledger)))
        assert done.returncode == 0, done.stderr.decode()
    late = LedgerEntry(repository="p/late/image", tag="v9", digest="sha256:" + "ab" * 32, bundle="ocpb-late")
    with FaultProxy(registry.url, rate=1.0, kinds=[STALL], stall_seconds=2.0, match=lambda m, t: m == "DELETE") as proxy:
        prune = subprocess.Popen(
            [sys.executable, "-m", "bundler.cli", "prune", "--registry", proxy.host, "--prefix", "p", "--insecure-registry", proxy.host,
             "--ledger", str(ledger), "--keep", str(two), "--yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=str(ROOT)),
        )
        deadline = time.monotonic() + 60
        while not any(m == "HEAD" or m == "GET" for (m, _, _, _) in proxy.log) and time.monotonic() < deadline:
            time.sleep(0.02)  # prune has read the ledger and is at work (its deletions stall)
        record(ledger, [late])  # an unpack into the same registry finishes meanwhile
        _, err = prune.communicate(timeout=120)
    assert prune.returncode == 0, err.decode()
    assert ("p/late/image", "v9") in {(e.repository, e.tag) for e in read_ledger(ledger)}, "an entry recorded while prune ran was lost"


def test_quay_file_options_that_are_devices_are_refused(tmp_path: Path) -> None:
    code, _, err = run_cli(["quay", "up", "--hostname", "mirror.example", "--init-password-file", "/dev/zero", "--data-dir", str(tmp_path / "q")])
    assert code == ExitCode.USAGE, err
    assert "password file /dev/zero is a character device, not a regular file" in one_line_error(err), err
    probe = "from pathlib import Path\nfrom bundler.quay.certs import load_certificates, load_private_key\n"
    for call, what in (("load_certificates", "certificate file"), ("load_private_key", "key file")):
        proc = subprocess.run(
            [sys.executable, "-c", probe + f"{call}(Path('/dev/zero'))"], capture_output=True, timeout=60,
            env=dict(os.environ, PYTHONPATH=str(ROOT)), preexec_fn=_limits,
        )
        assert f"{what} /dev/zero is a character device, not a regular file" in proc.stderr.decode(), proc.stderr.decode()[-500:]

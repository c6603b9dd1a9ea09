"""The command line against a hostile registry (`tests.infra.hostile_registry`): nothing hangs, grows
without bound, crashes or hands credentials to a host nobody vouched for.

Every case runs `ocp-bundler` as a subprocess with a wall-clock limit and measures the child's peak
memory (`wait4`): it must end within its limit, under `MEMORY_LIMIT_MB`, with a documented exit code and
one clear `error:` line (no traceback).

- TLS policy: a registry named with `--insecure-registry` does not make the token server its challenge
  names, nor the host a blob GET is redirected to, insecure: credentials never reach an unverified host.
  `--insecure-registry HOST` (no port) matches every port of HOST, for registries and token servers alike.
  Expired and wrong-name certificates are told apart; a `--ca-file` that is not PEM is named.
- Bounded reads: an endless manifest, a manifest declaring 100 MB, lying headers.
- Depth: 1,500 nested manifest lists; a manifest with deeply nested JSON.
- Reference parsing: a port above 65535; a reference whose tag and digest disagree.
- Redaction: `-vvv` shows no query string (pre-signed redirect URLs).
- Stalls: a manifest trickling one byte every few seconds, a blob that stops half way.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, List, Optional

import pytest

from tests.infra.certs import TLSFiles, make_tls_files
from tests.infra.hostile_registry import ForeignServer, HostileRegistry

ROOT = Path(__file__).resolve().parent.parent
MEMORY_LIMIT_MB = 300
EXIT_USAGE, EXIT_INTEGRITY, EXIT_REGISTRY = 2, 3, 5
FAST = ["--timeout", "2", "--retry-times", "1"]


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    seconds: float
    max_rss_mb: float

    def one_clear_line(self) -> str:
        """The single `error:` line; fails on a traceback or an internal error."""
        assert "Traceback" not in self.stderr, self.stderr
        assert "internal error" not in self.stderr, self.stderr
        errors = [line for line in self.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, self.stderr
        return errors[0]


def run_cli(args: List[str], *, limit: float, home: Path, argv: Optional[List[str]] = None) -> Run:
    """`ocp-bundler ARGS` (or `argv`) with a wall-clock `limit` (killed after it: the test fails) and its peak RSS."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), HOME=str(home), XDG_CACHE_HOME=str(home / "cache"), OCPB_DEBUG_LOG=str(home / "debug.log"))
    env.pop("REGISTRY_AUTH_FILE", None)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.monotonic()
        proc = subprocess.Popen(argv or [sys.executable, "-m", "bundler.cli", *args], stdout=out, stderr=err, env=env, cwd=str(home))
        status, rusage = 0, None
        while True:
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - start > limit:
                os.kill(proc.pid, signal.SIGKILL)
                os.wait4(proc.pid, 0)
                out.seek(0)
                err.seek(0)
                pytest.fail(f"ocp-bundler {' '.join(args)} ran longer than {limit}s; stderr: {err.read().decode(errors='replace')[-2000:]}")
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.monotonic() - start
        out.seek(0)
        err.seek(0)
        run = Run(proc.returncode, out.read().decode(errors="replace"), err.read().decode(errors="replace"), seconds, rusage.ru_maxrss / 1024)
    assert run.max_rss_mb < MEMORY_LIMIT_MB, f"peak memory {run.max_rss_mb:.0f} MB; stderr: {run.stderr[-2000:]}"
    return run


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


@pytest.fixture(scope="module")
def untrusted(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """A certificate for 127.0.0.1 from a CA no test ever passes to the client."""
    return make_tls_files(tmp_path_factory.mktemp("untrusted"))


@pytest.fixture
def foreign(untrusted: TLSFiles) -> Iterator[ForeignServer]:
    with ForeignServer((untrusted.cert_file, untrusted.key_file)) as server:
        yield server


@pytest.fixture
def hostile() -> Iterator[HostileRegistry]:
    with HostileRegistry(trickle_seconds=1.0) as reg:
        yield reg


def copy_args(reg: HostileRegistry, repo: str, out: Path, *extra: str, insecure: Optional[str] = "default") -> List[str]:
    args = ["copy", f"docker://{reg.host}/{repo}", f"oci:{out}", *FAST, *extra]
    if insecure == "default":
        args += ["--insecure-registry", reg.host]
    elif insecure is not None:
        args += ["--insecure-registry", insecure]
    return args


def authfile(home: Path, host: str) -> Path:
    path = home / "auth.json"
    path.write_text('{"auths": {"%s": {"auth": "dXNlcjpzM2NyZXQ="}}}' % host)  # user:s3cret
    return path


# -- TLS policy ------------------------------------------------------------------------------------------


def test_credentials_never_go_to_an_unverified_token_server(home: Path, foreign: ForeignServer) -> None:
    with HostileRegistry(realm=f"{foreign.url}/token") as reg:
        run = run_cli(copy_args(reg, "ok/x:latest", home / "oci", "--authfile", str(authfile(home, reg.host))), limit=60, home=home)
    assert run.code == EXIT_REGISTRY, run.stderr
    line = run.one_clear_line()
    assert "TLS error talking to 127.0.0.1:" in line and foreign.url.split("//")[1] in line, line
    assert foreign.credentials_seen == 0 and foreign.requests == []


def test_redirect_targets_are_verified(home: Path, foreign: ForeignServer) -> None:
    with HostileRegistry(foreign=foreign) as reg:
        foreign.blobs.update(reg.content.blobs)
        run = run_cli(copy_args(reg, "redirect/x:latest", home / "oci"), limit=60, home=home)
    assert run.code == EXIT_REGISTRY, run.stderr
    line = run.one_clear_line()
    assert "TLS error talking to " + foreign.url.split("//")[1] in line, line
    assert foreign.requests == []
    assert "SECRETSIGNATURE" not in run.stderr


def test_insecure_host_without_port_matches_every_port(home: Path, hostile: HostileRegistry) -> None:
    run = run_cli(copy_args(hostile, "ok/x:latest", home / "oci", insecure="127.0.0.1"), limit=60, home=home)
    assert run.code == 0, run.stderr


def test_insecure_tls_registry_prints_no_urllib3_warnings(home: Path, untrusted: TLSFiles) -> None:
    with HostileRegistry(cert=(untrusted.cert_file, untrusted.key_file)) as reg:
        run = run_cli(copy_args(reg, "ok/x:latest", home / "oci"), limit=60, home=home)
    assert run.code == 0, run.stderr
    assert "InsecureRequestWarning" not in run.stderr and "Connection pool" not in run.stderr, run.stderr


def test_expired_and_wrong_name_certificates_are_told_apart(home: Path, tmp_path: Path) -> None:
    expired = make_tls_files(tmp_path / "expired", expired=True)
    with HostileRegistry(cert=(expired.cert_file, expired.key_file)) as reg:
        run = run_cli(copy_args(reg, "ok/x:latest", home / "a", "--ca-file", str(expired.ca_file), insecure=None), limit=60, home=home)
    assert run.code == EXIT_REGISTRY
    line = run.one_clear_line()
    assert "expired" in line and "--ca-file" not in line, line

    wrong = make_tls_files(tmp_path / "wrong", hosts=("registry.example",))
    with HostileRegistry(cert=(wrong.cert_file, wrong.key_file)) as reg:
        run = run_cli(copy_args(reg, "ok/x:latest", home / "b", "--ca-file", str(wrong.ca_file), insecure=None), limit=60, home=home)
    assert run.code == EXIT_REGISTRY
    line = run.one_clear_line()
    assert "not issued for 127.0.0.1" in line and "--ca-file" not in line, line

    with HostileRegistry(cert=(wrong.cert_file, wrong.key_file)) as reg:
        run = run_cli(copy_args(reg, "ok/x:latest", home / "c", insecure=None), limit=60, home=home)
    assert run.code == EXIT_REGISTRY
    assert "not signed by a trusted CA" in run.one_clear_line() and "--ca-file" in run.stderr


def test_a_ca_file_that_is_not_pem_is_named(home: Path, hostile: HostileRegistry) -> None:
    bogus = home / "not-a-cert.txt"
    bogus.write_text("hello\n")
    run = run_cli(copy_args(hostile, "ok/x:latest", home / "oci", "--ca-file", str(bogus)), limit=60, home=home)
    assert run.code == EXIT_USAGE
    assert str(bogus) in run.one_clear_line()


# -- bounded reads ---------------------------------------------------------------------------------------


def test_an_endless_manifest_is_cut_off(home: Path, hostile: HostileRegistry) -> None:
    run = run_cli(copy_args(hostile, "endless/x:latest", home / "oci"), limit=60, home=home)
    assert run.code == EXIT_REGISTRY, run.stderr
    line = run.one_clear_line()
    assert "larger than 4 MiB" in line and "endless/x" in line, line


def test_a_manifest_declaring_100_mb_is_refused_before_reading(home: Path, hostile: HostileRegistry) -> None:
    run = run_cli(copy_args(hostile, "bigheader/x:latest", home / "oci"), limit=30, home=home)
    assert run.code == EXIT_REGISTRY, run.stderr
    assert "larger than 4 MiB" in run.one_clear_line()
    assert run.seconds < 10


def test_lying_headers_are_not_believed(home: Path, hostile: HostileRegistry) -> None:
    """Content-Length 10 bytes short and a Docker-Content-Digest of other content: the digest the
    client computes decides, and the truncated manifest is reported as such."""
    run = run_cli(copy_args(hostile, "liar/x:latest", home / "oci"), limit=60, home=home)
    assert run.code == EXIT_INTEGRITY, run.stderr
    assert "liar/x:latest" in run.one_clear_line() and "not valid JSON" in run.stderr
    assert not (home / "oci" / "index.json").exists() or hostile.other_digest not in (home / "oci" / "index.json").read_text()


# -- depth -----------------------------------------------------------------------------------------------


def test_deeply_nested_manifest_lists_are_refused(home: Path, hostile: HostileRegistry) -> None:
    run = run_cli(copy_args(hostile, "deep/x:latest", home / "oci"), limit=60, home=home)
    assert run.code == EXIT_USAGE, run.stderr
    assert "nested deeper than 16 levels" in run.one_clear_line()
    manifests = [p for m, p in hostile.requests if "/manifests/" in p]
    assert len(manifests) < 40, len(manifests)  # stopped at the bound, did not walk 1,500 levels


def test_deeply_nested_json_in_a_manifest_is_refused(home: Path, hostile: HostileRegistry) -> None:
    run = run_cli(copy_args(hostile, "deepjson/x:latest", home / "oci"), limit=60, home=home)
    assert run.code == EXIT_INTEGRITY, run.stderr
    line = run.one_clear_line()
    assert "nested deeper than" in line and "deepjson/x" in line, line


# -- reference parsing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["copy", "docker://127.0.0.1:99999/a/b:v1", "oci:OUT"],
        ["copy", "docker://127.0.0.1:5000/a/b:v1", "oci:OUT", "--insecure-registry", "127.0.0.1:70000"],
        ["unpack", "EMPTY", "--registry", "mirror.example:123456"],
    ],
    ids=["reference", "insecure-registry", "registry"],
)
def test_a_port_above_65535_is_a_usage_error(home: Path, args: List[str]) -> None:
    (home / "empty").mkdir()
    args = [a.replace("OUT", str(home / "oci")).replace("EMPTY", str(home / "empty")) for a in args]
    run = run_cli(args, limit=30, home=home)
    assert run.code == EXIT_USAGE, run.stderr
    line = run.one_clear_line()
    assert "out of range" in line and "1 to 65535" in line, line


# -- redaction -------------------------------------------------------------------------------------------


def test_query_strings_never_reach_the_terminal_or_the_debug_log(
    home: Path, foreign: ForeignServer, untrusted: TLSFiles, registry_plain: Any
) -> None:
    """A pre-signed redirect (`X-Amz-Signature=`) on the pull, upload session state (`_state=`) on the push."""
    with HostileRegistry(foreign=foreign) as reg:
        foreign.blobs.update(reg.content.blobs)
        pull = run_cli(copy_args(reg, "redirect/x:latest", home / "oci", "--ca-file", str(untrusted.ca_file), "-vvv"), limit=60, home=home)
    assert pull.code == 0, pull.stderr
    assert len(foreign.requests) == 2 and "/blob/" in pull.stderr  # the redirects were followed and logged
    push = run_cli(
        ["copy", f"oci:{home / 'oci'}", f"docker://{registry_plain.host}/hostile/redacted:v1", "--insecure-registry", registry_plain.host, "-vvv"],
        limit=60,
        home=home,
    )
    assert push.code == 0, push.stderr
    assert "/blobs/uploads/" in push.stderr
    debug_log = (home / "debug.log").read_text()
    for text in (pull.stderr, push.stderr, debug_log):
        assert "SECRETSIGNATURE" not in text and "X-Amz-" not in text
        assert "_state=" not in text and "digest=sha256" not in text


# -- stalls ----------------------------------------------------------------------------------------------


def test_a_trickling_manifest_times_out(home: Path, hostile: HostileRegistry) -> None:
    """One byte a second never trips a socket read timeout; the per-request deadline (--timeout 2) does,
    on each of the 2 attempts (--retry-times 1)."""
    run = run_cli(copy_args(hostile, "trickle/x:latest", home / "oci"), limit=30, home=home)
    assert run.code == EXIT_REGISTRY, run.stderr
    line = run.one_clear_line()
    assert "stalled" in line and "trickle/x" in line and "2 attempts" in line, line
    assert run.seconds < 15


def test_trickling_headers_time_out(home: Path, hostile: HostileRegistry) -> None:
    """A socket timeout only limits the gap between two bytes: the headers have a deadline of their own."""
    run = run_cli(copy_args(hostile, "slowheaders/x:latest", home / "oci"), limit=30, home=home)
    assert run.code == EXIT_REGISTRY, run.stderr
    line = run.one_clear_line()
    assert "slowheaders/x" in line and "timed out" in line and "2 attempts" in line, line
    assert run.seconds < 15


@pytest.mark.parametrize("repo", ["stall/x:latest", "tricklblob/x:latest"], ids=["stopped", "trickle"])
def test_a_stalled_blob_download_gives_up_within_the_retry_budget(home: Path, hostile: HostileRegistry, repo: str) -> None:
    run = run_cli(copy_args(hostile, repo, home / "oci"), limit=60, home=home)
    assert run.code in (EXIT_REGISTRY, 4), run.stderr
    line = run.one_clear_line()
    assert "stalled" in line, line
    assert run.seconds < 40


# -- tag and digest --------------------------------------------------------------------------------------


def test_a_tag_and_digest_that_disagree_are_refused(home: Path, hostile: HostileRegistry) -> None:
    run = run_cli(copy_args(hostile, f"tagged/x:v1@{hostile.other_digest}", home / "a"), limit=30, home=home)
    assert run.code == EXIT_USAGE, run.stderr
    line = run.one_clear_line()
    assert "tag v1 is " + hostile.ok_digest in line and hostile.other_digest in line, line
    index = home / "a" / "index.json"
    assert not index.exists() or hostile.other_digest not in index.read_text()

    agree = run_cli(copy_args(hostile, f"tagged/x:v1@{hostile.ok_digest}", home / "b"), limit=30, home=home)
    assert agree.code == 0, agree.stderr
    gone = run_cli(copy_args(hostile, f"tagged/x:gone@{hostile.ok_digest}", home / "c"), limit=30, home=home)
    assert gone.code == 0, gone.stderr
    assert "warning:" in gone.stderr and "no tag gone" in gone.stderr


def test_http_library_warnings_stay_out_of_the_terminal(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """urllib3 logs "Connection pool is full, discarding connection" as a warning when more threads
    talk to one host than its pool keeps; that is not the user's business below -vvv."""
    import logging

    from bundler.cli.support import setup_logging

    monkeypatch.setenv("OCPB_DEBUG_LOG", os.devnull)
    try:
        setup_logging(0)
        logging.getLogger("urllib3.connectionpool").warning("Connection pool is full, discarding connection: %s", "127.0.0.1")
        assert "Connection pool" not in capsys.readouterr().err
        setup_logging(3)
        logging.getLogger("urllib3.connectionpool").warning("Connection pool is full, discarding connection: %s", "127.0.0.1")
        assert "Connection pool is full" in capsys.readouterr().err
    finally:
        for handler in list(logging.getLogger().handlers):
            logging.getLogger().removeHandler(handler)


def test_an_endless_image_config_is_not_read_into_memory(home: Path, hostile: HostileRegistry) -> None:
    """Reading files out of an image (release extraction) reads its config into memory: at most its size."""
    script = (
        "import sys\n"
        "from bundler.base.errors import BundlerError\n"
        "from bundler.oci.reference import Reference\n"
        "from bundler.registry.client import Registries, TransportOptions\n"
        "from bundler.transfer.image_files import open_image\n"
        "from bundler.transfer.transports import RegistryRepository\n"
        f"regs = Registries(options=TransportOptions(insecure_hosts=frozenset({{'{hostile.host}'}}), read_timeout=2, max_attempts=2))\n"
        f"ref = Reference.parse('{hostile.host}/endlessblob/x:latest')\n"
        "try:\n"
        "    open_image(RegistryRepository(regs.client(ref.registry), ref), platform='linux/amd64')\n"
        "except BundlerError as exc:\n"
        "    print('error:', exc, file=sys.stderr)\n"
        "    sys.exit(int(exc.exit_code))\n"
    )
    run = run_cli([], limit=60, home=home, argv=[sys.executable, "-c", script])
    assert run.code == EXIT_INTEGRITY, run.stderr
    assert "image config is not sha256:" in run.one_clear_line()


def test_an_endless_answer_to_the_quay_question_is_cut_off(home: Path, hostile: HostileRegistry) -> None:
    """unpack asks the target whether it is Quay (`/api/v1/discovery`): that answer is bounded too."""
    script = (
        "import sys\n"
        "from bundler.base.errors import BundlerError\n"
        "from bundler.quay.api import QuayAPI\n"
        f"api = QuayAPI('http://{hostile.host}', timeout=5)\n"
        "try:\n"
        "    api.is_quay()\n"
        "except BundlerError as exc:\n"
        "    print('error:', exc, file=sys.stderr)\n"
        "    sys.exit(int(exc.exit_code))\n"
    )
    run = run_cli([], limit=60, home=home, argv=[sys.executable, "-c", script])
    assert run.code == EXIT_REGISTRY, run.stderr
    assert "larger than 8 MiB" in run.one_clear_line()


def test_tag_list_pages_stay_on_the_registry_and_end(foreign: ForeignServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A `Link: rel="next"` to another host would carry this registry's credentials there; one that
    names itself would page forever (the page limit is lowered here to keep the test short)."""
    from bundler.base.errors import RegistryError
    from bundler.registry import client
    from bundler.registry.client import Registries, TransportOptions

    monkeypatch.setattr(client, "MAX_TAG_PAGES", 20)

    with HostileRegistry(foreign=foreign) as reg:
        regs = Registries(options=TransportOptions(insecure_hosts=frozenset({reg.host}), read_timeout=5, max_attempts=1))
        try:
            with pytest.raises(RegistryError, match="points to another host"):
                regs.client(reg.host).list_tags("pager/x")
            assert foreign.requests == []
            start = time.monotonic()
            with pytest.raises(RegistryError, match="more than 20 pages"):
                regs.client(reg.host).list_tags("loop/x")
            assert time.monotonic() - start < 60
        finally:
            regs.close()

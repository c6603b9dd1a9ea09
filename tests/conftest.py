"""Shared pytest fixtures for ocp-bundler.

Import style: ``tests`` is a package and the repository root is on ``sys.path``, so
test files import the infrastructure as::

    from tests.infra.images import make_image, make_index, push
    from tests.infra.faultproxy import FaultProxy

Tools: ``require_tool(name)`` skips the test when a binary is missing, or fails it when
``OCPB_REQUIRE_TOOLS=1`` (CI), so a skipped test is never counted as passing. Use the
``require_tool`` fixture (``def test_x(require_tool): require_tool("podman")``) or
import the function (``from tests.conftest import require_tool``).

Registries (all on 127.0.0.1, each with a private temp dir; every process is stopped at
the end of its scope):

- ``registry_plain``   session: HTTP, no auth
- ``registry_tls``     session: HTTPS (``.ca_file``, ``.cert_dir``) + htpasswd
                       (``.username``/``.password``, ``.auth``)
- ``registry_token``   session: HTTP + Bearer token auth; ``.token_server`` is the
                       :class:`~tests.infra.token_server.TokenServer`
- ``fresh_registry_plain``  function: a new empty HTTP registry per test
- ``registry_factory``      function: ``registry_factory("token", token_expires_in=3)``
                            -> started RegistryServer, stopped after the test; also
                            ``"tls-clientcert"`` (mutual TLS: ``.client_cert``/``.client_key``) and
                            ``tls_names=(...)`` for extra certificate names

- ``real_quay``     session: a real Project Quay 3.18 from ``../shared/quay`` (HTTP on loopback,
                       superuser ``.token``), see :mod:`tests.infra.real_quay`

Session registries are shared: use a repository name unique to the test (the ``repo``
fixture gives one). Other helpers: ``skopeo`` (digest/inspect/copy with skopeo),
``repo``, ``oci_dir``, ``authfile``.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, List, Optional, Tuple, Union

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
# The shared fixtures sit beside the repository (../shared/fixtures) wherever it is cloned.
os.environ.setdefault("BUNDLER_FIXTURES", str(ROOT.parent / "shared" / "fixtures"))
# What unpack records for prune (the mirror ledger) goes to a directory of this run, never the user's.
import tempfile as _tempfile  # noqa: E402

os.environ["XDG_STATE_HOME"] = _tempfile.mkdtemp(prefix="ocpb-test-state-")

from tests.infra.registry import RegistryServer, stop_all_registries  # noqa: E402

if TYPE_CHECKING:
    from tests.infra.real_quay import RealQuay

REQUIRE_TOOLS_ENV = "OCPB_REQUIRE_TOOLS"


def require_tool(name: str) -> str:
    """Return the path of ``name``; skip the test if it is missing, or fail when
    ``OCPB_REQUIRE_TOOLS=1``."""
    path = shutil.which(name)
    if path:
        return path
    reason = "required tool %r is not installed" % name
    if os.environ.get(REQUIRE_TOOLS_ENV) == "1":
        pytest.fail("%s (%s=1)" % (reason, REQUIRE_TOOLS_ENV), pytrace=False)
    pytest.skip(reason)
    raise AssertionError("unreachable")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Last resort: stop any registry a test forgot to close. With every tool required, a skipped test
    fails the run: it proved nothing and must not pass as a test that did."""
    stop_all_registries()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if os.environ.get(REQUIRE_TOOLS_ENV) == "1" and skipped:
        reporter.write_line(f"{len(skipped)} test(s) skipped with {REQUIRE_TOOLS_ENV}=1: the run fails", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(name="require_tool")
def require_tool_fixture() -> Callable[[str], str]:
    return require_tool


_REGISTRY_TOOLS = {
    "plain": ["docker-registry"],
    "tls-htpasswd": ["docker-registry", "htpasswd"],
    "token": ["docker-registry"],
    "tls-clientcert": ["docker-registry"],
}


def _start_registry(mode: str, **kwargs: Any) -> RegistryServer:
    for tool in _REGISTRY_TOOLS[mode]:
        require_tool(tool)
    server = RegistryServer(mode, **kwargs)
    try:
        return server.start()
    except BaseException:
        server.close()
        raise


@pytest.fixture(scope="session")
def real_quay() -> Iterator["RealQuay"]:
    """One real Project Quay 3.18 (``../shared/quay``) for the whole run, superuser initialised.

    Tests share it: use organisation names unique to the test. Skipped when the Quay scripts or its
    install are missing, or failed with ``OCPB_REQUIRE_TOOLS=1`` (CI installs it).
    """
    from tests.infra.real_quay import RealQuay, RealQuayError, ensure_installed

    try:
        ensure_installed()
        quay = RealQuay().start()
    except RealQuayError as exc:
        if os.environ.get(REQUIRE_TOOLS_ENV) == "1":
            pytest.fail("real Quay unavailable: %s" % exc, pytrace=False)
        pytest.skip("real Quay unavailable: %s" % exc)
        raise AssertionError("unreachable")
    yield quay
    quay.stop()


@pytest.fixture(scope="session")
def registry_plain() -> Iterator[RegistryServer]:
    server = _start_registry("plain")
    yield server
    server.close()


@pytest.fixture(scope="session")
def registry_tls() -> Iterator[RegistryServer]:
    server = _start_registry("tls-htpasswd")
    yield server
    server.close()


@pytest.fixture(scope="session")
def registry_token() -> Iterator[RegistryServer]:
    server = _start_registry("token")
    yield server
    server.close()


@pytest.fixture
def registry_factory() -> Iterator[Callable[..., RegistryServer]]:
    started: List[RegistryServer] = []

    def factory(mode: str = "plain", **kwargs: Any) -> RegistryServer:
        server = _start_registry(mode, **kwargs)
        started.append(server)
        return server

    yield factory
    for server in reversed(started):
        server.close()


@pytest.fixture
def fresh_registry_plain(registry_factory: Callable[..., RegistryServer]) -> RegistryServer:
    return registry_factory("plain")


@pytest.fixture
def repo(request: pytest.FixtureRequest) -> str:
    """A repository name unique to this test, e.g. ``t/test-push-oci-image``."""
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:120] or "x"
    return "t/" + name


@pytest.fixture
def oci_dir(tmp_path: Path) -> Path:
    """A (not yet created) path for an OCI layout in the test's tmp dir."""
    return tmp_path / "oci"


@pytest.fixture
def authfile(tmp_path: Path) -> Callable[..., Path]:
    """``authfile(reg1, reg2, ...)`` -> path of one auth.json with entries for all."""

    def make(*servers: RegistryServer) -> Path:
        path = tmp_path / "auth.json"
        path.write_text('{"auths": {}}\n')
        for server in servers:
            server.write_authfile(path)
        return path

    return make


Creds = Union[str, Tuple[str, str], None]


class Skopeo:
    """Thin wrapper around the skopeo CLI, the independent oracle. ``ref`` is
    ``docker://host/repo:tag``, ``oci:DIR:REF``, or ``host/repo:tag`` (docker:// added)."""

    def __init__(self, binary: str) -> None:
        self.binary = binary

    TRANSPORTS = ("docker://", "oci:", "oci-archive:", "dir:", "docker-archive:", "containers-storage:")

    @classmethod
    def _ref(cls, ref: str) -> str:
        return ref if ref.startswith(cls.TRANSPORTS) else "docker://" + ref

    @staticmethod
    def _transport_args(
        flag_prefix: str, ref: str, tls_verify: bool, creds: Creds, cert_dir: Optional[Union[str, Path]]
    ) -> List[str]:
        if not ref.startswith("docker://"):
            return []
        args = ["--%stls-verify=%s" % (flag_prefix, "true" if tls_verify else "false")]
        if creds:
            text = creds if isinstance(creds, str) else "%s:%s" % creds
            args.append("--%screds=%s" % (flag_prefix, text))
        if cert_dir:
            args.append("--%scert-dir=%s" % (flag_prefix, cert_dir))
        return args

    def run(self, *args: str, check: bool = True) -> "subprocess.CompletedProcess[bytes]":
        proc = subprocess.run([self.binary, *args], capture_output=True, timeout=300)
        if check and proc.returncode != 0:
            raise AssertionError(
                "skopeo %s failed (%d): %s" % (" ".join(args), proc.returncode, proc.stderr.decode(errors="replace"))
            )
        return proc

    def inspect_raw(
        self, ref: str, *, tls_verify: bool = False, creds: Creds = None, cert_dir: Optional[Union[str, Path]] = None
    ) -> bytes:
        full = self._ref(ref)
        args = ["inspect", "--raw", *self._transport_args("", full, tls_verify, creds, cert_dir), full]
        return self.run(*args).stdout

    def digest(
        self, ref: str, *, tls_verify: bool = False, creds: Creds = None, cert_dir: Optional[Union[str, Path]] = None
    ) -> str:
        """``sha256:`` + sha256 of ``skopeo inspect --raw`` (what is stored, exactly)."""
        raw = self.inspect_raw(ref, tls_verify=tls_verify, creds=creds, cert_dir=cert_dir)
        return "sha256:" + hashlib.sha256(raw).hexdigest()

    def copy(
        self,
        src: str,
        dst: str,
        *extra: str,
        src_tls_verify: bool = False,
        dest_tls_verify: bool = False,
        src_creds: Creds = None,
        dest_creds: Creds = None,
        src_cert_dir: Optional[Union[str, Path]] = None,
        dest_cert_dir: Optional[Union[str, Path]] = None,
    ) -> None:
        s, d = self._ref(src), self._ref(dst)
        args = [
            "copy",
            *self._transport_args("src-", s, src_tls_verify, src_creds, src_cert_dir),
            *self._transport_args("dest-", d, dest_tls_verify, dest_creds, dest_cert_dir),
            *extra,
            s,
            d,
        ]
        self.run(*args)


@pytest.fixture
def skopeo() -> Skopeo:
    return Skopeo(require_tool("skopeo"))


def cli_runner() -> Any:
    """A click CliRunner giving `.output` (stdout and stderr together), `.stdout` and `.stderr` on every click
    version we support (click < 8.2 keeps them apart only with `mix_stderr=False`, and then `.output` is
    stdout alone; 8.2 removed the parameter and offers all three)."""
    from click.testing import CliRunner

    try:
        runner = CliRunner(mix_stderr=False)  # type: ignore[call-arg]
    except TypeError:
        return CliRunner()

    class _Result:
        def __init__(self, result: Any) -> None:
            self._result = result
            self.output = result.stdout + result.stderr

        def __getattr__(self, name: str) -> Any:
            return getattr(self._result, name)

    class _Runner:
        def __getattr__(self, name: str) -> Any:
            return getattr(runner, name)

        def invoke(self, *args: Any, **kwargs: Any) -> Any:
            return _Result(runner.invoke(*args, **kwargs))

    return _Runner()

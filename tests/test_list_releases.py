"""`ocp-bundler list releases`: versions of a channel from an update service on loopback answering like the
real Cincinnati graph API (nodes with version, payload and metadata; edges; conditional edges), the channels
of a minor version, the minor versions a release repository has tags for, and the failures (unknown channel,
garbage, an endless answer) as one line with the documented exit code."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Sequence, Tuple

import pytest

from bundler.base.errors import ExitCode
from bundler.cli.main import main
from bundler.openshift.cincinnati import MAX_GRAPH_BYTES
from tests.conftest import cli_runner
from tests.infra.images import make_image, push
from tests.infra.openshift_images import GraphServer
from tests.infra.registry import RegistryServer

CHANNELS = "io.openshift.upgrades.graph.release.channels"


def _digest(n: int) -> str:
    return "sha256:" + f"{n:064x}"


def _real_shaped_graph(versions: Sequence[Tuple[str, str]], edges: Sequence[Tuple[int, int]] = ()) -> Dict[str, Any]:
    """A graph as api.openshift.com answers it: nodes in no particular order, each with a payload by digest and
    metadata (channels, manifest ref, errata URL); edges by node index; conditional edges by version."""
    nodes: List[Dict[str, Any]] = []
    for i, (version, channels) in enumerate(versions):
        nodes.append({
            "version": version,
            "payload": f"quay.io/openshift-release-dev/ocp-release@{_digest(i + 1)}",
            "metadata": {
                CHANNELS: channels,
                "io.openshift.upgrades.graph.release.manifestref": _digest(i + 1),
                "url": f"https://access.redhat.com/errata/RHBA-2025:{1000 + i}",
            },
        })
    return {
        "nodes": nodes,
        "edges": [list(e) for e in edges],
        "conditionalEdges": [
            {"edges": [{"from": versions[0][0], "to": versions[-1][0]}],
             "risks": [{"url": "https://issues.redhat.com/browse/OCPBUGS-1", "name": "SomeRisk", "message": "…", "matchingRules": [{"type": "Always"}]}]}
        ],
    }


STABLE_418 = _real_shaped_graph(
    [
        ("4.18.10", "candidate-4.18,candidate-4.19,eus-4.18,fast-4.18,fast-4.19,stable-4.18,stable-4.19"),
        ("4.17.9", "candidate-4.17,candidate-4.18,eus-4.18,fast-4.17,fast-4.18,stable-4.17,stable-4.18"),
        ("4.18.2", "candidate-4.18,fast-4.18,stable-4.18"),
        ("4.18.1", "candidate-4.18,fast-4.18,stable-4.18"),
        ("4.17.20", "candidate-4.17,candidate-4.18,eus-4.16,fast-4.17,fast-4.18,stable-4.17,stable-4.18"),
    ],
    edges=[(3, 2), (2, 0), (1, 3), (4, 0)],
)
STABLE_418_ARM = _real_shaped_graph([("4.18.2", "stable-4.18"), ("4.18.1", "stable-4.18")], edges=[(1, 0)])


@pytest.fixture()
def graph_server() -> Any:
    with GraphServer({
        ("stable-4.18", "amd64"): STABLE_418,
        ("stable-4.18", "arm64"): STABLE_418_ARM,
        ("stable-4.30", "amd64"): {"nodes": [], "edges": [], "conditionalEdges": []},
        ("garbage", "amd64"): b"<html>upstream proxy error</html>",
        ("not-a-graph", "amd64"): {"kind": "invalid_params"},
    }) as server:
        yield server


def _run(*args: str) -> Any:
    return cli_runner().invoke(main, ["list", "releases", *args])


def test_versions_of_a_channel_sorted_by_semver(graph_server: GraphServer) -> None:
    result = _run("--channel", "stable-4.18", "--graph-url", graph_server.url)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["Channel: stable-4.18", "Architecture: amd64", "4.17.9", "4.17.20", "4.18.1", "4.18.2", "4.18.10"]
    path, headers = graph_server.requests[-1]
    assert "channel=stable-4.18" in path and "arch=amd64" in path
    assert headers.get("Accept") == "application/json"


def test_json_two_architectures_and_one_minor(graph_server: GraphServer) -> None:
    result = _run("--version", "4.18", "--arch", "amd64,aarch64", "--graph-url", graph_server.url, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["channel"] == "stable-4.18" and doc["version"] == "4.18" and doc["graphURL"] == graph_server.url
    amd, arm = doc["architectures"]
    assert amd["architecture"] == "amd64" and [r["version"] for r in amd["releases"]] == ["4.18.1", "4.18.2", "4.18.10"]
    assert amd["releases"][0]["payload"] == f"quay.io/openshift-release-dev/ocp-release@{_digest(4)}"
    assert arm["architecture"] == "arm64" and [r["version"] for r in arm["releases"]] == ["4.18.1", "4.18.2"]


def test_channels_of_a_version(graph_server: GraphServer) -> None:
    result = _run("--channels", "--version", "4.18", "--graph-url", graph_server.url)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1:] == [
        "eus-4.16", "candidate-4.17", "fast-4.17", "stable-4.17", "candidate-4.18", "eus-4.18", "fast-4.18", "stable-4.18",
        "candidate-4.19", "fast-4.19", "stable-4.19",
    ]
    result = _run("--channels", "--version", "4.18", "--graph-url", graph_server.url, "--json")
    assert json.loads(result.stdout)["channels"][-1] == "stable-4.19"


@pytest.mark.parametrize(
    "args, code, words",
    [
        (["--channel", "stable-4.99"], ExitCode.REGISTRY, "answered HTTP 404 for channel stable-4.99"),
        (["--channel", "stable-4.30"], ExitCode.USAGE, "channel stable-4.30 has no releases for architecture amd64"),
        (["--channel", "garbage"], ExitCode.REGISTRY, "is not JSON"),
        (["--channel", "not-a-graph"], ExitCode.REGISTRY, "is not an update graph"),
        (["--channel", "stable-4.18", "--version", "4.19"], ExitCode.USAGE, "has no 4.19 releases"),
        (["--channel", "stable-4.18", "--arch", "sparc"], ExitCode.USAGE, "unknown architecture 'sparc'"),
        (["--version", "4"], ExitCode.USAGE, "not a MAJOR.MINOR version"),
        (["--channels"], ExitCode.USAGE, "--channels needs --version"),
    ],
)
def test_failures_are_one_line_with_their_exit_code(graph_server: GraphServer, args: List[str], code: int, words: str) -> None:
    result = _run(*args, "--graph-url", graph_server.url)
    assert result.exit_code == code, result.output
    assert words in result.stderr and "Traceback" not in result.output
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) <= 2


def test_an_endless_answer_is_refused() -> None:
    with GraphServer({"stable-4.18": b" " * (MAX_GRAPH_BYTES + 1)}) as server:
        result = _run("--channel", "stable-4.18", "--graph-url", server.url, "--json")
    assert result.exit_code == ExitCode.REGISTRY, result.output
    assert "larger than 64 MiB" in json.loads(result.stdout)["error"]["message"]


def test_unreachable_update_service() -> None:
    with GraphServer({}) as server:
        url = server.url
    result = _run("--channel", "stable-4.18", "--graph-url", url, "--retry-times", "0")
    assert result.exit_code == ExitCode.REGISTRY, result.output
    assert "Traceback" not in result.output


def test_minor_versions_from_release_repository_tags(registry_plain: RegistryServer) -> None:
    image = make_image(seed="release-tags")
    for tag in ("4.9.0-x86_64", "4.18.1-x86_64", "4.17.3-multi", "4.18.2-aarch64", "sha256-" + "a" * 64 + ".sig", "latest"):
        push(registry_plain.url, "openshift-release-dev/ocp-release", image, tag)
    repo = f"{registry_plain.host}/openshift-release-dev/ocp-release"
    result = _run("--release-repo", repo, "--insecure-registry", registry_plain.host)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [f"OpenShift release versions in {repo}:", "  4.9", "  4.17", "  4.18"]
    result = _run("--release-repo", f"{registry_plain.host}/nothing/here", "--insecure-registry", registry_plain.host)
    assert result.exit_code == ExitCode.USAGE and "has no tags that start with a version" in result.stderr


def test_list_operators_takes_the_proxy_flag(registry_plain: RegistryServer) -> None:
    result = cli_runner().invoke(main, ["list", "operators", "--catalog", f"{registry_plain.host}/no/such:v1", "--insecure-registry", registry_plain.host,
                                        "--proxy", "http://127.0.0.1:9", "--retry-times", "0"])
    assert result.exit_code in (ExitCode.REGISTRY, ExitCode.USAGE), result.output
    assert "internal error" not in result.output


def test_the_update_service_is_reached_through_the_proxy(graph_server: GraphServer) -> None:
    from tests.infra.forward_proxy import ForwardProxy

    name = "updates.corp.test"  # resolvable by the proxy alone
    port = graph_server.url.split(":")[2].split("/")[0]
    with ForwardProxy({name: "127.0.0.1"}) as proxy:
        result = _run("--channel", "stable-4.18", "--graph-url", f"http://{name}:{port}/graph", "--proxy", proxy.url, "--retry-times", "0")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == "4.18.10"
    assert any(q.target.startswith(f"http://{name}:{port}/graph?") and "channel=stable-4.18" in q.target for q in proxy.requests)


def test_an_endless_answer_without_a_length_is_cut_off() -> None:
    """No Content-Length: the body ends when the connection closes; reading stops past the limit."""
    import http.server
    import threading

    class Endless(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            chunk = b" " * (1 << 20)
            try:
                for _ in range((MAX_GRAPH_BYTES >> 20) + 8):
                    self.wfile.write(chunk)
            except OSError:
                pass

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        result = _run("--channel", "stable-4.18", "--graph-url", f"http://127.0.0.1:{server.server_address[1]}/graph", "--retry-times", "0")
    finally:
        server.shutdown()
        server.server_close()
    assert result.exit_code == ExitCode.REGISTRY, result.output
    assert "larger than 64 MiB" in result.stderr and "Traceback" not in result.output

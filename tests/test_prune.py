"""`prune` on a real docker-registry (deletes by digest only) holding two bundles' content: it removes
exactly what no kept bundle needs, only what unpack recorded pushing, never a tag moved since, and a
rerun has nothing left to do. skopeo is the oracle for what still resolves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List, Tuple

from tests.infra.images import make_image, push
from tests.infra.registry import RegistryServer
from tests.test_unpack import Entry, cli, content, make_bundle, signature_files, signing_key, tag_digest, unpack_args  # noqa: F401 (fixture)


def _bundles(tmp_path: Path, key: Path) -> Tuple[Path, List[Entry], Path, List[Entry]]:
    first = content("prune1")
    # the upgrade: new release content at the same tags; the sample and the app are no longer carried
    second = [e for e in content("prune2") if e.repository not in ("rhscl/ruby-25-rhel7", "myorg/app")]
    one = make_bundle(tmp_path / "b1", first, key=key, files=signature_files(first))
    two = make_bundle(tmp_path / "b2", second, key=key, files=signature_files(second))
    return one, first, two, second


def _prune(registry: RegistryServer, ledger: Path, *extra: str) -> Any:
    done = cli("prune", "--registry", registry.host, "--prefix", "p", "--insecure-registry", registry.host, "--ledger", str(ledger), "--json", *extra)
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout)


def test_prune_removes_only_what_no_kept_bundle_needs(fresh_registry_plain: RegistryServer, tmp_path: Path, skopeo: Any, signing_key: Tuple[Path, Path]) -> None:
    registry = fresh_registry_plain
    one, first, two, second = _bundles(tmp_path, signing_key[0])
    ledger = tmp_path / "ledger.jsonl"
    for bundle in (one, two):
        done = cli(*unpack_args(bundle, registry.host, "p", tmp_path, signing_key[1], "--ledger", str(ledger)))
        assert done.returncode == 0, done.stderr.decode()
    # not ours: an image pushed by someone else, and bundle 1's app tag moved to other content since
    foreign = make_image(random_layers=[1000], seed="foreign")
    push(registry.url, "p/foreign/tool", foreign, "1")
    moved = make_image(random_layers=[1000], seed="moved")
    app = next(e for e in first if e.repository == "myorg/app")
    push(registry.url, "p/myorg/app", moved, app.tag)

    plan = _prune(registry, ledger, "--keep", str(two))
    assert plan["applied"] is False
    actions = {(a["repository"], a["reference"]): a for a in plan["actions"]}
    ruby = next(e for e in first if e.repository == "rhscl/ruby-25-rhel7")
    assert actions[("p/myorg/app", app.tag)]["action"] == "skip-moved"
    assert actions[("p/rhscl/ruby-25-rhel7", ruby.tag)]["action"] == "delete-tag"
    children = {c.digest for c in ruby.obj.children}  # type: ignore[union-attr]
    assert {r for (repo, r), a in actions.items() if a["action"] == "delete-child"} == children
    assert not any(repo.startswith("p/foreign") for repo, _ in actions)
    assert tag_digest(registry, f"p/{ruby.repository}", ruby.tag) == ruby.digest  # a dry run deletes nothing

    applied = _prune(registry, ledger, "--keep", str(two), "--yes")
    assert all(a["done"] for a in applied["actions"] if a["action"].startswith("delete")), applied
    # docker-registry cannot delete a tag: the sample's list went by digest, then its children
    done = {(a["repository"], a["reference"]): a["action"] for a in applied["actions"]}
    assert done[("p/rhscl/ruby-25-rhel7", ruby.digest)] == "delete-manifest"
    assert {r for (_, r), a in done.items() if a == "delete-child"} == children
    assert tag_digest(registry, f"p/{ruby.repository}", ruby.tag) is None
    assert tag_digest(registry, "p/myorg/app", app.tag) == moved.digest
    assert tag_digest(registry, "p/foreign/tool", "1") == foreign.digest
    for e in second:  # everything the kept bundle maps, digest-exact
        assert skopeo.digest(f"{registry.host}/p/{e.repository}:{e.tag}", tls_verify=False) == e.digest

    again = _prune(registry, ledger, "--keep", str(two), "--yes")
    assert [a["action"] for a in again["actions"]] == ["skip-moved"]


def test_prune_without_a_record_or_kept_bundle_refuses(fresh_registry_plain: RegistryServer, tmp_path: Path, signing_key: Tuple[Path, Path]) -> None:
    one, first, _, _ = _bundles(tmp_path, signing_key[0])
    done = cli("prune", "--registry", fresh_registry_plain.host, "--keep", str(one), "--ledger", str(tmp_path / "none.jsonl"))
    assert done.returncode == 2
    assert b"no record of images unpacked" in done.stderr and b"Traceback" not in done.stderr
    done = cli("prune", "--registry", fresh_registry_plain.host)
    assert done.returncode == 2 and b"--keep" in done.stderr

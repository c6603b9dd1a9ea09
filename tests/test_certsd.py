"""certs.d: per-registry CA files and client certificates, against docker-registry requiring a client
certificate (`http.tls.clientcas`), with skopeo reading the same certs.d as the oracle."""

from __future__ import annotations

from pathlib import Path

import pytest

from bundler.base.errors import UsageError
from bundler.registry.certsd import CertsD, read_host_dir


def test_host_directories_in_containers_order(tmp_path: Path) -> None:
    home, etc_containers, etc_docker = tmp_path / "home", tmp_path / "etc-containers", tmp_path / "etc-docker"
    for root, names in ((home, ["a.example:5000"]), (etc_containers, ["a.example:5000", "b.example"]), (etc_docker, ["b.example", "c.example:8443"])):
        for name in names:
            d = root / name
            d.mkdir(parents=True)
            (d / f"{root.name}.crt").write_text("x")
    certs = CertsD([home, etc_containers, etc_docker])
    # the first root with the registry's directory wins; later ones are not read
    assert certs.for_host("a.example:5000").ca_files == (home / "a.example:5000" / "home.crt",)  # type: ignore[union-attr]
    assert certs.for_host("b.example").ca_files == (etc_containers / "b.example" / "etc-containers.crt",)  # type: ignore[union-attr]
    assert certs.for_host("c.example:8443").directory == etc_docker / "c.example:8443"  # type: ignore[union-attr]
    assert certs.for_host("c.example") is None and certs.for_host("a.example") is None
    cas, clients = certs.scan()
    assert dict(cas) == {
        "a.example:5000": home / "a.example:5000" / "home.crt",
        "b.example:443": etc_containers / "b.example" / "etc-containers.crt",
        "c.example:8443": etc_docker / "c.example:8443" / "etc-docker.crt",
    }
    assert clients == ()


def test_client_pairs_must_be_complete(tmp_path: Path) -> None:
    d = tmp_path / "r.example:5000"
    d.mkdir()
    (d / "ca.crt").write_text("x")
    (d / "client.cert").write_text("x")
    with pytest.raises(UsageError, match=r"client.cert has no key .*client.key"):
        read_host_dir(d)
    (d / "client.key").write_text("x")
    (d / "stray.key").write_text("x")
    with pytest.raises(UsageError, match=r"stray.key has no client certificate .*stray.cert"):
        read_host_dir(d)
    (d / "stray.key").unlink()
    h = read_host_dir(d)
    assert h.ca_files == (d / "ca.crt",) and h.client_cert == (d / "client.cert", d / "client.key")

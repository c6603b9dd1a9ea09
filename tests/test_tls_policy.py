"""The one TLS policy (`bundler.registry.tls`): which hosts are insecure, which CAs and client
certificates each host gets."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from bundler.base.errors import UsageError
from bundler.registry.http import HttpPools, TransportOptions
from bundler.registry.tls import HostTls, TlsPolicy, build_ssl_context


def test_only_named_hosts_are_insecure_and_the_rule_is_the_same_for_every_use() -> None:
    policy = TlsPolicy.from_options(insecure=["reg.example:5000", "LAB.example", "[::1]:8443"])
    assert policy.is_insecure("reg.example:5000") and policy.is_insecure("https://reg.example:5000/token?x=1")
    assert not policy.is_insecure("reg.example:5001") and not policy.is_insecure("reg.example")  # 443
    assert policy.is_insecure("lab.example:1234") and policy.is_insecure("https://lab.example/v2/")
    assert not policy.is_insecure("auth.lab.example") and not policy.is_insecure("https://s3.example/b")
    assert policy.is_insecure("[::1]:8443") and not policy.is_insecure("[::1]:8444")
    assert policy.for_host("lab.example:9") == HostTls(verify=False)


def test_verified_hosts_get_the_extra_and_their_own_cas_and_client_certificates(tmp_path: Path) -> None:
    ca, own, cert, key = (tmp_path / n for n in ("ca.pem", "own.pem", "c.pem", "k.pem"))
    policy = TlsPolicy(
        ca_file=ca,
        host_ca_files=(("reg.example:5000", own),),
        client_certs=(("reg.example", cert, key),),
    )
    assert policy.for_host("reg.example:5000") == HostTls(verify=True, ca_files=(ca, own), client_cert=(cert, key))
    assert policy.for_host("reg.example:6000") == HostTls(verify=True, ca_files=(ca,), client_cert=(cert, key))
    assert policy.verify_for("other.example") == (ca,)
    assert TlsPolicy().verify_for("other.example") is True


def test_files_that_are_not_pem_are_named(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.crt"
    bogus.write_text("not a certificate\n")
    with pytest.raises(UsageError, match=str(bogus)):
        build_ssl_context(HostTls(ca_files=(bogus,)))
    with pytest.raises(UsageError, match="out of range"):
        TlsPolicy.from_options(insecure=["reg.example:70000"])


def test_an_unverified_context_verifies_nothing_and_loads_no_system_cas() -> None:
    ctx = build_ssl_context(HostTls(verify=False))
    assert ctx.verify_mode == ssl.CERT_NONE and not ctx.check_hostname
    assert ctx.cert_store_stats()["x509_ca"] == 0  # loading the system trust store is what takes the time
    verified = build_ssl_context(HostTls())
    assert verified.verify_mode == ssl.CERT_REQUIRED and verified.check_hostname


def test_pools_check_files_at_once_and_build_the_system_context_when_a_host_needs_it(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.crt"
    bogus.write_text("not a certificate\n")
    with pytest.raises(UsageError, match=str(bogus)):
        HttpPools(TransportOptions(tls=TlsPolicy(host_ca_files=(("reg.example", bogus),))))
    pools = HttpPools(TransportOptions(tls=TlsPolicy.from_options(insecure=["lab.example"])))
    manager = pools.manager
    assert manager._contexts == {}  # nothing built at start-up: no file to check
    first = manager.policy_kwargs("reg.example", 443, "https", None)["ssl_context"]
    assert manager.policy_kwargs("other.example", 443, "https", None)["ssl_context"] is first
    assert first.cert_store_stats()["x509_ca"] == ssl.create_default_context().cert_store_stats()["x509_ca"]
    insecure = manager.policy_kwargs("lab.example", 443, "https", None)
    assert insecure["cert_reqs"] == "CERT_NONE" and insecure["ssl_context"].verify_mode == ssl.CERT_NONE

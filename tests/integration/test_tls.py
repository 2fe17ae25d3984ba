"""TLS on the session testbed (on by default): refused without it, verified with the CA,
replication over verified TLS, a wrong CA one line.  Both flavors (``--testbed-flavor``)."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import URL, text

from offload import replication
from offload.dberrors import unpooled_engine
from offload.errors import AccessDenied, OffloadError, TlsRefused
from offload.monitor import session_tls
from offload.testbed import TestbedInfo, write_config
from offload.testbed.tls import ensure_certificates
from offload.testbed.topology import PLAIN_QUERY
from offload.waiting import Deadline, wait_for

from .conftest import run_offload

TLS_KEYS = ("ssl_ca", "ssl_check_hostname")


@pytest.fixture(autouse=True)
def _tls_testbed(offload_testbed: TestbedInfo) -> None:
    if "ssl_ca" not in offload_testbed.primary.query:
        pytest.skip("the run's testbed has no TLS (--testbed-tls off, or external)")


def _servers(testbed: TestbedInfo) -> list[tuple[str, URL]]:
    """Each server through the service's account and the privileged one."""
    return [
        ("primary (nova)", testbed.primary_url()),
        ("primary (admin)", testbed.admin_url()),
        *((f"replica{i} (nova_ro)", u) for i, u in enumerate(testbed.replica_urls())),
        *((f"replica{i} (admin)", u) for i, u in enumerate(testbed.replica_admin_urls())),
    ]


def _plain(url: URL) -> URL:
    return url.difference_update_query(TLS_KEYS).update_query_dict(PLAIN_QUERY)


def test_a_client_without_tls_is_refused_by_every_server(offload_testbed: TestbedInfo) -> None:
    for name, url in _servers(offload_testbed):
        engine = unpooled_engine(_plain(url), name=name)
        try:
            with pytest.raises(OffloadError) as refused, engine.connect():
                pass
        finally:
            engine.dispose()
        # MySQL and MariaDB 11 say 3159 (insecure transport); MariaDB 10.11 says 1045
        assert isinstance(refused.value, TlsRefused | AccessDenied), (name, refused.value)
        assert refused.value.code in {3159, 1045}, (name, refused.value)


def test_with_the_testbed_ca_every_session_is_verified_tls_12_or_newer(
    offload_testbed: TestbedInfo,
) -> None:
    for name, url in _servers(offload_testbed):
        engine = unpooled_engine(url, name=name)
        try:
            with engine.connect() as conn:
                tls = session_tls(conn)
        finally:
            engine.dispose()
        assert tls.version in {"TLSv1.2", "TLSv1.3"}, (name, tls)
        assert tls.cipher, name
        assert tls.not_after is not None, name


def test_the_replica_replicates_over_verified_tls(offload_testbed: TestbedInfo) -> None:
    for url in offload_testbed.replica_admin_urls():
        engine = unpooled_engine(url, name="replica")
        try:
            with engine.connect() as conn:
                status = replication.replica_status(conn, offload_testbed.flavor)
        finally:
            engine.dispose()
        assert status is not None and status.threads_running
        assert (status.ssl_allowed, status.ssl_verify_server_cert) == ("Yes", "Yes")


def test_offload_status_shows_it(offload_testbed: TestbedInfo, tmp_path: Path) -> None:
    config = write_config(offload_testbed, tmp_path / "offload.conf")
    result = _offload(config, "status", "--json")
    document = json.loads(result.stdout)
    views = [document["primary"], *document["replicas"]]
    for view in views:
        assert view["tls"]["version"] in {"TLSv1.2", "TLSv1.3"}, view
        assert view["tls"]["cipher"], view
        assert view["tls"]["cert_days_left"] > document["cert_warning_days"], view
    assert [v["replication_tls"] for v in document["replicas"]] == [
        {"ssl": True, "verify_server_cert": True}
    ] * len(document["replicas"])
    assert not [r for r in document["degraded_because"] if "certificate" in r]


def _offload(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_offload("--config", str(config), *args, cwd=config.parent)


def test_a_wrong_ca_is_a_one_line_error_without_the_password(
    offload_testbed: TestbedInfo, tmp_path: Path
) -> None:
    other = ensure_certificates(tmp_path / "other").ca  # a CA that signed nothing here

    def wrong(url: URL) -> URL:
        return url.update_query_dict({"ssl_ca": str(other)})

    testbed = replace(
        offload_testbed,
        primary=wrong(offload_testbed.primary),
        replicas=tuple(wrong(u) for u in offload_testbed.replicas),
        admin=wrong(offload_testbed.admin),
        replica_admins=tuple(wrong(u) for u in offload_testbed.replica_admins),
    )
    config = write_config(testbed, tmp_path / "offload.conf")
    secrets = [u.password for u in (testbed.primary, *testbed.replicas, testbed.admin)]

    result = _offload(config, "db", "sync")

    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("offload: error: "), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "TLS failed" in result.stderr and "ssl_ca" in result.stderr
    assert "Traceback" not in result.stderr
    assert not [s for s in secrets if s and s in result.stdout + result.stderr]

    status = _offload(config, "status", "--json")
    document = json.loads(status.stdout)
    assert document["health"] == "down"
    assert "TLS failed" in document["degraded_because"][0]
    assert not [s for s in secrets if s and s in status.stdout + status.stderr]


def test_the_servers_require_secure_transport(offload_testbed: TestbedInfo) -> None:
    for name, url in _servers(offload_testbed):
        if "admin" not in name:
            continue
        engine = unpooled_engine(url, name=name)
        try:
            with engine.connect() as conn:
                required = conn.execute(text("SELECT @@require_secure_transport")).scalar_one()
        finally:
            engine.dispose()
        assert int(required) == 1, name


def test_a_plain_channel_is_refused_by_the_primary_and_shown(
    offload_testbed: TestbedInfo,
) -> None:
    ca = offload_testbed.replica_admins[0].query["ssl_ca"]
    assert isinstance(ca, str)
    flavor = offload_testbed.flavor
    engine = unpooled_engine(offload_testbed.replica_admin_urls()[0], name="replica0")
    try:
        with engine.connect() as conn:
            last: list[replication.ReplicaStatus | None] = [None]

            def status() -> replication.ReplicaStatus | None:
                last[0] = replication.replica_status(conn, flavor)
                return last[0]

            replication.set_source_tls(conn, flavor, None)
            try:
                # the primary requires TLS: the IO thread cannot connect, and says why
                refused = wait_for(
                    lambda: (s := status()) is not None and s.last_io_errno != 0,
                    Deadline(30),
                    interval=0.05,
                )
                assert refused, last[0]
                assert last[0] is not None and last[0].io_running != "Yes"
                assert (last[0].ssl_allowed, last[0].ssl_verify_server_cert) == ("No", "No")
                assert not last[0].replicates_over_tls
            finally:
                replication.set_source_tls(conn, flavor, ca)
            assert wait_for(
                lambda: (s := status()) is not None and s.threads_running and s.replicates_over_tls,
                Deadline(30),
                interval=0.05,
            ), last[0]
    finally:
        engine.dispose()

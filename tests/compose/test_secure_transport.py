"""TLS on the compose stack (on by default, as natively): the servers in their containers
require it on their published ports, the replica's channel through its ``link`` verifies
the primary's certificate for that name, the compute container verifies both servers by
their service names, and the key never leaves its 0600 files.

The checks every testbed owes (refused without TLS, TLSv1.2+ with the CA, the channel
verified, ``offload status``, a wrong CA in one line) are tests/integration/test_tls.py's,
called here on the compose stack; what follows them only the stack has.
Runs before test_stack.py, whose last test stops and restarts the replica.
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from offload.dberrors import unpooled_engine
from offload.testbed import engine
from offload.testbed.compose import CONTAINER_TLS_DIR, ComposeTopology
from offload.testbed.tls import TlsFiles
from offload.testbed.topology import TestbedInfo
from offload.waiting import Deadline, wait_for

from ..integration import test_tls as every_testbed


@pytest.fixture(autouse=True)
def _tls_stack(offload_testbed: TestbedInfo) -> None:
    if "ssl_ca" not in offload_testbed.primary.query:
        pytest.skip("the run's compose stack has no TLS (--testbed-tls off)")


@pytest.fixture
def compose(offload_compose: ComposeTopology, offload_testbed: TestbedInfo) -> ComposeTopology:
    """The session's compose testbed, up (``offload_compose`` alone is only prepared)."""
    return offload_compose


def test_without_tls_the_published_ports_refuse(offload_testbed: TestbedInfo) -> None:
    every_testbed.test_a_client_without_tls_is_refused_by_every_server(offload_testbed)
    every_testbed.test_the_servers_require_secure_transport(offload_testbed)


def test_with_the_testbed_ca_sessions_are_tls_12_or_newer(offload_testbed: TestbedInfo) -> None:
    every_testbed.test_with_the_testbed_ca_every_session_is_verified_tls_12_or_newer(
        offload_testbed
    )


def test_the_replica_replicates_through_its_link_over_verified_tls(
    offload_testbed: TestbedInfo,
) -> None:
    every_testbed.test_the_replica_replicates_over_verified_tls(offload_testbed)
    engine_ = unpooled_engine(offload_testbed.replica_admin_urls()[0], name="replica")
    try:
        with engine_.connect() as conn:
            row = conn.execute(text("SHOW REPLICA STATUS")).mappings().one()
    finally:
        engine_.dispose()
    # the name it dials, which the certificate must hold, and the CA as the replica sees it
    source = row.get("Source_Host", row.get("Master_Host"))
    ca = row.get("Source_SSL_CA_File", row.get("Master_SSL_CA_File"))
    assert (source, ca) == ("link", str(CONTAINER_TLS_DIR / "ca.pem")), dict(row)


def test_offload_status_shows_tls_and_a_wrong_ca_is_one_line(
    offload_testbed: TestbedInfo, tmp_path: Path
) -> None:
    """``offload status`` and ``db sync`` from the host, on their own connections (no
    service port: the compute container's /status is the next test's)."""
    from_the_host = replace(offload_testbed, service_port=0)
    shown, wrong = tmp_path / "shown", tmp_path / "wrong"
    shown.mkdir()
    wrong.mkdir()
    every_testbed.test_offload_status_shows_it(from_the_host, shown)
    every_testbed.test_a_wrong_ca_is_a_one_line_error_without_the_password(from_the_host, wrong)


def _status(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=30) as answer:
        data: dict[str, Any] = json.loads(answer.read())
    return data


def test_the_compute_container_verifies_both_servers_and_sees_the_channel(
    offload_testbed: TestbedInfo,
) -> None:
    """/status of the container: its sessions through ``endpoint`` and ``replica-endpoint``
    are TLS, verified against the endpoints' names, the certificate's days are counted,
    and the replica's channel is shown verified."""
    last: dict[str, Any] = {}

    def reported() -> bool:
        last.update(_status(offload_testbed.service_port))
        return all("tls" in v for v in (last["primary"], *last["replicas"]))

    assert wait_for(reported, Deadline(60), interval=1.0), last
    for view in (last["primary"], *last["replicas"]):
        assert view["tls"]["version"] in {"TLSv1.2", "TLSv1.3"}, view
        assert view["tls"]["cert_days_left"] > last["cert_warning_days"], view
    assert [r["replication_tls"] for r in last["replicas"]] == [
        {"ssl": True, "verify_server_cert": True}
    ]
    assert [r["url"].split("@", 1)[1].split(":")[0] for r in last["replicas"]] == [
        "replica-endpoint"
    ]


def test_the_key_stays_private_on_the_host_and_in_the_containers(
    compose: ComposeTopology, offload_testbed: TestbedInfo
) -> None:
    assert offload_testbed.dir is not None
    files = TlsFiles.in_dir(offload_testbed.dir)
    for path in (files.key, files.ca_key, files.cert, files.ca):
        assert path.stat().st_mode & 0o777 == 0o600, path
    key = CONTAINER_TLS_DIR / files.key.name
    for service in ("primary", "replica"):
        (container,) = compose.containers(service)
        code, output = engine.exec_in(container["Id"], ["stat", "-c", "%U %a", str(key)])
        assert (code, output.split()) == (0, ["mysql", "600"]), (service, output)
        # the host's copy is not what the server reads, and it is mounted read-only
        mounts = {m["Destination"]: m for m in container["Mounts"]}
        assert mounts["/etc/offload/tls"]["RW"] is False
        assert mounts["/etc/offload/tls"]["Source"] == str(files.ca.parent)

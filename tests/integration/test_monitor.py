"""The one collector of what servers report, against the testbed's real servers."""

from __future__ import annotations

from offload.db import Database
from offload.monitor import ask, replica_views
from offload.testbed import TestbedInfo
from offload.testbed.native import free_ports

NO_PRIVILEGE = "replica status needs the REPLICATION CLIENT/SLAVE MONITOR privilege"


def test_the_primary_and_a_replica_as_they_report_themselves(offload_testbed: TestbedInfo) -> None:
    primary = ask("primary", offload_testbed.admin_url())
    replica = ask("replica0", offload_testbed.replica_admin_urls()[0])

    assert primary.error == "" and primary.read_only is False and primary.gtid_position
    assert primary.replica is None and primary.notes == []
    assert replica.error == "" and replica.read_only is True
    assert replica.server_id != primary.server_id
    assert replica.replica is not None and replica.replica.threads_running
    assert replica.gtid_position == replica.replica.executed_gtid != ""
    assert "***" in replica.url and (offload_testbed.admin.password or "") not in replica.url


def test_an_account_without_the_privilege_gets_a_note_not_an_error(
    offload_testbed: TestbedInfo,
) -> None:
    report = ask("replica0", offload_testbed.replica_urls()[0])  # nova_ro: SELECT only

    assert report.error == "" and report.read_only is True
    assert report.replica is None
    assert len(report.notes) == 1 and report.notes[0].startswith(NO_PRIVILEGE)


def test_a_server_that_does_not_answer_is_one_line(offload_testbed: TestbedInfo) -> None:
    url = offload_testbed.admin_url().set(port=free_ports(1)[0])

    report = ask("replica0", url)

    assert report.error.startswith("cannot connect to replica0 127.0.0.1:")
    assert "\n" not in report.error and report.server_id is None


def test_replica_views_with_and_without_a_privileged_account(
    offload_db: Database, offload_testbed: TestbedInfo
) -> None:
    (plain,) = replica_views(offload_db)
    (denied,) = replica_views(offload_db, offload_testbed.replica_urls())
    (full,) = replica_views(offload_db, offload_testbed.replica_admin_urls())

    assert plain["reachable"] and plain["io_running"] is None
    assert plain["status_error"].startswith("thread states need a privileged account")
    assert denied["io_running"] is None and denied["status_error"].startswith(NO_PRIVILEGE)
    assert (full["io_running"], full["sql_running"]) == ("Yes", "Yes")
    assert full["last_error"] is None and "status_error" not in full
    # the guard's heartbeat writes meanwhile: received and applied positions, maybe apart
    assert full["received_gtid"] and full["executed_gtid"]
    assert isinstance(full["gtid_distance"], int) and full["gtid_distance"] >= 0

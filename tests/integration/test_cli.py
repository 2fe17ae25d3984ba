"""The offload command against the session testbed: output, errors, no secrets."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import URL, Engine, text

from offload.db import Database
from offload.pytest import DbFactory
from offload.testbed import TestbedInfo, write_config
from offload.testbed.native import free_ports

from .conftest import run_offload

_offload = run_offload


def _secrets(testbed: TestbedInfo) -> list[str]:
    urls: list[URL] = [testbed.primary, *testbed.replicas, testbed.admin]
    return [url.password for url in urls if url.password]


@pytest.fixture
def config(offload_testbed: TestbedInfo, tmp_path: Path) -> Path:
    return write_config(offload_testbed, tmp_path / "offload.conf")


def _assert_one_clean_line(result: subprocess.CompletedProcess[str], testbed: TestbedInfo) -> None:
    assert result.stderr.startswith("offload: error: "), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    for secret in _secrets(testbed):
        assert secret not in result.stdout + result.stderr


def test_status_shows_running_replication_and_no_password(
    offload_testbed: TestbedInfo, config: Path, tmp_path: Path
) -> None:
    result = _offload("--config", str(config), "testbed", "status", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines() if line.strip()}
    assert rows["server"][:7] == ["server", "url", "id", "version", "read_only", "IO", "SQL"]
    # server, url, id, flavor and version, read_only, IO, SQL, behind, delay, GTID position,
    # received, replication (the channel's TLS)
    assert rows["primary"][2] == "1" and rows["primary"][5] == "OFF"
    assert rows["replica0"][5:8] == ["ON", "Yes", "Yes"]
    # a position, no receiver, no channel
    assert rows["primary"][-3] != "-" and rows["primary"][-2:] == ["-", "-"]
    tls = "ssl_ca" in offload_testbed.primary.query
    channel = ["TLS,", "verified"] if tls else ["plain"]
    assert rows["replica0"][-len(channel) :] == channel
    positions = rows["replica0"][-len(channel) - 2 : -len(channel)]
    assert "-" not in positions  # applied and received positions
    for secret in _secrets(offload_testbed):
        assert secret not in result.stdout
    as_json = _offload("--config", str(config), "testbed", "status", "--json", cwd=tmp_path)
    reports = json.loads(as_json.stdout)
    assert [r["role"] for r in reports] == ["primary", "replica0"]
    assert reports[1]["replication"]["threads_running"] is True
    assert reports[1]["read_only"] is True and reports[0]["read_only"] is False


def test_db_sync_creates_the_schema(
    offload_testbed: TestbedInfo, config: Path, tmp_path: Path
) -> None:
    result = _offload("--config", str(config), "db", "sync", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "11 tables" in result.stdout
    assert "***" in result.stdout  # the URL is shown masked


def _config_with(tmp_path: Path, connection: URL) -> Path:
    path = tmp_path / "bad.conf"
    plain = connection.render_as_string(hide_password=False)
    path.write_text(f"[database]\nconnection = {plain}\n")
    return path


def test_wrong_password_is_one_line_exit_2(offload_testbed: TestbedInfo, tmp_path: Path) -> None:
    url = offload_testbed.primary_url().set(password="Wr0ngPassw0rd")
    result = _offload("--config", str(_config_with(tmp_path, url)), "db", "sync", cwd=tmp_path)
    assert result.returncode == 2
    _assert_one_clean_line(result, offload_testbed)
    assert "refused access" in result.stderr and "Wr0ngPassw0rd" not in result.stderr


def test_unreachable_server_is_one_line_exit_1(
    offload_testbed: TestbedInfo, tmp_path: Path
) -> None:
    url = offload_testbed.primary_url().set(port=free_ports(1)[0])
    result = _offload("--config", str(_config_with(tmp_path, url)), "db", "sync", cwd=tmp_path)
    assert result.returncode == 1
    _assert_one_clean_line(result, offload_testbed)
    assert "cannot connect" in result.stderr


def test_missing_database_is_one_line_exit_2(offload_testbed: TestbedInfo, tmp_path: Path) -> None:
    url = offload_testbed.admin_url("nova_missing")
    result = _offload("--config", str(_config_with(tmp_path, url)), "db", "sync", cwd=tmp_path)
    assert result.returncode == 2
    _assert_one_clean_line(result, offload_testbed)
    assert "nova_missing" in result.stderr


def test_malformed_url_is_one_line_exit_2(offload_testbed: TestbedInfo, tmp_path: Path) -> None:
    path = tmp_path / "bad.conf"
    path.write_text("[database]\nconnection = mysql+pymysql://nova:Sup3rSecret@host:port/nova\n")
    result = _offload("--config", str(path), "db", "sync", cwd=tmp_path)
    assert result.returncode == 2
    _assert_one_clean_line(result, offload_testbed)
    assert "Sup3rSecret" not in result.stderr and "not a valid database URL" in result.stderr


def test_replica_pause_resume_and_delay(
    offload_testbed: TestbedInfo, config: Path, tmp_path: Path, offload_replica_admin: list[Engine]
) -> None:
    from offload import replication  # noqa: PLC0415

    def status() -> replication.ReplicaStatus:
        with offload_replica_admin[0].connect() as conn:
            found = replication.replica_status(conn, offload_testbed.flavor)
        assert found is not None
        return found

    try:
        paused = _offload("--config", str(config), "replica", "pause", cwd=tmp_path)
        assert paused.returncode == 0, paused.stderr
        assert (status().io_running, status().sql_running) == ("Yes", "No")
        resumed = _offload("--config", str(config), "replica", "resume", cwd=tmp_path)
        assert resumed.returncode == 0 and status().sql_running == "Yes"
        delayed = _offload("--config", str(config), "replica", "delay", "2", cwd=tmp_path)
        assert delayed.returncode == 0, delayed.stderr
        assert status().sql_delay == 2 and status().threads_running
    finally:
        _offload("--config", str(config), "replica", "delay", "0", cwd=tmp_path)
        _offload("--config", str(config), "replica", "resume", cwd=tmp_path)
    assert status().sql_delay == 0 and status().threads_running
    missing = _offload("--config", str(config), "replica", "pause", "--replica", "5", cwd=tmp_path)
    assert missing.returncode == 2 and "no replica 5" in missing.stderr


def test_status_without_a_service_reads_the_replicas_now(
    offload_testbed: TestbedInfo, config: Path, tmp_path: Path
) -> None:
    assert _offload("--config", str(config), "db", "sync", cwd=tmp_path).returncode == 0
    result = _offload("--config", str(config), "status", "--json", cwd=tmp_path)
    assert result.returncode in (0, 1), result.stderr
    report = json.loads(result.stdout)
    assert report["replicas"][0]["reachable"] is True
    assert report["replicas"][0]["sql_running"] == "Yes"
    assert isinstance(report["replicas"][0]["gtid_distance"], int)  # read with privilege
    assert [t["runs"] for t in report["tasks"]] == [0] * 13
    for secret in _secrets(offload_testbed):
        assert secret not in result.stdout
    text = _offload("--config", str(config), "status", cwd=tmp_path)
    assert text.returncode in (0, 1), text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].startswith("compute service: not running")
    replica = next(line.split() for line in lines if line.startswith("replica0 "))
    assert replica[2] == "yes" and replica[5:7] == ["Yes", "Yes"]  # reachable, IO, SQL
    assert not [line for line in lines if line.startswith("_sync_power_states")]
    for secret in _secrets(offload_testbed):
        assert secret not in text.stdout


def test_seed_on_a_seeded_database_says_what_is_there(
    offload_db: Database, offload_testbed: TestbedInfo, tmp_path: Path
) -> None:
    config = _config_with(tmp_path, offload_db.settings.require_connection())

    def seed(*args: str) -> subprocess.CompletedProcess[str]:
        return _offload("--config", str(config), "seed", "--hosts", "1", *args, cwd=tmp_path)

    def instances() -> int:
        with offload_db.reader() as session:
            return int(session.scalar(text("SELECT COUNT(*) FROM instances")) or 0)

    assert seed("--instances", "20").returncode == 0
    again = seed("--instances", "20")
    assert again.returncode == 2
    _assert_one_clean_line(again, offload_testbed)
    assert "already holds 20 instances" in again.stderr
    assert "--if-empty" in again.stderr and "make clean" in again.stderr
    kept = seed("--if-empty")
    assert kept.returncode == 0 and "20 instances already there" in kept.stdout
    assert instances() == 20

    # rows of an earlier seed without its instances: the server's duplicate key, said so
    with offload_db.writer() as session:
        session.execute(text("SET SESSION foreign_key_checks = 0"))
        session.execute(text("DELETE FROM instances"))
    partial = seed("--instances", "20")
    assert partial.returncode == 2
    _assert_one_clean_line(partial, offload_testbed)
    assert "already holds rows of an earlier seed (Duplicate entry" in partial.stderr
    assert instances() == 0  # the failed seed wrote nothing


def test_tasks_table_follows_the_config(tmp_path: Path) -> None:
    path = tmp_path / "nova.conf"
    path.write_text("[compute]\nreboot_timeout = 60\nsync_power_state_interval = -1\n")
    result = _offload("--config", str(path), "tasks", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines() if line.strip()}
    assert len([name for name in rows if name.startswith(("_", "update_"))]) == 13
    assert rows["_poll_rebooting_instances"][1:] == ["icehouse", "60s", "on"]
    state = " ".join(rows["_sync_power_states"][1:])
    assert state == "icehouse - off: sync_power_state_interval < 0"


def _two_url_config(tmp_path: Path, primary: URL, replica: URL) -> Path:
    path = tmp_path / "pair.conf"
    plain = [u.render_as_string(hide_password=False) for u in (primary, replica)]
    path.write_text(f"[database]\nconnection = {plain[0]}\nslave_connection = {plain[1]}\n")
    return path


def test_slave_connection_naming_the_primary_is_refused(
    offload_testbed: TestbedInfo, tmp_path: Path
) -> None:
    config = _two_url_config(tmp_path, offload_testbed.primary_url(), offload_testbed.primary_url())
    result = _offload("--config", str(config), "run-task", "sync_power_states", cwd=tmp_path)
    assert result.returncode == 2
    _assert_one_clean_line(result, offload_testbed)
    assert "is the primary itself (server_id 1)" in result.stderr


def test_replica_account_that_may_write_is_warned_about(
    offload_testbed: TestbedInfo, tmp_path: Path
) -> None:
    # the primary's account (it may write) used for the replica
    writable = offload_testbed.primary_url().set(port=offload_testbed.replica_urls()[0].port)
    config = _two_url_config(tmp_path, offload_testbed.primary_url(), writable)
    _offload("--config", str(config), "db", "sync", cwd=tmp_path)
    result = _offload("--config", str(config), "run-task", "sync_power_states", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("offload: warn")]
    assert len(warnings) == 1 and "account 'nova' may write" in warnings[0], result.stderr
    assert "give it SELECT only" in warnings[0]
    for secret in _secrets(offload_testbed):
        assert secret not in result.stdout + result.stderr


def test_replica_that_is_not_read_only_is_warned_about(
    offload_testbed: TestbedInfo, config: Path, tmp_path: Path, offload_replica_admin: list[Engine]
) -> None:
    from sqlalchemy import text  # noqa: PLC0415

    _offload("--config", str(config), "db", "sync", cwd=tmp_path)
    with offload_replica_admin[0].connect() as conn:
        conn.execute(text("SET GLOBAL read_only = OFF"))
    try:
        result = _offload("--config", str(config), "run-task", "sync_power_states", cwd=tmp_path)
    finally:
        with offload_replica_admin[0].connect() as conn:
            conn.execute(text("SET GLOBAL read_only = ON"))
    assert result.returncode == 0, result.stderr
    assert "replica0 (mysql+pymysql://nova_ro:***@" in result.stderr
    assert "is not read_only" in result.stderr


def test_unknown_task_is_one_line_exit_2(
    offload_testbed: TestbedInfo, config: Path, tmp_path: Path
) -> None:
    result = _offload("--config", str(config), "run-task", "_poll_everything", cwd=tmp_path)
    assert result.returncode == 2
    _assert_one_clean_line(result, offload_testbed)
    assert "no periodic task named '_poll_everything'" in result.stderr


def test_failed_run_still_prints_its_json_report(
    offload_testbed: TestbedInfo,
    offload_db_factory: DbFactory,
    offload_primary_admin: Engine,
    tmp_path: Path,
) -> None:
    from sqlalchemy import text  # noqa: PLC0415

    db = offload_db_factory()
    database = db.settings.require_connection().database
    with offload_primary_admin.begin() as conn:  # what the task reads first is gone
        conn.execute(text(f"DROP TABLE `{database}`.compute_nodes"))
    urls = (db.settings.require_connection(), db.settings.database.slave_connections[0])
    config = _two_url_config(tmp_path, *urls)

    result = _offload(
        "--config", str(config), "run-task", "update_available_resource", "--json", cwd=tmp_path
    )
    assert result.returncode == 2  # a schema mismatch, as any run of the command says
    _assert_one_clean_line(result, offload_testbed)
    assert "compute_nodes' doesn't exist" in result.stderr and "offload db sync" in result.stderr
    report = json.loads(result.stdout)
    assert report["task"] == "update_available_resource"
    assert report["error"].startswith("MissingTable: ")
    assert "compute_nodes" in report["error"]
    assert {"statements", "routing", "attempts"} <= set(report["details"])
    as_text = _offload(
        "--config", str(config), "run-task", "update_available_resource", cwd=tmp_path
    )
    assert as_text.returncode == 2
    assert as_text.stdout.startswith("update_available_resource on ")
    assert "(FAILED)" in as_text.stdout

"""offload attached to a database Nova made: `offload db sync`, and no heartbeat said out loud.

On a database with Nova's 111 tables (nova-manage db sync) and nothing of offload's:

* ``offload seed`` / tasks work on Nova's tables, but without the heartbeat table every
  replica read falls back to the primary with the reason ``no_heartbeat`` — which
  ``offload status``, the service's ``/healthz`` and ``/status``, and the run report
  (``run-task --json``) name with the fix, without ``-v``;
* ``offload db sync`` says it found Nova's schema and adds only the heartbeat table (the
  extra indexes only with ``--extra-indexes``); the running service then reads its
  replica again, without a restart;
* a Nova database lacking a column offload uses is refused in one line, nothing changed.

Rows whose ``deleted``/``cleaned`` are NULL (Nova's columns allow it) are neither live nor
deleted, for offload's tasks as for Nova's filters.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, inspect, select, text

from offload import schema, seed
from offload.db import Database
from offload.dberrors import unpooled_engine
from offload.testbed import TestbedInfo
from offload.testbed.native import free_ports
from offload.testbed.service import fetch
from offload.testbed.topology import TESTBED_COMPUTE_OPTIONS
from offload.waiting import Deadline, wait_for

FIX = "run `offload db sync`"


def _offload(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # piped output's own width (a terminal's COLUMNS would squeeze the status table)
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    return subprocess.run(
        [sys.executable, "-m", "offload.cli", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def _config(testbed: TestbedInfo, name: str, path: Path, *, http_port: int = 0) -> Path:
    def plain(url: object) -> str:
        return url.render_as_string(hide_password=False)  # type: ignore[attr-defined, no-any-return]

    lines = [
        "[DEFAULT]",
        "host = compute-1",
        "[database]",
        f"connection = {plain(testbed.primary_url(name))}",
        f"slave_connection = {plain(testbed.replica_urls(name)[0])}",
        "[testbed]",
        f"admin_connection = {plain(testbed.admin_url())}",
        f"replica_admin_connections = {plain(testbed.replica_admin_urls()[0])}",
        "[compute]",
        *(f"{k} = {v}" for k, v in TESTBED_COMPUTE_OPTIONS.items()),
        "[service]",
        f"http_port = {http_port}",
        "",
    ]
    path.write_text("\n".join(lines))
    path.chmod(0o600)
    return path


@pytest.fixture
def nova_made(
    nova_testbed: TestbedInfo, nova_database: Callable[..., str], nova_wait: Callable[..., float]
) -> Iterator[tuple[str, Database]]:
    """A database nova-manage made (all of Nova's tables), seeded by offload, replicated."""
    name = nova_database()
    db = Database(nova_testbed.settings(database=name))
    try:
        seed.seed(db, instances=60, hosts=2)
        nova_wait(db)
        yield name, db
    finally:
        db.dispose()


def _tables(testbed: TestbedInfo, name: str) -> set[str]:
    engine = unpooled_engine(testbed.admin_url(name), name="primary")
    try:
        with engine.connect() as conn:
            return set(inspect(conn).get_table_names())
    finally:
        engine.dispose()


def test_without_heartbeat_every_view_names_no_heartbeat_and_the_fix(
    nova_testbed: TestbedInfo, nova_made: tuple[str, Database], tmp_path: Path
) -> None:
    name, _ = nova_made
    assert "heartbeat" not in _tables(nova_testbed, name)
    config = _config(nova_testbed, name, tmp_path / "offload.conf")

    status = _offload(config, "status")
    assert status.returncode == 1, status.stderr
    fix_lines = [line for line in status.stdout.splitlines() if FIX in line]
    assert len(fix_lines) == 1, status.stdout
    assert fix_lines[0].startswith("  degraded: replica0: no heartbeat table")
    assert f"`{name}.heartbeat`" in fix_lines[0] and "pt-heartbeat" in fix_lines[0]
    assert "NOT FIT (no_heartbeat)" in status.stdout
    assert "unreachable" not in status.stdout

    run = _offload(config, "run-task", "_sync_power_states", "--json")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    routing = report["details"]["routing"]
    assert routing["fallbacks"] == {"no_heartbeat": 1}
    assert FIX in routing["why"]["no_heartbeat"]
    # the route asked for the replica; the primary served it, and the report says why
    assert report["details"]["statements"]["servers"]["replica"] == [
        s for s in report["details"]["statements"]["servers"]["replica"] if "server_id=1" in s
    ]
    text_run = _offload(config, "run-task", "_sync_power_states")
    assert "fallback no_heartbeat x1: replica0: no heartbeat table" in text_run.stdout


def test_the_service_says_no_heartbeat_and_recovers_after_db_sync(
    nova_testbed: TestbedInfo, nova_made: tuple[str, Database], tmp_path: Path
) -> None:
    name, _ = nova_made
    port = free_ports(1)[0]
    config = _config(nova_testbed, name, tmp_path / "offload.conf", http_port=port)
    service = subprocess.Popen(
        [sys.executable, "-m", "offload.cli", "--config", str(config), "serve"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def health() -> str:
            try:
                return fetch(port, "/healthz").decode()
            except OSError:
                assert service.poll() is None, "the service exited"
                return ""

        assert wait_for(lambda: health().startswith("degraded"), Deadline(30)), health()
        assert "no heartbeat table" in health() and FIX in health()
        status = json.loads(fetch(port, "/status"))
        (replica,) = status["replicas"]
        assert (replica["reachable"], replica["fit"], replica["unfit_reason"]) == (
            True,
            False,
            "no_heartbeat",
        )

        def fell_back() -> bool:
            tasks = json.loads(fetch(port, "/status"))["tasks"]
            return any(t["routing"]["fallbacks"].get("no_heartbeat") for t in tasks)

        assert wait_for(fell_back, Deadline(30))
        tasks = json.loads(fetch(port, "/status"))["tasks"]
        why = [t["routing"]["why"] for t in tasks if t["routing"]["fallbacks"]]
        assert why and all(FIX in w["no_heartbeat"] for w in why)

        synced = _offload(config, "db", "sync")
        assert synced.returncode == 0, synced.stderr
        # the writer keeps trying: the heartbeat flows and the replica is fit, no restart
        assert wait_for(lambda: health() == "ok\n", Deadline(30)), health()
    finally:
        service.terminate()
        service.wait(timeout=60)


def test_db_sync_on_novas_schema_adds_only_the_heartbeat(
    nova_testbed: TestbedInfo, nova_made: tuple[str, Database], tmp_path: Path
) -> None:
    name, _ = nova_made
    before = _tables(nova_testbed, name)
    config = _config(nova_testbed, name, tmp_path / "offload.conf")

    first = _offload(config, "db", "sync")
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert f"found Nova's schema in `{name}` ({len(before)} tables" in lines[1]
    assert "alembic revision" in lines[1] and "every column they read and write" in lines[1]
    assert lines[2] == "  added 1 table(s): heartbeat"
    (extra,) = schema.EXTRA_INDEXES
    assert f"not added (`offload db sync --extra-indexes` adds it): index {extra.name}" in lines[3]
    assert _tables(nova_testbed, name) == before | {"heartbeat"}
    for url in (nova_testbed.primary, *nova_testbed.replicas):
        assert url.password and url.password not in first.stdout + first.stderr

    again = _offload(config, "db", "sync", "--extra-indexes")
    assert again.returncode == 0, again.stderr
    assert "added no table: offload's tables were all there" in again.stdout
    assert f"added index {extra.name} on volume_usage_cache(volume_id): speeds up" in again.stdout
    engine = unpooled_engine(nova_testbed.admin_url(name), name="primary")
    try:
        with engine.connect() as conn:
            indexes = {ix["name"] for ix in inspect(conn).get_indexes("volume_usage_cache")}
    finally:
        engine.dispose()
    assert extra.name in indexes
    third = _offload(config, "db", "sync")
    assert f"index {extra.name} was there already" in third.stdout


def test_db_sync_refuses_a_nova_database_without_a_column_offload_uses(
    nova_testbed: TestbedInfo, nova_database: Callable[..., str], tmp_path: Path
) -> None:
    name = nova_database()
    engine = unpooled_engine(nova_testbed.admin_url(name), name="primary")
    try:
        with engine.begin() as conn:
            conn.execute(
                text("ALTER TABLE instances DROP INDEX instances_host_deleted_cleaned_idx")
            )
            conn.execute(text("ALTER TABLE instances DROP COLUMN cleaned"))
    finally:
        engine.dispose()
    result = _offload(_config(nova_testbed, name, tmp_path / "offload.conf"), "db", "sync")
    assert result.returncode == 2
    assert result.stderr.startswith("offload: error: this Nova database does not have")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "instances lacks cleaned" in result.stderr and "nothing was changed" in result.stderr
    assert "heartbeat" not in _tables(nova_testbed, name)


def test_null_deleted_and_cleaned_are_neither_live_nor_pending_as_for_nova(
    offload_db_factory: Callable[..., Database],
    offload_compute_factory: Callable[..., object],
    nova_admins: tuple[Engine, Engine],
    nova_wait: Callable[..., float],
) -> None:
    db = offload_db_factory()
    with db.writer() as session:
        # Nova's columns allow NULL; a row written without oslo.db's client default has it
        session.execute(
            text(
                "INSERT INTO instances (uuid, host, node, vm_state, power_state, deleted, cleaned)"
                " VALUES ('null-deleted', 'compute-1', 'compute-1.node', 'active', 1, NULL, 0),"
                " ('null-cleaned', 'compute-1', 'compute-1.node', 'deleted', 4, 0, NULL),"
                " ('live', 'compute-1', 'compute-1.node', 'active', 1, 0, 0)"
            )
        )
        session.execute(text("UPDATE instances SET deleted = id WHERE uuid = 'null-cleaned'"))
    nova_wait(db)
    manager = offload_compute_factory(db)
    power = manager.run("_sync_power_states")  # type: ignore[attr-defined]
    pending = manager.run("_run_pending_deletes")  # type: ignore[attr-defined]
    # Nova: live is deleted = 0 (NULL is not), pending is deleted = id AND cleaned = 0
    assert power.items == 1
    assert pending.items == 0
    with db.reader() as session:
        cleaned = session.scalar(
            select(schema.Instance.cleaned).where(schema.Instance.uuid == "null-cleaned")
        )
    assert cleaned is None

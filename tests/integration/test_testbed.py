"""The native testbed's life cycle: up, idempotent up, sweep, down — nothing leaks."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from offload import replication
from offload.testbed.native import NativeTopology
from offload.testbed.process import cmdline, pid_alive
from offload.waiting import Deadline, wait_for


def _server_pids(directory: Path) -> list[int]:
    """Live server processes whose command line names a config in ``directory``."""
    found = []
    for entry in Path("/proc").iterdir():
        if (
            entry.name.isdigit()
            and pid_alive(int(entry.name))
            and any(
                str(directory) in part and "--defaults-file" in part
                for part in cmdline(int(entry.name))
            )
        ):
            found.append(int(entry.name))
    return found


def _offload(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "offload.cli", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env=env,
    )


@pytest.fixture
def topology_dir(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "tb"
    yield directory
    if (directory / "state.json").exists():
        NativeTopology(directory).down()
    assert _server_pids(directory) == []


def test_up_is_idempotent_and_down_leaves_nothing(topology_dir: Path) -> None:
    topology = NativeTopology(topology_dir, port=0, bind_to_parent=True)
    info = topology.up()
    pids = sorted(_server_pids(topology_dir))
    assert len(pids) == 2
    again = NativeTopology(topology_dir, port=0).up()
    assert again.primary_url() == info.primary_url()
    assert sorted(_server_pids(topology_dir)) == pids  # nothing restarted

    for private in ("offload.conf", "credentials.json", "state.json"):
        assert stat.S_IMODE((topology_dir / private).stat().st_mode) == 0o600
    assert stat.S_IMODE(topology_dir.stat().st_mode) == 0o700

    topology.down()
    assert _server_pids(topology_dir) == []


def test_processes_left_by_a_crashed_launcher_are_swept(topology_dir: Path) -> None:
    # a launcher process starts the testbed and is gone; then one server dies
    started = _offload(
        "testbed", "up", "--backend", "native", "--dir", str(topology_dir), "--port", "0"
    )
    assert started.returncode == 0, started.stderr
    state = json.loads((topology_dir / "state.json").read_text())
    old = {name: record["pid"] for name, record in state["servers"].items()}
    os.killpg(old["replica0"], signal.SIGKILL)
    assert wait_for(lambda: not pid_alive(old["replica0"]), Deadline(10))

    info = NativeTopology(topology_dir).up()  # sweeps the orphaned primary, restarts both
    assert not pid_alive(old["primary"])
    new = json.loads((topology_dir / "state.json").read_text())["servers"]
    assert all(pid_alive(record["pid"]) for record in new.values())
    assert new["primary"]["pid"] != old["primary"]
    assert info.primary_url().port == state["primary_port"]  # same testbed, same data


def test_data_survives_down_and_up(topology_dir: Path) -> None:
    from sqlalchemy import create_engine, text  # noqa: PLC0415

    info = NativeTopology(topology_dir, port=0, bind_to_parent=True).up()
    engine = create_engine(info.primary_url())
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE kept (id INT PRIMARY KEY)"))
        conn.execute(text("INSERT INTO kept VALUES (7)"))
    engine.dispose()
    NativeTopology(topology_dir).down()
    info = NativeTopology(topology_dir, bind_to_parent=True).up()
    replica = create_engine(info.replica_admin_urls("nova")[0])
    with replica.connect() as conn:
        assert conn.execute(text("SELECT id FROM kept")).scalar_one() == 7
        status = replication.replica_status(conn, info.flavor)
    replica.dispose()
    assert status is not None and status.threads_running


def test_port_in_use_is_a_one_line_error_and_nothing_is_left(topology_dir: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _offload(
            "testbed", "up", "--backend", "native", "--dir", str(topology_dir), "--port", str(port)
        )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert "already in use" in result.stderr and "Traceback" not in result.stderr
    assert _server_pids(topology_dir) == []


def test_missing_server_binary_says_what_to_install(topology_dir: Path) -> None:
    env = {**os.environ, "OFFLOAD_MYSQLD": "/nonexistent/mysqld"}
    result = _offload(
        "testbed", "up", "--backend", "native", "--dir", str(topology_dir), "--port", "0", env=env
    )
    assert result.returncode == 1
    assert result.stderr.startswith("offload: error: server binary /nonexistent/mysqld")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_servers_start_without_deprecation_warnings(topology_dir: Path) -> None:
    # MySQL deprecates options it will refuse later (binlog_format: ROW is its only future),
    # so the shared config names such options only for the flavor that needs them.
    NativeTopology(topology_dir, port=0, bind_to_parent=True).up()
    logs = sorted(topology_dir.glob("*/error.log"))
    assert [p.parent.name for p in logs] == ["primary", "replica0"]
    for log in logs:
        warned = [
            line for line in log.read_text(errors="replace").splitlines() if "deprecated" in line
        ]
        assert warned == [], f"{log}: {warned}"

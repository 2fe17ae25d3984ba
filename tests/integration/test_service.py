"""`offload serve` as a process: tasks run, failures are isolated, SIGTERM stops it cleanly."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from offload import seed
from offload.db import Database
from offload.testbed.native import free_ports
from offload.testbed.service import fetch
from offload.testbed.topology import TESTBED_COMPUTE_OPTIONS
from offload.waiting import Deadline, wait_for

#: the service's process and its HTTP port
Service = tuple[subprocess.Popen[str], int]
#: intervals short enough that every task runs a few times within seconds
FAST = {
    "periodic_interval_max": "2",
    "update_resources_interval": "2",
    "volume_usage_poll_interval": "1",
    "heal_instance_info_cache_interval": "1",
    "sync_power_state_interval": "2",
}


def _status(port: int) -> dict[str, dict[str, Any]]:
    try:
        body = json.loads(fetch(port, "/status"))
    except OSError:
        return {}
    return {task["task"]: task for task in body["tasks"]}


@pytest.fixture
def service(offload_db: Database, tmp_path: Path) -> Iterator[Service]:
    seed.seed(offload_db, instances=60, hosts=2)
    port = free_ports(1)[0]
    urls = [
        offload_db.settings.require_connection(),
        *offload_db.settings.database.slave_connections,
    ]
    plain = [u.render_as_string(hide_password=False) for u in urls]
    config = tmp_path / "offload.conf"
    config.write_text(
        "\n".join(
            [
                "[DEFAULT]",
                "host = compute-1",
                "[database]",
                f"connection = {plain[0]}",
                f"slave_connection = {plain[1]}",
                "[compute]",
                *(f"{k} = {v}" for k, v in {**TESTBED_COMPUTE_OPTIONS, **FAST}.items()),
                "[service]",
                f"http_port = {port}",
                "",
            ]
        )
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "offload.cli", "--config", str(config), "serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def answering() -> bool:
            if process.poll() is not None:
                output = process.stdout.read() if process.stdout else ""
                raise AssertionError(f"the service exited ({process.returncode}):\n{output}")
            return bool(_status(port))

        assert wait_for(answering, Deadline(30)), "the service never answered /status"
        yield process, port
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
        if process.stdout is not None:
            process.stdout.close()


def test_service_runs_tasks_and_survives_a_failing_one(
    service: Service, offload_db: Database
) -> None:
    process, port = service
    with offload_db.writer() as session:  # make one task fail on every run from now on
        session.execute(text("DROP TABLE volume_usage_cache"))

    def volume_failed_and_others_ran() -> bool:
        tasks = _status(port)
        return bool(
            tasks["_poll_volume_usage"]["failures"] >= 1
            and tasks["_heal_instance_info_cache"]["runs"] >= 3
        )

    assert wait_for(volume_failed_and_others_ran, Deadline(40), interval=0.2), _status(port)
    assert process.poll() is None  # still serving
    tasks = _status(port)
    assert "volume_usage_cache" in tasks["_poll_volume_usage"]["last_error"]
    ran = {name for name, t in tasks.items() if t["runs"] > 0}
    assert {"update_available_resource", "_sync_power_states"} <= ran
    for name in ran - {"_poll_volume_usage"}:
        statements = tasks[name]["statements"]
        assert statements.get("replica:SELECT", 0) > 0, (name, statements)
        assert not statements.get("primary:SELECT") and not statements.get("write:SELECT"), (
            name,
            statements,
        )
    metrics = fetch(port, "/metrics").decode()
    assert 'offload_task_failures_total{task="_poll_volume_usage"}' in metrics


def test_sigterm_stops_the_service_cleanly(service: Service) -> None:
    process, _ = service
    process.send_signal(signal.SIGTERM)
    status = process.wait(timeout=30)
    output = process.stdout.read() if process.stdout else ""
    assert status == 0, output
    assert "Traceback" not in output

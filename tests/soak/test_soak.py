"""`make soak`: the service under steady writes and periodic replica pauses, for minutes.

Not part of `make test` (marker ``soak``).  SOAK_SECONDS sets the length
(default 600).  At the end: no task failed (fallbacks are expected), resident
memory grew by less than 10 %, the connection count is stable, and primary and
replica hold the same data.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text, update

from offload import replication, seed
from offload.config import ComputeSettings, ReplicaSettings, ServiceSettings, Settings
from offload.db import Database
from offload.pytest import WaitForReplication, factories
from offload.schema import Instance
from offload.service import Service
from offload.testbed import TestbedInfo
from offload.testbed.topology import TESTBED_COMPUTE_OPTIONS
from offload.testing import table_checksums
from offload.waiting import Deadline, wait_for

pytestmark = pytest.mark.soak
SECONDS = float(os.environ.get("SOAK_SECONDS", "600"))
FAST = {
    **TESTBED_COMPUTE_OPTIONS,
    "periodic_interval_max": "2",
    "update_resources_interval": "2",
    "bandwidth_poll_interval": "2",
    "volume_usage_poll_interval": "2",
    "sync_power_state_interval": "3",
    "heal_instance_info_cache_interval": "1",
    "instance_delete_interval": "3",
    "running_deleted_instance_poll_interval": "3",
    "shelved_poll_interval": "3",
}


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


#: a testbed of the soak's own: its replica pauses never reach the session's
offload_testbed = factories.testbed(backend="native", replicas=1, scope="module")


def test_soak(
    offload_db: Database,
    offload_testbed: TestbedInfo,
    offload_primary_admin: Engine,
    offload_replica_admin: list[Engine],
    offload_wait_for_replication: WaitForReplication,
) -> None:
    seed.seed(offload_db, instances=400, hosts=2)
    offload_wait_for_replication(offload_db)
    database = offload_db.settings.require_connection().database or "nova"
    options: dict[str, Any] = {
        k: (v == "true") if v in ("true", "false") else int(v) for k, v in FAST.items()
    }
    compute = ComputeSettings(**options)
    settings = offload_testbed.settings(
        database=database,
        base=Settings(
            host="compute-1",
            compute=compute,
            replica=ReplicaSettings(max_lag=0.5),
            service=ServiceSettings(http_port=0),
        ),
    )
    service = Service(settings)
    runner = threading.Thread(target=service.run, kwargs={"handle_signals": False})
    stop = threading.Event()
    writes = [0]

    def writer() -> None:  # a steady 20 writes/s of instance state changes
        rng = random.Random(1)
        with offload_db.reader() as session:
            ids = list(session.scalars(select(Instance.id).where(Instance.deleted == 0)))
        while not stop.wait(0.05):
            with offload_db.writer() as session:
                session.execute(
                    update(Instance)
                    .where(Instance.id == rng.choice(ids))
                    .values(power_state=rng.choice([1, 4]), updated_at=func.now())
                )
            writes[0] += 1

    def pauser() -> None:  # every 20 s the replica stops applying for 3 s
        while not stop.wait(20):
            with offload_replica_admin[0].connect() as conn:
                replication.stop_replica(conn, offload_testbed.flavor, sql_thread_only=True)
            stop.wait(3)
            with offload_replica_admin[0].connect() as conn:
                replication.start_replica(conn, offload_testbed.flavor, sql_thread_only=True)

    def connections() -> int:
        with offload_primary_admin.connect() as conn:
            return int(
                conn.execute(
                    text(
                        "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                        "WHERE USER IN ('nova', 'nova_ro')"
                    )
                ).scalar_one()
            )

    threads = [runner, threading.Thread(target=writer), threading.Thread(target=pauser)]
    for thread in threads:
        thread.start()
    started = time.monotonic()
    try:
        warm = min(30.0, SECONDS / 4)
        stop.wait(warm)
        rss_start, conns_start = _rss_kib(), connections()
        stop.wait(max(0.0, SECONDS - warm))
        rss_end, conns_end = _rss_kib(), connections()
    finally:
        stop.set()
        service.stop_event.set()
        for thread in threads:
            thread.join(120)
    offload_wait_for_replication(offload_db, timeout=120)
    expected = table_checksums(offload_primary_admin, database)
    assert wait_for(
        lambda: table_checksums(offload_replica_admin[0], database) == expected,
        Deadline(60),
        interval=0.2,
    )
    stats = service.scheduler.stats
    figures: dict[str, Any] = {
        "seconds": round(time.monotonic() - started, 1),
        "writes": writes[0],
        "runs": sum(s.runs for s in stats.values()),
        "failures": {n: s.last_error for n, s in stats.items() if s.failures},
        "fallbacks": sum(service.db.routing.fallbacks.values()),
        "rejected_writes": sum(t["rejected"] for t in service.manager.totals.values()),
        "rss_kib": [rss_start, rss_end],
        "rss_growth": round(rss_end / rss_start - 1, 4),
        "connections": [conns_start, conns_end],
    }
    print("soak:", json.dumps(figures))  # noqa: T201 - the soak report
    assert not figures["failures"], figures
    assert figures["runs"] > 0 and figures["writes"] > 0
    assert figures["rss_growth"] < 0.10, figures
    assert conns_end <= conns_start + 5, figures

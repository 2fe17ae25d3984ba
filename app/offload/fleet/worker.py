"""One fleet process: many simulated compute hosts on one shared engine per configuration.

Each host has its own FakeDriver and two task managers sharing it: one on the Database
with ``slave_connection`` (config ``replica``), one on the Database without (``primary``).
The windows the parent sets say which manager runs.  A dispatcher thread keeps a heap of
(due time, host, task) and hands due runs to a thread pool; a run still going when it is
due again is an overrun (the missed run is not queued, as oslo.service does not either).
Every statement carries the task's tag (``ComputeManager.run``); the host is the
manager's.  Results go back to the parent as plain dicts.
"""

from __future__ import annotations

import ctypes
import dataclasses
import heapq
import logging
import random
import signal
import threading
import time
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from offload.compute.catalogue import TASKS
from offload.compute.context import Compute
from offload.compute.driver import FakeDriver
from offload.compute.manager import ComputeManager
from offload.compute.notifier import NullNotifier
from offload.config import Settings
from offload.db import Database
from offload.dberrors import error_code
from offload.fleet.stats import scaled_spacing

__all__ = ["WorkerPlan", "die_with_parent", "rss_kib", "run_worker"]


@dataclass(frozen=True, slots=True)
class WorkerPlan:
    hosts: tuple[str, ...]
    replica: Settings
    primary: Settings
    time_factor: float
    threads: int
    seed: int


_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """This process gets SIGKILL when its parent dies (Linux): no orphaned fleet."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def rss_kib() -> int:
    for line in open("/proc/self/status", encoding="ascii"):  # noqa: SIM115
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _manager(host: str, driver: FakeDriver, db: Database, settings: Settings) -> ComputeManager:
    compute = Compute(
        host=host, db=db, driver=driver, notifier=NullNotifier(host), options=settings.compute
    )
    return ComputeManager(compute, retry_attempts=2, retry_budget=5.0)


@dataclass(slots=True)
class _Tally:
    durations: dict[str, list[float]] = dataclasses.field(default_factory=lambda: defaultdict(list))
    runs: int = 0
    overruns: int = 0
    errors: int = 0
    #: errors by exception class (a lock wait timeout is a Deadlock)
    error_kinds: dict[str, int] = dataclasses.field(default_factory=lambda: defaultdict(int))
    rejected: int = 0
    skipped: int = 0
    #: runs queued for a free thread when the window ended: never started (also overruns)
    missed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "durations": dict(self.durations),
            "runs": self.runs,
            "overruns": self.overruns,
            "errors": self.errors,
            "error_kinds": dict(self.error_kinds),
            "rejected": self.rejected,
            "skipped": self.skipped,
            "missed": self.missed,
        }


def _kind(exc: BaseException) -> str:
    """The exception's class, with the server's error number when it carries one."""
    code = getattr(exc, "code", None)
    if not isinstance(code, int):
        code = error_code(getattr(exc, "orig", None) or exc)
    return type(exc).__name__ + (f"({code})" if code is not None else "")


def _fallbacks(db: Database) -> int:
    return sum(db.routing.fallbacks.values())


def run_worker(plan: WorkerPlan, conn: Connection) -> None:
    """Build the hosts, say ready; then run each window the parent sends, reply its tally."""
    die_with_parent()
    logging.disable(logging.WARNING)  # retries and overruns are counted, not printed
    base_rss = rss_kib()
    pool = dataclasses.replace(
        plan.replica.database, max_pool_size=plan.threads, max_overflow=plan.threads
    )
    dbs = {
        "replica": Database(dataclasses.replace(plan.replica, database=pool)),
        "primary": Database(
            dataclasses.replace(
                plan.primary, database=dataclasses.replace(pool, slave_connections=())
            )
        ),
    }
    managers: dict[str, list[ComputeManager]] = {"replica": [], "primary": []}
    for host in plan.hosts:
        driver = FakeDriver(host, seed=plan.seed)
        managers["replica"].append(_manager(host, driver, dbs["replica"], plan.replica))
        managers["primary"].append(_manager(host, driver, dbs["primary"], plan.primary))
        managers["primary"][-1].init_host()
    rng = random.Random(plan.seed)
    tasks = []
    for spec in TASKS:
        spacing = spec.spacing(plan.replica.compute)
        if spec.off_because(plan.replica.compute) is None and spacing:
            tasks.append((spec.name, scaled_spacing(spacing, plan.time_factor)))
    hosts_rss = rss_kib()
    conn.send({"base_rss_kib": base_rss, "hosts_rss_kib": hosts_rss})
    with ThreadPoolExecutor(max_workers=plan.threads) as executor:
        while (command := conn.recv()) is not None:
            config = "primary" if command["config"] == "primary" else "replica"
            tally = _Tally()
            fallbacks = _fallbacks(dbs["replica"])
            start = time.time()
            _run_window(
                executor, managers[config], tasks, start, start + command["seconds"], tally, rng
            )
            result = tally.as_dict()
            result["fallbacks"] = _fallbacks(dbs["replica"]) - fallbacks
            conn.send(result)
    end_rss = rss_kib()
    for db in dbs.values():
        db.dispose()
    conn.send({"base_rss_kib": base_rss, "end_rss_kib": end_rss})
    conn.close()


def _run_window(
    executor: ThreadPoolExecutor,
    managers: list[ComputeManager],
    tasks: list[tuple[str, float]],
    start: float,
    end: float,
    tally: _Tally,
    rng: random.Random,
) -> None:
    lock = threading.Lock()
    running: set[tuple[int, str]] = set()
    pending: list[tuple[Future[None], tuple[int, str]]] = []
    heap: list[tuple[float, int, str, float]] = []
    for index in range(len(managers)):
        for name, spacing in tasks:  # desynchronised, as a real fleet's hosts are
            heap.append((start + rng.uniform(0, spacing), index, name, spacing))
    heapq.heapify(heap)

    def job(index: int, name: str, spacing: float) -> None:
        began = time.perf_counter()
        try:
            report = managers[index].run(name)
        except Exception as exc:  # noqa: BLE001 - counted: a fleet run goes on, as nova-compute does
            with lock:
                tally.errors += 1
                tally.error_kinds[_kind(exc)] += 1
            return
        finally:
            with lock:
                running.discard((index, name))
        elapsed = time.perf_counter() - began
        with lock:
            tally.runs += 1
            tally.durations[name].append(elapsed)
            tally.overruns += elapsed > spacing
            tally.rejected += report.rejected
            tally.skipped += report.skipped is not None

    while heap:
        due, index, name, spacing = heap[0]
        if due >= end:
            break
        now = time.time()
        if due > now:
            time.sleep(min(due - now, end - now))  # the scheduler's own timer
            continue
        heapq.heappop(heap)
        with lock:
            busy = (index, name) in running
            if busy:
                tally.overruns += 1  # still running from its last turn: this turn is lost
            else:
                running.add((index, name))
        if not busy:
            pending.append((executor.submit(job, index, name, spacing), (index, name)))
        heapq.heappush(heap, (due + spacing, index, name, spacing))
    # a run still waiting for a thread at the end never started: missed, an overrun; runs
    # started in the window finish before it is reported
    for future, key in pending:
        if future.cancel():
            with lock:
                running.discard(key)
                tally.missed += 1
                tally.overruns += 1
    for future, _ in pending:
        if not future.cancelled():
            future.result()

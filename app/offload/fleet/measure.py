"""What the servers themselves say: status counters, their processes' CPU time, the lag.

* :class:`ServerMeter` — ``Questions`` and ``Com_select`` (SHOW GLOBAL STATUS) and the
  server process's CPU seconds (``/proc/PID/stat`` utime + stime, the PID from the
  server's own ``@@pid_file``; None where /proc cannot see it, e.g. a container).
* :class:`ApiWriteLoad` — the API's own writes at a set rate on the primary: an instance
  boot (a copy of a seeded instance under a new uuid) then its delete (soft delete), in
  turn; untagged, so never counted as a task's statement.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, text

from offload import schema

__all__ = ["ApiWriteLoad", "Reading", "ServerMeter"]


@dataclass(frozen=True, slots=True)
class Reading:
    at: float
    questions: int
    selects: int
    cpu_s: float | None

    def rates(self, before: Reading) -> dict[str, float | None]:
        seconds = max(self.at - before.at, 1e-9)
        cpu = (
            None
            if self.cpu_s is None or before.cpu_s is None
            else (self.cpu_s - before.cpu_s) / seconds
        )
        return {
            "statements_per_s": (self.questions - before.questions) / seconds,
            "selects_per_s": (self.selects - before.selects) / seconds,
            "cpu_s_per_s": cpu,
        }


def _cpu_seconds(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ServerMeter:
    """One server's counters and CPU, read through an admin engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.pid: int | None = None
        with engine.connect() as conn:
            pid_file = conn.execute(text("SELECT @@pid_file")).scalar()
        try:
            self.pid = int(Path(str(pid_file)).read_text(encoding="ascii").strip())
        except (OSError, ValueError):
            self.pid = None
        if self.pid is not None and _cpu_seconds(self.pid) is None:
            self.pid = None

    def read(self) -> Reading:
        with self.engine.connect() as conn:
            rows: dict[str, str] = dict(
                conn.execute(
                    text("SHOW GLOBAL STATUS WHERE Variable_name IN ('Questions', 'Com_select')")
                ).all()
            )
        return Reading(
            time.monotonic(),
            int(rows.get("Questions", 0)),
            int(rows.get("Com_select", 0)),
            _cpu_seconds(self.pid),
        )


class ApiWriteLoad(threading.Thread):
    """Boots and deletes at ``rate`` per second on the primary; late ticks are dropped."""

    def __init__(self, engine: Engine, rate: float) -> None:
        super().__init__(name="fleet-api-writes", daemon=True)
        self.engine = engine
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.stop = threading.Event()
        self.writes = 0
        self.error: str | None = None
        columns = [c.name for c in schema.metadata.tables["instances"].columns if c.name != "id"]
        copied = ", ".join(
            "UUID()" if c == "uuid" else "UTC_TIMESTAMP()" if c == "created_at" else f"`{c}`"
            for c in columns
        )
        names = ", ".join(f"`{c}`" for c in columns)
        self._boot_sql = text(
            f"INSERT INTO instances ({names}) SELECT {copied} FROM instances "  # noqa: S608
            "WHERE deleted = 0 AND vm_state = 'active' ORDER BY id LIMIT 1"
        )
        self._delete_sql = text(
            "UPDATE instances SET deleted = id, deleted_at = UTC_TIMESTAMP(), "
            "vm_state = 'deleted' WHERE id = :id"
        )

    def run(self) -> None:
        if not self.interval:
            return
        booted: list[int] = []
        due = time.monotonic()
        try:
            while not self.stop.is_set():
                with self.engine.begin() as conn:
                    if booted:
                        conn.execute(self._delete_sql, {"id": booted.pop()})
                    else:
                        booted.append(int(conn.execute(self._boot_sql).lastrowid))
                self.writes += 1
                now = time.monotonic()
                due = max(due + self.interval, now)
                self.stop.wait(due - now)
        except Exception as exc:  # noqa: BLE001 - reported with the results, not lost
            self.error = str(exc).splitlines()[0]

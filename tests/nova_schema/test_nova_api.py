"""Nova's own reads on the testbed, proven from the servers' records.

Nova 34's object API runs in the side environment (``nova_calls.py``, a subprocess with
the side environment's Python) against a database made by ``nova-manage db sync``, with a
nova.conf whose ``[database] slave_connection`` is the testbed's replica:

1. ``setup``: Nova writes a compute node, instances in the states the periodic tasks look
   for, a volume attachment, a finished resize and a deleted instance — on the primary;
2. ``calls``: every read a nova-compute periodic task makes with ``use_slave=True``,
   first with ``use_slave=True``, then with ``use_slave=False``.

Each statement carries ``/* nova-proof run=... call=... use_slave=... */``, so the
primary's and the replica's ``performance_schema.events_statements_history_long`` say
which call's SELECTs each server ran.  The client's own record (port of the engine each
statement went through) must agree with the servers'.

What the servers show for Nova 34: with ``use_slave=True`` every call's SELECTs ran on the
replica except ``ComputeNodeList.get_all_by_host`` (update_available_resource), whose
database function takes the writer engine whatever ``use_slave`` says — so Nova's own
resource tracker reads compute nodes on the primary; offload's reads them on the replica.
With ``use_slave=False`` everything ran on the primary.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from offload.db import Database
from offload.sqlverbs import statement_verb
from offload.testbed import TestbedInfo
from offload.testbed.nova import NovaEnv, write_nova_conf

HERE = Path(__file__).resolve().parent
HOST = "nova-proof-1"
#: the reads whose use_slave Nova 34 does not honour (the writer engine, whatever is asked)
PRIMARY_WHATEVER = {"update_available_resource"}
_TAG = re.compile(r"/\* nova-proof run=(\w+) phase=(\w+) call=(\w+) use_slave=(\S+) \*/")


def _nova(env: NovaEnv, conf: Path, run: str, phase: str) -> dict[str, Any]:
    result = subprocess.run(
        [str(env.python), str(HERE / "nova_calls.py"), str(conf), HOST, run, phase],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found: dict[str, Any] = json.loads(result.stdout)
    return found


def _history(engine: Engine, run: str) -> list[str]:
    with engine.connect() as conn:
        return [
            str(row[0])
            for row in conn.execute(
                text(
                    "SELECT SQL_TEXT FROM performance_schema.events_statements_history_long "
                    "WHERE SQL_TEXT LIKE :tag ORDER BY EVENT_ID"
                ),
                {"tag": f"/* nova-proof run={run} %"},
            )
        ]


def _count(statements: list[str], phase: str, verb: str = "SELECT") -> Counter[tuple[str, str]]:
    """(call, use_slave) -> statements of ``verb`` in ``phase``."""
    counts: Counter[tuple[str, str]] = Counter()
    for statement in statements:
        tag = _TAG.match(statement)
        assert tag is not None, statement[:200]
        if tag.group(2) == phase and statement_verb(statement) == verb:
            counts[(tag.group(3), tag.group(4))] += 1
    return counts


def test_novas_own_reads_go_where_use_slave_says(
    nova_testbed: TestbedInfo,
    nova_side_env: NovaEnv,
    nova_database: Callable[..., str],
    nova_admins: tuple[Engine, Engine],
    nova_wait: Callable[..., float],
    tmp_path: Path,
) -> None:
    name = nova_database()  # all of Nova's tables
    conf = write_nova_conf(
        tmp_path / "nova.conf",
        connection=nova_testbed.primary_url(name),
        slave_connection=nova_testbed.replica_urls(name)[0],
        log_file=tmp_path / "nova.log",
    )
    primary_port = nova_testbed.primary.port
    replica_port = nova_testbed.replicas[0].port
    assert primary_port is not None and replica_port is not None
    run = secrets.token_hex(4)

    setup = _nova(nova_side_env, conf, run, "setup")
    assert {s["port"] for s in setup["statements"]} == {primary_port}
    waiter = Database(nova_testbed.settings(database=name))
    try:
        nova_wait(waiter)  # the replica has what Nova wrote before Nova reads it
    finally:
        waiter.dispose()

    calls = _nova(nova_side_env, conf, run, "calls")
    primary_engine, replica_engine = nova_admins
    on_primary = _history(primary_engine, run)
    on_replica = _history(replica_engine, run)

    # every call found what setup wrote, on either server
    rows = calls["result"]
    assert all(found["rows"] > 0 for found in rows.values()), rows
    for key, found in rows.items():
        if key.endswith(":1"):
            assert found == rows[key[:-1] + "0"], key

    # the servers' own records, per call and use_slave value
    primary_selects = _count(on_primary, "calls")
    replica_selects = _count(on_replica, "calls")
    names = {key.rsplit(":", 1)[0] for key in rows}
    for call in names:
        if call in PRIMARY_WHATEVER:
            assert replica_selects[(call, "1")] == 0, call
            assert primary_selects[(call, "1")] > 0, call
        else:
            assert primary_selects[(call, "1")] == 0, (call, on_primary)
            assert replica_selects[(call, "1")] > 0, call
        assert replica_selects[(call, "0")] == 0, (call, on_replica)
        assert primary_selects[(call, "0")] > 0, call

    # the client saw the same: each statement through the engine of the server that ran it
    client: dict[int, Counter[tuple[str, str]]] = {primary_port: Counter(), replica_port: Counter()}
    for seen in calls["statements"]:
        if seen["verb"] == "SELECT":
            client[seen["port"]][(seen["call"], seen["use_slave"])] += 1
    assert client[primary_port] == primary_selects
    assert client[replica_port] == replica_selects

    # Nova's writes ran on the primary only; the replica applied them as row events
    assert _count(on_primary, "setup", "INSERT")
    assert not [s for s in on_replica if " phase=setup " in s]

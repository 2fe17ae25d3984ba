"""The shaped replication link on real replication: delay, clear, cut; and the proxy itself.

The session testbed's replica0 gets a link for this module (its source pointed at the
proxy) and is pointed back at the primary afterwards.  Visibility is measured with plain
PyMySQL clients (``offload.link.probe``): a commit on the primary, a replica polled until
the row shows.  Medians over many samples, generous margins: these are properties of the
link, not speed targets.  The ``check_*`` functions are the acceptance checks both
backends run (tests/compose/test_link.py runs them on the compose stack's link service).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text

from offload import replication
from offload.cli import main
from offload.config import ReplicaSettings, Settings
from offload.dberrors import unpooled_engine
from offload.experiments.records import read_events
from offload.experiments.runner import ExperimentPlan, run_experiment
from offload.experiments.scenarios import parse_scenario
from offload.link.probe import Probe, median
from offload.link.proxy import UPSTREAM_CONNECT_TIMEOUT, Link
from offload.link.runner import LinkRunner, Links
from offload.link.toxics import Toxics
from offload.testbed import TestbedInfo
from offload.testbed.compose import ComposeTopology
from offload.testbed.knobs import read_knobs
from offload.testbed.native import NativeTopology
from offload.waiting import Deadline, wait_for

REPLICA = "replica0"
SAMPLES = 25


@dataclass
class Linked:
    info: TestbedInfo
    dir: Path
    links: Links
    probe: Probe

    def cli(self, *argv: str) -> None:
        assert main(["link", *argv, "--dir", str(self.dir)]) == 0

    def status(self) -> replication.ReplicaStatus:
        engine = unpooled_engine(self.info.replica_admin_urls()[0], name=REPLICA)
        try:
            with engine.connect() as conn:
                found = replication.replica_status(conn, self.info.flavor)
        finally:
            engine.dispose()
        assert found is not None
        return found


@pytest.fixture(scope="module")
def linked(offload_testbed: TestbedInfo) -> Iterator[Linked]:
    if offload_testbed.backend != "native" or offload_testbed.dir is None:
        pytest.skip("a native testbed's links (compose: tests/compose/test_link.py)")
    topology = NativeTopology(offload_testbed.dir, flavor=None, bind_to_parent=True)
    record = topology.attach_link(REPLICA)
    try:
        with Probe.open(
            offload_testbed.admin_url(), offload_testbed.replica_admin_urls()[0]
        ) as probe:
            yield Linked(
                offload_testbed, offload_testbed.dir, LinkRunner(offload_testbed.dir), probe
            )
    finally:
        topology.detach_link(REPLICA)
    assert not LinkRunner.is_ours(record, record.pid or 0), "the link outlived its removal"


@pytest.fixture
def link(linked: Linked) -> Iterator[Linked]:
    linked.cli("clear", REPLICA)
    yield linked
    linked.cli("clear", REPLICA)


def test_the_replica_replicates_through_the_link(link: Linked) -> None:
    status = link.status()
    record = LinkRunner(link.dir).record(REPLICA)
    assert status.source_port == record.listen_port
    check_bytes_cross_the_link(link)


def check_bytes_cross_the_link(link: Linked) -> None:
    assert link.status().threads_running, link.status().describe()
    before = link.links.control(REPLICA, "GET", "/link")["bytes_down"]
    link.probe.sample()
    after = link.links.control(REPLICA, "GET", "/link")
    assert after["bytes_down"] > before
    assert after["connections"] == 1


def test_delay_shows_in_commit_to_visible_and_clear_removes_it(link: Linked) -> None:
    check_delay_then_clear(link)


def check_delay_then_clear(link: Linked) -> None:
    link.cli("set", REPLICA, "--delay", "50ms")
    delayed = median(link.probe.samples(SAMPLES))
    link.cli("clear", REPLICA)
    cleared = median(link.probe.samples(SAMPLES))
    assert 0.050 <= delayed < 0.150, f"p50 {delayed * 1e3:.1f} ms with a 50 ms delay"
    assert cleared < 0.005, f"p50 {cleared * 1e3:.2f} ms after clear"


def test_cut_stops_replication_which_resumes_by_itself(link: Linked) -> None:
    check_cut_heals_by_itself(link)


def check_cut_heals_by_itself(link: Linked) -> None:
    link.cli("cut", REPLICA, "--for", "5s")
    cut_at = time.perf_counter()
    row, _ = link.probe.commit()

    def io_error_shown() -> bool:
        status = link.status()
        return status.io_running != "Yes" and status.last_io_errno != 0

    assert wait_for(io_error_shown, Deadline(4.0), interval=0.1), link.status().describe()
    # the row stays invisible while the link is cut: lag grows with the wall clock
    assert not wait_for(
        lambda: link.probe.visible(row), Deadline(max(0.0, 4.5 - (time.perf_counter() - cut_at)))
    ), "a row crossed a cut link"
    seen = link.probe.await_row(row, timeout=30.0) - cut_at
    assert seen >= 4.5, f"visible {seen:.2f}s after a 5 s cut"
    assert wait_for(lambda: link.status().threads_running, Deadline(10.0))
    primary, replica = link.probe.checksums()
    assert primary == replica
    state = link.links.control(REPLICA, "GET", "/link")
    assert state["resets"] >= 1
    assert state["refused"] >= 1  # the IO thread retried during the cut (MASTER_CONNECT_RETRY 1)


def test_show_reports_the_toxics(link: Linked, capsys: pytest.CaptureFixture[str]) -> None:
    check_show(link, capsys)


def check_show(link: Linked, capsys: pytest.CaptureFixture[str]) -> None:
    link.cli("set", REPLICA, "--delay", "10ms", "--jitter", "2ms", "--rate", "2mbit")
    capsys.readouterr()
    link.cli("show")
    out = capsys.readouterr().out
    assert f"{REPLICA}: delay 10ms, jitter 2ms, rate 2mbit" in out
    assert "1 connection(s) open" in out


# --- the proxy alone, on loopback (no server) --------------------------------


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(4096):
                writer.write(data)
                await writer.drain()
    finally:  # also when asyncio.run cancels it: no stream left open for the GC to warn of
        writer.close()


async def _closed(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def _stall_and_cut() -> None:
    echo = await asyncio.start_server(_echo, "127.0.0.1", 0)
    port = echo.sockets[0].getsockname()[1]
    link = Link("127.0.0.1", port)
    relay = await asyncio.start_server(link.handle, "127.0.0.1", 0)
    relay_port = relay.sockets[0].getsockname()[1]
    async with echo, relay:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay_port)
        writer.write(b"ping")
        assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"
        link.set_toxics({"stall": True})
        writer.write(b"held")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.readexactly(4), 0.3)  # held: nothing comes back
        link.set_toxics({"stall": False})
        assert await asyncio.wait_for(reader.readexactly(4), 5) == b"held"
        assert link.bytes_down == 8 and link.bytes_up == 8
        link.cut(30.0)
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(reader.readexactly(1), 5)  # reset
        await _closed(writer)
        again_reader, again = await asyncio.open_connection("127.0.0.1", relay_port)
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(again_reader.readexactly(1), 5)  # refused while cut
        await _closed(again)
        assert link.refused == 1 and link.resets == 1
        link.clear()
        third_reader, third = await asyncio.open_connection("127.0.0.1", relay_port)
        third.write(b"back")
        assert await asyncio.wait_for(third_reader.readexactly(4), 5) == b"back"
        await _closed(third)
        assert link.toxics == Toxics()


def test_proxy_stall_holds_bytes_and_cut_resets_then_refuses() -> None:
    asyncio.run(_stall_and_cut())


async def _waits_for_upstream(link: Link) -> bool:
    deadline = Deadline(5)
    while not link._connecting:
        if deadline.expired():
            return False
        await asyncio.sleep(0.005)
    return True


async def _silent_upstream() -> None:
    # an upstream that never completes a connect (a killed container's address sends no
    # reset): a listener whose accept queue is full drops further SYNs
    with socket.socket() as silent, socket.socket() as filler:
        silent.bind(("127.0.0.1", 0))
        silent.listen(0)
        port = silent.getsockname()[1]
        filler.connect(("127.0.0.1", port))  # fills the queue: it is never accepted
        link = Link("127.0.0.1", port)
        relay = await asyncio.start_server(link.handle, "127.0.0.1", 0)
        async with relay:
            started = time.monotonic()
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", relay.sockets[0].getsockname()[1]
            )
            with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
                await asyncio.wait_for(reader.readexactly(1), UPSTREAM_CONNECT_TIMEOUT + 5)
            waited = time.monotonic() - started
            await _closed(writer)
            assert link.refused == 1
            assert UPSTREAM_CONNECT_TIMEOUT <= waited < UPSTREAM_CONNECT_TIMEOUT + 5, waited
            # a move refuses at once a client still waiting for the old upstream
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", relay.sockets[0].getsockname()[1]
            )
            assert await _waits_for_upstream(link)
            moved = time.monotonic()
            link.retarget("127.0.0.1", port)
            with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
                await asyncio.wait_for(reader.readexactly(1), UPSTREAM_CONNECT_TIMEOUT)
            assert time.monotonic() - moved < UPSTREAM_CONNECT_TIMEOUT / 2
            await _closed(writer)
            assert link.refused == 2


def test_a_client_waits_for_a_silent_upstream_only_so_long() -> None:
    asyncio.run(_silent_upstream())


# --- the servers' own knobs: parallel appliers, semi-sync (testbed up) -------


def _knobs(link: Linked, *, primary: bool) -> dict[str, str]:
    url = link.info.admin_url() if primary else link.info.replica_admin_urls()[0]
    engine = unpooled_engine(url, name="primary" if primary else REPLICA)
    try:
        with engine.connect() as conn:
            return read_knobs(conn, link.info.flavor, primary=primary)
    finally:
        engine.dispose()


def _scalar(link: Linked, sql: str, *, primary: bool) -> object:
    url = link.info.admin_url() if primary else link.info.replica_admin_urls()[0]
    engine = unpooled_engine(url, name="primary" if primary else REPLICA)
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql)).scalar()
    finally:
        engine.dispose()


def test_parallel_appliers_and_semi_sync_cost_a_round_trip(link: Linked) -> None:
    mariadb = link.info.flavor is replication.Flavor.MARIADB
    workers_variable = "slave_parallel_threads" if mariadb else "replica_parallel_workers"
    before = int(_knobs(link, primary=False)[workers_variable])
    up = ["testbed", "up", "--dir", str(link.dir), "--backend", "native"]
    assert main([*up, "--replica-workers", "4", "--semi-sync"]) == 0
    try:
        replica = _knobs(link, primary=False)
        assert replica[workers_variable] == "4"
        semi_sync = "rpl_semi_sync_slave_enabled" if mariadb else "rpl_semi_sync_replica_enabled"
        assert replica[semi_sync] == "ON"
        workers_sql = (
            "SELECT COUNT(*) FROM information_schema.processlist "
            "WHERE state LIKE 'Waiting for work from SQL thread%'"
            if mariadb
            else "SELECT COUNT(*) FROM performance_schema.replication_applier_status_by_worker"
        )
        assert wait_for(lambda: _scalar(link, workers_sql, primary=False) == 4, Deadline(10.0)), (
            f"{_scalar(link, workers_sql, primary=False)} applier workers"
        )
        clients = "Rpl_semi_sync_master_clients" if mariadb else "Rpl_semi_sync_source_clients"
        clients_sql = (
            "SELECT VARIABLE_VALUE FROM "
            + ("information_schema" if mariadb else "performance_schema")
            + f".global_status WHERE VARIABLE_NAME = '{clients}'"
        )
        assert wait_for(
            lambda: str(_scalar(link, clients_sql, primary=True)) == "1", Deadline(10.0)
        ), "the replica never acknowledged as a semi-sync client"
        # a commit now waits for the replica's acknowledgement: one round trip of the link
        link.cli("set", REPLICA, "--delay", "20ms")
        commits = []
        for _ in range(SAMPLES):
            started = time.perf_counter()
            link.probe.commit()
            commits.append(time.perf_counter() - started)
        assert 0.040 <= median(commits) < 0.200, f"commit p50 {median(commits) * 1e3:.1f} ms"
    finally:
        link.cli("clear", REPLICA)
        assert main([*up, "--replica-workers", str(max(1, before)), "--no-semi-sync"]) == 0
    semi_sync_source = "rpl_semi_sync_master_enabled" if mariadb else "rpl_semi_sync_source_enabled"
    assert _knobs(link, primary=True)[semi_sync_source] == "OFF"


# --- a lag experiment with a link step ----------------------------------------


def test_a_lag_experiment_with_a_link_step(link: Linked, tmp_path: Path) -> None:
    check_lag_experiment_with_a_link_step(
        link, NativeTopology(link.dir, flavor=None, bind_to_parent=True), tmp_path
    )


def check_lag_experiment_with_a_link_step(
    link: Linked, topology: NativeTopology | ComposeTopology, out: Path
) -> None:
    settings = link.info.settings(base=Settings(replica=ReplicaSettings(max_lag=0.1)))
    plan = ExperimentPlan(
        scenario=parse_scenario("link:delay=300ms@0.5..2.5"),
        duration=3.5,
        write_rate=20,
        instances=60,
    )
    result = run_experiment(settings, plan, out, topology=topology)
    (event,) = read_events(out / "events.csv")
    assert (event.kind, event.target, event.detail) == ("link", REPLICA, "delay=300ms")
    assert event.end is not None and 0.4 <= event.t < event.end <= plan.duration
    # the heartbeat crossed the delayed link: lag well beyond max_lag, then back (the
    # reading is exact to one heartbeat interval: at least the delay less one interval)
    floor = 0.300 - settings.replica.heartbeat_interval
    assert result.summary["lag"][REPLICA]["lag_max"] >= floor > settings.replica.max_lag
    assert link.links.control(REPLICA, "GET", "/link")["toxics"] == Toxics().as_dict()


async def _rate_capped() -> tuple[float, int]:
    echo = await asyncio.start_server(_echo, "127.0.0.1", 0)
    link = Link("127.0.0.1", echo.sockets[0].getsockname()[1])
    link.set_toxics({"rate": 100_000.0})  # bytes per second, each way
    relay = await asyncio.start_server(link.handle, "127.0.0.1", 0)
    async with echo, relay:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", relay.sockets[0].getsockname()[1]
        )
        payload = b"x" * 50_000
        started = time.perf_counter()
        writer.write(payload)
        echoed = await asyncio.wait_for(reader.readexactly(len(payload)), 30)
        elapsed = time.perf_counter() - started
        await _closed(writer)
    return elapsed, len(echoed)


def test_proxy_rate_cap_is_never_beaten() -> None:
    elapsed, size = asyncio.run(_rate_capped())
    # 50 kB up at 100 kB/s, then the echo down at 100 kB/s: serialised, at least 0.5 s each way
    # (a lower bound only: a loaded machine can only make it slower)
    assert size == 50_000
    assert elapsed >= 0.5, f"50 kB crossed a 100 kB/s link both ways in {elapsed:.3f}s"

"""The shaped link on the compose stack: the replica reaches the primary through the
``link`` service (offload's proxy in the compute image), shaped with ``offload link``
through its control API on the host's 127.0.0.1.

The acceptance checks are the native ones (tests/integration/test_link.py's ``check_*``):
a 50 ms delay shows in commit-to-visible (plain clients polling the replica) and clear
takes it away; a cut stops replication, which resumes by itself with equal checksums; a
lag experiment's link step goes through the same link.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from offload.cli import main
from offload.link.probe import Probe
from offload.testbed.compose import LINK_CONTROL_PORT, ComposeTopology
from offload.testbed.topology import TestbedInfo

from ..integration.test_link import (
    REPLICA,
    Linked,
    check_bytes_cross_the_link,
    check_cut_heals_by_itself,
    check_delay_then_clear,
    check_lag_experiment_with_a_link_step,
    check_show,
)


@pytest.fixture(scope="module")
def linked(offload_compose: ComposeTopology, offload_testbed: TestbedInfo) -> Iterator[Linked]:
    assert offload_testbed.dir is not None
    with Probe.open(offload_testbed.admin_url(), offload_testbed.replica_admin_urls()[0]) as probe:
        yield Linked(offload_testbed, offload_testbed.dir, offload_compose.links(), probe)


@pytest.fixture
def link(linked: Linked) -> Iterator[Linked]:
    linked.cli("clear", REPLICA)
    yield linked
    linked.cli("clear", REPLICA)


def test_the_replica_replicates_through_the_link_service(
    link: Linked, offload_compose: ComposeTopology
) -> None:
    status = link.status()
    assert (status.source_host, status.source_port) == ("link", 3306), status.describe()
    (container,) = offload_compose.containers("link")
    bindings = container["NetworkSettings"]["Ports"][f"{LINK_CONTROL_PORT}/tcp"]
    assert {b["HostIp"] for b in bindings} == {"127.0.0.1"}  # the control API: loopback only
    check_bytes_cross_the_link(link)


def test_delay_shows_in_commit_to_visible_and_clear_removes_it(link: Linked) -> None:
    check_delay_then_clear(link)


def test_cut_stops_replication_which_resumes_by_itself(link: Linked) -> None:
    check_cut_heals_by_itself(link)


def test_show_reports_the_toxics(link: Linked, capsys: pytest.CaptureFixture[str]) -> None:
    check_show(link, capsys)


def test_a_lag_experiment_with_a_link_step(link: Linked, tmp_path: Path) -> None:
    check_lag_experiment_with_a_link_step(link, ComposeTopology(link.dir), tmp_path)


def test_remove_is_refused_in_one_line(link: Linked, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["link", "remove", REPLICA, "--dir", str(link.dir)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [err[0]] and "always replicates through its link service" in err[0], err
    assert main(["link", "set", "replica1", "--delay", "1ms", "--dir", str(link.dir)]) == 1
    assert "there is no replica 'replica1'" in capsys.readouterr().err
    assert link.status().threads_running  # still replicating, through the link

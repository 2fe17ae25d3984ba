"""Role changes refused before they touch a server: one line saying what to do."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from offload.cli import main
from offload.errors import TestbedError
from offload.testbed import roles
from offload.testbed.files import NativeState, ServerRecord, save_state
from offload.testbed.native import NativeTopology


def _state(tmp_path: Path, *, endpoints: bool) -> NativeState:
    state = NativeState(
        flavor="mariadb",
        primary_port=40001,
        replica_ports=(40002,),
        initialised=True,
        endpoints=endpoints,
        servers={
            "primary": ServerRecord(port=40021, server_id=1, defaults_file="/t/p/my.cnf"),
            "replica0": ServerRecord(port=40022, server_id=2, defaults_file="/t/r/my.cnf"),
        },
    )
    save_state(tmp_path, state)
    return state


def test_a_testbed_without_endpoints_cannot_move_its_roles(tmp_path: Path) -> None:
    _state(tmp_path, endpoints=False)
    topology = NativeTopology(tmp_path, flavor=None)
    for change in (roles.switchover, roles.failover):
        with pytest.raises(TestbedError, match="has no endpoints") as raised:
            change(topology)
        assert "\n" not in str(raised.value) and "--no-endpoint" in str(raised.value)


def test_a_shaped_link_in_the_way_is_named(tmp_path: Path) -> None:
    _state(tmp_path, endpoints=True)
    (tmp_path / "links.json").write_text(
        '{"replica0": {"name": "replica0", "listen_port": 1, "control_port": 2, '
        '"upstream_host": "127.0.0.1", "upstream_port": 40021, "pid": null}}'
    )
    with pytest.raises(TestbedError, match="replica0 replicates through a shaped link"):
        roles.switchover(NativeTopology(tmp_path, flavor=None))


def test_rejoin_names_what_can_rejoin(tmp_path: Path) -> None:
    state = _state(tmp_path, endpoints=True)
    topology = NativeTopology(tmp_path, flavor=None)
    with pytest.raises(TestbedError, match="no departed primary to rejoin"):
        roles.rejoin(topology)
    with pytest.raises(TestbedError, match="there is no server 'replica9'"):
        roles.rejoin(topology, "replica9")
    with pytest.raises(TestbedError, match="replica0 is a replica, not a departed primary"):
        roles.rejoin(topology, "replica0")
    save_state(tmp_path, dataclasses.replace(state, diverged=("replica0",)))
    with pytest.raises(TestbedError, match="replica0 diverged from the primary and is kept out"):
        roles.rejoin(topology, "replica0")


def test_the_cli_refuses_a_directory_without_a_native_testbed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["testbed", "switchover", "--dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds no testbed" in err and "Traceback" not in err

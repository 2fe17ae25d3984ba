"""state.json as typed documents: what earlier versions wrote loads; a change is a new value."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from offload.errors import TestbedError
from offload.testbed.compose import ComposeTopology
from offload.testbed.files import (
    ComposeState,
    NativeState,
    NovaSchemaRecord,
    ServerRecord,
    read_state,
    save_state,
)
from offload.testbed.native import NativeTopology

#: a native state.json as the version before typed state wrote it (keys and order as written)
NATIVE_BEFORE = {
    "backend": "native",
    "flavor": "mariadb",
    "version": "10.11.19-MariaDB-0+deb12u1",
    "server": "/usr/sbin/mariadbd",
    "spec": "",
    "host": "127.0.0.1",
    "primary_port": 40001,
    "replica_ports": [40002, 40003],
    "service_port": 40004,
    "initialised": True,
    "servers": {
        "primary": {
            "pid": 123,
            "port": 40001,
            "server_id": 1,
            "defaults_file": "/t/p/my.cnf",
        },
        "replica0": {"pid": None, "port": 40002, "server_id": 2, "defaults_file": "/t/r0/my.cnf"},
        "replica1": {"pid": 0, "port": 40003, "server_id": 3, "defaults_file": "/t/r1/my.cnf"},
    },
}

#: what the first native testbeds wrote: no backend, no server, spec or service port
NATIVE_OLDEST = {
    key: value
    for key, value in NATIVE_BEFORE.items()
    if key not in ("backend", "server", "spec", "service_port")
}

#: a compose state.json as the version before typed state wrote it, once up
COMPOSE_BEFORE = {
    "backend": "compose",
    "project": "offload-1234abcd",
    "compose": ["/usr/bin/docker-compose"],
    "compose_file": "/repo/docker-compose.yml",
    "env_file": "/t/compose.env",
    "port": 33061,
    "compute_scale": 1,
    "images": {"OFFLOAD_DB_IMAGE": "offload-mariadb:bookworm", "OFFLOAD_WHEELHOUSE": "w"},
    "compute": True,
    "initialised": True,
    "primary_port": 33061,
    "replica_port": 33062,
    "service_port": 33080,
    "flavor": "mariadb",
}


def _write(directory: Path, data: object) -> None:
    (directory / "state.json").write_text(json.dumps(data, indent=2))


def test_a_native_state_of_the_previous_version_loads(tmp_path: Path) -> None:
    _write(tmp_path, NATIVE_BEFORE)
    state = read_state(tmp_path)
    assert isinstance(state, NativeState)
    assert state.replica_ports == (40002, 40003)
    assert state.servers["primary"] == ServerRecord(
        port=40001, server_id=1, defaults_file="/t/p/my.cnf", pid=123
    )
    assert state.servers["replica0"].pid is None and state.servers["replica1"].pid is None
    assert (state.schema, state.nova_schema) == ("offload", None)  # made before the option
    assert state.tls is False  # made before TLS: plain, as it was
    # saved again, it is the same document (the JSON keys did not change), with the schema
    save_state(tmp_path, state)
    expected = json.loads(json.dumps(NATIVE_BEFORE))
    expected["servers"]["replica1"]["pid"] = None  # 0 was never a process
    expected.update(
        schema="offload",
        nova_schema=None,
        tls=False,
        primary="primary",
        departed=[],
        diverged=[],
        endpoints=False,
    )
    assert json.loads((tmp_path / "state.json").read_text()) == expected
    assert (tmp_path / "state.json").stat().st_mode & 0o777 == 0o600


def test_the_oldest_native_state_takes_defaults(tmp_path: Path) -> None:
    _write(tmp_path, {**NATIVE_OLDEST, "a_key_of_the_future": 1})
    state = read_state(tmp_path)
    assert isinstance(state, NativeState)
    assert (state.backend, state.server, state.spec, state.service_port) == ("native", "", "", 0)
    assert NativeTopology(tmp_path, replicas=2)._load_state() == state


def test_a_compose_state_of_the_previous_version_loads_and_round_trips(tmp_path: Path) -> None:
    _write(tmp_path, COMPOSE_BEFORE)
    state = read_state(tmp_path)
    assert isinstance(state, ComposeState)
    assert state.compose == ("/usr/bin/docker-compose",)
    assert (state.primary_port, state.replica_port, state.service_port) == (33061, 33062, 33080)
    assert state.link_port == 0  # made before the link service
    save_state(tmp_path, state)
    # written again with the keys it lacked at their defaults (its roles never moved)
    assert json.loads((tmp_path / "state.json").read_text()) == {
        **COMPOSE_BEFORE,
        "link_port": 0,
        "tls": False,
        "endpoint_ports": {},
        "primary": "primary",
        "departed": [],
        "diverged": [],
    }
    assert state.replicas() == ["replica"]
    # the link's port, once known, is kept
    save_state(tmp_path, dataclasses.replace(state, link_port=33063))
    reloaded = read_state(tmp_path)
    assert isinstance(reloaded, ComposeState) and reloaded.link_port == 33063
    # prepared but never up: no ports, no flavor yet
    prepared = {
        k: v
        for k, v in COMPOSE_BEFORE.items()
        if k not in ("primary_port", "replica_port", "service_port", "flavor")
    }
    _write(tmp_path, {**prepared, "initialised": False})
    loaded = ComposeTopology(tmp_path)._load_state()
    assert loaded is not None and (loaded.primary_port, loaded.flavor) == (0, "")


def test_states_are_values(tmp_path: Path) -> None:
    _write(tmp_path, NATIVE_BEFORE)
    state = read_state(tmp_path)
    assert isinstance(state, NativeState)
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.initialised = False  # type: ignore[misc]
    stopped = state.without_pids()
    assert all(r.pid is None for r in stopped.servers.values())
    assert state.servers["primary"].pid == 123  # the old value is unchanged
    assert state.with_pid("replica0", 7).servers["replica0"].pid == 7


def test_one_backend_does_not_take_the_others_directory(tmp_path: Path) -> None:
    _write(tmp_path, NATIVE_BEFORE)
    with pytest.raises(TestbedError, match="is a native testbed"):
        ComposeTopology(tmp_path)._load_state()
    _write(tmp_path, COMPOSE_BEFORE)
    with pytest.raises(TestbedError, match="is a compose testbed"):
        NativeTopology(tmp_path)._load_state()


@pytest.mark.parametrize(
    "content",
    ["{not json", "[1, 2]", json.dumps({"backend": "native", "flavor": "mariadb"})],
)
def test_a_broken_state_is_one_line_saying_what_to_do(tmp_path: Path, content: str) -> None:
    (tmp_path / "state.json").write_text(content)
    with pytest.raises(TestbedError) as caught:
        read_state(tmp_path)
    assert "make clean" in str(caught.value) and "\n" not in str(caught.value)


def test_a_nova_schema_testbed_round_trips(tmp_path: Path) -> None:
    made = NovaSchemaRecord(revision="ab450ba04102", tables=111, seconds=6.4)
    _write(tmp_path, NATIVE_BEFORE)
    state = read_state(tmp_path)
    assert isinstance(state, NativeState)
    save_state(tmp_path, dataclasses.replace(state, schema="nova", nova_schema=made))
    again = read_state(tmp_path)
    assert isinstance(again, NativeState)
    assert (again.schema, again.nova_schema) == ("nova", made)


def test_roles_after_a_failover_round_trip(tmp_path: Path) -> None:
    """A failover's roles: replica0 acts as primary, the old primary departed, replica1
    diverged; only replicas of the acting primary are replicas."""
    _write(tmp_path, NATIVE_BEFORE)
    state = read_state(tmp_path)
    assert isinstance(state, NativeState)
    assert state.replicas() == ["replica0", "replica1"]
    assert state.source_port == 40001
    moved = dataclasses.replace(
        state, primary="replica0", departed=("primary",), diverged=("replica1",), endpoints=True
    )
    save_state(tmp_path, moved)
    again = read_state(tmp_path)
    assert again == moved
    assert isinstance(again, NativeState)
    assert again.replicas() == []
    assert again.source_port == 40002
    roles = {name: again.role(name) for name in again.servers}
    assert roles == {"primary": "departed", "replica0": "primary", "replica1": "diverged"}

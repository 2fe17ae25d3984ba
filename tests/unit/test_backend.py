"""Which backend `testbed up` takes, and how it asks for Docker (no engine needed)."""

from __future__ import annotations

import json
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from offload.errors import MissingExtra, TestbedError
from offload.testbed import compose as compose_module
from offload.testbed import engine
from offload.testbed.backend import choose_backend, compose_available, recorded_backend
from offload.testbed.files import ComposeState, NativeState, save_state

NO_ENV: dict[str, str] = {}


def _never() -> bool:
    raise AssertionError("Docker was asked although the choice was already made")


NATIVE = NativeState(flavor="mariadb", primary_port=33061, replica_ports=(33062,))
COMPOSE = ComposeState(
    project="offload-1234abcd",
    compose=("docker", "compose"),
    compose_file="docker-compose.yml",
    env_file="compose.env",
    port=33061,
)


def test_an_explicit_backend_is_taken_as_asked(tmp_path: Path) -> None:
    save_state(tmp_path, COMPOSE)

    assert choose_backend("native", tmp_path, environ=NO_ENV, compose_answers=_never) == "native"
    assert choose_backend("compose", tmp_path, flavor="mysql", compose_answers=_never) == "compose"


def test_auto_keeps_the_backend_of_an_existing_testbed(tmp_path: Path) -> None:
    save_state(tmp_path, NATIVE)
    assert choose_backend("auto", tmp_path, environ=NO_ENV, compose_answers=_never) == "native"

    save_state(tmp_path, COMPOSE)
    assert choose_backend("auto", tmp_path, environ=NO_ENV, compose_answers=_never) == "compose"


def test_auto_is_compose_where_docker_answers_else_native(tmp_path: Path) -> None:
    assert choose_backend("auto", tmp_path, environ=NO_ENV, compose_answers=lambda: True) == (
        "compose"
    )
    assert choose_backend("auto", tmp_path, environ=NO_ENV, compose_answers=lambda: False) == (
        "native"
    )


@pytest.mark.parametrize(
    ("asked", "environ"),
    [
        ({"replicas": 2}, NO_ENV),
        ({"mysqld": "/usr/sbin/mariadbd"}, NO_ENV),
        ({}, {"OFFLOAD_MYSQLD": "/usr/sbin/mariadbd"}),
        ({"flavor": "mysql"}, NO_ENV),
        ({}, {"OFFLOAD_FLAVOR": "mysql"}),
    ],
)
def test_auto_is_native_for_what_only_native_does(
    tmp_path: Path, asked: dict[str, Any], environ: dict[str, str]
) -> None:
    assert (
        choose_backend("auto", tmp_path, environ=environ, compose_answers=_never, **asked)
        == "native"
    )


def test_recorded_backend(tmp_path: Path) -> None:
    assert recorded_backend(tmp_path) is None
    assert recorded_backend(tmp_path / "missing") is None
    save_state(tmp_path, COMPOSE)
    assert recorded_backend(tmp_path) == "compose"
    save_state(tmp_path, NATIVE)
    assert recorded_backend(tmp_path) == "native"
    # a file of an earlier version: no backend named is a native testbed's
    (tmp_path / "state.json").write_text(
        json.dumps({"flavor": "mariadb", "primary_port": 1, "replica_ports": [2]})
    )
    assert recorded_backend(tmp_path) == "native"
    for broken in ("{not json", "{}"):
        (tmp_path / "state.json").write_text(broken)
        with pytest.raises(TestbedError, match="remove"):
            recorded_backend(tmp_path)


def test_compose_is_available_when_compose_and_an_engine_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[str] = []

    def client() -> object:
        asked.append("engine")
        return object()

    monkeypatch.setattr(compose_module, "compose_command", lambda: ["docker", "compose"])
    monkeypatch.setattr(engine, "client", client)
    assert compose_available() and asked == ["engine"]

    def no_engine() -> object:
        raise TestbedError("no Docker engine answers (socket)")

    monkeypatch.setattr(engine, "client", no_engine)
    assert not compose_available()

    def no_sdk() -> object:
        raise MissingExtra("the compose testbed needs the Docker SDK")

    monkeypatch.setattr(engine, "client", no_sdk)
    assert not compose_available()


@pytest.fixture
def fake_sdk(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The Docker SDK replaced by a fake whose engine answers; the list of engines it made."""
    made: list[str] = []

    class Client:
        def ping(self) -> bool:
            return True

    def from_env(timeout: int) -> Client:
        made.append("client")
        return Client()

    sdk = types.SimpleNamespace(from_env=from_env, errors=types.SimpleNamespace())
    sdk.errors.DockerException = RuntimeError
    monkeypatch.setattr(engine, "_sdk", lambda: sdk)
    # the fake engine answers whether or not this machine's Docker socket does
    monkeypatch.setattr(engine, "_unix_socket_refuses", lambda host: None)
    monkeypatch.setattr(compose_module, "compose_command", lambda: ["docker", "compose"])
    engine.client.cache_clear()
    yield made
    engine.client.cache_clear()


def test_up_asks_the_engine_once(tmp_path: Path, fake_sdk: list[str]) -> None:
    """auto asks whether Docker answers; the compose testbed it then starts asks no more."""
    assert choose_backend("auto", tmp_path, environ=NO_ENV) == "compose"
    compose_module._require_engine()  # what ComposeTopology.prepare() asks

    assert fake_sdk == ["client"]

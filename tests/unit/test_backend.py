"""Which backend `testbed up` takes, and the one Docker engine probe (no engine needed)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from offload.errors import TestbedError
from offload.testbed import compose as compose_module
from offload.testbed.backend import choose_backend, recorded_backend

NO_ENV: dict[str, str] = {}


def _never() -> bool:
    raise AssertionError("Docker was asked although the choice was already made")


def test_an_explicit_backend_is_taken_as_asked(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text(json.dumps({"backend": "compose"}))

    assert choose_backend("native", tmp_path, environ=NO_ENV, compose_answers=_never) == "native"
    assert choose_backend("compose", tmp_path, flavor="mysql", compose_answers=_never) == "compose"


def test_auto_keeps_the_backend_of_an_existing_testbed(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text(json.dumps({"flavor": "mariadb"}))  # native's
    assert choose_backend("auto", tmp_path, environ=NO_ENV, compose_answers=_never) == "native"

    (tmp_path / "state.json").write_text(json.dumps({"backend": "compose"}))
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
    (tmp_path / "state.json").write_text("{}")
    assert recorded_backend(tmp_path) is None
    (tmp_path / "state.json").write_text(json.dumps({"backend": "compose"}))
    assert recorded_backend(tmp_path) == "compose"
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(TestbedError, match="unreadable"):
        recorded_backend(tmp_path)


@pytest.fixture
def docker_info(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """`docker info` answered by a fake: the list of exit codes it gives, in turn."""
    answers: list[int] = []
    calls: list[list[str]] = []

    def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        code = answers.pop(0)
        return subprocess.CompletedProcess(argv, code, "27.5.1\n" if code == 0 else "", "down")

    monkeypatch.setattr(compose_module.images, "docker_command", lambda: "docker")
    monkeypatch.setattr(compose_module.subprocess, "run", run)
    compose_module.require_engine.cache_clear()
    yield answers
    compose_module.require_engine.cache_clear()
    assert not answers, "an expected `docker info` was not run"


def test_the_engine_is_probed_once_it_answered(docker_info: list[int]) -> None:
    docker_info.extend([1, 0])

    with pytest.raises(TestbedError, match="no Docker engine answers"):
        compose_module.require_engine()
    assert compose_module.require_engine() == "27.5.1"  # a failure is asked again
    assert compose_module.require_engine() == "27.5.1"  # an answer is not: no third run

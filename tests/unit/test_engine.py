"""The Docker engine seen from a machine that lacks the SDK or an engine: one line, what to do."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from offload.cli import main
from offload.errors import MissingExtra, TestbedError
from offload.testbed import engine
from offload.testbed.compose import ComposeTopology


@pytest.fixture(autouse=True)
def fresh_client() -> Iterator[None]:
    engine.client.cache_clear()
    yield
    engine.client.cache_clear()


def test_without_the_sdk_the_compose_testbed_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "docker", None)  # import docker fails
    with pytest.raises(MissingExtra) as caught:
        ComposeTopology(tmp_path / "tb").prepare()
    assert "pip install 'offload[compose]'" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_without_the_sdk_the_cli_says_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "docker", None)
    status = main(["testbed", "up", "--backend", "compose", "--dir", str(tmp_path / "tb")])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("offload: error: ") and err.count("\n") == 1
    assert "offload[compose]" in err and "Traceback" not in err


def test_no_engine_answering_is_one_line_with_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    with pytest.raises(TestbedError) as caught:
        engine.client()
    message = str(caught.value)
    assert message.startswith("no Docker engine answers (")
    assert "--backend native" in message and "\n" not in message

"""Unit tests for the ``offload`` command's usage errors: one line, an exit status, no secrets.

No server is needed: the only database this touches is port 1 on loopback,
where nothing listens.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from offload.cli import main

SECRET = "S3cretPW"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No OFFLOAD_* variables and a working directory without .testbed/offload.conf."""
    for name in list(os.environ):
        if name.startswith("OFFLOAD_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("offload: error:")
    assert "Traceback" not in err
    return lines[0]


def write_config(tmp_path: Path, connection: str) -> Path:
    path = tmp_path / "nova.conf"
    path.write_text(f"[DEFAULT]\nhost = compute-1\n\n[database]\nconnection = {connection}\n")
    return path


def test_unknown_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "frobnicate")

    assert status == 2
    line = assert_one_error_line(err)
    assert "frobnicate" in line
    assert out == ""


def test_no_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys)

    assert status == 2
    assert_one_error_line(err)


def test_unknown_testbed_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, "testbed", "explode")

    assert status == 2
    assert "explode" in assert_one_error_line(err)


@pytest.mark.parametrize("replicas", ["0", "-1", "two"])
def test_bad_replica_count(capsys: pytest.CaptureFixture[str], replicas: str) -> None:
    status, _, err = run(capsys, "testbed", "up", "--replicas", replicas)

    assert status == 2
    assert "--replicas" in assert_one_error_line(err)


@pytest.mark.parametrize("port", ["80", "65536", "http"])
def test_bad_port(capsys: pytest.CaptureFixture[str], port: str) -> None:
    status, _, err = run(capsys, "testbed", "up", "--port", port)

    assert status == 2
    assert "--port" in assert_one_error_line(err)


def test_missing_config_file(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "--config", "missing.conf", "testbed", "status")

    assert status == 2
    assert "missing.conf" in assert_one_error_line(err)
    assert out == ""


def test_missing_config_file_named_by_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OFFLOAD_CONFIG", "from-env.conf")

    status, _, err = run(capsys, "db", "sync")

    assert status == 2
    assert "from-env.conf" in assert_one_error_line(err)


def test_unknown_environment_override(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OFFLOAD_REPLICA__MAXLAG", "1")

    status, _, err = run(capsys, "db", "sync")

    assert status == 2
    assert "OFFLOAD_REPLICA__MAXLAG" in assert_one_error_line(err)


def test_db_sync_when_nothing_listens(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = write_config(tmp_path, f"mysql+pymysql://nova:{SECRET}@127.0.0.1:1/nova")

    status, out, err = run(capsys, "--config", str(config), "db", "sync")

    assert status != 0
    line = assert_one_error_line(err)
    assert "127.0.0.1:1" in line
    assert SECRET not in out + err


@pytest.mark.parametrize(
    "connection",
    [
        f"mysql+pymysql://nova:{SECRET}@127.0.0.1:port/nova",
        f"nova:{SECRET}@127.0.0.1/nova",
        f"mysql+pymysql:/nova:{SECRET}@127.0.0.1/nova",
        f"postgresql://nova:{SECRET}@127.0.0.1/nova",
        f"mysql+pymysql://nova:{SECRET}@127.0.0.1",
    ],
)
def test_malformed_connection_url_hides_the_password(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, connection: str
) -> None:
    config = write_config(tmp_path, connection)

    status, out, err = run(capsys, "--config", str(config), "db", "sync")

    assert status == 2
    assert "[database] connection" in assert_one_error_line(err)
    assert SECRET not in out + err


def test_replica_password_with_a_comma_is_not_echoed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "nova.conf"
    config.write_text(
        "[database]\n"
        f"connection = mysql+pymysql://nova:{SECRET}@127.0.0.1:1/nova\n"
        f"slave_connection = sqlite://ro:{SECRET},x@127.0.0.1/nova\n"
    )

    status, out, err = run(capsys, "--config", str(config), "db", "sync")

    assert status == 2
    assert "slave_connection" in assert_one_error_line(err)
    assert SECRET not in out + err


def test_db_sync_without_any_config(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "db", "sync")

    assert status == 2
    line = assert_one_error_line(err)
    assert "make up" in line
    assert out == ""


def test_testbed_config_in_the_working_directory_is_found(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / ".testbed").mkdir()
    (tmp_path / ".testbed" / "offload.conf").write_text("[replica]\nmax_lagg = 1\n")

    status, _, err = run(capsys, "db", "sync")

    assert status == 2
    assert "max_lagg" in assert_one_error_line(err)


def test_unknown_testbed_schema(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "testbed", "up", "--schema", "keystone")

    assert status == 2
    assert "keystone" in assert_one_error_line(err)
    assert out == ""


def test_unknown_schema_in_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("OFFLOAD_SCHEMA", "keystone")

    status, _, err = run(capsys, "testbed", "up", "--dir", str(tmp_path / "tb"))

    assert status == 1
    line = assert_one_error_line(err)
    assert "unknown schema 'keystone'" in line and "offload, nova" in line


def test_nova_schema_is_not_for_the_compose_backend(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    status, _, err = run(
        capsys, "testbed", "up", "--backend", "compose", "--schema", "nova", "--dir", str(tmp_path)
    )

    assert status == 1
    line = assert_one_error_line(err)
    assert "--schema nova runs on the native backend" in line and "--backend native" in line

"""Unit tests for the ``offload`` command's usage errors: one line, an exit status, no secrets.

No server is needed: the only database this touches is port 1 on loopback,
where nothing listens.
"""

from __future__ import annotations

import argparse
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


# --- every command's argument validators: one line, exit 2, nothing started -------------

BAD_VALUES = [
    (["testbed", "up", "--backend", "podman"], "--backend"),
    (["testbed", "up", "--flavor", "oracle"], "unknown server flavor 'oracle'"),
    (["testbed", "up", "--mysqld", "no/such/mysqld"], "not an executable file"),
    (["testbed", "up", "--mysqld", "a-file"], "not an executable file"),
    (["testbed", "up", "--compute-scale", "0"], "--compute-scale"),
    (["testbed", "up", "--compute-scale", "11"], "use 1-10, got 11"),
    (["testbed", "up", "--dir", "a-file"], "a-file is not a directory"),
    (["testbed", "up", "--replica-workers", "0"], "--replica-workers"),
    (["link", "set", "replica0", "--delay", "fast"], "--delay: 'fast' is not a duration"),
    (["link", "set", "replica0", "--rate", "2 furlongs"], "is not a rate above 0"),
    (["link", "cut", "replica0", "--for", "soon"], "--for: 'soon' is not a duration"),
    (["link", "clear", "replica0", "--dir", "a-file"], "a-file is not a directory"),
    (["link", "remove", "replica0", "--dir", "a-file"], "a-file is not a directory"),
    (["link", "show", "--dir", "a-file"], "a-file is not a directory"),
    (["testbed", "down", "--dir", "a-file"], "a-file is not a directory"),
    (["testbed", "images", "--flavor", "mysql-5"], "bad server version in 'mysql-5'"),
    (["testbed", "server", "--flavor", "postgres"], "unknown server flavor 'postgres'"),
    (["testbed", "server", "--mysqld", "no/such/mysqld"], "not an executable file"),
    (["testbed", "logs", "--tail", "-3"], "--tail"),
    (["testbed", "logs", "--dir", "a-file"], "a-file is not a directory"),
    (["testbed", "status", "--jsn"], "--jsn"),
    (["testbed", "switchover", "--timeout", "0"], "must be more than 0 seconds"),
    (["testbed", "failover", "--timeout", "soon"], "expected seconds, got 'soon'"),
    (["testbed", "rejoin", "--dir", "a-file"], "a-file is not a directory"),
    (["testbed", "drill", "restart"], "invalid choice: 'restart'"),
    (["testbed", "rebuild"], "the following arguments are required: SERVER"),
    (["db", "sync", "--force"], "--force"),
    (["seed", "--instances", "0"], "--instances"),
    (["seed", "--hosts", "many"], "expected a whole number, got 'many'"),
    (["seed", "--seed", "1.5"], "expected a whole number, got '1.5'"),
    (["tasks", "--all"], "--all"),
    (["run-task"], "name"),
    (["serve", "--trace", "a-file/trace.jsonl"], "a-file is not a directory"),
    (["service", "restart"], "restart"),
    (["service", "start", "--now"], "--now"),
    (["service", "stop", "--force"], "--force"),
    (["status", "--yaml"], "--yaml"),
    (["replica", "pause", "--replica", "-1"], "must be 0 or more, got -1"),
    (["replica", "resume", "--replica", "first"], "expected a whole number, got 'first'"),
    (["replica", "delay", "-5"], "replication delay must be between 0 and 2147483647, not -5"),
    (["replica", "delay", "2147483648"], "between 0 and 2147483647"),
    (["replica", "delay", "1.5"], "expected a whole number, got '1.5'"),
    (["replica", "delay", "2", "--replica", "-2"], "must be 0 or more, got -2"),
    (["bench", "--only", "everything"], "--only"),
    (["bench", "--out", "a-file/results.json"], "a-file is not a directory"),
    (["bench", "--docs", "."], ". is a directory; name a file"),
    (["bench", "--config", "missing.conf"], "missing.conf does not exist"),
    (["lag", "run", "--duration", "-5"], "--duration must be a number > 0"),
    (["lag", "run", "--duration", "nan"], "--duration must be a number > 0"),
    (["lag", "run", "--write-rate", "-1"], "--write-rate must be a number >= 0"),
    (["lag", "run", "--max-lag", "0"], "--max-lag must be a number > 0"),
    (["lag", "run", "--policy", "never"], "--policy"),
    (["lag", "run", "--scenario", "earthquake"], "'earthquake'"),
    (["lag", "run", "--replicas", "0"], "--replicas"),
    (["lag", "run", "--task-interval", "0"], "--task-interval"),
    (["lag", "run", "--instances", "0"], "--instances"),
    (["lag", "run", "--out", "a-file"], "a-file is not a directory"),
    (["lag", "run", "--group-commit-delay", "2s"], "--group-commit-delay 2s is out of range"),
    (["lag", "matrix", "--rtt", "0,fast"], "--rtt: 'fast' is not a duration"),
    (["lag", "matrix", "--workers", "0"], "--workers: '0' is not a whole number"),
    (["lag", "matrix", "--semi-sync", "maybe"], "--semi-sync: 'maybe' is not on or off"),
    (["lag", "matrix", "--cell-seconds", "1"], "--cell-seconds 1 is out of range"),
    (["lag", "matrix", "--max-lag", "0"], "--max-lag 0 is out of range"),
    (["testbed", "up", "--group-commit-delay", "soon"], "--group-commit-delay: 'soon'"),
    (["lag", "compare", "no-such-dir"], "no-such-dir does not exist"),
    (["fleet", "--hosts", "0"], "positive host counts"),
    (["fleet", "--hosts", "ten"], "positive host counts"),
    (["fleet", "--time-factor", "-1"], "must be more than 0 (a time factor), got -1"),
    (["fleet", "--replicas", "0"], "must be 1 or more, got 0"),
    (["fleet", "--write-rate", "-2"], "must be 0 or more writes a second, got -2"),
    (["testbed", "drill", "switchover", "--rate", "x"], "expected writes a second, got 'x'"),
    (["fleet", "--out", "a-file"], "a-file is not a directory"),
]


@pytest.mark.parametrize(
    ("argv", "fragment"), BAD_VALUES, ids=[" ".join(argv) for argv, _ in BAD_VALUES]
)
def test_every_bad_value_is_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], fragment: str
) -> None:
    (tmp_path / "a-file").write_text("not a directory, not a program\n")

    status, out, err = run(capsys, *argv)

    assert status == 2, err
    assert fragment in assert_one_error_line(err)
    assert out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]  # nothing was started


def test_every_command_has_a_bad_value_pinned() -> None:
    from offload.cli import build_parser  # noqa: PLC0415

    def commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...]) -> set[tuple[str, ...]]:
        found: set[tuple[str, ...]] = set()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found |= commands(sub, (*prefix, name)) or {(*prefix, name)}
        return found

    pinned = {tuple(w for w in argv if not w.startswith("-"))[:2] for argv, _ in BAD_VALUES}
    pinned |= {(argv[0],) for argv, _ in BAD_VALUES}
    missing = {c for c in commands(build_parser(), ()) if c not in pinned}
    assert not missing, f"no bad value pinned for: {sorted(missing)}"


def test_seed_and_status_need_a_config(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["seed"], ["status"], ["service", "start"], ["run-task", "sync_power_states"]):
        status, out, err = run(capsys, *argv)
        assert status == 2, argv
        assert "make up" in assert_one_error_line(err)
        assert out == ""

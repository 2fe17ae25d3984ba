"""What ``import offload`` offers a user: the exact list, each name real, and cheap to import."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import offload
from offload import errors, replication, testing, tracing
from offload.config import Settings, load_settings
from offload.db import Database
from offload.routes import Route

PUBLIC = [
    "AccessDenied",
    "CannotConnect",
    "ConfigError",
    "ConnectionLost",
    "Database",
    "DatabaseError",
    "Deadlock",
    "MissingExtra",
    "MissingTable",
    "OffloadError",
    "QueryTrace",
    "ReadOnlyRefused",
    "ReplicationError",
    "ReplicationTimeout",
    "Route",
    "SchemaMismatch",
    "ServerDiverged",
    "Settings",
    "TestbedError",
    "TlsRefused",
    "Tracer",
    "UnknownDatabase",
    "WriteInReaderSession",
    "__version__",
    "assert_task_read_from_primary",
    "assert_task_read_from_replica",
    "load_settings",
    "server_statements",
    "task_scope",
]


def test_the_public_names_are_exactly_these() -> None:
    assert offload.__all__ == PUBLIC


def test_each_public_name_is_the_object_its_module_defines() -> None:
    assert offload.Database is Database
    assert offload.Route is Route
    assert offload.Settings is Settings
    assert offload.load_settings is load_settings
    assert offload.Tracer is tracing.Tracer
    assert offload.QueryTrace is tracing.QueryTrace
    assert offload.task_scope is tracing.task_scope
    assert offload.assert_task_read_from_replica is testing.assert_task_read_from_replica
    assert offload.assert_task_read_from_primary is testing.assert_task_read_from_primary
    assert offload.server_statements is testing.server_statements
    assert offload.ReplicationTimeout is replication.ReplicationTimeout
    for name in errors.__all__:
        assert name in offload.__all__
        assert getattr(offload, name) is getattr(errors, name)
    assert set(dir(offload)) >= set(PUBLIC)


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        offload.Nothing  # noqa: B018
    except AttributeError as exc:
        assert "Nothing" in str(exc)
    else:
        raise AssertionError("offload.Nothing resolved")


def test_the_version_is_the_installed_distributions() -> None:
    # one source: pyproject.toml reads offload.__version__ (setuptools' dynamic attr)
    assert offload.__version__ == importlib.metadata.version("offload")
    shown = subprocess.run(
        [sys.executable, "-m", "offload.cli", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stdout.strip() == f"offload {offload.__version__}"


def test_import_offload_loads_neither_sqlalchemy_nor_the_extras() -> None:
    probe = (
        "import sys, offload; "
        "print(sorted(m for m in ('sqlalchemy', 'pymysql', 'matplotlib', 'docker', "
        "'prometheus_client', 'rich') if m in sys.modules))"
    )
    shown = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert shown.stdout.strip() == "[]"

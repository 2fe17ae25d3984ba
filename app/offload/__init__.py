"""offload: nova-compute's periodic-task reads on a MySQL/MariaDB replica, writes on the primary.

What a user imports, from one place::

    from offload import Database, Settings, load_settings, task_scope
    from offload import assert_task_read_from_replica

``import offload`` stays cheap: only the errors (plain Python) load with it; the rest
(SQLAlchemy behind ``Database``, ...) loads when a name is first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from offload.errors import (
    AccessDenied,
    CannotConnect,
    ConfigError,
    ConnectionLost,
    DatabaseError,
    Deadlock,
    MissingExtra,
    MissingTable,
    OffloadError,
    ReadOnlyRefused,
    ReplicationError,
    SchemaMismatch,
    ServerDiverged,
    TestbedError,
    TlsRefused,
    UnknownDatabase,
    WriteInReaderSession,
)

if TYPE_CHECKING:
    from offload.config import Settings, load_settings
    from offload.db import Database
    from offload.replication import ReplicationTimeout
    from offload.routes import Route
    from offload.testing import (
        assert_task_read_from_primary,
        assert_task_read_from_replica,
        server_statements,
    )
    from offload.tracing import QueryTrace, Tracer, task_scope

__all__ = [
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

#: the one source of the version: pyproject.toml reads it (setuptools' dynamic ``attr``)
__version__ = "0.1.0"

#: public name → the module that defines it, imported at first use
_LAZY = {
    "Database": "offload.db",
    "Route": "offload.routes",
    "ReplicationTimeout": "offload.replication",
    "Settings": "offload.config",
    "load_settings": "offload.config",
    "Tracer": "offload.tracing",
    "QueryTrace": "offload.tracing",
    "task_scope": "offload.tracing",
    "assert_task_read_from_replica": "offload.testing",
    "assert_task_read_from_primary": "offload.testing",
    "server_statements": "offload.testing",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'offload' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

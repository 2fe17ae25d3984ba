"""One exception base for everything offload raises on purpose.

Every error carries a one-line ``message`` (what happened) and an optional
``hint`` (what to do).  ``str(err)`` joins them, so a CLI can print it as the
single line users see.  No message may contain a password: URLs are always
rendered masked before they reach an error.

This module imports nothing of offload's (nor anything else): every layer may raise these.
"""

from __future__ import annotations

__all__ = [
    "AccessDenied",
    "CannotConnect",
    "ConfigError",
    "ConnectionLost",
    "DatabaseError",
    "Deadlock",
    "MissingExtra",
    "MissingTable",
    "OffloadError",
    "ReadOnlyRefused",
    "ReplicationError",
    "SchemaMismatch",
    "ServerDiverged",
    "TestbedError",
    "TlsRefused",
    "UnknownDatabase",
    "WriteInReaderSession",
]


class OffloadError(Exception):
    """Base of every error offload raises deliberately."""

    #: process exit status the CLI uses for this kind of error
    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}; {self.hint}"
        return self.message


class ConfigError(OffloadError):
    """Bad configuration or usage: a missing file, an unknown option, a malformed URL."""

    exit_code = 2


class MissingExtra(ConfigError):
    """A command needs an optional dependency (an extra: ``offload[lab]``, ...) not installed."""


class DatabaseError(OffloadError):
    """A driver error, translated once at the engine."""

    def __init__(self, message: str, *, hint: str | None = None, code: int | None = None) -> None:
        super().__init__(message, hint=hint)
        self.code = code


class ConnectionLost(DatabaseError):
    """The connection to a server broke or could not be made; safe to retry."""


class CannotConnect(ConnectionLost):
    """No connection could be opened (server down, wrong host or port)."""


class Deadlock(DatabaseError):
    """The server rolled the transaction back (deadlock or lock wait timeout); retry it."""


class AccessDenied(DatabaseError):
    """Wrong credentials, or the user lacks a privilege for this statement."""

    exit_code = 2


class TlsRefused(DatabaseError):
    """TLS did not come about: the server's certificate does not verify against the URL's
    CA, or the server requires TLS the URL does not ask for.  Retrying does not help."""

    exit_code = 2


class UnknownDatabase(DatabaseError):
    """The database named in the URL does not exist on the server."""

    exit_code = 2


class SchemaMismatch(DatabaseError):
    """A table or column offload uses is not in the database (another schema, an old Nova)."""

    exit_code = 2


class MissingTable(SchemaMismatch):
    """A table offload uses does not exist (server error 1146)."""


class ReadOnlyRefused(DatabaseError):
    """The server refused a write because it runs read_only (a replica)."""


class WriteInReaderSession(OffloadError):
    """A write was attempted in a session opened by ``Database.reader()``.

    Raised on the client before the statement reaches any server.
    """


class ReplicationError(OffloadError):
    """Replication is not in the state an operation needs."""


class TestbedError(OffloadError):
    """The testbed could not be brought up, inspected or taken down."""

    __test__ = False  # not a pytest test class despite its name


class ServerDiverged(TestbedError):
    """A former primary holds transactions the primary lacks: kept out of replication."""

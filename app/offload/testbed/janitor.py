"""Scratch databases: created, granted, schema'd, replicated; dropped and revoked.

One class for every caller that needs a database of its own on a testbed — the
pytest fixtures (one per test), ``offload lag`` (one per experiment),
``offload bench`` (one per benchmark) — on the model of pytest-postgresql's
``DatabaseJanitor``::

    with DatabaseJanitor(info.settings(), prefix="offload_lag_") as scratch:
        Database(scratch.settings)  # the same servers and accounts, on the scratch database

:meth:`DatabaseJanitor.init`, through the testbed's privileged account:
``CREATE DATABASE``; ``GRANT`` to the service's account on the primary
(:data:`SERVICE_PRIVILEGES`, as ``mysql/bootstrap/primary.sql`` grants on
``nova``) and ``SELECT`` to the replicas' accounts, unless an account is the
privileged one itself; the schema through the service's account; then waits
until every replica applied it.  :meth:`DatabaseJanitor.drop`: ``DROP
DATABASE`` and ``REVOKE`` of exactly the grants ``init`` made — MariaDB and MySQL
both keep database-level grants after ``DROP DATABASE`` — so the servers end as
they were.  A failure in any step of ``init`` (``with`` does this) undoes what
was done; ``drop`` tries every step even when one fails, and disposes its engine.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
import time
from collections.abc import Callable
from types import TracebackType

from sqlalchemy import Connection, Engine, text

from offload import replication
from offload.config import Settings
from offload.dberrors import unpooled_engine
from offload.errors import ConfigError
from offload.schema import create_all
from offload.urls import with_database

__all__ = [
    "READER_PRIVILEGES",
    "SERVICE_PRIVILEGES",
    "DatabaseJanitor",
    "SchemaStep",
    "nova_schema",
]

#: what the service's account may do on its database (as mysql/bootstrap/primary.sql on nova)
SERVICE_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, INDEX, DROP, REFERENCES"
#: what the replicas' account may do (slave_connection: SELECT only)
READER_PRIVILEGES = "SELECT"
#: creates tables on a connection to the scratch database (service's account, one transaction)
SchemaStep = Callable[[Connection], None]

_NAME = re.compile(r"[A-Za-z0-9_]{1,64}")


def nova_schema(conn: Connection) -> None:
    """The nova tables (the default schema step)."""
    create_all(conn)


class DatabaseJanitor:
    """A database of the caller's own on a testbed's primary (and, replicated, its replicas).

    ``settings`` names the servers: ``[database] connection`` (the service's
    account on the primary), ``slave_connection`` (the replicas' accounts) and
    ``[testbed] admin_connection`` (privileged, on the primary; it creates,
    grants, drops and revokes).  ``[testbed] replica_admin_connections``, when
    set, let a replication timeout report the replica's status.  :attr:`settings`
    is the same, pointed at the scratch database.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        name: str | None = None,
        prefix: str = "offload_scratch_",
        schema: SchemaStep | None = nova_schema,
        replicate: bool = True,
        timeout: float = 60.0,
    ) -> None:
        admin = settings.testbed.admin_connection
        if admin is None:
            raise ConfigError(
                "a scratch database is created through the testbed's privileged account, "
                "and this config has none ([testbed] admin_connection)",
                hint="use a testbed's config (`make up` writes .testbed/offload.conf)",
            )
        self.name = name or f"{prefix}{secrets.token_hex(5)}"
        if not _NAME.fullmatch(self.name):
            raise ConfigError(
                f"{self.name!r} is not a database name offload creates",
                hint="use letters, digits and underscores, at most 64",
            )
        self.admin = with_database(admin, None)
        self.service = settings.require_connection()
        self.readers = settings.database.slave_connections
        self.status_urls = settings.testbed.replica_admin_connections
        self.schema = schema
        self.replicate = replicate
        self.timeout = timeout
        #: the caller's settings, pointed at the scratch database
        self.settings = dataclasses.replace(
            settings,
            database=dataclasses.replace(
                settings.database,
                connection=with_database(self.service, self.name),
                slave_connections=tuple(with_database(u, self.name) for u in self.readers),
            ),
        )
        self._engine: Engine | None = None
        self._created = False
        #: accounts granted privileges on the database, to revoke them in drop()
        self._granted: list[str] = []

    # --- the steps ----------------------------------------------------------

    def _admin(self) -> Engine:
        if self._engine is None:
            self._engine = unpooled_engine(self.admin, name="primary-admin")
        return self._engine

    def grants(self) -> list[tuple[str, str]]:
        """(account, privileges) that :meth:`init` grants: the service's and the readers'."""
        planned: list[tuple[str, str]] = []
        seen = {self.admin.username}
        for url, privileges in (
            (self.service, SERVICE_PRIVILEGES),
            *((url, READER_PRIVILEGES) for url in self.readers),
        ):
            if url.username and url.username not in seen:
                seen.add(url.username)
                planned.append((url.username, privileges))
        return planned

    def init(self) -> None:
        """Create, grant, create the schema, wait for the replicas (undone on failure)."""
        try:
            self._init()
        except BaseException as exc:
            self._undo(exc)
            raise

    def _init(self) -> None:
        engine = self._admin()
        with engine.begin() as conn:
            conn.execute(text(f"CREATE DATABASE `{self.name}` CHARACTER SET utf8mb4"))
        self._created = True
        for user, privileges in self.grants():
            with engine.begin() as conn:
                conn.execute(text(f"GRANT {privileges} ON `{self.name}`.* TO '{user}'@'%'"))
            self._granted.append(user)
        if self.schema is not None:
            service = unpooled_engine(with_database(self.service, self.name), name="primary")
            try:
                with service.begin() as conn:
                    self.schema(conn)
            finally:
                service.dispose()
        if self.replicate and self.readers:
            self.wait_for_replicas()

    def wait_for_replicas(self, timeout: float | None = None) -> float:
        """Every replica applied the primary's current GTID position; the seconds waited.

        Waits through the replica's privileged account (its status on a timeout),
        else the reader's; either without a database, which the replica may not
        have yet.
        """
        limit = self.timeout if timeout is None else timeout
        started = time.monotonic()
        with self._admin().connect() as conn:
            flavor = replication.server_flavor(conn)
            position = replication.gtid_position(conn, flavor)
        for index, reader in enumerate(self.readers):
            url = (
                self.status_urls[index]
                if index < len(self.status_urls)
                else with_database(reader, None)
            )
            engine = unpooled_engine(url, name=f"replica{index}")
            try:
                with engine.connect() as conn:
                    remaining = max(0.0, limit - (time.monotonic() - started))
                    replication.wait_for_gtid(
                        conn, position, remaining, flavor, replica=f"replica{index}"
                    )
            finally:
                engine.dispose()
        return time.monotonic() - started

    def drop(self) -> None:
        """DROP DATABASE, REVOKE what :meth:`init` granted; every step tried; idempotent."""
        failure: BaseException | None = None
        try:
            if self._created:
                try:
                    with self._admin().begin() as conn:
                        conn.execute(text(f"DROP DATABASE IF EXISTS `{self.name}`"))
                    self._created = False
                except Exception as exc:  # noqa: BLE001 - the grants are revoked all the same
                    failure = exc
            for user in list(self._granted):
                try:
                    with self._admin().begin() as conn:
                        conn.execute(
                            text(f"REVOKE ALL PRIVILEGES ON `{self.name}`.* FROM '{user}'@'%'")
                        )
                    self._granted.remove(user)
                except Exception as exc:  # noqa: BLE001 - the next account all the same
                    failure = failure or exc
        finally:
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None
        if failure is not None:
            raise failure

    def _undo(self, exc: BaseException) -> None:
        """drop() after ``exc``: a failure of the clean-up is noted on ``exc``, not raised."""
        try:
            self.drop()
        except Exception as failure:  # noqa: BLE001 - exc is the error to report
            exc.add_note(f"and dropping the scratch database {self.name} failed: {failure}")

    # --- context manager ----------------------------------------------------

    def __enter__(self) -> DatabaseJanitor:
        self.init()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is None:
            self.drop()
        else:
            self._undo(exc)

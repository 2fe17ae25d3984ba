"""Real Nova beside the testbed: a side environment with ``nova`` and its own migrations.

offload never depends on Nova.  When a testbed or a test wants the schema Nova itself
creates (``testbed up --schema nova``, ``make up SCHEMA=nova``, pytest
``--testbed-schema=nova``), Nova is installed into a virtual environment of its own,
built once and cached beside the provided servers (``$OFFLOAD_CACHE_DIR``, else
``$XDG_CACHE_HOME/offload``, else ``~/.cache/offload``)::

    CACHE/nova/nova-34.0.0-py3.11/
        bin/python, bin/nova-manage     the side environment (pip's own layout)
        built.json                      what was installed, when, and how long it took
        recipe                          written last: the requirements it was built from

Then ``nova-manage db sync`` (Nova's alembic migrations) builds Nova's main database in
a testbed database, from a generated nova.conf (mode 0600: it holds the passwords).
Everything offload adds afterwards (the heartbeat table, optional extra indexes) is
``offload db sync``'s business (:mod:`offload.attach`).

``python -m offload.testbed.nova`` builds (or finds) the environment and prints its path;
the Makefile's ``nova-env`` target runs it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import URL, Connection, inspect, text

from offload.dberrors import unpooled_engine
from offload.errors import TestbedError
from offload.testbed.janitor import SERVICE_PRIVILEGES, DatabaseJanitor
from offload.testbed.rootfs import Log, run, stderr_log
from offload.testbed.servers import cache_dir
from offload.testbed.topology import NOVA_DATABASE, TestbedInfo, write_private
from offload.urls import masked

__all__ = [
    "NOVA_RELEASE",
    "REQUIREMENTS",
    "SCHEMAS",
    "SCHEMA_VARIABLE",
    "NovaEnv",
    "NovaSync",
    "NovaTemplate",
    "db_sync",
    "default_schema",
    "main",
    "nova_env",
    "parse_schema",
    "sync_testbed",
    "write_nova_conf",
]

#: the Nova release whose migrations make the schema (PyPI)
NOVA_RELEASE = "34.0.0"
#: what the side environment installs: Nova and the MySQL driver its URLs name
REQUIREMENTS: tuple[str, ...] = (f"nova=={NOVA_RELEASE}", "PyMySQL[rsa]==1.2.4")
#: bump when the recipe changes in a way the requirements do not show
RECIPE_VERSION = "1"
#: pip's limit for the whole install (134 packages, ~1 minute on a quiet machine)
INSTALL_TIMEOUT = 1800.0
#: nova-manage's limit for one sync (~6 s on MariaDB, ~20 s on MySQL)
SYNC_TIMEOUT = 600.0
#: what a testbed's nova database is made by: offload's own tables (fast, the default),
#: or Nova's migrations in the side environment
SCHEMAS = ("offload", "nova")
#: the schema every testbed of this process (and its children) gets when none is named:
#: `make ... SCHEMA=nova` and pytest's --testbed-schema set it
SCHEMA_VARIABLE = "OFFLOAD_SCHEMA"


def parse_schema(text: str) -> str:
    """``offload`` | ``nova``; a one-line error otherwise."""
    chosen = text.strip().lower()
    if chosen not in SCHEMAS:
        raise TestbedError(f"unknown schema {text!r}", hint=f"use one of: {', '.join(SCHEMAS)}")
    return chosen


def default_schema() -> str | None:
    """$OFFLOAD_SCHEMA as a schema; None when unset (offload's, or an existing testbed's)."""
    chosen = os.environ.get(SCHEMA_VARIABLE, "").strip()
    return parse_schema(chosen) if chosen else None


@dataclass(frozen=True, slots=True)
class NovaEnv:
    """The side environment with Nova in it (built or not)."""

    home: Path

    @property
    def python(self) -> Path:
        return self.home / "bin" / "python"

    @property
    def nova_manage(self) -> Path:
        return self.home / "bin" / "nova-manage"

    @staticmethod
    def recipe() -> str:
        text = "\n".join(
            [RECIPE_VERSION, platform.machine(), _python_series(), *REQUIREMENTS],
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def is_built(self) -> bool:
        try:
            stamp = (self.home / "recipe").read_text(encoding="utf-8").strip()
        except OSError:
            return False
        return stamp == self.recipe() and self.nova_manage.exists()

    def build_record(self) -> dict[str, object]:
        """``built.json``: seconds the build took, packages installed, when."""
        try:
            record: dict[str, object] = json.loads(
                (self.home / "built.json").read_text(encoding="utf-8")
            )
        except (OSError, ValueError):
            return {}
        return record

    def ensure(self, *, log: Log = stderr_log) -> NovaEnv:
        """Build the environment unless a complete one is cached; one builder at a time."""
        if self.is_built():
            return self
        with _locked(self.home.parent / f".{self.home.name}.lock"):
            if not self.is_built():  # another process may have built it meanwhile
                self.build(log=log)
        return self

    def build(self, *, log: Log = stderr_log) -> None:
        """``python -m venv`` and ``pip install`` the requirements; the stamp last."""
        started = time.monotonic()
        if self.home.exists():
            shutil.rmtree(self.home)  # a build that did not finish: never half-reused
        self.home.parent.mkdir(parents=True, exist_ok=True)
        log(f"nova: building the side environment in {self.home} ({', '.join(REQUIREMENTS)})")
        try:
            _run([sys.executable, "-m", "venv", str(self.home)], what="python -m venv")
            _run(
                [
                    str(self.python),
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    *REQUIREMENTS,
                ],
                what=f"pip install {' '.join(REQUIREMENTS)}",
                timeout=INSTALL_TIMEOUT,
            )
            if not self.nova_manage.exists():
                raise TestbedError(f"pip installed nova but {self.nova_manage} is missing")
            packages = _run(
                [str(self.python), "-m", "pip", "list", "--format=freeze"], what="pip list"
            ).splitlines()
        except BaseException:
            shutil.rmtree(self.home, ignore_errors=True)
            raise
        seconds = time.monotonic() - started
        record = {
            "requirements": list(REQUIREMENTS),
            "python": _python_series(),
            "packages": len([p for p in packages if p.strip()]),
            "build_seconds": round(seconds, 1),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (self.home / "built.json").write_text(json.dumps(record, indent=2) + "\n", "utf-8")
        (self.home / "recipe").write_text(self.recipe() + "\n", encoding="utf-8")
        log(f"nova: side environment ready: {record['packages']} packages in {seconds:.0f}s")


def nova_env(cache: Path | None = None) -> NovaEnv:
    """The side environment of this machine's Python (built or not)."""
    return NovaEnv((cache or cache_dir()) / "nova" / f"nova-{NOVA_RELEASE}-py{_python_series()}")


def write_nova_conf(
    path: Path,
    *,
    connection: URL,
    slave_connection: URL | None = None,
    api_connection: URL | None = None,
    log_file: Path | None = None,
) -> Path:
    """A minimal nova.conf for nova-manage and Nova's object API (mode 0600)."""

    def plain(url: URL) -> str:
        return url.render_as_string(hide_password=False)

    lines = [
        "# Written by offload (offload.testbed.nova); holds passwords: mode 0600.",
        "[DEFAULT]",
        "use_stderr = false",
        *([f"log_file = {log_file}"] if log_file else []),
        "",
        "[database]",
        f"connection = {plain(connection)}",
        *([f"slave_connection = {plain(slave_connection)}"] if slave_connection else []),
        "",
    ]
    if api_connection is not None:
        lines += ["[api_database]", f"connection = {plain(api_connection)}", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, "\n".join(lines))
    return path


@dataclass(frozen=True, slots=True)
class NovaSync:
    """What ``nova-manage db sync`` did to one database."""

    database: str
    seconds: float
    tables: int
    #: alembic's revision of Nova's main database after the sync
    revision: str

    def describe(self) -> str:
        return (
            f"Nova {NOVA_RELEASE}'s schema in `{self.database}` by nova-manage db sync: "
            f"{self.tables} tables, revision {self.revision} ({self.seconds:.1f}s)"
        )


def db_sync(
    env: NovaEnv, connection: URL, *, workdir: Path, timeout: float = SYNC_TIMEOUT
) -> NovaSync:
    """Run ``nova-manage db sync --local_cell`` on ``connection``'s database.

    ``--local_cell``: only the database of ``[database] connection``; without it
    nova-manage would look for cell0 in an API database this testbed does not have.
    """
    database = connection.database or ""
    conf = write_nova_conf(
        workdir / f"nova-{database}.conf",
        connection=connection,
        log_file=workdir / f"nova-manage-{database}.log",
    )
    started = time.monotonic()
    _run(
        [str(env.nova_manage), "--config-file", str(conf), "db", "sync", "--local_cell"],
        what=f"nova-manage db sync on {masked(connection)}",
        timeout=timeout,
        log_hint=workdir / f"nova-manage-{database}.log",
    )
    seconds = time.monotonic() - started
    engine = unpooled_engine(connection, name="primary")
    try:
        with engine.connect() as conn:
            tables = len(inspect(conn).get_table_names())
            revision = str(
                conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() or "?"
            )
    finally:
        engine.dispose()
    return NovaSync(database, seconds, tables, revision)


def sync_testbed(
    info: TestbedInfo,
    *,
    database: str = NOVA_DATABASE,
    workdir: Path,
    env: NovaEnv | None = None,
    log: Log = stderr_log,
) -> NovaSync:
    """Nova's schema in ``database`` of a running testbed, made by Nova's own migrations.

    Runs as the testbed's ``nova`` account, as a deployment's nova-manage does; the
    database must exist and be granted to it.  The environment is built first when it
    is not cached.
    """
    env = (env or nova_env()).ensure(log=log)
    return db_sync(env, info.primary_url(database), workdir=workdir)


#: what the testbed's ``nova`` account may do on its database (mysql/bootstrap/primary.sql);
#: nova-manage db sync needs no more
#: what the service's account may do on a database Nova's migrations make (the janitor's)
NOVA_PRIVILEGES = SERVICE_PRIVILEGES


@dataclass(frozen=True, slots=True)
class NovaTemplate:
    """Nova's tables as ``nova-manage db sync`` made them, to be made again in other databases.

    Built once (a scratch database of the :class:`DatabaseJanitor`, Nova's migrations,
    ``SHOW CREATE TABLE`` of every table, the scratch database dropped and its grants
    revoked); :meth:`create` then makes any of those tables in
    another database in a few milliseconds each, exactly as Nova made them — indexes,
    foreign keys, character set and all.  Test databases get Nova's schema that way
    without running the migrations (6-20 s) for every test.
    """

    sync: NovaSync
    #: table -> its CREATE TABLE statement, parents before children
    ddl: dict[str, str]
    #: the database nova-manage made, while it is kept (``build(keep=True)``)
    database: str | None = None
    #: what drops the kept database and revokes its grants
    janitor: DatabaseJanitor | None = field(default=None, repr=False, compare=False)

    @classmethod
    def build(
        cls,
        info: TestbedInfo,
        *,
        workdir: Path,
        env: NovaEnv | None = None,
        keep: bool = False,
        log: Log = stderr_log,
    ) -> NovaTemplate:
        """Nova's migrations in a scratch database, read back; it is dropped unless ``keep``."""
        env = (env or nova_env()).ensure(log=log)
        janitor = DatabaseJanitor(
            info.settings(), prefix="nova_template_", schema=None, replicate=False
        )
        janitor.init()  # created and granted (nova-manage connects as the service's account)
        try:
            synced = db_sync(env, info.primary_url(janitor.name), workdir=workdir)
            admin = unpooled_engine(info.admin_url(), name="primary")
            try:
                with admin.connect() as conn:
                    ddl = _ddl_in_order(conn, janitor.name)
            finally:
                admin.dispose()
        except BaseException:
            janitor.drop()
            raise
        if not keep:
            janitor.drop()
            return cls(synced, ddl)
        return cls(synced, ddl, janitor.name, janitor)

    def drop(self) -> None:
        """Drop the kept database and revoke its grants (nothing when none is kept)."""
        if self.janitor is not None:
            self.janitor.drop()

    def create(self, conn: Connection, tables: Iterable[str] | None = None) -> list[str]:
        """Make ``tables`` (default: all of Nova's) in ``conn``'s database; returns them."""
        wanted = set(self.ddl) if tables is None else set(tables)
        unknown = wanted - set(self.ddl)
        if unknown:
            raise TestbedError(f"Nova {NOVA_RELEASE} has no table {', '.join(sorted(unknown))}")
        made = [table for table in self.ddl if table in wanted]
        for table in made:
            conn.exec_driver_sql(self.ddl[table])
        if "alembic_version" in made:  # where Nova's migrations stand, as nova-manage left it
            conn.execute(
                text("INSERT INTO alembic_version (version_num) VALUES (:revision)"),
                {"revision": self.sync.revision},
            )
        return made


def _ddl_in_order(conn: Connection, database: str) -> dict[str, str]:
    """``SHOW CREATE TABLE`` of every table of ``database``, parents first."""
    inspector = inspect(conn)
    names = sorted(inspector.get_table_names(schema=database))
    parents = {
        name: {fk["referred_table"] for fk in inspector.get_foreign_keys(name, schema=database)}
        - {name}
        for name in names
    }
    ordered: list[str] = []
    while len(ordered) < len(names):
        ready = [n for n in names if n not in ordered and parents[n] <= set(ordered)]
        if not ready:
            raise TestbedError("Nova's tables have a foreign-key cycle: cannot order them")
        ordered.extend(ready)
    return {
        name: str(conn.exec_driver_sql(f"SHOW CREATE TABLE `{database}`.`{name}`").one()[1])
        for name in ordered
    }


# --- helpers ------------------------------------------------------------------


def _python_series() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(
    args: Sequence[str], *, what: str, timeout: float = 600.0, log_hint: Path | None = None
) -> str:
    """:func:`offload.testbed.rootfs.run` in the side environment's terms (no user site)."""
    return run(
        args,
        what=what,
        timeout=timeout,
        env={**os.environ, "PYTHONNOUSERSITE": "1"},
        log_hint=log_hint,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m offload.testbed.nova``: build or find the side environment."""
    del argv
    env = nova_env()
    started = time.monotonic()
    try:
        env.ensure(log=stderr_log)
    except TestbedError as exc:
        sys.stderr.write(f"offload: error: {exc}\n")
        return 1
    record = env.build_record()
    sys.stdout.write(
        f"nova {NOVA_RELEASE} side environment: {env.home} "
        f"({record.get('packages', '?')} packages; built in {record.get('build_seconds', '?')}s; "
        f"this check {time.monotonic() - started:.1f}s)\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

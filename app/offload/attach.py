"""``offload db sync``: offload's tables on an empty database, or attached to Nova's.

On an empty database (or one offload made) it creates whatever of
:data:`offload.schema.NOVA_TABLES` is missing: Nova's ten tables as offload models
them, and the heartbeat.  On a database Nova made (``nova-manage db sync``) it
adds only offload's own objects — the heartbeat table, and the indexes of
:data:`offload.schema.EXTRA_INDEXES` when asked to — after checking that every
table and column offload's tasks read and write is there, and that Nova has no
required column offload would leave empty.  Nothing is created when a check
fails: the error names what is missing.

What was found and what was added comes back as a :class:`SyncReport`, whose
``lines()`` the CLI prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Connection, inspect
from sqlalchemy.engine.interfaces import ReflectedColumn

from offload import schema
from offload.errors import SchemaMismatch

__all__ = ["NOVA_MARKER_TABLES", "SyncReport", "sync"]

#: tables of Nova's main database that offload does not model: any of them means Nova made it
NOVA_MARKER_TABLES = ("instance_extra", "instance_actions", "quota_usages", "key_pairs")


@dataclass(frozen=True, slots=True)
class SyncReport:
    """What ``offload db sync`` found in a database and what it added."""

    database: str
    #: "nova" (Nova's tables were there), "offload" (offload's own), "empty"
    found: str
    #: every table in the database before the sync
    tables_before: int
    #: alembic's revision of Nova's main database, when there is one
    nova_revision: str | None
    created_tables: tuple[str, ...] = ()
    created_indexes: tuple[schema.ExtraIndex, ...] = ()
    #: extra indexes present before the sync
    present_indexes: tuple[schema.ExtraIndex, ...] = ()
    #: extra indexes neither present nor asked for
    skipped_indexes: tuple[schema.ExtraIndex, ...] = ()
    #: Nova's columns that offload does not use, per table (informational)
    unused_columns: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def lines(self) -> list[str]:
        """What to print: one line of what was found, one per thing added or left out."""
        total = len(schema.NOVA_TABLES)
        if self.found == "nova":
            revision = f", alembic revision {self.nova_revision}" if self.nova_revision else ""
            unused = sum(len(c) for c in self.unused_columns.values())
            head = [
                f"found Nova's schema in `{self.database}` ({self.tables_before} tables"
                f"{revision}): the {total - len(schema.OFFLOAD_TABLES)} tables offload's "
                "tasks use are there with every column they read and write "
                f"({unused} more of Nova's columns left alone)"
            ]
        elif self.found == "offload":
            head = [f"found offload's schema in `{self.database}` ({self.tables_before} tables)"]
        else:
            head = [f"`{self.database}` was empty"]
        lines = head
        lines.append(
            f"added {len(self.created_tables)} table(s): {', '.join(self.created_tables)}"
            if self.created_tables
            else "added no table: offload's tables were all there"
        )
        lines.extend(
            f"added index {ix.name} on {ix.table}({', '.join(ix.columns)}): "
            f"speeds up {ix.speeds_up}"
            for ix in self.created_indexes
        )
        lines.extend(
            f"index {ix.name} was there already: speeds up {ix.speeds_up}"
            for ix in self.present_indexes
        )
        lines.extend(
            f"not added (`offload db sync --extra-indexes` adds it): index {ix.name} on "
            f"{ix.table}({', '.join(ix.columns)}), which would speed up {ix.speeds_up}"
            for ix in self.skipped_indexes
        )
        return lines


def _required_without_default(column: ReflectedColumn) -> bool:
    return (
        not column["nullable"]
        and column.get("default") is None
        and not column.get("autoincrement", False)
    )


def _check_nova_tables(conn: Connection, present: set[str]) -> dict[str, tuple[str, ...]]:
    """Every table and column offload uses, and no required column it would leave empty."""
    inspector = inspect(conn)
    problems: list[str] = []
    unused: dict[str, tuple[str, ...]] = {}
    for name in schema.NOVA_TABLES:
        if name in schema.OFFLOAD_TABLES:
            continue
        if name not in present:
            problems.append(f"table {name} is missing")
            continue
        ours = {column.name for column in schema.metadata.tables[name].c}
        columns = {c["name"]: c for c in inspector.get_columns(name)}
        missing = [c for c in sorted(ours) if c not in columns]
        if missing:
            problems.append(f"{name} lacks {', '.join(missing)}")
        required = [
            n
            for n, c in columns.items()
            if n not in ours and _required_without_default(c) and n != "id"
        ]
        if required:
            problems.append(f"{name}.{', '.join(required)} is NOT NULL without a default")
        unused[name] = tuple(n for n in columns if n not in ours)
    if problems:
        raise SchemaMismatch(
            "this Nova database does not have what offload's tasks read and write: "
            + "; ".join(problems),
            hint="bring it to Nova's current schema (`nova-manage db sync`) and run "
            "`offload db sync` again; nothing was changed",
        )
    return unused


def _revision(conn: Connection, present: set[str]) -> str | None:
    if "alembic_version" not in present:
        return None
    value = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
    return str(value) if value is not None else None


def sync(
    conn: Connection, *, extra_indexes: bool = False, database: str | None = None
) -> SyncReport:
    """Create what offload needs on ``conn``'s database; say what was found and added."""
    inspector = inspect(conn)
    name = database or str(conn.exec_driver_sql("SELECT DATABASE()").scalar() or "")
    present = set(inspector.get_table_names())
    nova = bool(present & set(NOVA_MARKER_TABLES))
    unused: dict[str, tuple[str, ...]] = {}
    if nova:
        found = "nova"
        unused = _check_nova_tables(conn, present)
    elif present & set(schema.NOVA_TABLES):
        found = "offload"
    else:
        found = "empty"
    revision = _revision(conn, present) if nova else None
    created = tuple(t for t in schema.NOVA_TABLES if t not in present)
    if created:
        schema.metadata.create_all(conn, tables=[schema.metadata.tables[t] for t in created])
    made: list[schema.ExtraIndex] = []
    there: list[schema.ExtraIndex] = []
    skipped: list[schema.ExtraIndex] = []
    for extra in schema.EXTRA_INDEXES:
        names = {ix["name"] for ix in inspect(conn).get_indexes(extra.table)}
        if extra.name in names:
            there.append(extra)
        elif extra_indexes:
            extra.index().create(conn)
            made.append(extra)
        else:
            skipped.append(extra)
    return SyncReport(
        database=name,
        found=found,
        tables_before=len(present),
        nova_revision=revision,
        created_tables=created,
        created_indexes=tuple(made),
        present_indexes=tuple(there),
        skipped_indexes=tuple(skipped),
        unused_columns=unused,
    )

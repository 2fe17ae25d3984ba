"""The ``offload`` command.

Settings are loaded once, here, and handed down.  Every deliberate error is
one line on stderr (``offload: error: ...; what to do``) with exit status 2
for usage and configuration, 1 for everything else — never a traceback, never
a password.

A command imports what it needs when it runs: this module and what it imports at the
top stay free of SQLAlchemy, rich and the testbed's machinery (``offload --help`` and
``offload tasks`` answer at once; tests/unit/test_cli_imports.py pins it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from offload import __version__
from offload.argtypes import SECONDS, above_zero, positive_int
from offload.config import DEFAULT_TESTBED_CONFIG, Settings, find_config_file, load_settings
from offload.errors import ConfigError, OffloadError, TestbedError
from offload.testbed.backend import BACKENDS
from offload.testbed.servers import FlavorSpec, known_specs
from offload.urls import masked

if TYPE_CHECKING:
    from sqlalchemy import URL

    from offload.compute.context import RunReport
    from offload.testbed.compose import ComposeTopology
    from offload.testbed.native import NativeTopology
    from offload.testbed.roles import RoleTopology
    from offload.testbed.service import ServiceRunner
    from offload.testbed.topology import TestbedInfo

__all__ = ["main"]

Handler = Callable[[argparse.Namespace, Settings], int]
log = logging.getLogger("offload")


def _out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def _flavor(value: str) -> str:
    try:
        return str(FlavorSpec.parse(value))
    except OffloadError as exc:
        raise argparse.ArgumentTypeError(f"{exc.message}; {exc.hint}") from None


def _whole(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None


def _index(value: str) -> int:
    number = _whole(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {number}")
    return number


def _delay(value: str) -> int:
    from offload.replication import validate_delay  # noqa: PLC0415

    try:
        return validate_delay(_whole(value))
    except ValueError as exc:  # out of range
        raise argparse.ArgumentTypeError(str(exc)) from None


def _compute_scale(value: str) -> int:
    from offload.testbed.compose import SERVICE_PORT_RANGE  # noqa: PLC0415

    number = positive_int(value)
    if number > SERVICE_PORT_RANGE:
        raise argparse.ArgumentTypeError(f"use 1-{SERVICE_PORT_RANGE}, got {number}")
    return number


def _program(value: str) -> str:
    path = Path(value)
    if not path.is_file() or not os.access(path, os.X_OK):
        raise argparse.ArgumentTypeError(f"{value} is not an executable file")
    return value


def _writable(path: Path, *, kind: str) -> None:
    """Refuse an output path that cannot be written: a parent that is a file, or the path
    itself of the other kind (missing parents are created when the command writes)."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise argparse.ArgumentTypeError(f"{parent} is not a directory")
            break
    if kind == "file" and path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a directory; name a file")
    if kind == "directory" and path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is not a directory")


def _output_file(value: str) -> str:
    _writable(Path(value), kind="file")
    return value


def _output_dir(value: str) -> str:
    _writable(Path(value), kind="directory")
    return value


def _port(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {value!r}") from None
    if not (number == 0 or 1024 <= number <= 65000):
        raise argparse.ArgumentTypeError(f"use 1024-65000, or 0 for free ports; got {number}")
    return number


# --- testbed ----------------------------------------------------------------


def _testbed_dir(args: argparse.Namespace, settings: Settings) -> Path:
    if args.dir:
        directory = Path(args.dir)
    elif settings.testbed.dir:
        directory = Path(settings.testbed.dir)
    else:
        directory = DEFAULT_TESTBED_CONFIG.parent
    if directory.exists() and not directory.is_dir():
        raise ConfigError(
            f"{directory} is not a directory", hint="give --dir a directory (default .testbed)"
        )
    return directory


def _schema(args: argparse.Namespace) -> str | None:
    """--schema, else $OFFLOAD_SCHEMA (make's SCHEMA=), else None (offload's, or the testbed's)."""
    from offload.testbed.nova import default_schema  # noqa: PLC0415

    chosen: str | None = getattr(args, "schema", None)
    return chosen or default_schema()


def cmd_testbed_up(args: argparse.Namespace, settings: Settings) -> int:
    from offload.testbed.backend import choose_backend, recorded_backend  # noqa: PLC0415

    directory = _testbed_dir(args, settings)
    schema = _schema(args)
    backend = choose_backend(
        args.backend,
        directory,
        replicas=args.replicas,
        mysqld=args.mysqld,
        flavor=args.flavor,
        schema=schema,
    )
    if backend == "compose" and schema == "nova":
        raise TestbedError(
            "--schema nova runs on the native backend (nova-manage runs from this machine)",
            hint="use --backend native (`make up SCHEMA=nova` does)",
        )
    recorded = recorded_backend(directory)
    if recorded is not None and recorded != backend:
        raise TestbedError(
            f"{directory} holds a {recorded} testbed, asked for {backend}",
            hint="take it down and remove it (`make clean`), or use another --dir",
        )
    flavor = FlavorSpec.parse(args.flavor) if args.flavor else None
    from offload.link.toxics import parse_duration  # noqa: PLC0415
    from offload.testbed.compose import ComposeTopology  # noqa: PLC0415
    from offload.testbed.knobs import ApplierKnobs  # noqa: PLC0415

    knobs = ApplierKnobs(
        replica_workers=args.replica_workers,
        semi_sync=args.semi_sync,
        group_commit_delay=parse_duration(args.group_commit_delay, option="--group-commit-delay")
        if args.group_commit_delay is not None
        else None,
    )
    if backend == "compose" and not knobs.empty:
        raise TestbedError(
            "--replica-workers, --semi-sync and --group-commit-delay are set on native "
            "testbeds only (for now)",
            hint="add --backend native",
        )

    topology: NativeTopology | ComposeTopology
    if backend == "compose":
        # the compute container starts with `offload service start` (after the seed)
        topology = ComposeTopology(
            directory,
            port=args.port,
            replicas=args.replicas,
            offline=True if args.offline else None,
            flavor=flavor,
            compute_scale=args.compute_scale,
            start_compute=False,
            tls=None if args.tls is None else args.tls == "on",
        )
    else:
        from offload.testbed.native import NativeTopology  # noqa: PLC0415

        topology = NativeTopology(
            directory,
            port=args.port,
            replicas=args.replicas,
            mysqld=args.mysqld,
            flavor=flavor,
            knobs=knobs,
            schema=schema,
            tls=None if args.tls is None else args.tls == "on",
            endpoints=args.endpoint,
        )
    info = topology.up()
    _out(f"testbed up ({info.backend}, {info.server}) in {info.dir}")
    if info.schema == "nova":
        from offload.testbed.files import NativeState, read_state  # noqa: PLC0415
        from offload.testbed.nova import NOVA_RELEASE  # noqa: PLC0415

        state = read_state(directory)
        made = state.nova_schema if isinstance(state, NativeState) else None
        if made is not None:
            _out(
                f"  schema    Nova {NOVA_RELEASE}'s, by nova-manage db sync: {made.tables} "
                f"tables, revision {made.revision} ({made.seconds}s); "
                "`offload db sync` adds offload's heartbeat"
            )
    _out(f"  primary   {masked(info.primary_url())}")
    for url in info.replica_urls():
        _out(f"  replica   {masked(url)}")
    _out(f"  tls       {_tls_line(info)}")
    _out(f"  config    {topology.config_path}  (passwords in it; mode 0600)")
    if isinstance(topology, ComposeTopology):
        _out(f"  compose   {topology.command_line()} ps|logs|stop replica ...")
        _out("  compute   `offload service start` starts the compute container(s)")
        for name, port in topology.links().control_ports.items():
            _out(
                f"  link      {name} replicates through the link service (control on "
                f"127.0.0.1:{port}): `offload link set {name} --delay 40ms`"
            )
    _out("next: `make status` shows replication; `make down` stops it")
    return 0


def _tls_line(info: TestbedInfo) -> str:
    """What ``testbed up`` says of TLS: the CA clients verify with and the certificate's end."""
    ca = info.primary.query.get("ssl_ca")
    if not isinstance(ca, str) or info.dir is None:
        return "off: plain TCP (`--tls on`, the default, makes the servers require verified TLS)"
    from offload.testbed.tls import TlsFiles, certificate_not_after  # noqa: PLC0415

    until = certificate_not_after(TlsFiles.in_dir(info.dir).cert)
    return (
        f"on: every server requires it, replicas replicate over it; CA {ca}, "
        f"server certificate until {until:%Y-%m-%d}"
    )


def cmd_testbed_down(args: argparse.Namespace, settings: Settings) -> int:
    from offload.testbed.backend import recorded_backend  # noqa: PLC0415

    directory = _testbed_dir(args, settings)
    backend = recorded_backend(directory)
    if backend is None:
        _out(f"no testbed in {directory}; nothing to stop")
        return 0
    if backend == "compose":
        from offload.testbed.compose import ComposeTopology  # noqa: PLC0415

        ComposeTopology(directory).down()
        _out(f"compose testbed in {directory} removed (containers, network and volumes)")
        return 0
    from offload.testbed.native import NativeTopology  # noqa: PLC0415

    NativeTopology(directory).down()
    _out(f"testbed in {directory} stopped (data kept; `make clean` removes it)")
    return 0


def cmd_testbed_server(args: argparse.Namespace, settings: Settings) -> int:
    from offload.testbed.mysqld import find_server  # noqa: PLC0415

    started = time.monotonic()
    program = find_server(args.mysqld, spec=FlavorSpec.parse(args.flavor), log=_out)
    _out(f"{program.describe()}: {program.path} ({time.monotonic() - started:.1f}s)")
    return 0


def cmd_testbed_images(args: argparse.Namespace, settings: Settings) -> int:
    from offload.testbed.images import ensure_images  # noqa: PLC0415

    flavors = [FlavorSpec.parse(f) for f in args.flavor] if args.flavor else None
    for result in ensure_images(flavors=flavors, rebuild=args.rebuild, log=_out):
        _out(f"  {result.describe()}")
    return 0


def cmd_testbed_logs(args: argparse.Namespace, settings: Settings) -> int:
    from offload.testbed.backend import recorded_backend  # noqa: PLC0415

    directory = _testbed_dir(args, settings)
    if recorded_backend(directory) != "compose":
        raise TestbedError(
            f"{directory} holds no compose testbed",
            hint="the native testbed's logs are files: `make logs`",
        )
    from offload.testbed.compose import ComposeTopology  # noqa: PLC0415

    _out(ComposeTopology(directory).logs(tail=args.tail))
    return 0


def _role_topology(directory: Path) -> RoleTopology:
    """The testbed in ``directory`` whose roles a role change moves (native or compose)."""
    from offload.testbed.backend import recorded_backend  # noqa: PLC0415

    backend = recorded_backend(directory)
    if backend == "compose":
        from offload.testbed.compose import ComposeTopology  # noqa: PLC0415

        return ComposeTopology(directory)
    if backend != "native":
        raise TestbedError(
            f"{directory} holds no testbed: a role change moves the roles of a running one",
            hint="`offload testbed up` makes one",
        )
    from offload.testbed.native import NativeTopology  # noqa: PLC0415

    return NativeTopology(directory, flavor=None)


def cmd_testbed_role(args: argparse.Namespace, settings: Settings) -> int:
    from offload.testbed import roles  # noqa: PLC0415
    from offload.testbed.native import NativeTopology  # noqa: PLC0415

    topology = _role_topology(_testbed_dir(args, settings))
    if args.testbed_command == "drill":
        from offload.testbed.drill import drill  # noqa: PLC0415

        result = drill(
            topology,
            settings.require_connection(),
            args.kind,
            times=args.times,
            rate=args.rate,
            timeout=args.timeout,
            progress=None if args.json else _out,
        )
        if args.json:
            _out(json.dumps(result.as_dict(), indent=2))
        else:
            _out(
                f"{args.kind}: time to the first write on the new primary, p50 "
                f"{result.p50:.3f}s, max {max(result.seconds, default=float('nan')):.3f}s "
                f"over {len(result.seconds)}; {result.confirmed} writes confirmed, "
                f"failed attempts {result.errors or 'none'}"
            )
        if result.stopped:
            raise TestbedError(f"the drill stopped early: {result.stopped}")
        return 0
    if args.testbed_command == "switchover":
        change = roles.switchover(topology, to=args.to, timeout=args.timeout)
    elif args.testbed_command == "failover":
        change = roles.failover(topology, kill=args.kill, timeout=args.timeout)
    elif args.testbed_command == "rebuild":
        if not isinstance(topology, NativeTopology):
            raise TestbedError(
                "`testbed rebuild` makes a native testbed's server again; a compose "
                "stack's diverged server is made again with the stack",
                hint="`make down && make up` (or inspect its binary log first)",
            )
        change = roles.rebuild(topology, args.name, timeout=args.timeout)
    else:
        change = roles.rejoin(topology, args.name, timeout=args.timeout)
    _out(json.dumps(change.as_dict(), indent=2) if args.json else change.describe())
    return 0


def cmd_testbed_status(args: argparse.Namespace, settings: Settings) -> int:
    from offload.monitor import collect  # noqa: PLC0415

    reports = collect(settings)
    if args.json:
        _out(json.dumps([r.as_dict() for r in reports], indent=2))
    else:
        roles = _testbed_roles(settings)
        from offload.views import print_view, roles_view, servers_view  # noqa: PLC0415

        print_view(*servers_view(reports), *([roles_view(roles)] if roles else []))
    broken = any(r.error for r in reports) or any(
        r.replica is not None and not r.replica.threads_running for r in reports
    )
    return 1 if broken else 0


def _testbed_roles(settings: Settings) -> list[dict[str, Any]]:
    """A testbed's servers with their roles and the endpoints leading to each (state.json,
    the endpoints' proxies); none for a testbed without endpoints (its roles never move)."""
    if not settings.testbed.dir:
        return []
    from offload.testbed.files import read_state  # noqa: PLC0415
    from offload.testbed.roles import server_id  # noqa: PLC0415

    directory = Path(settings.testbed.dir)
    state = read_state(directory)
    if state is None or not state.initialised:
        return []
    if (state.backend == "native" and not state.endpoints) or (
        state.backend == "compose" and not state.endpoint_ports
    ):
        return []
    topology = _role_topology(directory)
    targets = topology.endpoint_targets()
    rows = []
    for name in state.server_names():
        running = topology.running(name)
        rows.append(
            {
                "server": name,
                "server_id": server_id(topology, name) if running else "-",
                "role": state.role(name),
                "running": running,
                "endpoints": [e.removesuffix("-endpoint") for e, s in targets.items() if s == name],
            }
        )
    return rows


# --- db ---------------------------------------------------------------------


def cmd_db_sync(args: argparse.Namespace, settings: Settings) -> int:
    from offload import schema  # noqa: PLC0415
    from offload.attach import sync  # noqa: PLC0415
    from offload.db import Database  # noqa: PLC0415

    with Database(settings) as db, db.writer() as session:
        report = sync(session.connection(), extra_indexes=args.extra_indexes)
    _out(
        f"schema in place on the primary ({masked(settings.require_connection())}): "
        f"offload's {len(schema.NOVA_TABLES)} tables"
    )
    for line in report.lines():
        _out(f"  {line}")
    return 0


def _already_seeded(url: URL, what: str) -> ConfigError:
    return ConfigError(
        f"{masked(url)} already holds {what}; seeding again would duplicate them",
        hint="`offload seed --if-empty` keeps them; `make clean && make up` starts "
        "from an empty testbed",
    )


def cmd_seed(args: argparse.Namespace, settings: Settings) -> int:
    from sqlalchemy import func, select  # noqa: PLC0415
    from sqlalchemy.exc import IntegrityError  # noqa: PLC0415

    from offload import schema  # noqa: PLC0415
    from offload.attach import sync  # noqa: PLC0415
    from offload.db import Database  # noqa: PLC0415
    from offload.dberrors import DUPLICATE_KEY, error_code  # noqa: PLC0415
    from offload.seed import seed  # noqa: PLC0415

    url = settings.require_connection()
    with Database(settings) as db:
        with db.writer() as session:
            sync(session.connection())  # what `db sync` does; on Nova's tables, checked first
        with db.reader() as session:
            present = session.scalar(select(func.count()).select_from(schema.Instance)) or 0
        if present and args.if_empty:
            _out(f"seed: {present} instances already there; nothing written")
            return 0
        if present:
            raise _already_seeded(url, f"{present} instances")
        try:
            summary = seed(db, instances=args.instances, hosts=args.hosts, seed=args.seed)
        except IntegrityError as exc:
            if exc.orig is None or error_code(exc.orig) != DUPLICATE_KEY:
                raise
            detail = str(exc.orig.args[1]) if len(exc.orig.args) > 1 else "a duplicate key"
            raise _already_seeded(url, f"rows of an earlier seed ({detail})") from None
    _out(
        f"seeded {summary.instances} instances over {len(summary.hosts)} hosts "
        f"({', '.join(summary.hosts[:3])}{', ...' if len(summary.hosts) > 3 else ''}) "
        f"in {summary.elapsed:.2f}s"
    )
    for table, rows in summary.rows.items():
        _out(f"  {table:<26} {rows}")
    return 0


# --- tasks and the service ---------------------------------------------------


def _for_host(args: argparse.Namespace, settings: Settings) -> Settings:
    host = getattr(args, "host", None)
    return dataclasses.replace(settings, host=host) if host else settings


def cmd_tasks(args: argparse.Namespace, settings: Settings) -> int:
    from offload.compute.catalogue import TASKS  # noqa: PLC0415
    from offload.views import print_view, tasks_view  # noqa: PLC0415

    print_view(tasks_view(TASKS, settings.compute))
    return 0


def cmd_run_task(args: argparse.Namespace, settings: Settings) -> int:
    from offload.compute.host import build_manager  # noqa: PLC0415
    from offload.db import Database  # noqa: PLC0415
    from offload.preflight import preflight  # noqa: PLC0415

    settings = _for_host(args, settings)
    with Database(settings) as db:
        manager = build_manager(settings, db)
        spec = manager.spec(args.name)  # unknown names fail before any connection
        for warning in preflight(settings):
            sys.stderr.write(f"offload: warning: {warning}\n")
        manager.init_host()
        failure: Exception | None = None
        try:
            report = manager.run(spec.name)
        except Exception as exc:  # the run's report still says what it did, then the error
            failure = exc
            failed = manager.last_reports.get(spec.name)
            if failed is None:
                raise
            report = failed
    if args.json:
        _out(json.dumps(report.as_dict(), indent=2, default=str))
    else:
        _print_run(report)
    if failure is not None:
        raise failure  # one line on stderr and a non-zero exit, as for any error
    return 0


def _print_run(report: RunReport) -> None:
    statements = report.details.get("statements", {})
    _out(
        f"{report.task} on {report.host}: {report.duration * 1000:.1f} ms, "
        f"{report.items} items, {report.written} written, {report.rejected} rejected"
        + (f" (skipped: {report.skipped})" if report.skipped else "")
        + (" (FAILED)" if report.error else "")
    )
    for route, verbs in statements.get("by_route", {}).items():
        servers = ", ".join(statements["servers"].get(route, []))
        _out(f"  {route:<8} {dict(verbs)}  on {servers}")
    routing = report.details.get("routing", {})
    why = routing.get("why", {})
    for kind in ("fallbacks", "skips"):
        for reason, count in routing.get(kind, {}).items():
            cause = f": {why[reason]}" if reason in why else ""
            _out(f"  {kind[:-1]} {reason} x{count}{cause}")


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from offload.service import Service  # noqa: PLC0415

    settings = _for_host(args, settings)
    if args.trace:
        settings = dataclasses.replace(
            settings, service=dataclasses.replace(settings.service, trace_file=args.trace)
        )
    from offload.preflight import preflight  # noqa: PLC0415

    settings.require_connection()
    for warning in preflight(settings):
        sys.stderr.write(f"offload: warning: {warning}\n")
    Service(settings).run()
    return 0


def _runner(settings: Settings) -> ServiceRunner:
    from offload.testbed.service import ServiceRunner  # noqa: PLC0415

    if not settings.testbed.dir or settings.source is None:
        raise ConfigError(
            "`offload service` manages a testbed's compute service, and this "
            "config is not a testbed's",
            hint="run `make up` first, or run `offload serve` in the foreground",
        )
    return ServiceRunner(Path(settings.testbed.dir), settings.source, settings.service.http_port)


def _compose_testbed(settings: Settings) -> ComposeTopology | None:
    """The compose testbed of this config, whose compute service is a container."""
    if settings.testbed.backend != "compose" or not settings.testbed.dir:
        return None
    from offload.testbed.compose import ComposeTopology  # noqa: PLC0415

    return ComposeTopology(Path(settings.testbed.dir))


def cmd_service_start(args: argparse.Namespace, settings: Settings) -> int:
    compose = _compose_testbed(settings)
    if compose is not None:
        # started, or restarted: its init_host then sees the seeded data
        info = compose.start_compute()
        _out(
            f"compute service running as the compose testbed's compute container(s), "
            f"healthy: http://127.0.0.1:{info.service_port}/status; "
            "logs: `offload testbed logs`"
        )
        return 0
    pid = _runner(settings).start()
    _out(
        f"compute service for {settings.host} running (pid {pid}), "
        f"http://127.0.0.1:{settings.service.http_port}/status; log in "
        f"{Path(settings.testbed.dir) / 'service.log'}"
    )
    return 0


def cmd_service_stop(args: argparse.Namespace, settings: Settings) -> int:
    compose = _compose_testbed(settings)
    if compose is not None:
        stopped = compose.stop_compute()
        _out(
            "compute container stopped (`make up` starts it again)"
            if stopped
            else "the compose testbed is not up"
        )
        return 0
    if _runner(settings).stop():
        _out("compute service stopped")
    else:
        _out("compute service was not running")
    return 0


def _status_now(settings: Settings) -> dict[str, Any]:
    """The status document without a service: the replicas read from here, now."""
    from offload import monitor  # noqa: PLC0415
    from offload.db import Database  # noqa: PLC0415
    from offload.dberrors import unpooled_engine  # noqa: PLC0415

    settings = load_settings(settings.source, os.environ)  # every section this time
    engine = unpooled_engine(settings.require_connection(), name="primary")
    try:
        with Database(settings) as db:
            return dict(monitor.status_document(settings, db, engine))
    finally:
        engine.dispose()


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    """``settings`` holds [service] only: a running service answers without a URL parsed."""
    from offload.testbed.service import fetch  # noqa: PLC0415

    status: dict[str, Any] | None = None
    if settings.service.http_port:
        try:
            status = json.loads(fetch(settings.service.http_port, "/status", timeout=10))
        except OSError:
            status = None
    live = status is not None
    if status is None:
        status = _status_now(settings)
    if args.json:
        _out(json.dumps(status, indent=2))
    else:
        from offload.views import print_view, status_view  # noqa: PLC0415

        print_view(*status_view(status, live=live))
    return 0 if status["health"] == "ok" else 1


def _replica_admin(settings: Settings, index: int) -> URL:
    urls = settings.testbed.replica_admin_connections
    if not urls:
        raise ConfigError(
            "controlling replication needs a privileged account on the replica",
            hint="use the testbed's config (`make up` writes one), whose "
            "[testbed] replica_admin_connections has it",
        )
    if not 0 <= index < len(urls):
        raise ConfigError(
            f"there is no replica {index}; this config has {len(urls)}",
            hint=f"use --replica 0..{len(urls) - 1}",
        )
    return urls[index]


def cmd_replica(args: argparse.Namespace, settings: Settings) -> int:
    from offload import replication  # noqa: PLC0415
    from offload.dberrors import unpooled_engine  # noqa: PLC0415

    url = _replica_admin(settings, args.replica)
    engine = unpooled_engine(url, name=f"replica{args.replica}")
    try:
        with engine.connect() as conn:
            flavor = replication.server_flavor(conn)
            if args.replica_command == "pause":
                replication.stop_replica(conn, flavor, sql_thread_only=True)
                _out(f"replica{args.replica}: SQL thread stopped (IO keeps receiving)")
            elif args.replica_command == "resume":
                replication.start_replica(conn, flavor, sql_thread_only=True)
                _out(f"replica{args.replica}: SQL thread started")
            else:
                replication.stop_replica(conn, flavor)
                try:
                    replication.set_replica_delay(conn, flavor, args.seconds)
                finally:
                    replication.start_replica(conn, flavor)
                _out(
                    f"replica{args.replica}: applies each transaction {args.seconds}s after "
                    "the primary committed it"
                )
    finally:
        engine.dispose()
    return 0


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    from offload.bench.runner import run  # noqa: PLC0415

    existing: Settings | None = None  # None: the bench starts a testbed of its own
    if args.bench_config:
        existing = load_settings(Path(args.bench_config), os.environ)
    elif args.config:
        existing = settings
    return run(
        full=args.full,
        out=Path(args.out),
        settings=existing,
        docs=Path(args.docs) if args.docs else None,
        only=args.only or (),
    )


# --- parser -----------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line with the hint to use --help."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(message, hint=f"see `{self.prog} --help`")


def cmd_link(args: argparse.Namespace, settings: Settings) -> int:
    from offload.link.commands import link_command  # noqa: PLC0415

    for line in link_command(args, _testbed_dir(args, settings)):
        _out(line)
    return 0


def _add_link(commands: Any) -> None:
    link = commands.add_parser(
        "link", help="shape a replica's replication link: delay, jitter, rate, stall, cut"
    )
    link_commands = link.add_subparsers(dest="link_command", required=True, parser_class=_Parser)
    shaped = link_commands.add_parser(
        "set", help="put a link in the replica's path (if none) and set its toxics"
    )
    shaped.add_argument("name", metavar="REPLICA", help="replica0, replica1, ...")
    shaped.add_argument("--delay", metavar="D", help="added each way, like 40ms")
    shaped.add_argument("--jitter", metavar="D", help="uniform +-D on each delay, like 5ms")
    shaped.add_argument("--rate", metavar="R", help="bandwidth cap each way, like 2mbit; off")
    shaped.add_argument(
        "--stall", action="store_true", default=None, help="hold every byte until --flow"
    )
    shaped.add_argument("--flow", dest="stall", action="store_false", help="end a --stall")
    cut = link_commands.add_parser(
        "cut", help="reset the link's connections and refuse new ones for a while"
    )
    cut.add_argument("name", metavar="REPLICA")
    cut.add_argument("--for", dest="seconds", required=True, metavar="D", help="like 5s")
    clear = link_commands.add_parser("clear", help="no toxic; a cut link heals at once")
    clear.add_argument("name", metavar="REPLICA")
    remove = link_commands.add_parser(
        "remove", help="point the replica at the primary directly again; stop its link"
    )
    remove.add_argument("name", metavar="REPLICA")
    show = link_commands.add_parser("show", help="toxics in force, bytes and connections")
    show.add_argument("name", nargs="?", metavar="REPLICA")
    for sub in (shaped, cut, clear, remove, show):
        sub.add_argument("--dir", help="testbed directory (default .testbed)")
        sub.set_defaults(handler=cmd_link)


def _add_role_changes(testbed_commands: Any) -> None:
    switch = testbed_commands.add_parser(
        "switchover",
        help="planned: the primary read-only, a replica caught up by GTID and promoted, the "
        "endpoints moved, the old primary its replica (native, with endpoints)",
    )
    switch.add_argument("--to", metavar="REPLICA", help="the replica to promote (the first)")
    fail = testbed_commands.add_parser(
        "failover",
        help="unplanned: the primary is lost; the most advanced replica promoted, the "
        "endpoints moved; the old primary rejoins when it runs again (or is kept out as "
        "diverged)",
    )
    fail.add_argument("--kill", action="store_true", help="SIGKILL the primary first (a drill)")
    back = testbed_commands.add_parser(
        "rejoin",
        help="start a primary a failover left and make it a replica, unless it holds "
        "transactions the primary lacks (then: reported diverged, kept out)",
    )
    back.add_argument("name", nargs="?", metavar="SERVER", help="default: the departed one")
    remake = testbed_commands.add_parser(
        "rebuild",
        help="make a diverged server again from the primary (its data discarded: its extra "
        "transactions are lost; look at them first) and replicate",
    )
    remake.add_argument("name", metavar="SERVER", help="the diverged server")
    drill = testbed_commands.add_parser(
        "drill",
        help="KIND (switchover | failover) TIMES times back and forth while a writer commits "
        "through the primary's endpoint: each change's time to the first write on the new "
        "primary, p50 (failover: SIGKILL, semi-sync on, then the old primary rejoins)",
    )
    drill.add_argument("kind", choices=["switchover", "failover"])
    drill.add_argument("--times", type=positive_int, default=5, help="role changes (5)")
    drill.add_argument(
        "--rate", type=above_zero("writes a second"), default=50.0, help="writes a second (50)"
    )
    for sub in (switch, fail, back, remake, drill):
        sub.add_argument("--dir", help="testbed directory (default .testbed)")
        sub.add_argument(
            "--timeout", type=SECONDS, default=30.0, help="seconds to wait for GTIDs (30)"
        )
        sub.add_argument("--json", action="store_true", help="machine-readable output")
        sub.set_defaults(handler=cmd_testbed_role)


def _add_testbed(commands: Any) -> None:
    testbed = commands.add_parser("testbed", help="a primary with GTID replicas")
    testbed_commands = testbed.add_subparsers(
        dest="testbed_command", required=True, parser_class=_Parser
    )
    up = testbed_commands.add_parser("up", help="start the testbed (idempotent)")
    up.add_argument(
        "--backend",
        choices=["auto", *BACKENDS],
        default="auto",
        help="auto: the existing testbed's; else compose where a Docker engine "
        "answers; else native",
    )
    up.add_argument("--dir", help="testbed directory (default .testbed)")
    up.add_argument("--replicas", type=positive_int, default=1, help="number of replicas")
    up.add_argument(
        "--port",
        type=_port,
        default=33061,
        help="primary port; replicas take the next ones (0: free ports)",
    )
    up.add_argument(
        "--mysqld", type=_program, help="server binary (default: mariadbd or mysqld on PATH)"
    )
    up.add_argument(
        "--flavor",
        type=_flavor,
        metavar="FLAVOR",
        help=f"server: {', '.join(known_specs())} (default: the host's server; "
        "a flavor the host lacks is provided from Debian, cached)",
    )
    up.add_argument(
        "--schema",
        choices=["offload", "nova"],
        default=None,
        help="what makes the nova database: offload (its own tables, `offload db sync`; the "
        "default) or nova (Nova 34's migrations, `nova-manage db sync`, from a side "
        "environment built once and cached; native backend)",
    )
    up.add_argument(
        "--tls",
        choices=["on", "off"],
        default=None,
        help="on (default; also $OFFLOAD_TLS): the servers require TLS, the replicas replicate "
        "over TLS, and every client verifies the servers' certificate against the testbed's "
        "own CA; off: plain TCP, for comparison (an existing testbed keeps its own)",
    )
    up.add_argument(
        "--compute-scale",
        type=_compute_scale,
        default=1,
        metavar="N",
        help="compose: N compute containers, acting for compute-1..N (default 1)",
    )
    up.add_argument(
        "--offline",
        action="store_true",
        help="compose: build and use local images, no registry "
        "(also $OFFLOAD_OFFLINE=1; automatic once `make images` ran)",
    )
    _add_knobs(up, where="native: ")
    up.add_argument(
        "--endpoint",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="native, new testbed: clients reach the primary and each replica through an "
        "endpoint (a link proxy) that `testbed switchover|failover` moves (default on; "
        "--no-endpoint: the servers' own ports, no role change)",
    )
    up.set_defaults(handler=cmd_testbed_up)
    down = testbed_commands.add_parser(
        "down", help="stop every server the testbed started (compose: remove the stack)"
    )
    down.add_argument("--dir", help="testbed directory (default .testbed)")
    down.set_defaults(handler=cmd_testbed_down)
    built = testbed_commands.add_parser(
        "images", help="build the local images of the compose testbed (debootstrap; cached)"
    )
    built.add_argument("--rebuild", action="store_true", help="build even when cached")
    built.add_argument(
        "--flavor",
        type=_flavor,
        action="append",
        metavar="FLAVOR",
        help="DB image of this server flavor (repeatable; default: mariadb)",
    )
    server = testbed_commands.add_parser(
        "server", help="make sure a server of a flavor is at hand (provides it when needed)"
    )
    server.add_argument(
        "--flavor",
        type=_flavor,
        default="mariadb",
        metavar="FLAVOR",
        help=f"{', '.join(known_specs())} (default mariadb)",
    )
    server.add_argument(
        "--mysqld", type=_program, help="this server binary (checked against --flavor)"
    )
    server.set_defaults(handler=cmd_testbed_server)
    built.set_defaults(handler=cmd_testbed_images)
    logs = testbed_commands.add_parser("logs", help="the compose testbed's container logs")
    logs.add_argument("--dir", help="testbed directory (default .testbed)")
    logs.add_argument("--tail", type=positive_int, default=30, help="lines per container (30)")
    logs.set_defaults(handler=cmd_testbed_logs)
    status = testbed_commands.add_parser("status", help="replication state of every server")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=cmd_testbed_status)
    _add_role_changes(testbed_commands)


def _add_data(commands: Any) -> None:
    database = commands.add_parser("db", help="the nova schema")
    db_commands = database.add_subparsers(dest="db_command", required=True, parser_class=_Parser)
    sync = db_commands.add_parser(
        "sync",
        help="create offload's tables on the primary; on a Nova database, add only the "
        "heartbeat table (and say what was found and added)",
    )
    sync.add_argument(
        "--extra-indexes",
        action="store_true",
        help="also create offload's indexes that Nova lacks, each named with what it "
        "speeds up (docs/operations.md)",
    )
    sync.set_defaults(handler=cmd_db_sync)
    seeding = commands.add_parser("seed", help="write a realistic data set on the primary")
    seeding.add_argument("--instances", type=positive_int, default=1000)
    seeding.add_argument("--hosts", type=positive_int, default=2, help="hosts compute-1..H")
    seeding.add_argument("--seed", type=_whole, default=0, help="random seed (deterministic)")
    seeding.add_argument(
        "--if-empty", action="store_true", help="write nothing when instances exist already"
    )
    seeding.set_defaults(handler=cmd_seed)


def _add_tasks(commands: Any) -> None:
    tasks = commands.add_parser("tasks", help="the periodic tasks, their interval, on or off")
    tasks.set_defaults(handler=cmd_tasks, sections=("compute",))  # no database: no URL parsed
    run_task = commands.add_parser("run-task", help="run one periodic task once")
    run_task.add_argument("name", help="task name, with or without the leading underscore")
    run_task.add_argument("--host", help="compute host to act for (default: [DEFAULT] host)")
    run_task.add_argument("--json", action="store_true", help="print the run report as JSON")
    run_task.set_defaults(handler=cmd_run_task)
    serve = commands.add_parser("serve", help="run the periodic tasks as a service")
    serve.add_argument("--host", help="compute host to act for (default: [DEFAULT] host)")
    serve.add_argument(
        "--trace",
        type=_output_file,
        metavar="FILE",
        help="append every statement as JSON lines",
    )
    serve.set_defaults(handler=cmd_serve)
    service = commands.add_parser("service", help="the testbed's compute service (background)")
    service_commands = service.add_subparsers(
        dest="service_command", required=True, parser_class=_Parser
    )
    service_commands.add_parser(
        "start", help="start `offload serve` in the background"
    ).set_defaults(handler=cmd_service_start)
    service_commands.add_parser("stop", help="stop it (the running task finishes)").set_defaults(
        handler=cmd_service_stop
    )
    status = commands.add_parser("status", help="replica lag and health; per task routes")
    status.add_argument("--json", action="store_true", help="the same JSON as /status")
    status.set_defaults(handler=cmd_status, sections=("service",))


def _add_replica(commands: Any) -> None:
    replica = commands.add_parser("replica", help="control a replica's lag (testbed)")
    replica_commands = replica.add_subparsers(
        dest="replica_command", required=True, parser_class=_Parser
    )
    for name, text in (
        ("pause", "stop the SQL thread: lag grows"),
        ("resume", "start the SQL thread: the replica catches up"),
    ):
        command = replica_commands.add_parser(name, help=text)
        command.add_argument("--replica", type=_index, default=0, help="replica index (0)")
        command.set_defaults(handler=cmd_replica)
    delay = replica_commands.add_parser("delay", help="MASTER_DELAY / SOURCE_DELAY")
    delay.add_argument("seconds", type=_delay, help="whole seconds (0 removes the delay)")
    delay.add_argument("--replica", type=_index, default=0, help="replica index (0)")
    delay.set_defaults(handler=cmd_replica)


def _add_bench(commands: Any) -> None:
    bench = commands.add_parser(
        "bench",
        help="measure offload ratio, routing overhead, replication wait, task scaling, write load",
    )
    size = bench.add_mutually_exclusive_group()
    size.add_argument(
        "--quick",
        dest="full",
        action="store_false",
        help="smaller data sets, fewer samples (default; under 5 minutes)",
    )
    size.add_argument(
        "--full",
        dest="full",
        action="store_true",
        help="the full sizes (1k-100k instances; takes longer)",
    )
    bench.add_argument(
        "--out",
        type=_output_file,
        metavar="FILE",
        default="bench/results.json",
        help="JSON results (default bench/results.json)",
    )
    bench.add_argument(
        "--config",
        dest="bench_config",
        metavar="FILE",
        help="use this existing testbed's config (default: start a testbed "
        "of its own on free ports, stopped afterwards)",
    )
    bench.add_argument(
        "--docs",
        type=_output_file,
        metavar="FILE",
        help="also write the tables into FILE's generated block (make bench: docs/benchmarks.md)",
    )
    bench.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        choices=["offload", "routing", "replication", "scaling", "write-load", "link", "tls"],
        help="run only this benchmark (repeatable)",
    )
    bench.set_defaults(handler=cmd_bench, full=False)


def _add_knobs(parser: argparse.ArgumentParser, *, where: str) -> None:
    """The servers' own knobs (testbed/knobs.py): testbed up, lag run."""
    parser.add_argument(
        "--replica-workers",
        type=positive_int,
        metavar="N",
        help=f"{where}N parallel appliers per replica (MariaDB slave_parallel_threads, "
        "optimistic; MySQL replica_parallel_workers); 1: one applier",
    )
    parser.add_argument(
        "--semi-sync",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"{where}semi-synchronous replication on (off with --no-semi-sync)",
    )
    parser.add_argument(
        "--group-commit-delay",
        metavar="D",
        help=f"{where}binlog group commit: a commit waits up to D (e.g. 2ms; 0: off) for "
        "others (MariaDB binlog_commit_wait_usec, MySQL binlog_group_commit_sync_delay)",
    )


def _add_matrix(lag_commands: Any) -> None:
    def matrix(args: argparse.Namespace, settings: Settings) -> int:
        from offload.matrix.cli import matrix_command  # noqa: PLC0415

        return matrix_command(args, settings)

    grid = lag_commands.add_parser(
        "matrix",
        help="one load across link RTT x write rate x appliers (x semi-sync, group commit): "
        "matrix.csv, matrix.md, matrix.png",
    )
    grid.add_argument(
        "--rtt", metavar="LIST", help="link round trips, e.g. 0,10,40,80ms (default 0,40)"
    )
    grid.add_argument(
        "--write-rate", metavar="LIST", help="writes a second, e.g. 50,200,800 (default 50,400)"
    )
    grid.add_argument(
        "--workers", metavar="LIST", help="the replica's appliers, e.g. 1,4 (default 1,4)"
    )
    grid.add_argument("--semi-sync", metavar="LIST", help="off, on or off,on (default off)")
    grid.add_argument(
        "--group-commit",
        metavar="LIST",
        help="binlog group commit delays on the primary, e.g. 0,2ms (default 0: off)",
    )
    grid.add_argument(
        "--cell-seconds",
        type=float,
        default=12.0,
        metavar="S",
        help="seconds of load per cell (default 12)",
    )
    grid.add_argument(
        "--max-lag",
        type=float,
        default=0.1,
        metavar="X",
        help="[replica] max_lag of the cells, seconds (default 0.1; lag_policy primary)",
    )
    grid.add_argument(
        "--out",
        type=_output_dir,
        metavar="DIR",
        default="matrix-results",
        help="output directory (default matrix-results)",
    )
    grid.add_argument(
        "--config",
        dest="matrix_config",
        metavar="FILE",
        help="use this existing native testbed's config (default: a testbed of its own "
        "on free ports, stopped afterwards)",
    )
    grid.add_argument(
        "--task-interval",
        type=positive_int,
        default=1,
        metavar="S",
        help="every task runs every S seconds (default 1)",
    )
    grid.add_argument(
        "--instances", type=positive_int, default=200, help="instances seeded (default 200)"
    )
    grid.set_defaults(handler=matrix)


def _add_lag(commands: Any) -> None:
    def run(args: argparse.Namespace, settings: Settings) -> int:
        from offload.experiments.commands import run_command  # noqa: PLC0415

        return run_command(args, settings)

    def compare(args: argparse.Namespace, settings: Settings) -> int:
        from offload.experiments.commands import compare_command  # noqa: PLC0415

        return compare_command(args, settings)

    lag = commands.add_parser("lag", help="replication-lag experiments (docs/experiments.md)")
    lag_commands = lag.add_subparsers(dest="lag_command", required=True, parser_class=_Parser)
    experiment = lag_commands.add_parser(
        "run", help="inject lag, run the tasks under write load; CSV, summary and lag.png"
    )
    experiment.add_argument(
        "--scenario",
        default="steady",
        help="steps joined with +: steady, delay:S, pause:S[@AT], "
        "burst:ROWS[@AT], kill-replica[@AT], link:delay=40ms@A..B, cut@A..B; "
        "or a .toml file",
    )
    experiment.add_argument(
        "--duration",
        type=float,
        metavar="S",
        help="seconds (default: the scenario's end + 10, at least 20)",
    )
    experiment.add_argument(
        "--write-rate",
        type=float,
        metavar="R",
        help="workload operations a second on the primary (default 20)",
    )
    experiment.add_argument(
        "--out",
        type=_output_dir,
        metavar="DIR",
        default="lag-results",
        help="output directory (default lag-results)",
    )
    experiment.add_argument(
        "--max-lag", type=float, metavar="X", help="[replica] max_lag for the run, seconds"
    )
    experiment.add_argument(
        "--policy", choices=["primary", "skip", "stale"], help="[replica] lag_policy for the run"
    )
    experiment.add_argument(
        "--causal",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="[replica] causal_reads for the run",
    )
    experiment.add_argument(
        "--config",
        dest="lag_config",
        metavar="FILE",
        help="use this existing testbed's config (default: start a testbed "
        "of its own on free ports, stopped afterwards)",
    )
    experiment.add_argument(
        "--replicas",
        type=positive_int,
        default=1,
        help="replicas of the testbed it starts (default 1)",
    )
    experiment.add_argument(
        "--task-interval",
        type=positive_int,
        default=1,
        metavar="S",
        help="every task runs every S seconds (default 1)",
    )
    experiment.add_argument(
        "--instances",
        type=positive_int,
        default=400,
        help="instances seeded over compute-1/2 (default 400)",
    )
    _add_knobs(experiment, where="for the run (put back afterwards): ")
    experiment.set_defaults(handler=run)
    _add_matrix(lag_commands)
    side_by_side = lag_commands.add_parser("compare", help="experiments side by side")
    side_by_side.add_argument("dirs", nargs="+", metavar="DIR", help="`lag run --out` dirs")
    side_by_side.set_defaults(handler=compare)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="offload", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"offload {__version__}")
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="nova.conf-style file (default: $OFFLOAD_CONFIG, then "
        ".testbed/offload.conf when present)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in (
        _add_testbed,
        _add_data,
        _add_tasks,
        _add_replica,
        _add_link,
        _add_bench,
        _add_lag,
    ):
        add(commands)
    from offload.fleet.cli import add_fleet  # noqa: PLC0415 - its own package

    add_fleet(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``offload`` console script."""
    try:
        args = build_parser().parse_args(argv)
        logging.basicConfig(
            level=logging.INFO if args.verbose else logging.WARNING,
            format="%(levelname)s %(name)s: %(message)s",
        )
        settings = load_settings(
            find_config_file(args.config, os.environ),
            os.environ,
            sections=getattr(args, "sections", None),
        )
        handler: Handler = args.handler
        return handler(args, settings)
    except OffloadError as exc:
        sys.stderr.write(f"offload: error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("offload: interrupted\n")
        return 130
    except BrokenPipeError:  # `offload ... | head`: the reader left, nothing to report
        sys.stderr.close()
        return 141
    except Exception as exc:
        from sqlalchemy.exc import SQLAlchemyError  # noqa: PLC0415 - only SQLAlchemy raises it

        if not isinstance(exc, SQLAlchemyError):
            raise
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        sys.stderr.write(f"offload: error: database error: {detail}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""The ``offload`` command.

Settings are loaded once, here, and handed down.  Every deliberate error is
one line on stderr (``offload: error: ...; what to do``) with exit status 2
for usage and configuration, 1 for everything else — never a traceback, never
a password.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import URL
from sqlalchemy.exc import SQLAlchemyError

from offload import __version__
from offload.config import Settings, find_config_file, load_settings
from offload.errors import ConfigError, OffloadError, TestbedError
from offload.urls import masked

if TYPE_CHECKING:
    from offload.testbed.service import ServiceRunner

__all__ = ["main"]

Handler = Callable[[argparse.Namespace, Settings], int]
log = logging.getLogger("offload")


def _out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {number}")
    return number


def _port(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {value!r}") from None
    if not (number == 0 or 1024 <= number <= 65000):
        raise argparse.ArgumentTypeError(f"use 1024-65000, or 0 for free ports; got {number}")
    return number


# --- testbed ----------------------------------------------------------------

def _docker_engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        result = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True, timeout=10, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def _testbed_dir(args: argparse.Namespace, settings: Settings) -> Path:
    if args.dir:
        return Path(args.dir)
    if settings.testbed.dir:
        return Path(settings.testbed.dir)
    return Path(".testbed")


def _backend(args: argparse.Namespace) -> str:
    backend: str = args.backend
    if backend == "auto":
        # The compose backend lands with the Docker testbed; until then auto
        # means native even where a Docker engine answers (say so, once).
        if _docker_engine_answers():
            log.info("a Docker engine answers, but the compose backend is not available yet; "
                     "using the native backend")
        return "native"
    if backend == "compose":
        raise TestbedError("the compose backend is not available in this version",
                           hint="use --backend native (the default)")
    return backend


def cmd_testbed_up(args: argparse.Namespace, settings: Settings) -> int:
    from offload.testbed.native import NativeTopology  # noqa: PLC0415

    _backend(args)
    topology = NativeTopology(_testbed_dir(args, settings), port=args.port,
                              replicas=args.replicas, mysqld=args.mysqld)
    info = topology.up()
    _out(f"testbed up ({info.backend}, {info.flavor.value}) in {info.dir}")
    _out(f"  primary   {masked(info.primary_url())}")
    for url in info.replica_urls():
        _out(f"  replica   {masked(url)}")
    _out(f"  config    {topology.config_path}  (passwords in it; mode 0600)")
    _out("next: `make status` shows replication; `make down` stops it")
    return 0


def cmd_testbed_down(args: argparse.Namespace, settings: Settings) -> int:
    from offload.testbed.native import NativeTopology  # noqa: PLC0415

    directory = _testbed_dir(args, settings)
    if not (directory / "state.json").exists():
        _out(f"no testbed in {directory}; nothing to stop")
        return 0
    NativeTopology(directory).down()
    _out(f"testbed in {directory} stopped (data kept; `make clean` removes it)")
    return 0


def cmd_testbed_status(args: argparse.Namespace, settings: Settings) -> int:
    from offload.testbed.status import collect, render  # noqa: PLC0415

    reports = collect(settings)
    if args.json:
        _out(json.dumps([r.as_dict() for r in reports], indent=2))
    else:
        _out(render(reports))
    broken = any(r.error for r in reports) or any(
        r.replica is not None and not r.replica.threads_running for r in reports
    )
    return 1 if broken else 0


# --- db ---------------------------------------------------------------------

def cmd_db_sync(args: argparse.Namespace, settings: Settings) -> int:
    from offload import schema  # noqa: PLC0415
    from offload.db import Database  # noqa: PLC0415

    with Database(settings) as db, db.writer() as session:
        schema.create_all(session.connection())
    _out(f"schema in place on the primary ({masked(settings.require_connection())}): "
         f"{len(schema.NOVA_TABLES)} tables")
    return 0


def cmd_seed(args: argparse.Namespace, settings: Settings) -> int:
    from sqlalchemy import func, select  # noqa: PLC0415

    from offload import schema  # noqa: PLC0415
    from offload.db import Database  # noqa: PLC0415
    from offload.seed import seed  # noqa: PLC0415

    with Database(settings) as db:
        with db.writer() as session:
            schema.create_all(session.connection())
        if args.if_empty:
            with db.reader() as session:
                present = session.scalar(select(func.count()).select_from(schema.Instance))
            if present:
                _out(f"seed: {present} instances already there; nothing written")
                return 0
        summary = seed(db, instances=args.instances, hosts=args.hosts, seed=args.seed)
    _out(f"seeded {summary.instances} instances over {len(summary.hosts)} hosts "
         f"({', '.join(summary.hosts[:3])}{', ...' if len(summary.hosts) > 3 else ''}) "
         f"in {summary.elapsed:.2f}s")
    for table, rows in summary.rows.items():
        _out(f"  {table:<26} {rows}")
    return 0


# --- tasks and the service ---------------------------------------------------

def _for_host(args: argparse.Namespace, settings: Settings) -> Settings:
    host = getattr(args, "host", None)
    return dataclasses.replace(settings, host=host) if host else settings


def cmd_tasks(args: argparse.Namespace, settings: Settings) -> int:
    from offload.compute.manager import TASKS  # noqa: PLC0415

    _out(f"{'task':<36} {'release':<9} {'every':>7}  state")
    for spec in TASKS:
        spacing = spec.spacing(settings.compute)
        off = spec.off_because(settings.compute)
        every = f"{spacing:.0f}s" if spacing is not None else "-"
        _out(f"{spec.name:<36} {spec.release:<9} {every:>7}  {'off: ' + off if off else 'on'}")
    return 0


def cmd_run_task(args: argparse.Namespace, settings: Settings) -> int:
    from offload.db import Database  # noqa: PLC0415
    from offload.preflight import preflight  # noqa: PLC0415
    from offload.service import build_manager  # noqa: PLC0415

    settings = _for_host(args, settings)
    with Database(settings) as db:
        manager = build_manager(settings, db)
        spec = manager.spec(args.name)  # unknown names fail before any connection
        for warning in preflight(settings):
            sys.stderr.write(f"offload: warning: {warning}\n")
        manager.init_host()
        report = manager.run(spec.name)
    if args.json:
        _out(json.dumps(report.as_dict(), indent=2, default=str))
        return 0
    statements = report.details.get("statements", {})
    _out(f"{report.task} on {report.host}: {report.duration * 1000:.1f} ms, "
         f"{report.items} items, {report.written} written, {report.rejected} rejected"
         + (f" (skipped: {report.skipped})" if report.skipped else ""))
    for route, verbs in statements.get("by_route", {}).items():
        servers = ", ".join(statements["servers"].get(route, []))
        _out(f"  {route:<8} {dict(verbs)}  on {servers}")
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from offload.service import Service  # noqa: PLC0415

    settings = _for_host(args, settings)
    if args.trace:
        settings = dataclasses.replace(
            settings, service=dataclasses.replace(settings.service, trace_file=args.trace))
    from offload.preflight import preflight  # noqa: PLC0415

    settings.require_connection()
    for warning in preflight(settings):
        sys.stderr.write(f"offload: warning: {warning}\n")
    Service(settings).run()
    return 0


def _runner(settings: Settings) -> ServiceRunner:
    from offload.testbed.service import ServiceRunner  # noqa: PLC0415

    if not settings.testbed.dir or settings.source is None:
        raise ConfigError("`offload service` manages a testbed's compute service, and this "
                          "config is not a testbed's",
                          hint="run `make up` first, or run `offload serve` in the foreground")
    return ServiceRunner(Path(settings.testbed.dir), settings.source, settings.service.http_port)


def cmd_service_start(args: argparse.Namespace, settings: Settings) -> int:
    pid = _runner(settings).start()
    _out(f"compute service for {settings.host} running (pid {pid}), "
         f"http://127.0.0.1:{settings.service.http_port}/status; log in "
         f"{Path(settings.testbed.dir) / 'service.log'}")
    return 0


def cmd_service_stop(args: argparse.Namespace, settings: Settings) -> int:
    if _runner(settings).stop():
        _out("compute service stopped")
    else:
        _out("compute service was not running")
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from offload.service import Service  # noqa: PLC0415
    from offload.statusview import render_status  # noqa: PLC0415
    from offload.testbed.service import fetch  # noqa: PLC0415

    settings.require_connection()
    status: dict[str, Any] | None = None
    if settings.service.http_port:
        try:
            status = json.loads(fetch(settings.service.http_port, "/status", timeout=10))
        except OSError:
            status = None
    live = status is not None
    if status is None:  # no service: read the replicas from here
        service = Service(settings)
        try:
            status = service.status()
        finally:
            service.close()
    if args.json:
        _out(json.dumps(status, indent=2))
    else:
        _out(render_status(status, live=live))
    return 0 if status["health"] == "ok" else 1


def _replica_admin(settings: Settings, index: int) -> URL:
    urls = settings.testbed.replica_admin_connections
    if not urls:
        raise ConfigError("controlling replication needs a privileged account on the replica",
                          hint="use the testbed's config (`make up` writes one), whose "
                               "[testbed] replica_admin_connections has it")
    if not 0 <= index < len(urls):
        raise ConfigError(f"there is no replica {index}; this config has {len(urls)}",
                          hint=f"use --replica 0..{len(urls) - 1}")
    return urls[index]


def cmd_replica(args: argparse.Namespace, settings: Settings) -> int:
    from sqlalchemy import create_engine  # noqa: PLC0415
    from sqlalchemy.pool import NullPool  # noqa: PLC0415

    from offload import replication  # noqa: PLC0415
    from offload.dberrors import install_translation  # noqa: PLC0415

    url = _replica_admin(settings, args.replica)
    engine = create_engine(url, poolclass=NullPool)
    install_translation(engine, name=f"replica{args.replica}")
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
                _out(f"replica{args.replica}: applies each transaction {args.seconds}s after "
                     "the primary committed it")
    finally:
        engine.dispose()
    return 0


# --- parser -----------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line with the hint to use --help."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(message, hint=f"see `{self.prog} --help`")


def _add_testbed(commands: Any) -> None:
    testbed = commands.add_parser("testbed", help="a primary with GTID replicas")
    testbed_commands = testbed.add_subparsers(dest="testbed_command", required=True,
                                              parser_class=_Parser)
    up = testbed_commands.add_parser("up", help="start the testbed (idempotent)")
    up.add_argument("--backend", choices=["auto", "native", "compose"], default="auto")
    up.add_argument("--dir", help="testbed directory (default .testbed)")
    up.add_argument("--replicas", type=_positive, default=1, help="number of replicas")
    up.add_argument("--port", type=_port, default=33061,
                    help="primary port; replicas take the next ones (0: free ports)")
    up.add_argument("--mysqld", help="server binary (default: mariadbd or mysqld on PATH)")
    up.set_defaults(handler=cmd_testbed_up)
    down = testbed_commands.add_parser("down", help="stop every server the testbed started")
    down.add_argument("--dir", help="testbed directory (default .testbed)")
    down.set_defaults(handler=cmd_testbed_down)
    status = testbed_commands.add_parser("status", help="replication state of every server")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=cmd_testbed_status)


def _add_data(commands: Any) -> None:
    database = commands.add_parser("db", help="the nova schema")
    db_commands = database.add_subparsers(dest="db_command", required=True, parser_class=_Parser)
    sync = db_commands.add_parser("sync", help="create the tables on the primary")
    sync.set_defaults(handler=cmd_db_sync)
    seeding = commands.add_parser("seed", help="write a realistic data set on the primary")
    seeding.add_argument("--instances", type=_positive, default=1000)
    seeding.add_argument("--hosts", type=_positive, default=2, help="hosts compute-1..H")
    seeding.add_argument("--seed", type=int, default=0, help="random seed (deterministic)")
    seeding.add_argument("--if-empty", action="store_true",
                         help="write nothing when instances exist already")
    seeding.set_defaults(handler=cmd_seed)


def _add_tasks(commands: Any) -> None:
    tasks = commands.add_parser("tasks", help="the periodic tasks, their interval, on or off")
    tasks.set_defaults(handler=cmd_tasks)
    run_task = commands.add_parser("run-task", help="run one periodic task once")
    run_task.add_argument("name", help="task name, with or without the leading underscore")
    run_task.add_argument("--host", help="compute host to act for (default: [DEFAULT] host)")
    run_task.add_argument("--json", action="store_true", help="print the run report as JSON")
    run_task.set_defaults(handler=cmd_run_task)
    serve = commands.add_parser("serve", help="run the periodic tasks as a service")
    serve.add_argument("--host", help="compute host to act for (default: [DEFAULT] host)")
    serve.add_argument("--trace", metavar="FILE", help="append every statement as JSON lines")
    serve.set_defaults(handler=cmd_serve)
    service = commands.add_parser("service", help="the testbed's compute service (background)")
    service_commands = service.add_subparsers(dest="service_command", required=True,
                                              parser_class=_Parser)
    service_commands.add_parser("start", help="start `offload serve` in the background") \
        .set_defaults(handler=cmd_service_start)
    service_commands.add_parser("stop", help="stop it (the running task finishes)") \
        .set_defaults(handler=cmd_service_stop)
    status = commands.add_parser("status", help="replica lag and health; per task routes")
    status.add_argument("--json", action="store_true", help="the same JSON as /status")
    status.set_defaults(handler=cmd_status)


def _add_replica(commands: Any) -> None:
    replica = commands.add_parser("replica", help="control a replica's lag (testbed)")
    replica_commands = replica.add_subparsers(dest="replica_command", required=True,
                                              parser_class=_Parser)
    for name, text in (("pause", "stop the SQL thread: lag grows"),
                       ("resume", "start the SQL thread: the replica catches up")):
        command = replica_commands.add_parser(name, help=text)
        command.add_argument("--replica", type=int, default=0, help="replica index (0)")
        command.set_defaults(handler=cmd_replica)
    delay = replica_commands.add_parser("delay", help="MASTER_DELAY / SOURCE_DELAY")
    delay.add_argument("seconds", type=int, help="whole seconds (0 removes the delay)")
    delay.add_argument("--replica", type=int, default=0, help="replica index (0)")
    delay.set_defaults(handler=cmd_replica)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="offload", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"offload {__version__}")
    parser.add_argument("--config", metavar="FILE",
                        help="nova.conf-style file (default: $OFFLOAD_CONFIG, then "
                             ".testbed/offload.conf when present)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in (_add_testbed, _add_data, _add_tasks, _add_replica):
        add(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``offload`` console script."""
    try:
        args = build_parser().parse_args(argv)
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                            format="%(levelname)s %(name)s: %(message)s")
        settings = load_settings(find_config_file(args.config, os.environ), os.environ)
        handler: Handler = args.handler
        return handler(args, settings)
    except OffloadError as exc:
        sys.stderr.write(f"offload: error: {exc}\n")
        return exc.exit_code
    except SQLAlchemyError as exc:
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        sys.stderr.write(f"offload: error: database error: {detail}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("offload: interrupted\n")
        return 130
    except BrokenPipeError:  # `offload ... | head`: the reader left, nothing to report
        sys.stderr.close()
        return 141


if __name__ == "__main__":
    sys.exit(main())

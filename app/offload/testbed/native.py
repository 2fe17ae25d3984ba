"""The native testbed: a primary and GTID replicas as local server processes.

No Docker needed — the embedded default.  Layout of the testbed directory::

    DIR/state.json          what runs: flavor, ports, pids (0600)
    DIR/credentials.json    generated passwords (0600)
    DIR/offload.conf        the config every later command reads (0600)
    DIR/primary/            my.cnf, data/, error.log, mysqld.sock (unless too long a path)
    DIR/replica0/ ...
    DIR/links.json          the replicas' shaped links (`offload link`) and, with endpoints,
                            the clients' endpoints (primary-endpoint, replicaN-endpoint):
                            link proxies a role change retargets (testbed/roles.py)

``up()`` is idempotent: a running, healthy testbed is left alone; stale
processes of an earlier run (a crashed launcher) are swept first; data dirs are
kept between ``down()`` and ``up()``.  A half-started testbed is stopped before
``up()`` raises.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
from collections.abc import Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Connection, Engine, create_engine, text
from sqlalchemy.pool import NullPool

from offload import replication
from offload.errors import OffloadError, ServerDiverged, TestbedError
from offload.link.runner import LinkRecord, LinkRunner
from offload.testbed.files import (
    LOOPBACK,
    NativeState,
    NovaSchemaRecord,
    ServerRecord,
    load_credentials,
    read_state_of,
    save_state,
)
from offload.testbed.knobs import ApplierKnobs, apply_to_primary, apply_to_replica
from offload.testbed.mysqld import (
    ServerProgram,
    find_mysql_dir,
    find_server,
    probe_server,
    render_sql,
    socket_path,
    split_sql,
    write_defaults_file,
)
from offload.testbed.nova import default_schema, parse_schema, sync_testbed
from offload.testbed.process import ServerProcess, cmdline, pid_alive, stop_process_group
from offload.testbed.servers import FlavorSpec, default_flavor
from offload.testbed.tls import (
    TlsFiles,
    default_tls,
    ensure_certificates,
    replica_tls_placeholders,
)
from offload.testbed.topology import (
    NOVA_DATABASE,
    Credentials,
    TestbedInfo,
    loopback_url,
    write_config,
)
from offload.waiting import Deadline, wait_for

__all__ = [
    "DEFAULT_PORT",
    "NO_REPLICA_CUT",
    "NativeTopology",
    "endpoint_name",
    "free_ports",
    "is_replica_endpoint",
]

DEFAULT_PORT = 33061
#: the compute service listens on the primary's port + 19 (33080 by default)
SERVICE_PORT_OFFSET = 19
#: with endpoints on the well-known ports, the servers listen from the primary's + 20 (33081)
SERVER_PORT_OFFSET = 20


#: a replica endpoint with no replica to lead to stays cut this long (until a rejoin)
NO_REPLICA_CUT = 10 * 365 * 86400.0


def endpoint_name(slot: str) -> str:
    """The link proxy that is the clients' endpoint of ``slot`` (primary, replicaN)."""
    return f"{slot}-endpoint"


def is_replica_endpoint(link: str) -> bool:
    """Whether the link named ``link`` is a replica slot's endpoint."""
    return link.startswith("replica") and link.endswith("-endpoint")


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((LOOPBACK, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class NativeTopology:
    """A primary and ``replicas`` GTID replicas, run from the local server binary."""

    backend = "native"

    def __init__(
        self,
        directory: Path,
        *,
        port: int = DEFAULT_PORT,
        replicas: int = 1,
        mysqld: str | None = None,
        flavor: FlavorSpec | None = None,
        bind_to_parent: bool = False,
        start_timeout: float = 60.0,
        knobs: ApplierKnobs | None = None,
        schema: str | None = None,
        tls: bool | None = None,
        endpoints: bool = False,
    ) -> None:
        if replicas < 1:
            raise TestbedError(
                f"a testbed needs at least one replica, asked for {replicas}",
                hint="use --replicas 1 or more",
            )
        if replicas >= SERVICE_PORT_OFFSET:
            raise TestbedError(f"at most {SERVICE_PORT_OFFSET - 1} replicas, asked for {replicas}")
        if not 0 <= port <= 65535 - SERVER_PORT_OFFSET - SERVICE_PORT_OFFSET:
            raise TestbedError(
                f"port {port} is out of range", hint="use 1024-65000, or 0 for free ports"
            )
        self.dir = directory.resolve()
        self.port = port
        self.replicas = replicas
        self.mysqld = mysqld
        self.flavor = flavor if flavor is not None else default_flavor()
        self.bind_to_parent = bind_to_parent
        self.start_timeout = start_timeout
        self.knobs = knobs if knobs is not None else ApplierKnobs()
        #: offload | nova: what makes the nova database (nova: Nova's own migrations);
        #: None: the existing testbed's, else offload (or $OFFLOAD_SCHEMA)
        self.schema_asked = parse_schema(schema) if schema is not None else default_schema()
        self.schema = self.schema_asked or "offload"
        #: TLS required by the servers and verified by clients (testbed/tls.py);
        #: None: $OFFLOAD_TLS, else the existing testbed's, else on
        self.tls_asked = tls if tls is not None else default_tls()
        self.tls = True if self.tls_asked is None else self.tls_asked
        self.servers: dict[str, ServerProcess] = {}
        #: a new testbed's clients reach the servers through endpoints a role change moves
        #: (an existing testbed keeps what it was made with)
        self.endpoints = endpoints

    # --- state --------------------------------------------------------------

    @property
    def state_path(self) -> Path:
        return self.dir / "state.json"

    @property
    def config_path(self) -> Path:
        return self.dir / "offload.conf"

    def _load_state(self) -> NativeState | None:
        return read_state_of(self.dir, NativeState)

    def _require_state(self) -> NativeState:
        state = self._load_state()
        if state is None or not state.initialised:
            raise TestbedError(f"the testbed in {self.dir} is not up", hint="run up() first")
        return state

    def _save_state(self, state: NativeState) -> None:
        save_state(self.dir, state)

    def state(self) -> NativeState:
        """The state of this initialised testbed (one line when it is not up)."""
        return self._require_state()

    def save(self, state: NativeState) -> None:
        """Record ``state`` (a role change's new roles)."""
        self._save_state(state)

    def credentials(self) -> Credentials:
        return self._credentials()

    def _credentials(self) -> Credentials:
        return load_credentials(self.dir)

    # --- processes ----------------------------------------------------------

    @staticmethod
    def _is_ours(pid: int, defaults_file: str) -> bool:
        return pid_alive(pid) and f"--defaults-file={defaults_file}" in cmdline(pid)

    def _sweep(self, state: NativeState) -> NativeState:
        """Stop server processes an earlier run left behind (crashed launcher)."""
        for record in state.servers.values():
            if record.pid:
                stop_process_group(
                    record.pid, is_ours=partial(self._is_ours, defaults_file=record.defaults_file)
                )
        return state.without_pids()

    def _running(self, state: NativeState) -> bool:
        servers = state.servers
        return bool(servers) and all(self.running(name, state) for name in servers)

    def running(self, name: str, state: NativeState | None = None) -> bool:
        """Whether server ``name``'s recorded process runs (and is that server's)."""
        record = (state or self._require_state()).servers[name]
        return record.pid is not None and self._is_ours(record.pid, record.defaults_file)

    # --- admin connections (root over the Unix socket) ----------------------

    def _root_engine(self, name: str) -> Engine:
        url = URL.create(
            "mysql+pymysql",
            username="root",
            password="",
            query={"unix_socket": str(socket_path(self.dir / name))},
        )
        return create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 2})

    def _answers(self, name: str) -> bool:
        # PyMySQL leaves its socket open when a Unix-socket connect fails (a
        # ResourceWarning later): knock with a socket of our own until one listens
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as knock:
            try:
                knock.connect(str(socket_path(self.dir / name)))
            except OSError:
                return False
        engine = self._root_engine(name)
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except OffloadError:
            return False
        except Exception:  # noqa: BLE001 - any failure means "not ready yet"
            return False
        finally:
            engine.dispose()

    @contextlib.contextmanager
    def connect(self, name: str) -> Iterator[Connection]:
        """An autocommit root connection to server ``name`` (over its Unix socket)."""
        engine = self._root_engine(name)
        try:
            with engine.connect() as conn:
                yield conn.execution_options(isolation_level="AUTOCOMMIT")
        finally:
            engine.dispose()

    def _run_script(self, name: str, template: Path, values: dict[str, str]) -> None:
        engine = self._root_engine(name)
        try:
            with engine.begin() as conn:
                cursor = conn.connection.cursor()
                for statement in split_sql(render_sql(template, values)):
                    cursor.execute(statement)  # no parameters: '%' is literal
        finally:
            engine.dispose()

    # --- up / down ----------------------------------------------------------

    def _names(self) -> list[str]:
        return ["primary", *(f"replica{i}" for i in range(self.replicas))]

    def _program(self, state: NativeState | None) -> ServerProgram:
        """The server: as asked; for an existing testbed without a spec, the one that made it."""
        spec = self.flavor
        made = state is not None and state.initialised
        if (
            spec is not None
            and state is not None
            and made
            and not spec.accepts(replication.Flavor(state.flavor), state.version)
        ):
            raise TestbedError(
                f"the testbed in {self.dir} was made with "
                f"{f'{state.flavor} {state.version}'.strip()}, asked for {spec}",
                hint=f"remove {self.dir} (`make clean`) to start afresh",
            )
        if spec is None and not self.mysqld and state is not None and made and state.spec:
            spec = FlavorSpec.parse(state.spec)
        program = find_server(self.mysqld, spec=spec)
        if (
            state is not None
            and made
            and state.server
            and not self.mysqld
            and state.server != str(program.path)
        ):
            recorded = probe_server(Path(state.server))
            if recorded is not None and recorded.flavor is program.flavor:
                return recorded  # the very binary that made the data dirs
        return program

    def _plan(self, state: NativeState | None, program: ServerProgram) -> NativeState:
        """Ports, flavor and server records: from the existing state, or new ones."""
        if state is not None and state.initialised:
            if state.flavor != program.flavor.value:
                raise TestbedError(
                    f"the testbed in {self.dir} was made with {state.flavor}, "
                    f"but the server found now is {program.flavor.value}",
                    hint=f"remove {self.dir} (`make clean`) to start afresh",
                )
            if len(state.replica_ports) != self.replicas:
                raise TestbedError(
                    f"the testbed in {self.dir} has {len(state.replica_ports)} replica(s), "
                    f"asked for {self.replicas}",
                    hint=f"remove {self.dir} (`make clean`) to change the topology",
                )
            return state
        # the servers' ports, then the compute service's HTTP port; with endpoints, the
        # endpoints take the well-known ports (33061: the primary, whichever server it is)
        # and the servers the ones after the service's
        count = self.replicas + 1
        first_server = self.port + (SERVER_PORT_OFFSET if self.endpoints else 0)
        endpoint_ports = (
            (free_ports(count) if self.port == 0 else [self.port + i for i in range(count)])
            if self.endpoints
            else []
        )
        ports = (
            free_ports(count + 1)
            if self.port == 0
            else [*(first_server + i for i in range(count)), self.port + SERVICE_PORT_OFFSET]
        )
        return NativeState(
            flavor=program.flavor.value,
            version=program.version,
            server=str(program.path),
            spec=str(self.flavor) if self.flavor is not None else "",
            host=LOOPBACK,
            primary_port=(endpoint_ports or ports)[0],
            replica_ports=tuple((endpoint_ports or ports[:-1])[1:]),
            service_port=ports[-1],
            endpoints=self.endpoints,
            initialised=False,
            schema=self.schema,
            tls=self.tls,
            servers={
                name: ServerRecord(
                    port=port, server_id=index + 1, defaults_file=str(self.dir / name / "my.cnf")
                )
                for index, (name, port) in enumerate(zip(self._names(), ports[:-1], strict=True))
            },
        )

    def _tls_files(self, state: NativeState) -> TlsFiles | None:
        return TlsFiles.in_dir(self.dir) if state.tls else None

    def _info(self, state: NativeState, creds: Credentials) -> TestbedInfo:
        host, replica_ports, tls = state.host, state.replica_ports, self._tls_files(state)

        def url(user: str, password: str, port: int, database: str | None) -> URL:
            return loopback_url(user, password, port, database, host, tls=tls)

        def urls(user: str, password: str, database: str | None) -> tuple[URL, ...]:
            return tuple(url(user, password, port, database) for port in replica_ports)

        return TestbedInfo(
            backend=self.backend,
            dir=self.dir,
            flavor=replication.Flavor(state.flavor),
            primary=url("nova", creds.nova, state.primary_port, NOVA_DATABASE),
            replicas=urls("nova_ro", creds.nova_ro, NOVA_DATABASE),
            admin=url("offload_admin", creds.admin, state.primary_port, None),
            replica_admins=urls("offload_admin", creds.admin, None),
            service_port=state.service_port,
            version=state.version,
            schema=state.schema,
        )

    def up(self) -> TestbedInfo:
        """Start primary and replicas; return when replication runs on every replica."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        state = self._load_state()
        creds = self._credentials()
        if state is not None and state.initialised:
            if self.schema_asked is None:
                self.schema = state.schema  # not asked for: the testbed's own
            if state.schema != self.schema:
                raise TestbedError(
                    f"the testbed in {self.dir} was made with schema {state.schema}, "
                    f"asked for {self.schema}",
                    hint=f"remove {self.dir} (`make clean`) to start afresh",
                )
            if self.tls_asked is None:
                self.tls = state.tls
            if state.tls != self.tls:
                made, asked = ("on" if v else "off" for v in (state.tls, self.tls))
                raise TestbedError(
                    f"the testbed in {self.dir} was made with TLS {made}, asked for TLS {asked}",
                    hint=f"remove {self.dir} (`make clean`) to start afresh",
                )
        if state is not None and state.initialised and self._running(state):
            return self._resume(state, creds)
        if state is not None:
            state = self._sweep(state)
        program = self._program(state)
        state = self._plan(state, program)
        if state.tls:
            ensure_certificates(self.dir)
        self._save_state(state)
        try:
            self._ensure_endpoints(state)  # first: a busy endpoint port stops nothing started
            state = self._start_all(state, program)
            if not state.initialised:
                self._bootstrap(state, program, creds)
                state = replace(state, initialised=True)
                self._save_state(state)
            self._start_links(state)
            self._apply_knobs(state)
            self._await_replication(state)
            state = self._nova_schema(state, self._info(state, creds))
        except BaseException:
            # the file holds every pid recorded so far, even of a start that failed midway
            self._stop_all(self._load_state() or state)
            self._links().stop_all()
            if not state.initialised:
                # a half-bootstrapped data dir cannot be trusted: start afresh next time
                # (the logs stay: the error names them)
                for name in state.servers:
                    shutil.rmtree(self.dir / name / "data", ignore_errors=True)
            raise
        info = self._info(state, creds)
        write_config(info, self.config_path)
        self._rejoin_departed()
        return info

    def _start_links(self, state: NativeState) -> None:
        """Every link and endpoint runs; a replica endpoint with no replica behind it (it
        leads to the primary) refuses connections until a rejoin moves it."""
        self._ensure_endpoints(state)
        runner = self._links()
        runner.start_recorded()
        for name, record in runner.records().items():
            if is_replica_endpoint(name) and record.upstream_port == state.source_port:
                runner.control(name, "POST", "/cut", {"seconds": NO_REPLICA_CUT})

    def _resume(self, state: NativeState, creds: Credentials) -> TestbedInfo:
        """A testbed whose servers all run: links, knobs, replication, config (and rejoins)."""
        info = self._info(state, creds)
        self._start_links(state)
        self._apply_knobs(state)
        self._await_replication(state)
        self._nova_schema(state, info)
        write_config(info, self.config_path)
        self._rejoin_departed()
        return info

    def _rejoin_departed(self) -> None:
        """A primary that a failover left, running again: it rejoins as a replica, or is
        recorded as diverged (kept out) when it holds transactions the primary lacks."""
        from offload.testbed import roles  # noqa: PLC0415 - roles builds on this module

        state = self._require_state()
        for name in state.departed:
            with contextlib.suppress(ServerDiverged):  # recorded: `testbed status` shows it
                roles.rejoin(self, name)

    def _nova_schema(self, state: NativeState, info: TestbedInfo) -> NativeState:
        """schema nova: Nova's migrations make the nova database once, then it replicates."""
        if self.schema != "nova" or state.nova_schema is not None:
            return state
        synced = sync_testbed(info, workdir=self.dir)
        state = replace(
            state,
            nova_schema=NovaSchemaRecord(
                revision=synced.revision, tables=synced.tables, seconds=round(synced.seconds, 1)
            ),
        )
        self._save_state(state)
        self._await_replication(state)
        return state

    def kill(self, name: str) -> None:
        """SIGKILL one server of a running testbed (fault injection): no clean shutdown."""
        state = self._require_state()
        record = state.servers[name]
        server = self.servers.pop(name, None)
        if server is not None:
            server.kill()
        elif record.pid and self._is_ours(record.pid, record.defaults_file):
            pid = record.pid
            os.killpg(pid, signal.SIGKILL)
            wait_for(lambda: not pid_alive(pid), Deadline(10), interval=0.02)
        self._save_state(state.with_pid(name, None))

    def start(self, name: str) -> None:
        """Start one stopped server of an initialised testbed again, on its data."""
        state = self._require_state()
        program = self._program(state)
        self._write_role(state, name, program.flavor)
        self._start_all(state, program, only=name)

    def _write_role(self, state: NativeState, name: str, flavor: replication.Flavor) -> None:
        """``name``'s my.cnf for the role it has now (a replica starts read-only)."""
        record = state.servers[name]
        write_defaults_file(
            Path(record.defaults_file),
            mysql_dir=find_mysql_dir(),
            flavor=flavor,
            role="primary" if name == state.primary else "replica",
            server_id=record.server_id,
            port=record.port,
            host=state.host,
            tls=self._tls_files(state),
        )

    def write_roles(self, state: NativeState) -> None:
        """Every server's my.cnf for its role in ``state`` (after a role change)."""
        flavor = replication.Flavor(state.flavor)
        for name in state.servers:
            self._write_role(state, name, flavor)

    def _start_all(
        self, state: NativeState, program: ServerProgram, *, only: str | None = None
    ) -> NativeState:
        """Start the servers (or ``only`` one); the state with their pids, saved at each."""
        for name, record in state.servers.items():
            if only is not None and name != only:
                continue
            home = self.dir / name
            defaults = Path(record.defaults_file)
            if not state.initialised or not defaults.exists():
                self._write_role(state, name, program.flavor)
            if not (home / "data").exists():
                program.initialise(home / "data", home / "init.log")
            server = ServerProcess(
                name=name,
                args=program.run_command(defaults),
                port=record.port,
                log_path=home / "error.log",
                ready=partial(self._answers, name),
                start_timeout=self.start_timeout,
                bind_to_parent=self.bind_to_parent,
            )
            self.servers[name] = server
            # record the pid as soon as it exists: a crash now leaves something to sweep
            server.start()
            state = state.with_pid(name, server.pid)
            self._save_state(state)
        return state

    def _bootstrap(self, state: NativeState, program: ServerProgram, creds: Credentials) -> None:
        mysql_dir = find_mysql_dir() / "bootstrap"
        values = creds.placeholders()
        self._run_script(state.primary, mysql_dir / "primary.sql", values)
        for name in state.replicas():
            self.replicate(name, state)

    def replicate(self, name: str, state: NativeState) -> None:
        """Make ``name`` replicate from the acting primary by GTID auto-position
        (``replica-<flavor>.sql``: MASTER_USE_GTID=slave_pos / SOURCE_AUTO_POSITION=1)."""
        values = {
            **self._credentials().placeholders(),
            "PRIMARY_HOST": state.host,
            "PRIMARY_PORT": str(state.source_port),
            # the channel over TLS verified against the testbed's CA (when it has TLS)
            **replica_tls_placeholders(self._tls_files(state)),
        }
        template = find_mysql_dir() / "bootstrap" / f"replica-{state.flavor}.sql"
        self._run_script(name, template, values)

    def _apply_knobs(self, state: NativeState) -> None:
        """The servers' own applier and semi-sync settings (testbed/knobs.py), if asked."""
        if self.knobs.empty:
            return
        flavor = replication.Flavor(state.flavor)
        for name in state.servers:
            engine = self._root_engine(name)
            try:
                with engine.connect() as conn:
                    if name == state.primary:
                        apply_to_primary(conn, flavor, self.knobs)
                    else:
                        apply_to_replica(conn, flavor, self.knobs)
            finally:
                engine.dispose()

    def _await_replication(self, state: NativeState) -> None:
        """Every replica's IO and SQL threads run and it applied the primary's position."""
        flavor = replication.Flavor(state.flavor)
        primary = self._root_engine(state.primary)
        try:
            with primary.connect() as conn:
                position = replication.gtid_position(conn, flavor)
        finally:
            primary.dispose()
        for name in state.replicas():
            engine = self._root_engine(name)
            try:
                with engine.connect() as conn:
                    last: list[replication.ReplicaStatus | None] = [None]

                    def threads_run(c: Any = conn, box: list[Any] = last) -> bool:
                        box[0] = replication.replica_status(c, flavor)
                        return box[0] is not None and box[0].threads_running

                    if not wait_for(threads_run, Deadline(self.start_timeout), interval=0.05):
                        status = last[0].describe() if last[0] else "not configured as a replica"
                        raise TestbedError(
                            f"replication on {name} did not start ({status})",
                            hint=f"see {self.dir / name / 'error.log'}",
                        )
                    replication.wait_for_gtid(
                        conn, position, self.start_timeout, flavor, replica=name
                    )
            finally:
                engine.dispose()

    def _stop_all(self, state: NativeState | None) -> None:
        if state is None:
            return
        for name in reversed(list(state.servers)):
            record = state.servers[name]
            server = self.servers.pop(name, None)
            if server is not None:
                server.stop()
            elif record.pid:
                stop_process_group(
                    record.pid, is_ours=partial(self._is_ours, defaults_file=record.defaults_file)
                )
        with contextlib.suppress(OSError):
            self._save_state(state.without_pids())

    def down(self) -> None:
        """Stop every server this testbed started (data dirs are kept), then their links."""
        self._stop_all(self._load_state())
        self._links().stop_all()

    # --- shaped links (offload.link) ----------------------------------------

    def _links(self) -> LinkRunner:
        return LinkRunner(self.dir, bind_to_parent=self.bind_to_parent)

    def links(self) -> LinkRunner:
        """The testbed's link proxies: shaped replication links and the endpoints."""
        return self._links()

    def _ensure_endpoints(self, state: NativeState) -> None:
        """Start the endpoints a testbed with endpoints lacks (a new testbed's first up):
        ``primary-endpoint`` to the acting primary, ``replicaN-endpoint`` to the Nth replica."""
        if not state.endpoints:
            return
        runner = self._links()
        known = runner.records()
        replicas = state.replicas()
        slots = [
            (endpoint_name("primary"), state.primary_port, state.primary),
            *(
                (endpoint_name(f"replica{i}"), port, replicas[i] if i < len(replicas) else "")
                for i, port in enumerate(state.replica_ports)
            ),
        ]
        for link, listen, server in slots:
            if link in known or not server:
                continue
            (control,) = free_ports(1)
            runner.start(
                LinkRecord(
                    name=link,
                    listen_port=listen,
                    control_port=control,
                    upstream_host=state.host,
                    upstream_port=state.servers[server].port,
                )
            )

    def _point(self, name: str, port: int) -> None:
        state = self._require_state()
        engine = self._root_engine(name)
        try:
            with engine.connect() as conn:
                replication.point_at(conn, replication.Flavor(state.flavor), state.host, port)
        finally:
            engine.dispose()

    def attach_link(self, name: str) -> LinkRecord:
        """Put a link proxy in ``name``'s replication path (started, and the replica's
        source pointed at it); a link already there is left alone."""
        state = self._require_state()
        if name not in state.replicas():
            replicas = ", ".join(state.replicas())
            raise TestbedError(f"there is no replica {name!r}", hint=f"name one of: {replicas}")
        runner = self._links()
        known = runner.records().get(name)
        listen, control = (
            (known.listen_port, known.control_port) if known is not None else free_ports(2)
        )
        record = runner.start(
            LinkRecord(
                name=name,
                listen_port=listen,
                control_port=control,
                upstream_host=state.host,
                upstream_port=state.source_port,
            )
        )
        if known is None:
            self._point(name, record.listen_port)
        return record

    def route_replica(self, name: str, *, through_link: bool) -> None:
        """Point ``name`` at its link (attached before) or straight at the primary; the
        link keeps running either way (the bench compares the two on one replica)."""
        port = (
            self._links().record(name).listen_port
            if through_link
            else self._require_state().source_port
        )
        self._point(name, port)

    def detach_link(self, name: str) -> None:
        """Point ``name`` at the primary again and stop its link."""
        runner = self._links()
        if name not in runner.records():
            return
        self._point(name, self._require_state().source_port)
        runner.stop(name, forget=True)

    # --- role changes (testbed/roles.py's RoleTopology) ----------------------

    def movable(self) -> NativeState:
        """The state, if its clients' endpoints can be moved and nothing else is in the way."""
        state = self._require_state()
        if not state.endpoints:
            raise TestbedError(
                f"the testbed in {self.dir} has no endpoints: its clients hold the servers' "
                "own ports, which a role change cannot move",
                hint="make one with endpoints (`offload testbed up`, not --no-endpoint) after "
                "`make clean`",
            )
        shaped = sorted(n for n in self._links().records() if not n.endswith("-endpoint"))
        if shaped:
            raise TestbedError(
                f"{', '.join(shaped)} replicates through a shaped link (`offload link`)",
                hint=f"remove it first: `offload link remove {shaped[0]}`",
            )
        return state

    def record_roles(
        self,
        *,
        primary: str | None = None,
        departed: tuple[str, ...] | None = None,
        diverged: tuple[str, ...] | None = None,
    ) -> NativeState:
        """Record the roles given; every my.cnf rewritten, so a restarted server comes
        back in its new role."""
        state = self._require_state()
        state = replace(
            state,
            primary=state.primary if primary is None else primary,
            departed=state.departed if departed is None else departed,
            diverged=state.diverged if diverged is None else diverged,
        )
        self._save_state(state)
        self.write_roles(state)
        return state

    def follow(self, name: str) -> None:
        self.replicate(name, self._require_state())

    def repoint(self, name: str) -> None:
        self._point(name, self._require_state().source_port)

    def await_replicas(self) -> None:
        """Every replica replicates and has the primary's position."""
        self._await_replication(self._require_state())

    def endpoint_targets(self) -> dict[str, str]:
        by_port = {r.port: n for n, r in self._require_state().servers.items()}
        return {
            name: by_port.get(record.upstream_port, "")
            for name, record in self._links().records().items()
            if name.endswith("-endpoint")
        }

    def move_endpoint(self, endpoint: str, server: str | None) -> None:
        links = self._links()
        if server is None:
            links.control(endpoint, "POST", "/cut", {"seconds": NO_REPLICA_CUT})
        else:
            state = self._require_state()
            links.retarget(endpoint, state.host, state.servers[server].port)

    def server_log(self, name: str) -> str:
        return str(self.dir / name / "error.log")

    def __enter__(self) -> TestbedInfo:
        return self.up()

    def __exit__(self, *exc_info: object) -> None:
        self.down()

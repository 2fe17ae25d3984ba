"""The server program: find it, tell its flavor, initialise a data dir, write its config.

The config of every instance includes the shared files in the repository's
``mysql/conf/`` (the same ones docker-compose mounts) and adds only what is
per instance: server id, port, paths.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import string
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from offload.errors import TestbedError
from offload.flavor import Flavor, describe_server, detect_flavor
from offload.testbed.rootfs import Log, stderr_log
from offload.testbed.servers import FlavorSpec, cache_dir, provided_for
from offload.testbed.tls import TlsFiles

__all__ = [
    "ServerProgram",
    "find_mysql_dir",
    "find_server",
    "probe_server",
    "render_sql",
    "socket_path",
    "split_sql",
]

_SEARCH_DIRS = (
    "/usr/sbin",
    "/usr/local/sbin",
    "/usr/libexec",
    "/usr/local/mysql/bin",
    "/opt/mysql/bin",
)
_INSTALLERS = ("mariadb-install-db", "mysql_install_db")
#: what makes a data dir one server's own: removed from every copy of the pristine one
_IDENTITY_FILES = ("auto.cnf",)
#: written into a pristine data dir once it is complete (and removed from no copy: harmless)
_PRISTINE_MARK = ".offload-pristine"
INSTALL_HINT = (
    "install a server: `sudo apt-get install mariadb-server` (Debian/Ubuntu; "
    "`make up` does it for you when run as root), or use Docker"
)


@dataclass(frozen=True, slots=True)
class ServerProgram:
    """An installed mariadbd or mysqld."""

    path: Path
    flavor: Flavor
    version: str

    def init_command(self, datadir: Path, log: Path) -> list[str]:
        """Argument list that creates a fresh data dir whose root logs in with no password."""
        user = ["--user=root"] if os.geteuid() == 0 else []
        if self.flavor is Flavor.MARIADB:
            return [
                str(self.installer()),
                "--no-defaults",
                f"--datadir={datadir}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
                *user,
            ]
        # secure_file_priv: MySQL aborts when its default directory does not exist
        return [
            str(self.path),
            "--no-defaults",
            "--initialize-insecure",
            f"--datadir={datadir}",
            f"--log-error={log}",
            "--secure-file-priv=NULL",
            *user,
        ]

    def _sibling(self, names: tuple[str, ...], what: str) -> Path:
        """A program of this server's own installation (never one of another on PATH)."""
        top = self.path.parent.parent
        places = (self.path.parent, top / "bin", top / "scripts")
        for directory in places:
            for name in names:
                candidate = directory / name
                if candidate.is_file() and os.access(candidate, os.X_OK):
                    return candidate
        raise TestbedError(
            f"no {what} beside {self.path} (looked in {', '.join(map(str, places))})",
            hint="point OFFLOAD_MYSQLD at a complete MariaDB/MySQL installation",
        )

    def installer(self) -> Path:
        """MariaDB's install script that belongs to this server binary."""
        return self._sibling(_INSTALLERS, "mariadb-install-db")

    def client(self) -> Path:
        """The command-line client of this server's installation."""
        names = ("mariadb", "mysql") if self.flavor is Flavor.MARIADB else ("mysql",)
        return self._sibling(names, "mysql client")

    def describe(self) -> str:
        """``mysql 9.7.4`` — the flavor and exact version, for reports."""
        return describe_server(self.flavor, self.version)

    def run_command(self, defaults_file: Path) -> list[str]:
        """Argument list that runs the server with ``defaults_file`` (and nothing else)."""
        user = ["--user=root"] if os.geteuid() == 0 else []
        return [str(self.path), f"--defaults-file={defaults_file}", *user]

    def initialise(self, datadir: Path, log: Path, *, template: bool = True) -> None:
        """A fresh data dir: a copy of this server's pristine one (made once), or made now.

        The server's own initialisation (MySQL's ``--initialize-insecure`` takes about 4 s
        here) runs once per binary and version into the cache; every later data dir is a
        copy of it, less what identifies a server (MySQL's ``auto.cnf``: its server_uuid,
        which a primary and its replica must not share).
        """
        datadir.parent.mkdir(parents=True, exist_ok=True)
        if not template:
            self._run_initialise(datadir, log)
            return
        pristine = self._pristine(log)
        shutil.copytree(
            pristine,
            datadir,
            symlinks=True,
            ignore=lambda where, names: [_PRISTINE_MARK] if Path(where) == pristine else [],
        )
        for identity in _IDENTITY_FILES:
            (datadir / identity).unlink(missing_ok=True)
        with log.open("a", encoding="utf-8") as out:
            out.write(f"offload: data dir copied from the pristine one in {pristine}\n")

    def _pristine(self, log: Path) -> Path:
        """The cached pristine data dir of this binary and version (made when missing)."""
        key = hashlib.sha256(f"{self.path.resolve()}\0{self.version}".encode()).hexdigest()[:12]
        root = cache_dir() / "datadirs"
        pristine = root / f"{self.flavor.value}-{self.version}-{key}"
        if (pristine / _PRISTINE_MARK).is_file():
            return pristine
        root.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{pristine.name}-", dir=root))
        try:
            self._run_initialise(work / "data", log)
            (work / "data" / _PRISTINE_MARK).write_text(f"{self.path} {self.version}\n")
            try:
                (work / "data").rename(pristine)
            except OSError:
                if not (pristine / _PRISTINE_MARK).is_file():  # not a concurrent twin's
                    raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return pristine

    def _run_initialise(self, datadir: Path, log: Path) -> None:
        with log.open("ab") as out:
            result = subprocess.run(
                self.init_command(datadir, log),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                check=False,
                timeout=300,
            )
        if result.returncode != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-8:])
            raise TestbedError(
                f"initialising the data dir {datadir} failed (exit {result.returncode}); "
                f"{log} ends:\n{tail}"
            )


def _version_of(binary: Path) -> str:
    result = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, check=False, timeout=30
    )
    return result.stdout.strip() or result.stderr.strip()


def probe_server(path: Path) -> ServerProgram | None:
    """The server at ``path`` with its flavor and version; None when it is not one."""
    if not (path.is_file() and os.access(path, os.X_OK)):
        return None
    # "mysqld  Ver 8.4.3 for Linux" / "mariadbd  Ver 10.11.6-MariaDB-0+deb12u1 ..."
    words = _version_of(path).split()
    if "Ver" not in words or words.index("Ver") + 1 >= len(words):
        return None
    number = words[words.index("Ver") + 1]
    try:
        return ServerProgram(path, detect_flavor(number), number)
    except ValueError:
        return None


def _host_candidates() -> list[Path]:
    candidates: list[Path] = []
    for name in ("mariadbd", "mysqld"):
        found = shutil.which(name)
        if found:
            candidates.append(Path(found))
        candidates.extend(Path(d) / name for d in _SEARCH_DIRS)
    return list(dict.fromkeys(candidates))


def find_server(
    explicit: str | None = None,
    *,
    spec: FlavorSpec | None = None,
    provide: bool = True,
    log: Log = stderr_log,
) -> ServerProgram:
    """The server binary a testbed runs.

    ``explicit`` (``--mysqld``), else $OFFLOAD_MYSQLD; else a server installed on the host
    that ``spec`` accepts (any, without a spec); else — for a spec — the server offload
    provides from a newer Debian suite (:mod:`offload.testbed.servers`), built into the
    cache first when ``provide`` and this machine can.
    """
    chosen = explicit or os.environ.get("OFFLOAD_MYSQLD")
    if chosen:
        program = probe_server(Path(chosen))
        if program is None:
            raise TestbedError(
                f"server binary {chosen} does not exist, is not executable "
                "or does not say its version",
                hint="fix $OFFLOAD_MYSQLD / --mysqld, or unset it",
            )
        if spec is not None and not spec.accepts(program.flavor, program.version):
            raise TestbedError(
                f"{chosen} is {program.describe()}, asked for {spec}",
                hint="unset $OFFLOAD_MYSQLD / --mysqld, or ask for its flavor",
            )
        return program
    for path in _host_candidates():
        program = probe_server(path)
        if program is not None and (spec is None or spec.accepts(program.flavor, program.version)):
            return program
    provided = provided_for(spec) if spec is not None else None
    if spec is None or provided is None:
        what = (
            "no MySQL or MariaDB server (mariadbd or mysqld)"
            if spec is None
            else f"no {spec} server"
        )
        raise TestbedError(f"{what} found on this machine", hint=INSTALL_HINT)
    if provide:
        launcher = provided.ensure(log=log)
    elif provided.is_built():
        launcher = provided.server_path()
    else:
        raise TestbedError(f"{provided.key} is not provided yet", hint=provided.how_to_build())
    program = probe_server(launcher)
    if program is None or not spec.accepts(program.flavor, program.version):
        raise TestbedError(
            f"the provided {provided.key} at {launcher} does not run",
            hint=f"remove {provided.home()} and build it again: {provided.how_to_build()}",
        )
    return program


def find_mysql_dir() -> Path:
    """The repository's ``mysql/`` directory (config and bootstrap shared by both backends).

    In the source tree ``offload/testbed/mysql`` is a link to it (resolved here, so
    the repository is its parent); an installed package holds a copy of its
    ``conf/`` and ``bootstrap/`` there (package data), so ``pip install`` needs no clone.
    """
    override = os.environ.get("OFFLOAD_MYSQL_DIR")
    if override:
        candidates = [Path(override)]
    else:
        here = Path(__file__).resolve()
        candidates = [parent / "mysql" for parent in here.parents]
        candidates += [parent / "mysql" for parent in (Path.cwd(), *Path.cwd().parents)]
    for candidate in candidates:
        if (candidate / "conf" / "common.cnf").is_file():
            return candidate.resolve()
    raise TestbedError(
        "cannot find offload's mysql/ directory (server config and bootstrap)",
        hint="run from the offload repository or set OFFLOAD_MYSQL_DIR",
    )


#: a Unix socket's path is at most 107 bytes (sun_path)
_SOCKET_PATH_MAX = 107


def socket_path(home: Path) -> Path:
    """The server's Unix socket: in its home, unless that path is too long for a socket
    (a deep temporary directory): then a short one in the system's, named after the home."""
    inside = home / "mysqld.sock"
    if len(os.fsencode(inside)) <= _SOCKET_PATH_MAX:
        return inside
    digest = hashlib.sha256(os.fsencode(home.resolve())).hexdigest()[:20]
    return Path(tempfile.gettempdir()) / f"offload-{digest}.sock"


def write_defaults_file(
    path: Path,
    *,
    mysql_dir: Path,
    flavor: Flavor,
    role: str,
    server_id: int,
    port: int,
    host: str = "127.0.0.1",
    tls: TlsFiles | None = None,
) -> Path:
    """The instance's my.cnf: the shared files from mysql/conf plus its own paths and ids
    (and, with ``tls``, the certificate it presents and TLS required of every client)."""
    home = path.parent
    conf = mysql_dir / "conf"
    text = "\n".join(
        [
            f"!include {conf / 'common.cnf'}",
            f"!include {conf / (flavor.value + '.cnf')}",
            f"!include {conf / (role + '.cnf')}",
            "",
            "[mysqld]",
            f"server_id     = {server_id}",
            f"port          = {port}",
            f"bind_address  = {host}",
            f"datadir       = {home / 'data'}",
            f"socket        = {socket_path(home)}",
            f"pid_file      = {home / 'mysqld.pid'}",
            f"log_error     = {home / 'error.log'}",
            f"tmpdir        = {home / 'tmp'}",
            f"general_log_file = {home / 'general.log'}",
            *(tls.server_options() if tls is not None else []),
            "",
        ]
    )
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def render_sql(template: Path, values: dict[str, str]) -> str:
    """A bootstrap script with its ``${NAME}`` placeholders filled in."""
    for name, value in values.items():
        if any(ch in value for ch in "'\\\n"):
            raise TestbedError(f"bootstrap value {name} contains a quote, backslash or newline")
    try:
        return string.Template(template.read_text(encoding="utf-8")).substitute(values)
    except KeyError as missing:
        raise TestbedError(f"{template} needs a value for ${{{missing.args[0]}}}") from None


def split_sql(script: str) -> list[str]:
    """The statements of a bootstrap script (``--`` comments, one ``;`` per statement end)."""
    lines = [line for line in script.splitlines() if not line.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]

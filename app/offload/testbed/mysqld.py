"""The server program: find it, tell its flavor, initialise a data dir, write its config.

The config of every instance includes the shared files in the repository's
``mysql/conf/`` (the same ones docker-compose mounts) and adds only what is
per instance: server id, port, paths.
"""

from __future__ import annotations

import os
import shutil
import string
import subprocess
from dataclasses import dataclass
from pathlib import Path

from offload.errors import TestbedError
from offload.replication import Flavor, detect_flavor

__all__ = [
    "ServerProgram",
    "find_mysql_dir",
    "find_server",
    "render_sql",
    "split_sql",
]

_SEARCH_DIRS = ("/usr/sbin", "/usr/local/sbin", "/usr/libexec", "/usr/local/mysql/bin",
                "/opt/mysql/bin")
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
            installer = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
            if installer is None:
                raise TestbedError("mariadb-install-db not found next to mariadbd",
                                   hint=INSTALL_HINT)
            return [installer, "--no-defaults", f"--datadir={datadir}",
                    "--auth-root-authentication-method=normal", "--skip-test-db",
                    "--skip-name-resolve", *user]
        return [str(self.path), "--no-defaults", "--initialize-insecure",
                f"--datadir={datadir}", f"--log-error={log}", *user]

    def run_command(self, defaults_file: Path) -> list[str]:
        """Argument list that runs the server with ``defaults_file`` (and nothing else)."""
        user = ["--user=root"] if os.geteuid() == 0 else []
        return [str(self.path), f"--defaults-file={defaults_file}", *user]

    def initialise(self, datadir: Path, log: Path) -> None:
        datadir.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            result = subprocess.run(
                self.init_command(datadir, log), stdin=subprocess.DEVNULL, stdout=out,
                stderr=out, check=False, timeout=300,
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


def find_server(explicit: str | None = None) -> ServerProgram:
    """The server binary: ``explicit``, else $OFFLOAD_MYSQLD, else mariadbd/mysqld on PATH."""
    candidates: list[Path] = []
    chosen = explicit or os.environ.get("OFFLOAD_MYSQLD")
    if chosen:
        candidates.append(Path(chosen))
    else:
        for name in ("mariadbd", "mysqld"):
            found = shutil.which(name)
            if found:
                candidates.append(Path(found))
            candidates.extend(Path(d) / name for d in _SEARCH_DIRS)
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            version = _version_of(path)
            # "mysqld  Ver 8.4.3 for Linux" / "mariadbd  Ver 10.11.6-MariaDB-0+deb12u1 ..."
            words = version.split()
            number = words[words.index("Ver") + 1] if "Ver" in words else version
            return ServerProgram(path, detect_flavor(number), number)
    if chosen:
        raise TestbedError(f"server binary {chosen} does not exist or is not executable",
                           hint="fix $OFFLOAD_MYSQLD / --mysqld, or unset it")
    raise TestbedError("no MySQL or MariaDB server (mariadbd or mysqld) found on this machine",
                       hint=INSTALL_HINT)


def find_mysql_dir() -> Path:
    """The repository's ``mysql/`` directory (config and bootstrap shared by both backends)."""
    override = os.environ.get("OFFLOAD_MYSQL_DIR")
    if override:
        candidates = [Path(override)]
    else:
        here = Path(__file__).resolve()
        candidates = [parent / "mysql" for parent in here.parents]
        candidates += [parent / "mysql" for parent in (Path.cwd(), *Path.cwd().parents)]
    for candidate in candidates:
        if (candidate / "conf" / "common.cnf").is_file():
            return candidate
    raise TestbedError("cannot find offload's mysql/ directory (server config and bootstrap)",
                       hint="run from the offload repository or set OFFLOAD_MYSQL_DIR")


def write_defaults_file(
    path: Path, *, mysql_dir: Path, flavor: Flavor, role: str, server_id: int, port: int,
    host: str = "127.0.0.1",
) -> Path:
    """The instance's my.cnf: the shared files from mysql/conf plus its own paths and ids."""
    home = path.parent
    conf = mysql_dir / "conf"
    text = "\n".join([
        f"!include {conf / 'common.cnf'}",
        f"!include {conf / (flavor.value + '.cnf')}",
        f"!include {conf / (role + '.cnf')}",
        "",
        "[mysqld]",
        f"server_id     = {server_id}",
        f"port          = {port}",
        f"bind_address  = {host}",
        f"datadir       = {home / 'data'}",
        f"socket        = {home / 'mysqld.sock'}",
        f"pid_file      = {home / 'mysqld.pid'}",
        f"log_error     = {home / 'error.log'}",
        f"tmpdir        = {home / 'tmp'}",
        f"general_log_file = {home / 'general.log'}",
        "",
    ])
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

"""A server process we start and stop: its own process group, checks before and after start.

Works without pytest.  ``start()`` refuses a busy port (pre-start check),
spawns the argument list in a new session, and returns only when the
after-start check passes — or raises with the tail of the server's log.
``stop()`` signals the whole process group, TERM then KILL after a deadline.
With ``bind_to_parent=True`` the kernel kills the server if the process that
started it dies (``PR_SET_PDEATHSIG``), so a crashed test run leaks nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from offload.errors import TestbedError
from offload.waiting import Deadline, wait_for

__all__ = ["ServerProcess", "pid_alive", "port_in_use", "stop_process_group", "tail"]

_PR_SET_PDEATHSIG = 1
#: servers this process started, by pid, until stopped or reaped.  A server may
#: outlive the object that started it (``offload testbed up`` returns, its servers
#: run on); keeping its Popen here reaps it when it stops, and no Popen is
#: collected while its server still runs (a ResourceWarning)
_STARTED: dict[int, subprocess.Popen[bytes]] = {}
_STARTED_LOCK = threading.Lock()


def _reap(pid: int) -> None:
    """Forget (and reap) the server ``pid`` if this process started it."""
    with _STARTED_LOCK:
        popen = _STARTED.pop(pid, None)
    if popen is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=1)


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something already listens on (host, port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def pid_alive(pid: int) -> bool:
    """True when ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            state = stat.read().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def cmdline(pid: int) -> list[str]:
    """The argument list of a running process ([] if gone)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def tail(path: Path, lines: int = 12) -> str:
    """The last lines of a log file, for error messages ('' if unreadable)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _die_with_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def stop_process_group(
    pid: int, *, timeout: float = 60.0, is_ours: Callable[[int], bool] = pid_alive
) -> None:
    """TERM the process group led by ``pid``, KILL it if it outlives ``timeout``."""
    try:
        if not is_ours(pid):
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
        if wait_for(lambda: not pid_alive(pid), Deadline(timeout), interval=0.05):
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        wait_for(lambda: not pid_alive(pid), Deadline(10.0), interval=0.05)
    finally:
        _reap(pid)


@dataclass
class ServerProcess:
    """One server: how to run it, where it logs, how to tell it is ready."""

    name: str
    args: Sequence[str]
    port: int
    log_path: Path
    ready: Callable[[], bool]
    start_timeout: float = 60.0
    stop_timeout: float = 60.0
    bind_to_parent: bool = False
    pid: int | None = None
    _popen: subprocess.Popen[bytes] | None = None

    def start(self) -> int:
        """Spawn the server and wait for its after-start check; returns its pid."""
        if port_in_use(self.port):
            raise TestbedError(
                f"port {self.port} on 127.0.0.1 is already in use, needed by the {self.name}",
                hint="stop what listens there (`make down`?) or choose other ports with --port",
            )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # PR_SET_PDEATHSIG fires when the *thread* that forked ends: bind only from
        # the main thread (a server started elsewhere is swept by the next up)
        bind = self.bind_to_parent and threading.current_thread() is threading.main_thread()
        with self.log_path.open("ab") as log:
            self._popen = subprocess.Popen(
                list(self.args),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                close_fds=True,
                preexec_fn=_die_with_parent if bind else None,  # noqa: PLW1509
            )
        self.pid = self._popen.pid
        with _STARTED_LOCK:
            _STARTED[self.pid] = self._popen
        try:
            self._await_ready()
        except BaseException:
            self.stop()
            raise
        return self.pid

    def _await_ready(self) -> None:
        deadline = Deadline(self.start_timeout)

        def ready_or_dead() -> bool:
            if self._popen is not None and self._popen.poll() is not None:
                raise TestbedError(
                    f"the {self.name} exited with status {self._popen.returncode} while "
                    f"starting; its log {self.log_path} ends:\n{tail(self.log_path)}"
                )
            return self.ready()

        if not wait_for(ready_or_dead, deadline, interval=0.05):
            raise TestbedError(
                f"the {self.name} did not become ready within {self.start_timeout:.0f}s; "
                f"its log {self.log_path} ends:\n{tail(self.log_path)}"
            )

    def running(self) -> bool:
        return self.pid is not None and pid_alive(self.pid)

    def stop(self) -> None:
        """Stop the process group; returns when no process of it is left."""
        if self.pid is None:
            return
        stop_process_group(self.pid, timeout=self.stop_timeout)
        _reap(self.pid)
        self.pid = None

    def kill(self) -> None:
        """SIGKILL the server at once (fault injection); no clean shutdown."""
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            wait_for(lambda: not self.running(), Deadline(10.0), interval=0.02)
            if self._popen is not None:
                self._popen.wait(timeout=5)
            _reap(self.pid)
            self.pid = None

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

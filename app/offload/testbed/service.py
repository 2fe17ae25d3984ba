"""The compute service of a testbed, run in the background: ``offload service start|stop``.

``start`` runs ``offload serve`` as its own process group with its log in the
testbed directory and returns when ``/healthz`` answers; ``stop`` sends SIGTERM,
which lets the running task finish, and waits.  The pid is kept in
``service.json`` with the command line, so a reused pid is never signalled.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from functools import partial
from pathlib import Path
from typing import Any

from offload.errors import TestbedError
from offload.testbed.process import ServerProcess, cmdline, pid_alive, stop_process_group

__all__ = ["ServiceRunner", "fetch"]


def fetch(port: int, path: str, *, timeout: float = 2.0) -> bytes:
    """GET http://127.0.0.1:PORT/PATH (the service binds loopback)."""
    url = f"http://127.0.0.1:{port}{path}"
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body: bytes = response.read()
        return body


def _healthy(port: int) -> bool:
    try:
        answer = fetch(port, "/healthz", timeout=1.0)
        return answer.startswith((b"ok", b"degraded"))
    except (OSError, urllib.error.URLError):
        return False


class ServiceRunner:
    """Start and stop ``offload serve`` for the testbed whose config is ``config``."""

    def __init__(self, directory: Path, config: Path, port: int) -> None:
        self.dir = directory
        self.config = config.resolve()
        self.port = port
        self.record = directory / "service.json"

    def _command(self) -> list[str]:
        return [sys.executable, "-m", "offload.cli", "--config", str(self.config), "serve"]

    def _pid(self) -> int | None:
        try:
            data: dict[str, Any] = json.loads(self.record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        pid = data.get("pid")
        return pid if isinstance(pid, int) and self._is_ours(pid) else None

    def _is_ours(self, pid: int) -> bool:
        return pid_alive(pid) and cmdline(pid)[-4:] == self._command()[-4:]

    def running(self) -> bool:
        return self._pid() is not None

    def start(self, *, timeout: float = 30.0) -> int:
        """Start the service unless it runs; return its pid once /healthz answers."""
        pid = self._pid()
        if pid is not None:
            return pid
        if not self.port:
            raise TestbedError(
                "the testbed config has no [service] http_port",
                hint="recreate the testbed (`make clean && make up`)",
            )
        server = ServerProcess(
            name="compute service",
            args=self._command(),
            port=self.port,
            log_path=self.dir / "service.log",
            ready=partial(_healthy, self.port),
            start_timeout=timeout,
        )
        pid = server.start()
        self.record.write_text(json.dumps({"pid": pid, "port": self.port}), encoding="utf-8")
        return pid

    def stop(self, *, timeout: float = 60.0) -> bool:
        """SIGTERM the service and wait for it; False if it was not running."""
        pid = self._pid()
        self.record.unlink(missing_ok=True)
        if pid is None:
            return False
        stop_process_group(pid, timeout=timeout, is_ours=self._is_ours)
        return True

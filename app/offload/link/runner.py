"""The links of a testbed: start and stop their proxy processes, talk to their control API.

``Links`` is what a command needs of a testbed's links, whichever backend runs them:
their names, whether each answers, a control request.  Two kinds:

* ``LinkRunner`` (native): ``DIR/links.json`` records each link (replica name → ports
  and pid); a pid is signalled only while its command line is still that link's, so a
  reused pid is never touched.  Each proxy runs in its own process group
  (``ServerProcess``), bound to the parent when asked (tests), and is stopped with the
  testbed.
* ``PublishedLinks`` (compose): proxies something else runs (the stack's ``link``
  service), known by their control ports on the host's loopback.

``python -m offload.link.runner check PORT`` is the ``link`` service's healthcheck: the
control API on PORT answers (exit 0) or not (exit 1); it imports no more than this module.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from offload.errors import TestbedError
from offload.testbed.process import ServerProcess, cmdline, pid_alive, stop_process_group

__all__ = ["LinkRecord", "LinkRunner", "Links", "PublishedLinks", "request"]


@dataclass(frozen=True)
class LinkRecord:
    """One link: where the replica connects, where the proxy forwards, its control port."""

    name: str
    listen_port: int
    control_port: int
    upstream_host: str
    upstream_port: int
    pid: int | None = None

    def identity(self) -> list[str]:
        """The command line without the interpreter and the upstream: what a running
        proxy of this link shows whatever it was retargeted to since it started."""
        return [
            "-m",
            "offload.link.proxy",
            "--name",
            self.name,
            "--listen-port",
            str(self.listen_port),
            "--control-port",
            str(self.control_port),
        ]

    def command(self) -> list[str]:
        return [
            sys.executable,
            *self.identity(),
            "--upstream-host",
            self.upstream_host,
            "--upstream-port",
            str(self.upstream_port),
        ]


def request(port: int, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """One control request to the proxy on ``port``; its JSON answer."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=data,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as response:  # noqa: S310 - http, loopback
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = json.loads(exc.read() or b"{}").get("error", exc.reason)
        raise TestbedError(f"the link refused {method} {path}: {detail}") from None
    except (OSError, ValueError) as exc:
        raise TestbedError(
            f"the link's control port {port} does not answer ({exc})",
            hint="`offload link show` lists the links; `make up` restarts them",
        ) from None


def _answers(port: int) -> bool:
    try:
        request(port, "GET", "/link")
    except TestbedError:
        return False
    return True


def _no_link(name: str) -> TestbedError:
    return TestbedError(
        f"{name} has no link", hint=f"`offload link set {name}` puts one in its path"
    )


class Links(Protocol):
    """A testbed's links, whichever backend runs them."""

    def names(self) -> list[str]:
        """The replicas with a link in their replication path."""
        ...

    def answering(self, name: str) -> bool:
        """``name``'s link runs (TestbedError when it has none)."""
        ...

    def control(
        self, name: str, method: str, path: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """One control request to ``name``'s link; its JSON answer."""
        ...


@dataclass(frozen=True)
class PublishedLinks:
    """Links run by something else, each known by its control port on 127.0.0.1."""

    control_ports: dict[str, int]

    def names(self) -> list[str]:
        return list(self.control_ports)

    def _port(self, name: str) -> int:
        port = self.control_ports.get(name)
        if port is None:
            raise _no_link(name)
        return port

    def answering(self, name: str) -> bool:
        return _answers(self._port(name))

    def control(
        self, name: str, method: str, path: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        answer: dict[str, Any] = request(self._port(name), method, path, body)
        return answer


class LinkRunner:
    """The link proxies of the testbed in ``directory``."""

    def __init__(self, directory: Path, *, bind_to_parent: bool = False) -> None:
        self.dir = directory
        self.path = directory / "links.json"
        self.bind_to_parent = bind_to_parent

    def records(self) -> dict[str, LinkRecord]:
        try:
            data: dict[str, dict[str, Any]] = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise TestbedError(f"{self.path} is unreadable ({exc})", hint="remove it") from None
        return {name: LinkRecord(**fields) for name, fields in data.items()}

    def _save(self, records: dict[str, LinkRecord]) -> None:
        if not records:
            self.path.unlink(missing_ok=True)
            return
        payload = {name: asdict(record) for name, record in records.items()}
        self.path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")

    @staticmethod
    def is_ours(record: LinkRecord, pid: int) -> bool:
        identity = record.identity()
        return pid_alive(pid) and cmdline(pid)[1 : 1 + len(identity)] == identity

    def running(self, record: LinkRecord) -> bool:
        return record.pid is not None and self.is_ours(record, record.pid)

    def record(self, name: str) -> LinkRecord:
        found = self.records().get(name)
        if found is None:
            raise _no_link(name)
        return found

    def names(self) -> list[str]:
        return list(self.records())

    def answering(self, name: str) -> bool:
        return self.running(self.record(name))

    def start(self, record: LinkRecord) -> LinkRecord:
        """Start ``record``'s proxy unless it runs; the record with its pid, saved."""
        records = self.records()
        current = records.get(record.name)
        if current is not None and current.pid is not None and self.running(current):
            return current
        server = ServerProcess(
            name=f"link of {record.name}",
            args=record.command(),
            port=record.listen_port,
            log_path=self.dir / f"link-{record.name}.log",
            ready=partial(_answers, record.control_port),
            start_timeout=20.0,
            bind_to_parent=self.bind_to_parent,
        )
        started = replace(record, pid=server.start())
        records[record.name] = started
        self._save(records)
        return started

    def start_recorded(self) -> list[LinkRecord]:
        """Start every recorded link that does not run (a testbed coming up again)."""
        return [self.start(replace(record, pid=None)) for record in self.records().values()]

    def stop(self, name: str, *, forget: bool) -> None:
        records = self.records()
        record = records.get(name)
        if record is None:
            return
        if record.pid is not None:
            stop_process_group(record.pid, timeout=10.0, is_ours=partial(self.is_ours, record))
        if forget:
            del records[name]
        else:
            records[name] = replace(record, pid=None)
        self._save(records)

    def stop_all(self) -> None:
        """Stop every link's proxy; the records stay for the next ``up``."""
        for name in self.records():
            self.stop(name, forget=False)

    def retarget(self, name: str, host: str, port: int) -> LinkRecord:
        """Point ``name``'s proxy at ``host:port`` (its open connections are reset) and
        record it, so a restarted proxy relays there too."""
        record = self.record(name)
        request(record.control_port, "POST", "/upstream", {"host": host, "port": port})
        moved = replace(record, upstream_host=host, upstream_port=port)
        records = self.records()
        records[name] = moved
        self._save(records)
        return moved

    def control(
        self, name: str, method: str, path: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        answer: dict[str, Any] = request(self.record(name).control_port, method, path, body)
        return answer


def main(argv: Sequence[str] | None = None) -> int:
    """``check PORT``: 0 when the link's control API on PORT answers (a healthcheck)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2 or args[0] != "check" or not args[1].isdigit():
        sys.stderr.write("usage: python -m offload.link.runner check PORT\n")
        return 2
    try:
        state = request(int(args[1]), "GET", "/link")
    except TestbedError as exc:
        sys.stderr.write(f"offload: {exc}\n")
        return 1
    sys.stdout.write(f"link to {state['upstream']}: {state['connections']} connection(s)\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

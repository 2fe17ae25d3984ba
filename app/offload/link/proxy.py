"""The link proxy: asyncio TCP relay with toxics, and its loopback HTTP/JSON control.

Run as ``python -m offload.link.proxy --listen-port P --upstream-port U --control-port C``
(the native testbed's runner does, as a background process of its own; the compose
testbed runs it as its ``link`` service with ``--bind 0.0.0.0``, the control port
published on the host's 127.0.0.1 only).  Control API, JSON bodies:

    GET  /link           the toxics in force, the cut's remaining time, bytes, connections
    POST /toxics         {"delay": 0.04, "jitter": 0.005, "rate": 250000.0, "stall": false}
                         (the fields given replace those in force)
    POST /cut            {"seconds": 5}: reset every connection, refuse new ones meanwhile
    POST /clear          no toxic, the gate open
    POST /upstream       {"host": "127.0.0.1", "port": 33062}: relay new connections there
                         (a cut link opens again), reset every connection open to the old
                         one (a moved endpoint)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from offload.errors import OffloadError
from offload.link.toxics import Gate, Pace, Toxics

__all__ = ["UPSTREAM_CONNECT_TIMEOUT", "Link", "main", "serve"]

LOOPBACK: Final = "127.0.0.1"
_CHUNK: Final = 16384
_MAX_BODY: Final = 65536
#: how long a client's connection waits for the upstream's (seconds): a server that is
#: gone without a reset (a killed container's address: no RST) must not hold the client
#: longer than a live one answers, nor past the endpoint's move to another server
UPSTREAM_CONNECT_TIMEOUT: Final = 2.0


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0): the peer sees a reset, not an orderly EOF."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _closed(*writers: asyncio.StreamWriter) -> None:
    """Until each stream's transport has let go of its socket (no socket left for the GC)."""
    await asyncio.gather(*(w.wait_closed() for w in writers), return_exceptions=True)


async def _open_upstream(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    # a coroutine of its own: cancelled before it runs, it leaves no un-awaited one behind
    return await asyncio.wait_for(asyncio.open_connection(host, port), UPSTREAM_CONNECT_TIMEOUT)


@dataclass(eq=False)  # hashed by identity: the set of open connections
class _Connection:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter

    def reset(self) -> None:
        _reset(self.client)
        _reset(self.upstream)


@dataclass
class Link:
    """One shaped link to ``upstream_host:upstream_port``; its figures since it started."""

    upstream_host: str
    upstream_port: int
    clock: Callable[[], float] = time.monotonic
    rng: random.Random = field(default_factory=random.Random)
    toxics: Toxics = field(default_factory=Toxics)
    gate: Gate = field(default_factory=Gate)
    bytes_down: int = 0  # primary → replica
    bytes_up: int = 0
    connections_total: int = 0
    refused: int = 0
    resets: int = 0
    retargets: int = 0
    _active: set[_Connection] = field(default_factory=set)
    #: upstream connects in progress: a move or a cut abandons them
    _connecting: set[asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]]] = field(
        default_factory=set
    )
    _flowing: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._flowing.set()

    # --- control ------------------------------------------------------------

    def set_toxics(self, changes: dict[str, Any]) -> None:
        self.toxics = self.toxics.merged(changes)
        if self.toxics.stall:
            self._flowing.clear()
        else:
            self._flowing.set()

    def cut(self, seconds: float) -> None:
        self.gate.cut(self.clock(), seconds)
        self._abandon_connects()
        for connection in list(self._active):
            connection.reset()
            self.resets += 1

    def retarget(self, host: str, port: int) -> None:
        """Relay new connections to ``host:port`` (a cut link opens again); reset the open
        ones (no client keeps a session on the server the endpoint left)."""
        if not 0 < port < 65536:
            raise ValueError(f"port {port} is out of range")
        self.upstream_host, self.upstream_port = host, port
        self.gate.reopen()
        self.retargets += 1
        self._abandon_connects()
        for connection in list(self._active):
            connection.reset()
            self.resets += 1

    def _abandon_connects(self) -> None:
        """A client still waiting for the old upstream (gone silent) is refused now, not
        when its connect gives up."""
        for connect in list(self._connecting):
            connect.cancel()

    def clear(self) -> None:
        self.gate.reopen()
        self.set_toxics(Toxics().as_dict())

    def state(self) -> dict[str, Any]:
        return {
            "upstream": f"{self.upstream_host}:{self.upstream_port}",
            "toxics": self.toxics.as_dict(),
            "cut_remaining": round(self.gate.remaining(self.clock()), 3),
            "bytes_down": self.bytes_down,
            "bytes_up": self.bytes_up,
            "connections": len(self._active),
            "connections_total": self.connections_total,
            "refused": self.refused,
            "resets": self.resets,
            "retargets": self.retargets,
        }

    # --- relay --------------------------------------------------------------

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One client connection: refused while cut, else relayed both ways."""
        if not self.gate.is_open(self.clock()):
            self.refused += 1
            _reset(writer)
            await _closed(writer)
            return
        target = (self.upstream_host, self.upstream_port)
        connect = asyncio.ensure_future(_open_upstream(*target))
        self._connecting.add(connect)
        connect.add_done_callback(self._connecting.discard)
        try:
            up_reader, up_writer = await connect
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the proxy stops: not a refusal
            self.refused += 1  # abandoned by a move or a cut
            _reset(writer)
            await _closed(writer)
            return
        except (OSError, TimeoutError):
            self.refused += 1
            _reset(writer)
            await _closed(writer)
            return
        if (self.upstream_host, self.upstream_port) != target:  # retargeted meanwhile
            self.refused += 1
            _reset(writer)
            _reset(up_writer)
            await _closed(writer, up_writer)
            return
        connection = _Connection(writer, up_writer)
        self._active.add(connection)
        self.connections_total += 1
        try:
            for stream in (writer, up_writer):
                sock = stream.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pipes = [
                asyncio.ensure_future(self._pipe(reader, up_writer, down=False)),
                asyncio.ensure_future(self._pipe(up_reader, writer, down=True)),
            ]
            _, pending = await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        finally:
            self._active.discard(connection)
            for stream in (writer, up_writer):
                stream.close()
            await _closed(writer, up_writer)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, down: bool
    ) -> None:
        pace = Pace(self.rng)
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        pending = [0]  # chunks handed to the sender, not written yet

        def count(size: int) -> None:
            if down:
                self.bytes_down += size
            else:
                self.bytes_up += size

        async def send() -> None:
            while (item := await queue.get()) is not None:
                release, data = item
                await self._flowing.wait()
                wait = release - self.clock()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                pending[0] -= 1
                await writer.drain()
                count(len(data))

        sender = asyncio.ensure_future(send())
        try:
            while True:
                try:
                    data = await reader.read(_CHUNK)
                except OSError:
                    data = b""
                if not data or sender.done():
                    break
                now = self.clock()
                release = pace.release_at(now, len(data), self.toxics)
                if release <= now and not pending[0] and self._flowing.is_set():
                    # no toxic and nothing held: write at once (no hop through the sender)
                    writer.write(data)
                    count(len(data))
                    if writer.transport.get_write_buffer_size() > _CHUNK:
                        await writer.drain()
                    continue
                pending[0] += 1
                queue.put_nowait((release, data))
            queue.put_nowait(None)
            with contextlib.suppress(OSError, ConnectionError):
                await sender  # what was read before the EOF still goes out, on time
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError, ConnectionError):
                await sender


# --- control channel ---------------------------------------------------------


async def _control(link: Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    status, answer = 200, {}
    try:
        request = (await reader.readline()).decode("latin-1").split()
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = min(int(value.strip() or 0), _MAX_BODY)
        body = json.loads(await reader.readexactly(length)) if length else {}
        method, path = [*request, "", ""][:2]
        if (method, path) == ("GET", "/link"):
            pass
        elif (method, path) == ("POST", "/toxics") and isinstance(body, dict):
            link.set_toxics(body)
        elif (method, path) == ("POST", "/cut") and isinstance(body, dict):
            link.cut(float(body.get("seconds", 0)))
        elif (method, path) == ("POST", "/upstream") and isinstance(body, dict):
            if "port" not in body:
                raise ValueError("POST /upstream needs a port")
            link.retarget(str(body.get("host", link.upstream_host)), int(body["port"]))
        elif (method, path) == ("POST", "/clear"):
            link.clear()
        else:
            status, answer = 404, {"error": f"no such request: {method} {path}"}
        if status == 200:
            answer = link.state()
    except (OffloadError, ValueError, TypeError) as exc:
        status, answer = 400, {"error": str(exc)}
    payload = json.dumps(answer).encode()
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}[status]
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
        + payload
    )
    with contextlib.suppress(OSError, ConnectionError):
        await writer.drain()
    writer.close()


async def serve(link: Link, listen_port: int, control_port: int, host: str = LOOPBACK) -> None:
    """Relay on ``listen_port`` and answer control on ``control_port`` (both on ``host``)
    until SIGTERM/SIGINT."""
    relay = await asyncio.start_server(link.handle, host, listen_port, reuse_address=True)
    control = await asyncio.start_server(
        lambda r, w: _control(link, r, w), host, control_port, reuse_address=True
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with relay, control:
        await stop.wait()
    link.cut(0)  # reset what is still relayed: the replica reconnects to whatever comes next


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="offload-link", description=__doc__)
    parser.add_argument("--listen-port", type=int, required=True)
    parser.add_argument("--upstream-host", default=LOOPBACK)
    parser.add_argument("--upstream-port", type=int, required=True)
    parser.add_argument("--control-port", type=int, required=True)
    parser.add_argument("--name", default="link", help="what the link is for (in ps)")
    parser.add_argument(
        "--bind",
        default=LOOPBACK,
        help="the address both ports listen on (a container's: 0.0.0.0; default loopback)",
    )
    args = parser.parse_args(argv)
    link = Link(args.upstream_host, args.upstream_port)
    serving = serve(link, args.listen_port, args.control_port, args.bind)
    try:  # libuv's loop: a shorter hop per chunk than asyncio's (the lab extra has it)
        import uvloop  # noqa: PLC0415
    except ImportError:
        asyncio.run(serving)
    else:
        uvloop.run(serving)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

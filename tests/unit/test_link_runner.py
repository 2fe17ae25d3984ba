"""PublishedLinks (the compose link's control port) and the link service's healthcheck."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from offload.errors import TestbedError
from offload.link.runner import PublishedLinks, main


class _Answer(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        payload = json.dumps({"upstream": "primary:3306", "connections": 1}).encode()
        self.send_response(200 if self.path == "/link" else 404)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def control_port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_published_links_by_name(control_port: int) -> None:
    links = PublishedLinks({"replica0": control_port})
    assert links.names() == ["replica0"]
    assert links.answering("replica0")
    assert links.control("replica0", "GET", "/link")["upstream"] == "primary:3306"
    with pytest.raises(TestbedError, match="replica1 has no link"):
        links.control("replica1", "GET", "/link")
    assert not PublishedLinks({"replica0": _closed_port()}).answering("replica0")


def test_the_healthcheck(control_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(control_port)]) == 0
    assert capsys.readouterr().out == "link to primary:3306: 1 connection(s)\n"
    assert main(["check", str(_closed_port())]) == 1
    assert "does not answer" in capsys.readouterr().err
    assert main(["check"]) == 2
    assert main(["check", "port"]) == 2

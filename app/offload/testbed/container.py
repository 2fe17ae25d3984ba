"""Inside the compute container: ``python -m offload.testbed.container serve|health``.

``serve`` writes the container's own config from its environment, creates the
nova schema on the primary when it is missing (what ``offload db sync`` does),
and then *becomes* ``offload serve`` (``os.execv``: signals reach the service
directly).  ``health`` is the container's healthcheck: ``/healthz`` answers.

Environment (docker-compose.yml sets it):

``NOVA_PASSWORD``, ``NOVA_RO_PASSWORD``  the service's accounts (SELECT-only on the replica)
``ADMIN_PASSWORD``                     the testbed's privileged account, for ``/status``'s
                                       thread states and replication TLS (as natively,
                                       where the service reads the testbed's offload.conf)
``OFFLOAD_PRIMARY_HOST``               the primary's host name (``primary``)
``OFFLOAD_REPLICA_HOSTS``              comma-separated replica host names (``replica``)
``OFFLOAD_DB_PORT``                    the servers' port inside the network (3306)
``OFFLOAD_HTTP_PORT``                  the service's HTTP port in the container (8080)
``OFFLOAD_COMPUTE_HOST``               the compute host to act for; unset: from the
                                       container's name (see :func:`compute_host`)
``OFFLOAD_TESTBED_CA``                 the testbed's CA certificate, base64; set: the URLs
                                       verify the servers' certificates against it (written
                                       to the container's private tmp); empty: plain TCP

``OFFLOAD_<SECTION>__<KEY>`` variables still override single options, as everywhere.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import socket
import struct
import sys
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from offload.testbed.tls import TlsFiles
from offload.testbed.topology import NOVA_DATABASE, TESTBED_COMPUTE_OPTIONS, loopback_url
from offload.waiting import Deadline, wait_for

__all__ = [
    "compute_host",
    "main",
    "parse_ptr_answer",
    "ptr_query",
    "render_config",
    "tls_from_environ",
]

CONFIG_PATH = Path("/tmp/offload.conf")  # noqa: S108 - the container's own, private tmp
#: where the container keeps the testbed's CA (``TlsFiles.in_dir``: its ``tls/ca.pem``)
TLS_HOME = Path("/tmp/offload")  # noqa: S108 - the container's own, private tmp
CA_VARIABLE = "OFFLOAD_TESTBED_CA"
#: ``offload_compute_2.offload_default`` (compose v1), ``offload-compute-2.net`` (v2)
_SCALED_NAME = re.compile(r"^(?:.*[-_])?(?P<service>[a-z][a-z0-9]*)[-_](?P<index>\d+)(?:\.|$)")


def compute_host(
    environ: Mapping[str, str], *, reverse_name: str | None = None, hostname: str | None = None
) -> str:
    """The compute host this container acts for.

    ``OFFLOAD_COMPUTE_HOST`` when set.  Otherwise the name Docker's DNS gives the
    container's address — compose names a service's instances ``<project>_compute_N``
    (v1) or ``<project>-compute-N`` (v2) — becomes ``compute-N``: with
    ``--scale compute=3`` the instances act for compute-1, compute-2 and compute-3,
    the hosts the testbed's seed writes.  Failing both, the container's host name.
    """
    explicit = environ.get("OFFLOAD_COMPUTE_HOST", "").strip()
    if explicit:
        return explicit
    if reverse_name:
        match = _SCALED_NAME.match(reverse_name)
        if match:
            return f"{match['service']}-{match['index']}"
    return hostname or socket.gethostname()


def _nameserver(resolv_conf: Path = Path("/etc/resolv.conf")) -> str | None:
    try:
        for line in resolv_conf.read_text(encoding="utf-8").splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] == "nameserver":
                return words[1]
    except OSError:
        pass
    return None


def ptr_query(address: str, ident: int) -> bytes:
    """A DNS query for the PTR record of an IPv4 address."""
    labels = [*reversed(address.split(".")), "in-addr", "arpa"]
    name = b"".join(bytes([len(label)]) + label.encode() for label in labels) + b"\0"
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + name + struct.pack("!HH", 12, 1)


def _read_name(message: bytes, offset: int) -> tuple[str, int]:
    """A (possibly compressed) domain name at ``offset``; the offset after it."""
    labels: list[str] = []
    end: int | None = None
    for _ in range(64):  # bounded: a pointer loop in a bad answer ends here
        length = message[offset]
        if length == 0:
            return ".".join(labels), (end if end is not None else offset + 1)
        if length & 0xC0 == 0xC0:
            if end is None:
                end = offset + 2
            offset = ((length & 0x3F) << 8) | message[offset + 1]
            continue
        labels.append(message[offset + 1 : offset + 1 + length].decode("ascii", "replace"))
        offset += 1 + length
    raise ValueError("a DNS name with too many labels")


def parse_ptr_answer(message: bytes, ident: int) -> str | None:
    """The first PTR name in a DNS answer to the query ``ident`` (None: no answer)."""
    if len(message) < 12:
        return None
    got, flags, questions, answers = struct.unpack("!HHHH", message[:8])
    if got != ident or flags & 0x000F or not answers:
        return None
    offset = 12
    for _ in range(questions):
        offset = _read_name(message, offset)[1] + 4
    for _ in range(answers):
        offset = _read_name(message, offset)[1]
        kind, _klass, _ttl, length = struct.unpack("!HHIH", message[offset : offset + 10])
        offset += 10
        if kind == 12:
            return _read_name(message, offset)[0]
        offset += length
    return None


def _reverse_name(timeout: float = 2.0) -> str | None:
    """What Docker's embedded DNS calls this container's address (its compose name).

    Asked directly: the resolver library would answer from /etc/hosts, where
    Docker maps the address to the container id.
    """
    server = _nameserver()
    if server is None:
        return None
    try:
        address = socket.gethostbyname(socket.gethostname())
        ident = os.getpid() & 0xFFFF
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout)
            sock.sendto(ptr_query(address, ident), (server, 53))
            return parse_ptr_answer(sock.recv(4096), ident)
    except (OSError, ValueError, IndexError, struct.error):
        return None


def tls_from_environ(environ: Mapping[str, str], home: Path = TLS_HOME) -> TlsFiles | None:
    """The testbed's CA from ``$OFFLOAD_TESTBED_CA`` written under ``home`` (None: unset,
    plain TCP); SystemExit with one line when it is not a base64 PEM certificate."""
    encoded = environ.get(CA_VARIABLE, "").strip()
    if not encoded:
        return None
    try:
        pem = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise SystemExit(f"offload: {CA_VARIABLE} is not base64") from None
    if not pem.startswith(b"-----BEGIN CERTIFICATE-----"):
        raise SystemExit(f"offload: {CA_VARIABLE} is not a PEM certificate")
    files = TlsFiles.in_dir(home)
    files.ca.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    _write_private(files.ca, pem.decode("ascii"))
    return files


def render_config(environ: Mapping[str, str], host: str, tls: TlsFiles | None = None) -> str:
    """The container's offload.conf: the servers by service name, the testbed's intervals;
    with ``tls``, URLs verifying the servers' certificates (for their service names)."""
    port = int(environ.get("OFFLOAD_DB_PORT", "3306"))
    primary = environ.get("OFFLOAD_PRIMARY_HOST", "primary")
    replicas = [
        h.strip() for h in environ.get("OFFLOAD_REPLICA_HOSTS", "replica").split(",") if h.strip()
    ]
    writer = loopback_url("nova", environ["NOVA_PASSWORD"], port, NOVA_DATABASE, primary, tls=tls)
    readers = [
        loopback_url("nova_ro", environ["NOVA_RO_PASSWORD"], port, NOVA_DATABASE, h, tls=tls)
        for h in replicas
    ]
    plain = [u.render_as_string(hide_password=False) for u in (writer, *readers)]
    admin = environ.get("ADMIN_PASSWORD", "")
    admins = [
        loopback_url("offload_admin", admin, port, None, h, tls=tls).render_as_string(
            hide_password=False
        )
        for h in (primary, *replicas)
    ]
    lines = [
        "# Written by the compute container at start (offload.testbed.container).",
        "[DEFAULT]",
        f"host = {host}",
        "",
        "[database]",
        f"connection = {plain[0]}",
        f"slave_connection = {', '.join(plain[1:])}",
        "",
        *(
            [
                "[testbed]",
                f"admin_connection = {admins[0]}",
                f"replica_admin_connections = {', '.join(admins[1:])}",
                "",
            ]
            if admin
            else []
        ),
        "[compute]",
        *(f"{key} = {value}" for key, value in TESTBED_COMPUTE_OPTIONS.items()),
        "",
        "[service]",
        # the port is published on the host's 127.0.0.1 only (docker-compose.yml)
        "http_host = 0.0.0.0",
        f"http_port = {int(environ.get('OFFLOAD_HTTP_PORT', '8080'))}",
        "",
    ]
    return "\n".join(lines)


def _write_private(path: Path, text: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)


def _sync_schema(config: Path, timeout: float) -> None:
    """Create the nova tables on the primary unless they exist (waits for the primary)."""
    from sqlalchemy.exc import SQLAlchemyError  # noqa: PLC0415

    from offload import schema  # noqa: PLC0415
    from offload.config import load_settings  # noqa: PLC0415
    from offload.db import Database  # noqa: PLC0415
    from offload.errors import ConnectionLost  # noqa: PLC0415

    settings = load_settings(config, os.environ)

    def created() -> bool:
        try:
            with Database(settings) as db, db.writer() as session:
                schema.create_all(session.connection())
        except ConnectionLost as exc:
            sys.stderr.write(f"offload: waiting for the primary ({exc})\n")
            return False
        except SQLAlchemyError as exc:
            # scaled instances race to create the tables ("already exists"): try again,
            # create_all skips the tables another instance made
            detail = str(getattr(exc, "orig", exc)).splitlines()[0]
            sys.stderr.write(f"offload: creating the schema: {detail}; trying again\n")
            return False
        return True

    if not wait_for(created, Deadline(timeout), interval=1.0):
        raise SystemExit(f"offload: the primary did not answer within {timeout:.0f}s")


def _health(environ: Mapping[str, str]) -> int:
    port = int(environ.get("OFFLOAD_HTTP_PORT", "8080"))
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3) as answer:
            body: bytes = answer.read()
    except OSError as exc:
        sys.stderr.write(f"offload: /healthz does not answer ({exc})\n")
        return 1
    sys.stdout.write(body.decode(errors="replace") + "\n")
    return 0 if body.startswith((b"ok", b"degraded")) else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv) or ["serve"]
    if args[0] == "health":
        return _health(os.environ)
    if args[0] != "serve":
        sys.stderr.write("usage: python -m offload.testbed.container serve|health\n")
        return 2
    host = compute_host(os.environ, reverse_name=_reverse_name())
    _write_private(CONFIG_PATH, render_config(os.environ, host, tls_from_environ(os.environ)))
    _sync_schema(CONFIG_PATH, float(os.environ.get("OFFLOAD_START_TIMEOUT", "120")))
    sys.stderr.write(f"offload: compute service for host {host}\n")
    command = [
        sys.executable,
        "-m",
        "offload.cli",
        "--config",
        str(CONFIG_PATH),
        "serve",
        *args[1:],
    ]
    os.execv(sys.executable, command)  # noqa: S606 - an argument list, no shell
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())

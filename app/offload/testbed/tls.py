"""A testbed's own TLS: a certificate authority and the servers' certificate.

Made per testbed with the ``cryptography`` package when the testbed is first brought up,
kept in ``DIR/tls/`` (every file 0600): ``ca.pem`` (what clients verify against),
``ca-key.pem``, ``server-cert.pem`` and ``server-key.pem`` (what every server presents).
One server certificate serves every server of the testbed: its subject alternative
names are the loopback address, ``localhost`` and, for compose, the service names, so a
client (PyMySQL with ``ssl_ca``, a replica with ``MASTER_SSL_VERIFY_SERVER_CERT``)
checks the name it dialled.

The servers then run with ``require_secure_transport = ON``: a client without TLS is
refused (the Unix socket, which the testbed's root sessions use, counts as secure).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from offload.errors import TestbedError
from offload.testbed.topology import write_private

__all__ = [
    "DEFAULT_SERVER_NAMES",
    "TLS_DIR",
    "TLS_VARIABLE",
    "TlsFiles",
    "certificate_not_after",
    "days_left",
    "default_tls",
    "ensure_certificates",
    "parse_tls",
    "replica_tls_placeholders",
]

TLS_DIR = "tls"
#: on | off for every testbed a run starts (`make test TLS=off`, pytest's --testbed-tls)
TLS_VARIABLE = "OFFLOAD_TLS"
#: what every testbed's server certificate is valid for (compose adds its service names)
DEFAULT_SERVER_NAMES = ("127.0.0.1", "localhost")
#: validity of a testbed's CA and server certificate
CA_DAYS = 3650
SERVER_DAYS = 825


def parse_tls(value: str | bool) -> bool:
    """``on``/``off`` (the CLI's and the pytest option's words) as a bool."""
    if isinstance(value, bool):
        return value
    word = value.strip().lower()
    if word in {"on", "true", "yes", "1"}:
        return True
    if word in {"off", "false", "no", "0"}:
        return False
    raise TestbedError(f"TLS must be on or off, not {value!r}", hint="use --tls on or --tls off")


def default_tls() -> bool | None:
    """$OFFLOAD_TLS as a bool; None when unset (an existing testbed's, else on)."""
    chosen = os.environ.get(TLS_VARIABLE, "").strip()
    return parse_tls(chosen) if chosen else None


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The paths of one testbed's TLS files (they exist once ``ensure_certificates`` ran)."""

    ca: Path
    ca_key: Path
    cert: Path
    key: Path

    @classmethod
    def in_dir(cls, testbed_dir: Path) -> TlsFiles:
        home = testbed_dir / TLS_DIR
        return cls(
            ca=home / "ca.pem",
            ca_key=home / "ca-key.pem",
            cert=home / "server-cert.pem",
            key=home / "server-key.pem",
        )

    def exist(self) -> bool:
        return all(path.is_file() for path in (self.ca, self.ca_key, self.cert, self.key))

    def url_query(self) -> dict[str, str]:
        """The query a client's URL carries: the CA, the certificate and its name verified.

        SQLAlchemy's PyMySQL dialect turns ``ssl_ca`` + ``ssl_check_hostname`` into a
        verifying context; oslo.db's ``ssl_verify_cert=true`` beside ``ssl_ca`` would make
        PyMySQL drop the CA (``offload.urls.normalise_tls`` rewrites it).
        """
        return {"ssl_ca": str(self.ca), "ssl_check_hostname": "true"}

    def server_options(self, where: Path | None = None) -> list[str]:
        """my.cnf lines of a server presenting the certificate and refusing plain clients.

        ``where``: the directory the server sees the files in (a container's mount),
        else where they are.
        """
        ca, cert, key = (
            (where / p.name for p in (self.ca, self.cert, self.key))
            if where is not None
            else (self.ca, self.cert, self.key)
        )
        return [
            f"ssl_ca        = {ca}",
            f"ssl_cert      = {cert}",
            f"ssl_key       = {key}",
            "require_secure_transport = ON",
        ]


def replica_tls_placeholders(files: TlsFiles | None, where: Path | None = None) -> dict[str, str]:
    """``${TLS_ON}``/``${TLS_CA}`` of mysql/bootstrap/replica-*.sql: the replication channel
    over TLS with the primary's certificate verified (``where``: the CA's directory as the
    replica sees it), or plain without ``files``."""
    if files is None:
        return {"TLS_ON": "0", "TLS_CA": ""}
    return {"TLS_ON": "1", "TLS_CA": str(where / files.ca.name if where else files.ca)}


def _alt_name(name: str) -> object:
    from cryptography import x509  # noqa: PLC0415 - heavy; only when a testbed is made

    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def ensure_certificates(
    testbed_dir: Path,
    *,
    names: Iterable[str] = DEFAULT_SERVER_NAMES,
    now: dt.datetime | None = None,
    server_days: int = SERVER_DAYS,
) -> TlsFiles:
    """The testbed's CA and server certificate: made when missing, else left as they are."""
    files = TlsFiles.in_dir(testbed_dir)
    if files.exist():
        return files
    from cryptography import x509  # noqa: PLC0415 - heavy; only when a testbed is made
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: PLC0415

    start = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "offload testbed"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"offload testbed CA {testbed_dir.name}"),
        ]
    )
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    names = list(dict.fromkeys(names))
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "offload testbed"),
                    x509.NameAttribute(NameOID.COMMON_NAME, names[0]),
                ]
            )
        )
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=server_days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([_alt_name(n) for n in names]),  # type: ignore[misc]
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    files.ca.parent.mkdir(parents=True, exist_ok=True)
    files.ca.parent.chmod(0o700)
    pem = serialization.Encoding.PEM
    unencrypted = serialization.NoEncryption()
    # the key in PKCS#8 ("BEGIN PRIVATE KEY"): what both servers' TLS libraries read
    pkcs8 = serialization.PrivateFormat.PKCS8
    # PEM is ASCII
    write_private(files.ca_key, ca_key.private_bytes(pem, pkcs8, unencrypted).decode())
    write_private(files.key, server_key.private_bytes(pem, pkcs8, unencrypted).decode())
    write_private(files.cert, server_cert.public_bytes(pem).decode())
    # the CA last: its presence says the set is complete
    write_private(files.ca, ca_cert.public_bytes(pem).decode())
    return files


def certificate_not_after(path: Path) -> dt.datetime:
    """When the PEM certificate at ``path`` expires (UTC)."""
    from cryptography import x509  # noqa: PLC0415 - only when a certificate is read

    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise TestbedError(f"cannot read the certificate {path}: {exc}") from None
    return cert.not_valid_after_utc


def days_left(not_after: dt.datetime, now: dt.datetime) -> float:
    """Days from ``now`` until ``not_after`` (negative once expired), to a hundredth."""
    return round((not_after - now).total_seconds() / 86400, 2)

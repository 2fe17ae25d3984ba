"""TLS: the testbed's certificates, and what status makes of a session's TLS (clock injected)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509

from offload.errors import TestbedError
from offload.monitor import SessionTls, certificate_reasons, parse_not_after, tls_view
from offload.testbed.tls import (
    TlsFiles,
    certificate_not_after,
    ensure_certificates,
    parse_tls,
    replica_tls_placeholders,
)

NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)


def test_a_testbed_gets_a_ca_and_a_server_certificate_it_signed(tmp_path: Path) -> None:
    files = ensure_certificates(tmp_path, names=("127.0.0.1", "localhost", "primary"), now=NOW)
    for path in (files.ca, files.ca_key, files.cert, files.key):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    ca = x509.load_pem_x509_certificate(files.ca.read_bytes())
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    cert.verify_directly_issued_by(ca)  # raises when the CA did not sign it
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert names.get_values_for_type(x509.DNSName) == ["localhost", "primary"]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert certificate_not_after(files.cert) > NOW + dt.timedelta(days=800)


def test_existing_certificates_are_kept(tmp_path: Path) -> None:
    first = ensure_certificates(tmp_path).cert.read_bytes()
    assert ensure_certificates(tmp_path).cert.read_bytes() == first


def test_the_server_options_name_the_files_where_the_server_sees_them(tmp_path: Path) -> None:
    files = TlsFiles.in_dir(tmp_path)
    assert files.server_options(Path("/etc/mysql/tls")) == [
        "ssl_ca        = /etc/mysql/tls/ca.pem",
        "ssl_cert      = /etc/mysql/tls/server-cert.pem",
        "ssl_key       = /etc/mysql/tls/server-key.pem",
        "require_secure_transport = ON",
    ]
    assert replica_tls_placeholders(files) == {"TLS_ON": "1", "TLS_CA": str(files.ca)}
    assert replica_tls_placeholders(None) == {"TLS_ON": "0", "TLS_CA": ""}


@pytest.mark.parametrize(("word", "on"), [("on", True), ("OFF", False), ("true", True)])
def test_tls_words(word: str, on: bool) -> None:
    assert parse_tls(word) is on


def test_a_bad_tls_word_is_one_line() -> None:
    with pytest.raises(TestbedError, match="TLS must be on or off, not 'maybe'"):
        parse_tls("maybe")


def test_the_server_reports_its_certificate_expiry_in_openssl_words() -> None:
    assert parse_not_after("Dec  1 08:05:09 2028 GMT") == dt.datetime(
        2028, 12, 1, 8, 5, 9, tzinfo=dt.UTC
    )
    assert parse_not_after("") is None
    assert parse_not_after("not a date") is None


def _session(days: float) -> SessionTls:
    return SessionTls("TLSv1.3", "TLS_AES_256_GCM_SHA384", NOW + dt.timedelta(days=days))


def test_days_left_are_counted_from_the_injected_clock() -> None:
    view = tls_view(_session(10.5), NOW)
    assert view == {
        "version": "TLSv1.3",
        "cipher": "TLS_AES_256_GCM_SHA384",
        "cert_not_after": "2026-12-11T00:00:00+00:00",
        "cert_days_left": 10.5,
    }
    assert tls_view(_session(10.5), NOW + dt.timedelta(days=10))["cert_days_left"] == 0.5


def test_a_plain_session_has_no_certificate_to_count() -> None:
    view = tls_view(SessionTls("", "", NOW + dt.timedelta(days=3)), NOW)
    assert view == {"version": None, "cipher": None, "cert_not_after": None, "cert_days_left": None}


def test_a_certificate_under_the_threshold_degrades_health() -> None:
    views = {
        "primary": tls_view(_session(400), NOW),
        "replica0": tls_view(_session(13.9), NOW),
        "replica1": tls_view(_session(-2), NOW),
        "replica2": tls_view(SessionTls("", "", None), NOW),
    }
    assert certificate_reasons(views, 14) == [
        "replica0: TLS certificate expires in 13.9 days (cert_warning_days 14)",
        "replica1: TLS certificate expired 2.0 days ago",
    ]
    assert certificate_reasons(views, 13.5) == ["replica1: TLS certificate expired 2.0 days ago"]
    assert certificate_reasons(views, 0) == ["replica1: TLS certificate expired 2.0 days ago"]

"""Unit tests for offload.urls: parsing, validation and masking of database URLs."""

from __future__ import annotations

import pytest
from sqlalchemy import URL
from sqlalchemy.engine import make_url

from offload.errors import ConfigError
from offload.urls import masked, parse_url, tls_connect_args, with_database

SECRET = "Vx7-hunter2-Qm"
OPTION = "[database] connection"


def rejected(value: str, *, need_database: bool = True) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_url(value, option=OPTION, need_database=need_database)
    err = info.value
    assert SECRET not in str(err)
    assert OPTION in str(err)
    assert err.exit_code == 2
    return err


# --- masked -------------------------------------------------------------------


def test_masked_url_object_hides_the_password() -> None:
    url = URL.create(
        "mysql+pymysql", username="nova", password=SECRET, host="db1", port=3306, database="nova"
    )

    text = masked(url)

    assert SECRET not in text
    assert text == "mysql+pymysql://nova:***@db1:3306/nova"


def test_masked_url_with_special_characters_in_the_password() -> None:
    url = URL.create(
        "mysql+pymysql", username="nova", password="p@ss:w/rd%", host="db1", database="nova"
    )

    assert masked(url) == "mysql+pymysql://nova:***@db1/nova"


def test_masked_url_without_password_is_unchanged() -> None:
    assert masked(make_url("mysql+pymysql://nova@db1/nova")) == "mysql+pymysql://nova@db1/nova"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"mysql+pymysql://nova:{SECRET}@db1/nova", "mysql+pymysql://nova:***@db1/nova"),
        (f"mysql+pymysql://nova:{SECRET}@db1:port/nova", "mysql+pymysql://nova:***@db1:port/nova"),
        (f"nova:{SECRET}@db1/nova", "nova:***@db1/nova"),  # scheme forgotten
        (f"mysql+pymysql//nova:{SECRET}@db1/nova", "mysql+pymysql//nova:***@db1/nova"),
        (
            f"mysql+pymysql://nova:p@{SECRET}@db1/nova",  # unescaped @ in the password
            "mysql+pymysql://nova:***@db1/nova",
        ),
        (f"mysql+pymysql://:{SECRET}@db1/nova", "mysql+pymysql://:***@db1/nova"),
        ("mysql+pymysql://nova@db1/nova", "mysql+pymysql://nova@db1/nova"),
        ("not a url at all", "not a url at all"),
    ],
)
def test_masked_string_hides_the_password_even_when_malformed(text: str, expected: str) -> None:
    assert masked(text) == expected


def test_masked_string_with_a_mangled_scheme_leaks_nothing() -> None:
    text = masked(f"mysql+pymysql:/nova:{SECRET}@db1/nova")

    assert SECRET not in text
    assert text.endswith("@db1/nova")


# --- parse_url: accepted --------------------------------------------------------


@pytest.mark.parametrize(
    "scheme", ["mysql", "mysql+pymysql", "mysql+mysqldb", "mariadb", "mariadb+pymysql"]
)
def test_mysql_and_mariadb_drivers_are_normalised_to_pymysql(scheme: str) -> None:
    url = parse_url(f"{scheme}://nova:{SECRET}@db1:3307/nova", option=OPTION)

    assert url.drivername == "mysql+pymysql"
    assert (url.username, url.password, url.host, url.port, url.database) == (
        "nova",
        SECRET,
        "db1",
        3307,
        "nova",
    )


def test_query_string_is_kept() -> None:
    url = parse_url(
        f"mysql+pymysql://nova:{SECRET}@ctl/nova?charset=utf8&read_timeout=5", option=OPTION
    )

    assert dict(url.query) == {"charset": "utf8", "read_timeout": "5"}


def test_surrounding_whitespace_is_ignored() -> None:
    assert parse_url("  mysql://nova:x@db1/nova \n", option=OPTION).host == "db1"


def test_percent_encoded_password_is_decoded() -> None:
    assert parse_url("mysql://nova:p%40ss@db1/nova", option=OPTION).password == "p@ss"


def test_server_url_without_database_when_not_needed() -> None:
    url = parse_url(
        f"mysql+pymysql://root:{SECRET}@127.0.0.1:33061", option=OPTION, need_database=False
    )

    assert (url.host, url.port) == ("127.0.0.1", 33061)
    assert not url.database


# --- parse_url: rejected --------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("sqlite:///nova.sqlite", "'sqlite' backend"),
        (f"postgresql://nova:{SECRET}@db1/nova", "'postgresql' backend"),
        (f"postgresql+psycopg2://nova:{SECRET}@db1/nova", "'postgresql' backend"),
        (f"mysql+pymysql://nova:{SECRET}@/nova", "no host"),
        (f"mysql+pymysql://nova:{SECRET}@db1", "no database"),
        (f"mysql+pymysql://nova:{SECRET}@db1/", "no database"),
        ("garbage", "not a valid database URL"),
        ("", "not a valid database URL"),
        (f"mysql+pymysql://nova:{SECRET}@db1:port/nova", "not a valid database URL"),
        (f"nova:{SECRET}@db1/nova", "not a valid database URL"),
        (f"mysql+pymysql//nova:{SECRET}@db1/nova", "not a valid database URL"),
        (f"mysql+pymysql://nova:p@{SECRET}@db1/nova", "unescaped '@'"),
    ],
)
def test_bad_urls_are_rejected_without_echoing_the_password(value: str, expected: str) -> None:
    err = rejected(value)

    assert expected in str(err)
    assert err.hint


def test_no_host_is_rejected_even_without_database() -> None:
    assert "no host" in str(rejected(f"mysql://root:{SECRET}@", need_database=False))


def test_rejection_shows_the_masked_url() -> None:
    err = rejected(f"postgresql://nova:{SECRET}@db1/nova")

    assert "postgresql://nova:***@db1/nova" in str(err)


# --- with_database ---------------------------------------------------------------


def test_with_database_keeps_server_and_credentials() -> None:
    url = parse_url(f"mysql+pymysql://nova:{SECRET}@db1:3307/nova?charset=utf8", option=OPTION)

    other = with_database(url, "offload_test_1")

    assert other.database == "offload_test_1"
    assert (other.drivername, other.username, other.password, other.host, other.port) == (
        "mysql+pymysql",
        "nova",
        SECRET,
        "db1",
        3307,
    )
    assert dict(other.query) == {"charset": "utf8"}
    assert url.database == "nova"  # URLs are immutable


def test_with_database_none_drops_the_database() -> None:
    url = parse_url("mysql+pymysql://nova:x@db1/nova", option=OPTION)

    assert with_database(url, None).database is None
    assert masked(with_database(url, None)) == "mysql+pymysql://nova:***@db1"


def _query(value: str) -> dict[str, object]:
    return dict(parse_url(value, option="connection").query)


def test_oslo_db_verify_cert_beside_a_ca_becomes_what_sqlalchemy_passes_on() -> None:
    # PyMySQL would rebuild its ssl argument from ssl_verify_cert and lose the CA
    query = _query("mysql+pymysql://nova:pw@db/nova?ssl_ca=/etc/ca.pem&ssl_verify_cert=true")
    assert query == {"ssl_ca": "/etc/ca.pem", "ssl_check_hostname": "false"}


def test_verify_identity_checks_the_name_too() -> None:
    query = _query("mysql://nova:pw@db/nova?ssl_ca=/ca.pem&ssl_verify_identity=1")
    assert query == {"ssl_ca": "/ca.pem", "ssl_check_hostname": "true"}


def test_an_explicit_check_hostname_wins() -> None:
    query = _query(
        "mysql://nova:pw@db/nova?ssl_ca=/ca.pem&ssl_verify_cert=true&ssl_check_hostname=true"
    )
    assert query == {"ssl_ca": "/ca.pem", "ssl_check_hostname": "true"}


@pytest.mark.parametrize(
    "query",
    [
        "ssl_verify_cert=true",  # no CA: the system's store, as PyMySQL does it
        "ssl_ca=/ca.pem&ssl_verify_cert=false",  # verification off: as given
        "ssl_ca=/ca.pem&ssl_check_hostname=true",  # the testbed's own form
    ],
)
def test_other_tls_queries_are_kept_as_given(query: str) -> None:
    given = make_url(f"mysql://nova:pw@db/nova?{query}").query
    assert _query(f"mysql://nova:pw@db/nova?{query}") == dict(given)


def test_tls_keys_given_twice_are_refused_without_the_password() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_url(
            "mysql://nova:s3cret@db/nova?ssl_ca=/c&ssl_verify_cert=1&ssl_verify_cert=0",
            option="connection",
        )
    assert "twice" in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_a_tls_url_is_masked_with_its_query() -> None:
    url = parse_url("mysql://nova:s3cret@db/nova?ssl_ca=/ca.pem", option="connection")
    assert masked(url) == "mysql+pymysql://nova:***@db/nova?ssl_ca=%2Fca.pem"


def test_a_bare_pymysql_connection_gets_the_tls_an_engine_would() -> None:
    verified = parse_url("mysql://n:pw@db/nova?ssl_ca=/ca.pem&ssl_verify_cert=true", option="c")
    assert tls_connect_args(verified) == {"ssl": {"ca": "/ca.pem", "check_hostname": False}}
    plain = parse_url("mysql://n:pw@db/nova?ssl_disabled=true", option="c")
    assert tls_connect_args(plain) == {"ssl_disabled": "true"}
    assert tls_connect_args(parse_url("mysql://n:pw@db/nova", option="c")) == {}

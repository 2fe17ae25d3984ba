"""Database URLs: parsed once, validated, and never shown with a password.

SQLAlchemy is imported when a URL is parsed, not with this module: masking a string and
loading settings without URLs stay cheap (the CLI's start-up).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from offload.errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy import URL

__all__ = ["masked", "normalise_tls", "parse_url", "tls_connect_args", "with_database"]

_EXPECTED = "expected mysql+pymysql://USER:PASSWORD@HOST[:PORT]/DATABASE"
#: drivers we accept in a URL; every one is run through PyMySQL
_BACKENDS = frozenset({"mysql", "mariadb"})
# the scheme of a URL-like string: "mysql+pymysql://"
_SCHEME = re.compile(r"\s*[A-Za-z][A-Za-z0-9+.-]*://")


def masked(url: URL | str) -> str:
    """The URL as text with its password replaced by ``***``.

    Works on strings that do not even parse, so error messages about a
    malformed URL can show what was given without leaking a secret: whatever
    lies between the first ``:`` of the userinfo and the *last* ``@`` is
    hidden, so a missing scheme (``nova:pw@host/nova``), a mangled one
    (``mysql:/nova:pw@...``) or an unescaped ``@`` in the password leaks nothing.
    """
    if not isinstance(url, str):
        if url.host and "@" in url.host:  # "user:p@ss@host": the tail of p@ss is in host
            return masked(url.render_as_string(hide_password=False))
        return url.render_as_string(hide_password=True)
    at = url.rfind("@")
    if at < 0:
        return url
    scheme = _SCHEME.match(url)
    colon = url.find(":", scheme.end() if scheme else 0, at)
    if colon < 0:
        return url
    return f"{url[:colon]}:***{url[at:]}"


def parse_url(value: str, *, option: str, need_database: bool = True) -> URL:
    """Parse and validate a MySQL/MariaDB URL given for ``option``.

    ``mysql://`` and ``mysql+<driver>://`` (nova.conf style) are accepted and
    normalised to PyMySQL, the one driver offload runs on.
    """
    from sqlalchemy.engine import make_url  # noqa: PLC0415 - heavy; only when there is a URL
    from sqlalchemy.exc import ArgumentError  # noqa: PLC0415

    text = value.strip()
    try:
        url = make_url(text)
    except (ArgumentError, ValueError):
        raise ConfigError(
            f"{option} is not a valid database URL ({masked(text)})", hint=_EXPECTED
        ) from None
    backend = url.get_backend_name()
    if backend not in _BACKENDS:
        raise ConfigError(
            f"{option} names the {backend!r} backend ({masked(url)}); "
            "offload works with MySQL and MariaDB only",
            hint=_EXPECTED,
        )
    if not url.host:
        raise ConfigError(f"{option} has no host ({masked(url)})", hint=_EXPECTED)
    if "@" in url.host:
        raise ConfigError(
            f"{option} has an unescaped '@' in its user or password ({masked(url)})",
            hint="percent-encode it as %40",
        )
    if url.port is not None and not 1 <= url.port <= 65535:
        raise ConfigError(
            f"{option} has port {url.port}, outside 1-65535 ({masked(url)})", hint=_EXPECTED
        )
    if need_database and not url.database:
        raise ConfigError(f"{option} names no database ({masked(url)})", hint=_EXPECTED)
    # devstack adds ?plugin=dbcounter, a SQLAlchemy plugin offload does not ship
    return normalise_tls(url.difference_update_query(["plugin"]).set(drivername="mysql+pymysql"))


_YES = frozenset({"1", "true", "yes", "on"})


def normalise_tls(url: URL) -> URL:
    """oslo.db-style TLS keys rewritten into the form PyMySQL under SQLAlchemy honours.

    SQLAlchemy's PyMySQL dialect gathers ``ssl_ca``, ``ssl_cert``, ``ssl_key``,
    ``ssl_capath``, ``ssl_cipher`` and ``ssl_check_hostname`` into PyMySQL's ``ssl``
    argument and passes every other key as it is.  ``ssl_verify_cert=true`` (or
    ``ssl_verify_identity=true``) beside them then makes PyMySQL rebuild ``ssl`` from its
    own ``ssl_ca`` argument, which is empty: the CA is lost and the server's certificate
    is checked against the system's store (and refused).  With a CA named, verification
    is what ``ssl`` does anyway, so the key becomes ``ssl_check_hostname``: ``true`` for
    ``ssl_verify_identity``, ``false`` for ``ssl_verify_cert`` alone (PyMySQL's meaning:
    the certificate, not the name), unless the URL says ``ssl_check_hostname`` itself.
    Without a CA, or with verification turned off, the URL is left as it is.
    """
    query = url.query
    if not {"ssl_ca", "ssl_capath"} & set(query):
        return url
    words = {key: query.get(key) for key in ("ssl_verify_cert", "ssl_verify_identity")}
    if any(isinstance(value, tuple) for value in words.values()):
        raise ConfigError(
            f"a URL names ssl_verify_cert or ssl_verify_identity twice ({masked(url)})",
            hint="give each once",
        )
    cert, identity = (str(words[k]).strip().lower() in _YES for k in words)
    if not (cert or identity):
        return url
    checked = url.difference_update_query(list(words))
    if "ssl_check_hostname" in query:
        return checked
    return checked.update_query_dict({"ssl_check_hostname": "true" if identity else "false"})


def tls_connect_args(url: URL) -> dict[str, Any]:
    """The TLS arguments PyMySQL gets from ``url`` through SQLAlchemy (``ssl``,
    ``ssl_disabled`` ...): what a bare ``pymysql.connect`` passes to behave as an engine."""
    _args, kwargs = url.get_dialect()().create_connect_args(url)
    return {key: value for key, value in kwargs.items() if key.startswith("ssl")}


def with_database(url: URL, database: str | None) -> URL:
    """The same server and credentials, another database (None: no default database)."""
    # URL.set() ignores None ("values are used if they are non-None"); SQLAlchemy
    # documents the namedtuple's _replace() as the way to clear a field.
    return url._replace(database=database)

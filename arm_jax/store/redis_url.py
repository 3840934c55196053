"""A Redis store URL, checked before any connection: every mistake redis-py would turn into
a bare ValueError or TypeError at the first command is `InvalidStoreUrl` naming the URL
(password redacted) and what is wrong with it."""

from __future__ import annotations

import inspect
import math
from urllib.parse import ParseResult, parse_qs, urlparse

import redis
from redis.connection import (URL_QUERY_ARGUMENT_PARSERS, Connection, SSLConnection,
                              UnixDomainSocketConnection, parse_url)

from arm_jax.store.base import InvalidStoreUrl, redact_url

# query arguments redis-py passes on as strings (it parses those of
# URL_QUERY_ARGUMENT_PARSERS); each is taken by some connection class
_STRING_QUERY_ARGS = ("password", "username", "client_name", "ssl_keyfile", "ssl_certfile",
                      "ssl_cert_reqs", "ssl_ca_certs", "ssl_ca_path", "ssl_password",
                      "ssl_ciphers")
_CONNECTIONS = {"redis": Connection, "rediss": SSLConnection,
                "unix": UnixDomainSocketConnection}


def _query_args(scheme: str) -> list[str]:
    """The query arguments a `scheme`:// URL may carry: those redis-py reads from a URL
    that the scheme's connection class or the pool takes. Any other reaches a constructor
    as a keyword it has no parameter for: a TypeError from the first connection."""
    taken = {name for cls in (*_CONNECTIONS[scheme].__mro__, redis.ConnectionPool)
             if "__init__" in vars(cls) for name in inspect.signature(cls.__init__).parameters}
    return sorted(taken & {*URL_QUERY_ARGUMENT_PARSERS, *_STRING_QUERY_ARGS})


def _check_query_keys(parsed: ParseResult, shown: str) -> None:
    """InvalidStoreUrl naming the first query argument the URL's scheme does not take
    (?prefix=x: the key prefix is RedisStore's argument, not the URL's), and those it
    takes."""
    known = _query_args(parsed.scheme)
    for key in parse_qs(parsed.query, keep_blank_values=True):
        if key not in known:
            raise InvalidStoreUrl(f"store URL {shown!r}: unknown query argument {key!r}; a "
                                  f"{parsed.scheme}:// URL takes {', '.join(known)}")


def check_url(url: str) -> None:
    """InvalidStoreUrl naming `url` (password redacted) unless it parses: scheme, an integer
    port, an integer db (redis-py would raise a bare ValueError for the port, and use db 0
    for `/abc`), query arguments redis-py takes (unix:// URLs too; an unknown one was a
    TypeError from the first connection), timeouts that are positive numbers of seconds (a
    negative or NaN one was a bare ValueError from the first socket) and pool arguments
    (?max_connections=-5)."""
    shown = redact_url(url)
    try:
        parsed = urlparse(url)
    except ValueError as e:     # "Invalid IPv6 URL"
        raise InvalidStoreUrl(f"store URL {shown!r}: {e}") from None
    if parsed.scheme not in ("redis", "rediss", "unix"):
        raise InvalidStoreUrl(f"{shown}: not a redis://, rediss:// or unix:// URL")
    if parsed.scheme != "unix":         # unix://: a socket path, no port or db in it
        _check_port_and_db(parsed, shown)
    _check_query_keys(parsed, shown)
    try:
        options = parse_url(url)            # query arguments (?db=x, ?socket_timeout=y)
        redis.ConnectionPool.from_url(url)  # pool arguments; connects to nothing
    except ValueError as e:
        raise InvalidStoreUrl(f"store URL {shown!r}: {e}") from None
    for name in ("socket_timeout", "socket_connect_timeout"):
        value = options.get(name)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise InvalidStoreUrl(f"store URL {shown!r}: {name}={value}: must be a number "
                                  "of seconds > 0")


def _check_port_and_db(parsed: ParseResult, shown: str) -> None:
    """InvalidStoreUrl unless a redis:// URL's port and /db are integers."""
    try:
        _ = parsed.port     # parsed on access: ValueError when it is no port
    except ValueError:
        raise InvalidStoreUrl(f"store URL {shown!r}: the port must be an integer in "
                              "[0, 65535]") from None
    db = parsed.path.strip("/")
    if db and not db.isdigit():
        raise InvalidStoreUrl(f"store URL {shown!r}: the database after the port must be an "
                              f"integer such as /0, got {db!r}")

"""Store URLs: Redis URL checks (redis_url.py) and open_store's dispatch by scheme."""

from __future__ import annotations

import pytest

from arm_jax.store import BULK_TIMEOUT_S, InvalidStoreUrl, StoreUnavailable, open_store
from arm_jax.store.lmdb_store import LmdbStore
from arm_jax.store.redis_store import RedisStore


@pytest.mark.parametrize("url,words", [
    ("redis://127.0.0.1:notaport/0", "port must be an integer"),
    ("redis://127.0.0.1:99999/0", "port must be an integer"),
    ("redis://127.0.0.1:6379/abc", "database after the port must be an integer"),
    ("rediss://127.0.0.1:6379/0?db=x", "Invalid value for 'db'"),
    ("unix:///run/redis.sock?db=x", "Invalid value for 'db'"),
    ("unix:///run/redis.sock?socket_timeout=soon", "Invalid value for 'socket_timeout'"),
    # were bare ValueErrors naming no URL ("Timeout value out of range", "Invalid value NaN
    # (not a number)") from the first socket, or from the pool
    ("redis://127.0.0.1:6379/0?socket_timeout=-1", "socket_timeout=-1.0: must be"),
    ("redis://127.0.0.1:6379/0?socket_connect_timeout=nan", "socket_connect_timeout=nan"),
    ("redis://127.0.0.1:6379/0?max_connections=-5", "max_connections"),
])
def test_malformed_redis_url_is_invalid_store_url(url, words):
    """Never a bare ValueError from redis-py, never a silent db 0 for `/abc`."""
    with pytest.raises(InvalidStoreUrl, match=words) as e:
        open_store(url, readonly=True).check()
    assert url in str(e.value) and isinstance(e.value, StoreUnavailable)


@pytest.mark.parametrize("query,key", [
    ("?prefix=x", "prefix"),                        # RedisStore's argument, not the URL's
    ("?db=1&Socket_timeout=1", "Socket_timeout"),
    ("?decode_responses=true", "decode_responses"),  # a connection argument: not from a URL
    ("?prefix=", "prefix"),                         # blank: redis-py would drop it unseen
])
def test_an_unknown_redis_url_query_argument_is_invalid_store_url(redis_url, query, key):
    """A query argument redis-py does not read from a URL reached the connection class as
    a keyword: a TypeError traceback from the first command. Now InvalidStoreUrl names it
    and the arguments the scheme takes, before any connection; those still connect."""
    with pytest.raises(InvalidStoreUrl) as e:
        open_store(f"{redis_url}{query}", readonly=True).check()
    assert str(e.value) == (f"store URL '{redis_url}{query}': unknown query argument "
                            f"{key!r}; a redis:// URL takes client_name, db, "
                            "health_check_interval, legacy_responses, max_connections, "
                            "password, protocol, retry_on_error, retry_on_timeout, "
                            "socket_connect_timeout, socket_keepalive, socket_read_size, "
                            "socket_timeout, username")
    known = open_store(f"{redis_url}?socket_keepalive=true&client_name=t"
                       "&health_check_interval=5", readonly=True)
    assert known.check() and len(known.read(123_456_789)) == 0
    known.close()
    with pytest.raises(InvalidStoreUrl, match="'socket_keepalive'; a unix:// URL takes "
                                              "client_name, db,"):
        open_store("unix:///run/redis.sock?socket_keepalive=true", readonly=True)


def test_unparseable_redis_url_is_invalid_store_url():
    """urlparse's bare "Invalid IPv6 URL" ValueError named no store URL; the message
    shows the scheme only (the rest may hold a password)."""
    with pytest.raises(InvalidStoreUrl, match=r"store URL 'redis://\(unparseable URL\)': "
                                              "Invalid IPv6 URL"):
        open_store("redis://:secret@[::1/0", readonly=True)


def test_open_store_dispatch(tmp_path, redis_url):
    s = open_store(str(tmp_path / "a"))
    assert isinstance(s, LmdbStore)
    s.close()
    assert isinstance(open_store(f"lmdb://{tmp_path / 'b'}"), LmdbStore)
    assert isinstance(open_store(redis_url), RedisStore)
    # bulk work (training joins, loads) waits longer on Redis than the serving default
    assert open_store(redis_url).timeout_s == 0.5
    assert open_store(redis_url, bulk=True).timeout_s == BULK_TIMEOUT_S > 0.5
    assert open_store(redis_url, bulk=True, timeout_s=2.0).timeout_s == 2.0
    s = open_store(str(tmp_path / "a"), bulk=True)      # LMDB has no socket: ignored
    assert isinstance(s, LmdbStore)
    s.close()


@pytest.mark.parametrize("url", ["foo://x", "lmbd:///data/logs"])
def test_open_store_names_an_unknown_scheme_and_creates_nothing(tmp_path, monkeypatch, url):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidStoreUrl, match="unknown scheme") as e:
        open_store(url)
    assert url in str(e.value)
    assert not any(tmp_path.iterdir())


def test_open_store_takes_a_path_object_as_an_lmdb_directory(tmp_path):
    """open_store(pathlib.Path) raised AttributeError ('PosixPath' object has no attribute
    'startswith'), though LmdbStore takes any os.PathLike; a path is never a Redis URL."""
    from pathlib import Path

    from arm_jax.store import is_redis_url

    with open_store(tmp_path / "logs") as s:
        assert isinstance(s, LmdbStore) and s.path == tmp_path / "logs"
        s.append(1, [5], [0], [100])
    with open_store(tmp_path / "logs", readonly=True) as s:
        assert s.read(1).item.tolist() == [5]
    with pytest.raises(StoreUnavailable):
        open_store(tmp_path / "missing", readonly=True)
    assert not is_redis_url(Path("redis://127.0.0.1:6379/0"))
    with pytest.raises(InvalidStoreUrl, match="expected a URL string or a path"):
        open_store(None)

"""Store URLs with passwords: messages, logs and CLI output show them redacted, while the
store still connects (and unpickles) with the real one."""

from __future__ import annotations

import pickle

import pytest

from arm_jax.store import InvalidStoreUrl, StoreError, open_store
from arm_jax.store.base import redact_url
from arm_jax.store.redis_store import RedisStore

SECRET = "s3cret-Pw"


@pytest.mark.parametrize("url,shown", [
    (f"redis://:{SECRET}@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
    (f"rediss://admin:{SECRET}@cache.internal/2", "rediss://admin:***@cache.internal/2"),
    (f"redis://h:6379/0?password={SECRET}&db=1", "redis://h:6379/0?password=***&db=1"),
    (f"unix:///run/redis.sock?db=0&password={SECRET}", "unix:///run/redis.sock?db=0&password=***"),
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ("lmdb:///data/logs", "lmdb:///data/logs"),
    ("/data/logs", "/data/logs"),
])
def test_redact_url(url, shown):
    assert redact_url(url) == shown


def test_messages_never_show_the_password(redis_url, tmp_path):
    host_port = redis_url.split("//")[1].split("/")[0]
    store = RedisStore(f"redis://:{SECRET}@{host_port}/0", prefix="redact-test:")
    assert SECRET not in store.url and "***" in store.url
    store.ping()                                              # connects with the real URL
    store.put_raw(1, b"not a log")
    try:
        with pytest.raises(StoreError) as e:                  # CorruptValue names the store
            store.read(1)
        assert SECRET not in str(e.value) and "***" in str(e.value)
    finally:
        store.clear()
    again = pickle.loads(pickle.dumps(store))                 # reconnects with the real URL
    assert again.url == store.url and again._url == store._url and SECRET in again._url
    down = RedisStore(f"redis://:{SECRET}@127.0.0.1:1/0")     # nothing listens there
    with pytest.raises(StoreError) as e:
        down.read(1)
    assert SECRET not in str(e.value)
    for bad in (f"redis://:{SECRET}@h:notaport/0", f"redis://:{SECRET}@h:6379/abc",
                f"reddis://:{SECRET}@h:6379/0"):
        with pytest.raises(InvalidStoreUrl) as e:
            open_store(bad)
        assert SECRET not in str(e.value), str(e.value)


@pytest.mark.parametrize("url", [
    f"redis://:ab/{SECRET}+Q==@127.0.0.1:6379/0",        # a base64 password, not %-escaped
    f"redis://admin:ab#{SECRET}@127.0.0.1:6379/0",
    f"redis://:ab?{SECRET}@127.0.0.1:6379/0",
    f"redis://:a/b@{SECRET}@127.0.0.1:6379/0",
    f"redis://127.0.0.1:6379/0?password=ab#{SECRET}",
])
def test_a_password_with_url_delimiters_is_redacted_too(url):
    """'/', '?' or '#' in an unescaped password end the URL's authority early: urlsplit
    finds no password, and the whole URL was shown, in the InvalidStoreUrl its bad "port"
    raised too."""
    assert SECRET not in redact_url(url) and "***" in redact_url(url)
    with pytest.raises(StoreError) as e:
        open_store(url, timeout_s=0.2, connect_timeout_s=0.2).check()
    assert SECRET not in str(e.value), str(e.value)

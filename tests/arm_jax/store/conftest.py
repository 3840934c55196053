"""Both store backends behind one parametrized fixture; Redis is a real server on 127.0.0.1."""

from __future__ import annotations

import uuid

import pytest

from arm_jax.store.lmdb_store import LmdbStore
from arm_jax.store.redis_server import RedisServer, find_redis_server
from arm_jax.store.redis_store import RedisStore


@pytest.fixture(scope="session")
def redis_url():
    """A real redis-server on a free port for the whole session (skipped if not installed)."""
    if find_redis_server() is None:
        pytest.skip("redis-server binary not found: install it with "
                    "`bash scripts/setup.sh --test` to run the Redis store tests")
    with RedisServer() as srv:
        yield srv.url


@pytest.fixture(params=["lmdb", "redis"])
def store(request, tmp_path):
    """A fresh, empty store of each backend."""
    if request.param == "lmdb":
        s = LmdbStore(tmp_path / "logs", map_size=1 << 26)
    else:
        url = request.getfixturevalue("redis_url")
        s = RedisStore(url, prefix=f"t{uuid.uuid4().hex[:8]}:")
    yield s
    s.close()

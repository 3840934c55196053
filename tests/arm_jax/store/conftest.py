"""Both store backends behind one parametrized fixture; Redis is a real server on 127.0.0.1
(the session's `redis_url`, tests/conftest.py)."""

from __future__ import annotations

import uuid

import pytest

from arm_jax.store.lmdb_store import LmdbStore
from arm_jax.store.redis_store import RedisStore


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


def _stored_bytes(store, user: int) -> bytes:
    """The raw stored value of one user (the codec's chunks), whatever the backend."""
    if isinstance(store, LmdbStore):
        from arm_jax.store.lmdb_store import user_key

        with store.env.begin() as txn:
            return bytes(txn.get(user_key(user)))
    return bytes(store.client.get(store.key(user)))


@pytest.fixture
def stored_bytes():
    """`stored_bytes(store, user)`: a user's raw value, to inspect or damage."""
    return _stored_bytes

"""User-log store: one copy of each user's event log, read with a point-in-time cut.

`open_store(url)` picks the backend: `lmdb:///path` or a plain path (embedded, default),
`redis://host:port/db` (shared server).
"""

from __future__ import annotations

import os

from arm_jax.store.base import (ActionOutOfRange, CorruptValue, Events, InvalidEvents,
                                InvalidStoreUrl, StoreError, StoreUnavailable, UserLogStore,
                                redact_url)

_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def is_redis_url(url: str | os.PathLike) -> bool:
    """Whether `open_store(url)` opens a RedisStore (never for a path object)."""
    return isinstance(url, str) and url.startswith(_REDIS_SCHEMES)


# Redis socket timeout of batch work (loads, compaction, training joins: one MGET of a
# batch of whole logs): not RedisStore's 0.5 s default, which lets a server fall back fast
BULK_TIMEOUT_S = 30.0


def open_store(url: str | os.PathLike, *, readonly: bool = False, bulk: bool = False,
               **kwargs: object) -> UserLogStore:
    """A store from a URL: `redis://...` -> RedisStore; `lmdb://PATH` or PATH -> LmdbStore.
    A path object (`pathlib.Path`) is always a local LMDB directory.

    `readonly` opens LMDB without creating a store where there is none (StoreUnavailable
    instead); a Redis connection creates nothing by reading, so it ignores the flag.
    `bulk` (batch reads and writes, not the serving path) gives Redis a socket timeout of
    BULK_TIMEOUT_S unless `timeout_s` is passed; LMDB ignores it.
    """
    if isinstance(url, os.PathLike):
        from arm_jax.store.lmdb_store import LmdbStore

        return LmdbStore(url, readonly=readonly, **kwargs)  # type: ignore[arg-type]
    if not isinstance(url, str):
        raise InvalidStoreUrl(f"store URL {url!r}: expected a URL string or a path")
    if is_redis_url(url):
        from arm_jax.store.redis_store import RedisStore

        if bulk:
            kwargs.setdefault("timeout_s", BULK_TIMEOUT_S)
        return RedisStore(url, **kwargs)  # type: ignore[arg-type]
    scheme = url.partition("://")[0] if "://" in url else None
    if scheme is not None and scheme != "lmdb":   # a typo must not become a directory
        raise InvalidStoreUrl(f"store URL {redact_url(url)!r}: unknown scheme {scheme!r}; use "
                              "lmdb://PATH, "
                              f"a plain path, or {', '.join(s + '...' for s in _REDIS_SCHEMES)}")
    from arm_jax.store.lmdb_store import LmdbStore

    path = url[len("lmdb://"):] if url.startswith("lmdb://") else url
    if not path:
        raise InvalidStoreUrl(f"store URL {url!r} names no path")
    return LmdbStore(path, readonly=readonly, **kwargs)  # type: ignore[arg-type]


__all__ = ["open_store", "is_redis_url", "BULK_TIMEOUT_S", "UserLogStore", "Events",
           "StoreError", "StoreUnavailable", "CorruptValue", "ActionOutOfRange",
           "InvalidEvents", "InvalidStoreUrl"]

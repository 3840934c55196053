"""User-log store on a Redis server: one store shared by many trainers and servers.

Each user's value is a Redis string of `codec` chunks; an append is one `APPEND` (atomic on
the server), so readers always see whole chunks; batch reads are one `MGET`. Connection
failures and timeouts become `StoreUnavailable` quickly (short timeouts, one retry), so a
server can fall back instead of hanging. Connections are reopened after a fork.
`append_batch` records its batch ids under `<prefix>batch:<id>`, in the same MULTI as the
events (`redis_batches`: the exactly-once protocol, in parts when large); scans over users
skip those keys.

Compaction on the write path: every APPEND also counts, in the same round trip, the
chunks added to that user's value since it was last one chunk (a field of the hash
`<prefix>appends`); a writer that takes a count to `compact_every` (default 32) rewrites
the value as one chunk (optimistically, as `compact` does). Event-at-a-time writers then
leave about `compact_every` chunks per value at most, so a read decodes a bounded number
of chunks; the price is one read and one write of the whole value per `compact_every`
appends. The rewrite is best-effort: the APPEND has already succeeded, so a failure there
is logged, never raised (a caller retrying the append would store it twice).
`compact_every=None` turns it off (`compact()` then does it on demand).
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
from typing import Iterator, Sequence

import numpy as np
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from arm_jax.store import codec
from arm_jax.store.base import (CorruptValue, Events, StoreError, StoreUnavailable,
                                UserLogStore, check_positive_int,
                                check_user, check_user_sequence, group_by_user, redact_url)
from arm_jax.store.redis_batches import RedisBatches
from arm_jax.store.redis_url import check_url

_PIPELINE_CHUNK = 2000   # commands per pipeline round trip in bulk loads
_COMPACT_TRIES = 8       # optimistic rewrites of one key before compact moves on
COMPACT_EVERY = 32       # chunks appended to one value before the writer rewrites it as one
MULTI_USERS = 2048       # users per MULTI in append_batch: bounds how long one EXEC stalls others

log = logging.getLogger(__name__)


# {key, type} of the first of KEYS holding anything but a string, else nil
_FIRST_NOT_STRING = """
for _, key in ipairs(KEYS) do
  local kind = redis.call('TYPE', key)['ok']
  if kind ~= 'string' and kind ~= 'none' then return {key, kind} end
end
return nil
"""

# redis-py names a failed pipeline command with all its arguments: an APPEND's binary chunk
_PIPELINE_COMMAND = re.compile(r"Command # (\d+) \((\S+) (\S+) .*\) of pipeline caused error: ",
                               re.DOTALL)


def _without_values(message: str) -> str:
    """A Redis error message with a failed pipeline command shown as its name and key only
    (the value it carried is binary codec bytes, unreadable in a one-line message)."""
    return _PIPELINE_COMMAND.sub(r"command \1 of the pipeline (\2 \3): ", message, count=1)


def _check_timeout(value: object, name: str) -> float | None:
    """ValueError naming `name` unless `value` is a finite number of seconds > 0, or None
    (redis-py's "no timeout"). redis-py raised a bare "Timeout value out of range" at the
    first command for a negative or NaN one, and 0 made every command time out."""
    if value is None:
        return None
    ok = isinstance(value, (int, float, np.integer, np.floating)) \
        and not isinstance(value, (bool, np.bool_)) and math.isfinite(value) and value > 0
    if not ok:
        raise ValueError(f"{name}={value!r}: must be a number of seconds > 0")
    return float(value)     # a numpy float32 is no socket timeout (a TypeError)


class RedisStore(RedisBatches, UserLogStore):
    """User logs under `<prefix><user id>` keys of the Redis at `url` (redis://host:port/db).

    `store.url`, which every error and log line names, has any password redacted."""

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", *, prefix: str = "armjax:log:",
                 timeout_s: float = 0.5, connect_timeout_s: float = 0.25,
                 compact_every: int | None = COMPACT_EVERY, compress: bool = False,
                 multi_users: int = MULTI_USERS) -> None:
        check_url(url)
        multi_users = check_positive_int(multi_users, "multi_users")
        if not isinstance(prefix, str):     # None made every key "None<user>"
            raise ValueError(f"prefix={prefix!r}: must be a string (the store's key prefix, "
                             "e.g. 'armjax:log:')")
        timeout_s = _check_timeout(timeout_s, "timeout_s")
        connect_timeout_s = _check_timeout(connect_timeout_s, "connect_timeout_s")
        if compact_every is not None and compact_every < 2:
            raise ValueError(f"compact_every={compact_every}: must be >= 2 (or None: never "
                             "compact on the write path)")
        self._url = url                 # to connect with; `url` is what messages show
        self.url = redact_url(url)
        self.prefix = prefix
        self.compact_every = compact_every
        self.compress = compress
        self.multi_users = multi_users
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self._client: redis.Redis | None = None
        self._pid = -1
        self._lock = threading.Lock()

    @property
    def client(self) -> redis.Redis:
        with self._lock:
            if self._client is None or self._pid != os.getpid():
                self._client = redis.Redis.from_url(
                    self._url, socket_timeout=self.timeout_s,
                    socket_connect_timeout=self.connect_timeout_s,
                    retry=Retry(NoBackoff(), 1), health_check_interval=0)
                self._pid = os.getpid()
            return self._client

    def close(self) -> None:
        with self._lock:
            if self._client is not None and self._pid == os.getpid():
                self._client.close()
            self._client = None

    def __getstate__(self) -> dict:
        return {"url": self._url, "prefix": self.prefix, "timeout_s": self.timeout_s,
                "connect_timeout_s": self.connect_timeout_s,
                "compact_every": self.compact_every, "compress": self.compress,
                "multi_users": self.multi_users}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state.pop("url"), **state)

    @property
    def _pattern(self) -> str:
        """SCAN pattern of every key under the prefix (glob characters in it escaped)."""
        return re.sub(r"([\\*?\[\]])", r"\\\1", self.prefix) + "*"

    def key(self, user_id: int) -> str:
        return f"{self.prefix}{int(user_id)}"

    def _call(self, fn, what: str):
        try:
            return fn()
        except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
            raise StoreUnavailable(f"{self.url}: {what} failed: {e}") from None
        except redis.RedisError as e:
            raise StoreError(f"{self.url}: {what} failed: {_without_values(str(e))}") from None

    # ------------------------------------------------------------ writes

    def append(self, user_id: int, item: object, action: object, ts: object) -> None:
        """No events is a no-op (as for `append_many`), but the user id is checked first."""
        u = check_user(user_id)
        chunk = codec.encode(item, action, ts, compress=self.compress)
        if chunk:
            self._append_chunks([(u, chunk)], "APPEND")

    def append_many(self, user_id: object, item: object, action: object, ts: object) -> int:
        """Append each user's events in pipelined round trips. Every user's key is checked
        first (`_check_log_keys`), so a key of another type stops the call before any user
        is written: the pipeline does not stop at a failed APPEND, and the others' events
        landed while the caller was told none had (a retry then wrote them twice)."""
        groups = group_by_user(user_id, item, action, ts)
        for lo in range(0, len(groups), _PIPELINE_CHUNK):
            self._check_log_keys([g[0] for g in groups[lo:lo + _PIPELINE_CHUNK]])
        for lo in range(0, len(groups), _PIPELINE_CHUNK):
            self._append_chunks([(u, codec.encode(it, ac, t, compress=self.compress))
                                 for u, it, ac, t in groups[lo:lo + _PIPELINE_CHUNK]],
                                "pipelined APPEND")
        return len(groups)

    def _append_chunks(self, chunks: list[tuple[int, bytes]], what: str) -> None:
        """One round trip: APPEND each chunk and count it; then rewrite the values whose
        count reached `compact_every` (best-effort, after the appends succeeded)."""
        def send() -> list:
            pipe = self.client.pipeline(transaction=False)
            self._queue_appends(pipe, chunks)
            return pipe.execute()
        self._compact_due(chunks, self._call(send, what))

    def _queue_appends(self, pipe: redis.client.Pipeline,
                       chunks: list[tuple[int, bytes]]) -> None:
        """APPEND each (user, chunk), each followed by its HINCRBY when counting."""
        for u, chunk in chunks:
            pipe.append(self.key(u), chunk)
            if self.compact_every is not None:
                pipe.hincrby(self.counts_key, str(u), 1)

    def _compact_due(self, chunks: list[tuple[int, bytes]], replies: list) -> None:
        """Compact the users whose count (the reply after their APPEND) reached the limit."""
        if self.compact_every is not None:
            counts = replies[1:2 * len(chunks):2]
            self._compact_counted([u for (u, _), n in zip(chunks, counts)
                                   if n >= self.compact_every])

    def _compact_counted(self, users: list[int]) -> None:
        for u in users:
            try:
                self._call(lambda u=u: self._compact_key(self.key(u).encode(),
                                                         reset_count=True), "compact")
            except StoreError as e:           # CorruptValue, outage: the append stands
                log.warning("%s: compacting user %d after its append failed: %s", self.url,
                            u, e)

    @property
    def counts_key(self) -> str:
        """The hash counting, per user, chunks appended since the value was one chunk."""
        return f"{self.prefix}appends"

    def _check_log_keys(self, users: list[int]) -> None:
        """StoreError naming the first of `users`' keys that holds anything but a string (a
        key another program wrote under the prefix). A MULTI does not stop at a failed
        command: its other APPENDs and its id would land, and a retry would skip the
        batch, leaving that user's events unwritten. One server-side script over the
        keys (a TYPE command per key from Python made a load 18% slower)."""
        found = self._first_not_string([self.key(u) for u in users])
        if found:
            key, kind = found
            raise StoreError(f"{self.url}: key {key} holds a {kind}, not a user log "
                             "(another program's key under this store's prefix?); none of "
                             "these users' events were written")

    def _first_not_string(self, keys: list[str]) -> tuple[str, str] | None:
        """(key, type) of the first of `keys` holding anything but a string, else None:
        one round trip, whatever the number of keys."""
        found = self._call(lambda: self.client.eval(_FIRST_NOT_STRING, len(keys), *keys),
                           "TYPE check")
        return tuple(v.decode() for v in found) if found else None

    @property
    def _prefix_bytes(self) -> int:
        """Length of the prefix in the keys SCAN returns (bytes, not characters)."""
        return len(self.prefix.encode())

    def _user_keys(self):
        """Every user key under the prefix, once (SCAN may repeat a key), skipping the
        batch ids and the append counts."""
        n, seen = self._prefix_bytes, set()
        for key in self.client.scan_iter(match=self._pattern, count=1000):
            if key[n:].isdigit() and key not in seen:
                seen.add(key)
                yield key

    def user_ids(self) -> Iterator[int]:
        """SCAN order; users appended during the walk may or may not be listed."""
        n = self._prefix_bytes
        keys = self._call(lambda: list(self._user_keys()), "SCAN")
        return iter([int(k[n:]) for k in keys])

    def delete(self, user_ids: Sequence[int]) -> int:
        check_user_sequence(user_ids)
        users = list(dict.fromkeys(check_user(u) for u in user_ids))   # checked, then written
        if not users:
            return 0

        def run() -> int:
            pipe = self.client.pipeline(transaction=True)
            pipe.delete(*[self.key(u) for u in users])
            pipe.hdel(self.counts_key, *[str(u) for u in users])
            return int(pipe.execute()[0])
        return self._call(run, "DEL")

    def compact(self) -> int:
        """Rewrite every value of more than one chunk (one per APPEND) as one chunk, and with
        `compress` every plain value as a compressed one.

        Each rewrite is optimistic (WATCH the key, read, merge, SET in MULTI): an APPEND
        that lands in between aborts it and the key is read again, so no event is lost
        while writers keep appending. A damaged value, or a key of another type under the
        prefix, raises CorruptValue naming it, untouched."""
        def run() -> int:
            done = 0
            for key in self._user_keys():
                done += self._compact_key(key)
            return done
        return self._call(run, "compact")

    def _compact_key(self, key: bytes, *, reset_count: bool = False) -> int:
        """Rewrite one value as one chunk (WATCH/MULTI; its append count reset with it).
        `reset_count` also resets the count of a value found already compact (the write
        path: a stale count would otherwise send every later append here)."""
        name = f"{self.url} {key.decode(errors='replace')}"
        user = key.decode(errors="replace")[len(self.prefix):]
        with self.client.pipeline() as pipe:
            for _ in range(_COMPACT_TRIES):   # a key appended to nonstop is left for later
                try:
                    pipe.watch(key)
                    value = self._get_log(pipe, key)
                    new = codec.compact(value, key=name, compress=self.compress)
                    if new is None:
                        pipe.unwatch()
                        if reset_count:
                            self.client.hdel(self.counts_key, user)
                        return 0
                    pipe.multi()
                    pipe.set(key, new)
                    pipe.hdel(self.counts_key, user)   # appends landing later count anew
                    pipe.execute()
                    return 1
                except redis.WatchError:      # an append came in between: read it again
                    continue
        return 0

    def _get_log(self, pipe: redis.client.Pipeline, key: bytes) -> bytes | None:
        """GET `key` (WATCHed in `pipe`); CorruptValue naming it if it holds another type,
        where GET fails with a bare WRONGTYPE naming nothing."""
        try:
            return pipe.get(key)
        except redis.ResponseError as e:
            if not str(e).startswith("WRONGTYPE"):
                raise
            raise self._not_a_log(key.decode(errors="replace"),
                                  self.client.type(key).decode()) from None

    def _not_a_log(self, key: str, kind: str) -> CorruptValue:
        """The error for a key under the prefix that holds a `kind`, not a user log."""
        return CorruptValue(f"{self.url} {key}: holds a {kind}, not a user log (another "
                            "program's key under this store's prefix?)")

    def put_raw(self, user_id: int, value: bytes) -> None:
        """Overwrite a user's stored bytes verbatim (tests, repair tools)."""
        self._call(lambda: self.client.set(self.key(check_user(user_id)), value), "SET")

    def clear(self) -> int:
        """Delete every key under this store's prefix (batch ids too); returns how many."""
        def run() -> int:
            keys = list(self.client.scan_iter(match=self._pattern, count=1000))
            return sum(self.client.delete(*keys[i:i + 1000]) for i in range(0, len(keys), 1000))
        return self._call(run, "clear")

    # ------------------------------------------------------------ reads

    def ping(self) -> None:
        """StoreUnavailable unless the server answers (one round trip)."""
        self._call(lambda: self.client.ping(), "PING")

    def check(self) -> str:
        """One PING (counting users would SCAN every key)."""
        self.ping()
        return "reachable"

    def read_many(self, user_ids: Sequence[int]) -> list[Events]:
        check_user_sequence(user_ids)
        keys = [self.key(check_user(u)) for u in user_ids]   # any iterable, as LMDB's
        if not keys:
            return []
        values = self._call(lambda: self.client.mget(keys), "MGET")
        missing = [k for k, v in zip(keys, values) if v is None]
        if missing:     # MGET answers nil for a key of another type too: never "no events"
            found = self._first_not_string(missing)
            if found:
                raise self._not_a_log(*found)
        return [codec.decode(v, key=f"{self.url} {k}") for k, v in zip(keys, values)]

    def num_users(self) -> int:
        """Users with a stored log under this store's prefix (a SCAN: O(keys))."""
        def run() -> int:
            return sum(1 for _ in self._user_keys())
        return self._call(run, "SCAN")

    def memory_bytes(self) -> int:
        """Server-side bytes of this store (MEMORY USAGE summed over its keys: the users'
        values, the batch ids, and the append-count hash, which holds a field per user
        appended to since its last rewrite: after one bulk load of ~5 events per user it
        was a quarter of the total)."""
        def run() -> int:
            total = 0
            for k in self.client.scan_iter(match=self._pattern, count=1000):
                total += int(self.client.memory_usage(k) or 0)
            return total
        return self._call(run, "MEMORY USAGE")

    def size(self) -> tuple[int, str]:
        return self.memory_bytes(), "in Redis memory"


__all__ = ["RedisStore"]

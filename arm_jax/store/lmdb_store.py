"""Embedded user-log store on LMDB: the default (no server), one file per store directory.

Keys are 8-byte big-endian user ids (< 2^63, so the first byte is < 0x80); values are
`codec` chunks. `append_batch` records its batch ids under keys starting with 0xFF, after
every user. An append is one write
transaction (read the value, merge the new events into it as one chunk, put it back), so
readers, which run in their own MVCC read transactions, always see whole appends, never
block the writer, and decode one chunk per user however the log was written.

A data.mdb cut short (a copy stopped part way) is refused on opening (CorruptValue): LMDB
maps the file, and its first read of a page past the end would kill the process with SIGBUS.

Processes: a pickled store reopens itself in the process that unpickles it (spawned
workers). A forked child cannot reopen an environment its parent holds open: py-lmdb
refuses, and closing the inherited one would drop the parent's readers from LMDB's lock
table; open stores after the fork, or use spawned workers.
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from pathlib import Path
from typing import Iterator, Sequence

import lmdb
import numpy as np

from arm_jax.store import codec
from arm_jax.store.base import (Events, StoreError, StoreUnavailable, UserLogStore,
                                check_batch_id, check_events, check_positive_int,
                                check_user, check_user_sequence, group_by_user)
from arm_jax.store.lmdb_file_check import check_data_file

DEFAULT_MAP_SIZE = 64 << 30   # address space, not disk: the file grows as data arrives

# LMDB allows one Environment per file per process: stores on the same path share it.
_ENVS: dict[tuple[str, int], list] = {}    # (realpath, pid) -> [env, refcount]
_ENVS_LOCK = threading.Lock()
_DEFERRED: list[tuple[str, int]] = []      # releases the lock was busy for; done under it


def _release(key: tuple[str, int], blocking: bool = False) -> None:
    """Drop one store's share of the environment under `key`; close it with the last.
    Never in a forked child: closing an inherited environment would drop the parent's
    readers from LMDB's lock table.

    As a finalizer (`blocking=False`) it may run inside a garbage collection triggered
    while this very thread holds `_ENVS_LOCK` (in `_open`): waiting for the lock there
    deadlocked the thread and every later open. Then the release is queued, and done by
    whoever next holds the lock."""
    if key[1] != os.getpid():
        return
    if not _ENVS_LOCK.acquire(blocking=blocking):
        _DEFERRED.append(key)                   # list.append: atomic, takes no lock
        return
    try:
        _release_deferred()
        _release_held(key)
    finally:
        _ENVS_LOCK.release()


def _release_held(key: tuple[str, int]) -> None:
    """`_release`'s work, with `_ENVS_LOCK` held."""
    entry = _ENVS.get(key)
    if entry is not None:
        entry[1] -= 1
        if entry[1] <= 0:
            entry[0].close()
            del _ENVS[key]


def _release_deferred() -> None:
    """The releases queued while the lock was busy, with `_ENVS_LOCK` held."""
    while _DEFERRED:
        _release_held(_DEFERRED.pop())


_BATCH = b"\xffbatch:"      # sorts after every user key


def user_key(user_id: int) -> bytes:
    return int(user_id).to_bytes(8, "big")


def _batch_key(batch_id: str) -> bytes:
    return _BATCH + check_batch_id(batch_id).encode()


class LmdbStore(UserLogStore):
    """User logs in the LMDB environment at `path` (a directory, created unless readonly).

    `compress=True` writes logs as compressed (version 2) chunks: about 2.2x smaller on
    disk, each read inflating them (~0.1 ms per 1,800-event log); a log stored compressed
    stays compressed whoever appends to it. Reads handle both forms.
    A `readonly` store never creates anything and refuses writes (StoreError). Stores on
    the same path in one process share one environment (LMDB allows no more): a read-only
    store may share a writer's, but a writer cannot open a path a read-only store holds.
    """

    def __init__(self, path: str | os.PathLike, *, readonly: bool = False,
                 map_size: int = DEFAULT_MAP_SIZE, max_readers: int = 512,
                 compress: bool = False) -> None:
        self.path = Path(path)
        self.compress = compress
        self.readonly = readonly
        # checked here: lmdb.open raised a bare OverflowError for -1, TypeError for 1.5
        self.map_size = check_positive_int(map_size, "map_size")
        self.max_readers = check_positive_int(max_readers, "max_readers")
        self.url = f"lmdb://{self.path}"
        self._env: lmdb.Environment | None = None
        self._release: weakref.finalize | None = None
        self._pid = -1
        self._lock = threading.Lock()
        self._open()

    # ------------------------------------------------------------ lifecycle

    def _open(self) -> lmdb.Environment:
        with self._lock:
            if self._env is not None and self._pid == os.getpid():
                return self._env
            if self.readonly and not (self.path / "data.mdb").exists():
                raise StoreUnavailable(f"{self.url}: no LMDB store here (data.mdb missing)")
            key = (os.path.realpath(self.path), os.getpid())
            with _ENVS_LOCK:
                _release_deferred()
                entry = _ENVS.get(key)
                if entry is not None and entry[2] and not self.readonly:
                    raise StoreUnavailable(
                        f"{self.url}: already open read-only in this process; close the "
                        "read-only store before opening it for writing")
                if entry is None:
                    try:
                        if not self.readonly:   # a new store may be nested: mkdir -p
                            self.path.parent.mkdir(parents=True, exist_ok=True)
                        env = lmdb.open(str(self.path), map_size=self.map_size,
                                        readonly=self.readonly, max_readers=self.max_readers,
                                        subdir=True, create=not self.readonly, lock=True,
                                        max_spare_txns=8)
                    except (lmdb.Error, OSError) as e:
                        forked = any(k[0] == key[0] and k[1] != key[1] for k in _ENVS)
                        hint = ("; it was open in the parent when this process forked: "
                                "open the store after the fork, or use spawned workers"
                                if forked else "")
                        raise StoreUnavailable(
                            f"{self.url}: cannot open LMDB store: {e}{hint}") from None
                    try:                # before any read of a page past the file's end
                        check_data_file(env, self.path, self.url)
                    except BaseException:
                        env.close()
                        raise
                    entry = _ENVS[key] = [env, 0, self.readonly]
                entry[1] += 1
            self._env, self._pid, self._key = entry[0], key[1], key
            # a store dropped without close() releases its share when collected: otherwise
            # the environment stays open for good, and a store recreated at the same path
            # after the directory was deleted would reuse it (reading deleted data)
            self._release = weakref.finalize(self, _release, key)
            return self._env

    @property
    def env(self) -> lmdb.Environment:
        env = self._env
        if env is None or self._pid != os.getpid():
            env = self._open()
        return env

    def close(self) -> None:
        with self._lock:
            if self._env is not None and self._release is not None:
                if self._release.detach() is not None:   # once: not again when collected
                    _release(self._key, blocking=True)
            self._env, self._release = None, None

    def __getstate__(self) -> dict:
        return {"path": self.path, "readonly": self.readonly, "map_size": self.map_size,
                "max_readers": self.max_readers, "compress": self.compress}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], readonly=state["readonly"], map_size=state["map_size"],
                      max_readers=state["max_readers"], compress=state.get("compress", False))

    # ------------------------------------------------------------ writes

    @contextlib.contextmanager
    def _write_txn(self) -> Iterator[lmdb.Transaction]:
        """One write transaction, committed unless the block raises. LMDB's own failures
        (a full map above all) become StoreError: nothing of the transaction is written."""
        if self.readonly:
            raise StoreError(f"{self.url}: opened read-only; cannot write")
        env = self.env
        try:
            with env.begin(write=True) as txn:
                yield txn
        except lmdb.MapFullError:
            raise StoreError(f"{self.url}: full: this write would pass the store's map_size="
                             f"{env.info()['map_size']} bytes (LmdbStore(map_size=...))"
                             ) from None
        except lmdb.Error as e:
            raise StoreError(f"{self.url}: write failed: {e}") from None

    def append(self, user_id: int, item: object, action: object, ts: object) -> None:
        """No events is a no-op (as for `append_many`), but the user id is checked first."""
        u = check_user(user_id)
        it, ac, t = check_events(item, action, ts)
        if not t.size:
            return
        with self._write_txn() as txn:
            self._merge(txn, u, it, ac, t)

    def append_many(self, user_id: object, item: object, action: object, ts: object) -> int:
        groups = group_by_user(user_id, item, action, ts)
        with self._write_txn() as txn:
            self._merge_groups(txn, groups)
        return len(groups)

    def append_batch(self, batch_id: str, user_id: object, item: object, action: object,
                     ts: object) -> bool:
        key = _batch_key(batch_id)
        with self._write_txn() as txn:            # one transaction: events and id together
            if txn.get(key) is not None:
                return False
            groups = group_by_user(user_id, item, action, ts)
            self._merge_groups(txn, groups)
            txn.put(key, str(sum(g[3].size for g in groups)).encode())
        return True

    def batch_applied(self, batch_id: str) -> bool:
        with self._read_txn() as txn:
            return txn.get(_batch_key(batch_id)) is not None

    def _merge_groups(self, txn: lmdb.Transaction, groups: list) -> None:
        for u, it, ac, t in groups:
            self._merge(txn, u, it, ac, t)

    def _merge(self, txn: lmdb.Transaction, user: int, item: np.ndarray, action: np.ndarray,
               ts: np.ndarray) -> None:
        """Rewrite the user's value as one chunk holding the old and the new events."""
        key = user_key(user)
        txn.put(key, codec.merge(txn.get(key), item, action, ts,
                                 key=f"{self.url} user {user}", compress=self.compress))

    def put_raw(self, user_id: int, value: bytes) -> None:
        """Overwrite a user's stored bytes verbatim (tests, repair tools)."""
        with self._write_txn() as txn:
            txn.put(user_key(check_user(user_id)), value)

    # ------------------------------------------------------------ reads

    @contextlib.contextmanager
    def _read_txn(self, **kwargs: object) -> Iterator[lmdb.Transaction]:
        """One read transaction (a snapshot). Every reader slot taken (more threads reading
        at once than `max_readers`) is StoreUnavailable, LMDB's other failures StoreError:
        never lmdb's own exceptions, which callers cannot know to catch."""
        try:
            with self.env.begin(**kwargs) as txn:
                yield txn
        except lmdb.ReadersFullError:
            raise StoreUnavailable(f"{self.url}: every reader slot is taken (max_readers="
                                   f"{self.max_readers} threads reading at once)") from None
        except lmdb.Error as e:
            raise StoreError(f"{self.url}: read failed: {e}") from None

    def read_many(self, user_ids: Sequence[int]) -> list[Events]:
        check_user_sequence(user_ids)
        out = []
        with self._read_txn(buffers=True) as txn:
            for u in user_ids:
                u = check_user(u)     # as append does: -1 is an error, never "no events"
                out.append(codec.decode(txn.get(user_key(u)), key=f"{self.url} user {u}"))
        return out

    def user_ids(self) -> Iterator[int]:
        """Ascending; one read transaction (a snapshot) for the whole walk."""
        with self._read_txn() as txn:
            for key in txn.cursor().iternext(values=False):
                if key.startswith(_BATCH):
                    return                     # batch ids sort after every user
                yield int.from_bytes(key, "big")

    def delete(self, user_ids: Sequence[int]) -> int:
        check_user_sequence(user_ids)
        keys = [user_key(u) for u in dict.fromkeys(check_user(u) for u in user_ids)]
        with self._write_txn() as txn:
            return sum(bool(txn.delete(k)) for k in keys)

    def compact(self) -> int:
        """Rewrite multi-chunk values (written before appends merged) as one chunk, and with
        `compress` plain values as compressed ones, in one write transaction; returns how
        many."""
        done = 0
        with self._write_txn() as txn:
            for key, value in list(txn.cursor()):
                if key.startswith(_BATCH):
                    break                      # batch ids sort after every user
                name = f"{self.url} user {int.from_bytes(key, 'big')}"
                new = codec.compact(value, key=name, compress=self.compress)
                if new is not None:
                    txn.put(key, new)
                    done += 1
        return done

    def num_users(self) -> int:
        with self._read_txn() as txn:
            cur = txn.cursor()
            batches = sum(1 for _ in cur.iternext(values=False)) if cur.set_range(_BATCH) else 0
            return int(txn.stat()["entries"]) - batches

    def disk_bytes(self) -> int:
        """Bytes the store occupies on disk (allocated blocks of data.mdb)."""
        st = (self.path / "data.mdb").stat()
        return int(min(st.st_size, st.st_blocks * 512))

    def size(self) -> tuple[int, str]:
        return self.disk_bytes(), "on disk"


__all__ = ["LmdbStore", "user_key"]

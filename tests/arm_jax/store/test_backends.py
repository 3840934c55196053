"""The same suite against LMDB and a real Redis server (see conftest.py)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from arm_jax.store import (BULK_TIMEOUT_S, CorruptValue, InvalidEvents, InvalidStoreUrl,
                           StoreError, StoreUnavailable, open_store)
from arm_jax.store.base import TS_LIMIT
from arm_jax.store.lmdb_store import LmdbStore
from arm_jax.store.redis_store import RedisStore


def test_append_and_read_before(store):
    store.append(7, [10, 11, 12], [0, 1, 2], [100, 200, 300])
    store.append(7, 13, 3, 250)                    # one event as scalars; out of order:
    ev = store.read(7)                             # reads sort by time
    assert ev.ts.tolist() == [100, 200, 250, 300] and ev.item.tolist() == [10, 11, 13, 12]
    cut = store.read_before(7, 250)                # strictly before
    assert cut.ts.tolist() == [100, 200] and cut.action.tolist() == [0, 1]
    assert store.read_before(7, 301, max_len=2).item.tolist() == [13, 12]   # most recent 2
    assert len(store.read_before(7, 100)) == 0
    assert len(store.read(99)) == 0                # unknown user: empty, not an error


def test_batch_reads_match_single_reads(store):
    rng = np.random.default_rng(0)
    n = 500
    users = rng.integers(0, 40, n)
    item, action, ts = rng.integers(0, 10**6, n), rng.integers(0, 4, n), rng.integers(0, 10**5, n)
    assert store.append_many(users, item, action, ts) == len(np.unique(users))
    qu = [0, 3, 3, 39, 1000]
    qt = [50_000, 10**6, 10, 70_000, 5]
    many = store.read_many_before(qu, qt, max_len=5)
    for u, t, ev in zip(qu, qt, many):
        sel = (users == u) & (ts < t)
        want = np.sort(ts[sel], kind="stable")[-5:]
        assert ev.ts.tolist() == want.tolist()
        assert ev.ts.tolist() == store.read_before(u, t, max_len=5).ts.tolist()


def test_users_size_and_check(store):
    assert store.num_users() == 0
    store.append_many([1, 1, 2, 9], [5, 6, 7, 8], [0, 1, 0, 1], [10, 20, 30, 40])
    assert store.num_users() == 3
    size, where = store.size()
    assert size > 0 and where == ("on disk" if isinstance(store, LmdbStore) else "in Redis memory")
    assert store.check() == ("3 users" if isinstance(store, LmdbStore) else "reachable")


def test_corrupt_and_truncated_values_raise(store, stored_bytes):
    store.append(1, [5, 6, 7], [0, 1, 2], [10, 20, 30])
    good = stored_bytes(store, 1)
    store.put_raw(2, good[:-4])                    # truncated
    store.put_raw(3, good[:20] + bytes([good[20] ^ 0xFF]) + good[21:])   # bit flip
    for u in (2, 3):
        with pytest.raises(CorruptValue, match=f"{u}"):
            store.read(u)
    with pytest.raises(CorruptValue):
        store.read_many([1, 2])                    # one bad value fails the batch loudly
    assert store.read(1).item.tolist() == [5, 6, 7]


def test_concurrent_readers_see_whole_appends(store):
    """Readers run while a writer appends 1-event chunks; every read is a clean prefix."""
    n_appends, errors, done = 80, [], threading.Event()

    def writer():
        try:
            for i in range(n_appends):
                store.append(5, [i], [i % 4], [1000 + i])
        finally:
            done.set()

    def reader():
        last = 0
        try:
            while True:
                finished = done.is_set()
                ev = store.read(5)
                k = len(ev)
                assert k >= last, "a reader saw the log shrink"
                assert ev.item.tolist() == list(range(k)), "not a prefix of the appends"
                assert ev.ts.tolist() == [1000 + i for i in range(k)]
                last = k
                time.sleep(0.0005)     # yield the GIL so the writer makes progress
                if finished:
                    assert k == n_appends
                    return
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    threads.append(threading.Thread(target=writer))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors[0]


@pytest.mark.parametrize("call", [
    lambda s: s.read(-1),
    lambda s: s.read(2**64),
    lambda s: s.read_many_before([1, -1], [200, 200], 4),
    lambda s: s.append_many(np.array([2**63], np.uint64), [1], [1], [1]),
    lambda s: s.append(2**63, [1], [1], [1]),
], ids=["read-1", "read2^64", "read_many_before-1", "append_many_uint64", "append2^63"])
def test_user_ids_out_of_range_are_refused_alike(store, call):
    """Both backends check user ids on every read and append path (LMDB raised
    OverflowError, Redis returned no events; a uint64 2^63 was stored)."""
    store.append(1, [5], [1], [100])
    with pytest.raises(InvalidEvents, match=r"user_id: must be in \[0, 2\^63\)"):
        call(store)
    assert store.num_users() == 1


def test_read_before_refuses_a_negative_max_len(store):
    store.append(1, [5, 6], [1, 1], [100, 200])
    with pytest.raises(ValueError, match="max_len=-1"):
        store.read_before(1, 300, max_len=-1)
    with pytest.raises(ValueError, match="max_len=-2"):
        store.read_many_before([1], [300], max_len=-2)
    assert len(store.read_before(1, 300, max_len=0)) == 0


def test_a_cut_in_milliseconds_is_refused_not_read_as_the_future(store):
    """A request time in ms is later than every stored second: refusing it is what keeps
    a training join from reading events after the request."""
    store.append(1, [5, 6], [1, 1], [100, 2**32 - 1])
    for read in (lambda t: store.read_before(1, t), lambda t: store.read_many_before([1], [t])):
        with pytest.raises(InvalidEvents, match=r"ts=1700000000000: must be in \[0, 2\^32 = "
                                                r"4294967296\]: .*\(milliseconds\?\)"):
            read(1_700_000_000_000)
        with pytest.raises(InvalidEvents, match="ts=-1"):
            read(-1)
    assert store.read_before(1, 2**32).ts.tolist() == [100, 2**32 - 1]    # the last second


def test_an_infinite_cut_is_a_typed_error_not_an_overflow(store):
    store.append(1, [5], [1], [100])
    for cut in (float("inf"), float("-inf")):
        with pytest.raises(InvalidEvents, match="ts: expected an integer, got -?inf"):
            store.read_before(1, cut)


@pytest.mark.parametrize("bad,words", [
    (1_700_000_000_000, "ts=1700000000000: must be in [0, 2^32 = 4294967296): unix seconds "
                        "expected (milliseconds?)"),
    (1_700_000_000_000_000, "(microseconds?)"),
    (2**32, "ts=4294967296: must be in [0, 2^32"),
    (-1, "ts=-1: must be in"),
])
def test_ts_outside_uint32_seconds_is_refused_before_any_write(store, bad, words):
    """ts must be unix seconds in [0, 2^32); one bad ts in a bulk append writes nothing."""
    with pytest.raises(InvalidEvents) as e:
        store.append(1, [5, 6], [1, 1], [1_700_000_000, bad])
    assert words in str(e.value)
    with pytest.raises(InvalidEvents, match="ts="):
        store.append_many([1, 2, 3], [5, 6, 7], [1, 1, 1], [1_700_000_000, 100, bad])
    assert store.num_users() == 0
    store.append(1, 5, 1, TS_LIMIT - 1)             # the last second that fits
    assert store.read(1).ts.tolist() == [TS_LIMIT - 1]


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


def test_unreachable_redis_is_a_typed_error():
    from arm_jax.ports import free_port

    s = RedisStore(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(StoreUnavailable, match="MGET"):
        s.read(1)


def test_missing_readonly_lmdb_is_unavailable(tmp_path):
    with pytest.raises(StoreUnavailable, match="data.mdb"):
        LmdbStore(tmp_path / "nope", readonly=True)


_READ_ALL = """
import sys
from arm_jax.store.base import CorruptValue
from arm_jax.store.lmdb_store import LmdbStore
try:
    s = LmdbStore(sys.argv[1], readonly=sys.argv[2] == "ro")
except CorruptValue as e:
    print(e)
    sys.exit(3)
with s.env.begin() as txn:                         # every page a read can touch
    print("read", sum(len(v) for _, v in txn.cursor()), "bytes")
"""


def _read_all_in_a_child(path, mode: str):
    """(exit code, stdout) of a child that opens the LMDB store at `path` and reads every
    value: a SIGBUS kills the child (exit -7), not the test run."""
    import subprocess
    import sys

    child = subprocess.run([sys.executable, "-c", _READ_ALL, str(path), mode],
                           capture_output=True, text=True, timeout=120, check=False)
    return child.returncode, child.stdout.strip()


def _short_but_whole_lmdb(path) -> None:
    """An LMDB environment whose data.mdb ends before its last page, with every page past
    the end free: pages a transaction allocated and freed again are never written (what
    inserts and deletes in one transaction leave, and `store delete` after loads)."""
    import os
    import random

    import lmdb

    rnd = random.Random(8)
    env = lmdb.open(str(path), map_size=1 << 28)
    live: list[bytes] = []
    for _ in range(6):
        with env.begin(write=True) as txn:
            keys = [rnd.randbytes(8) for _ in range(rnd.randint(1, 2000))]
            for k in keys:
                txn.put(k, rnd.randbytes(rnd.choice([10, 100, 1000, 5000])))
            kept = rnd.randint(0, len(keys))
            for k in keys[:kept]:
                txn.delete(k)
            live += keys[kept:]
            rnd.shuffle(live)
            for k in live[:rnd.randint(0, len(live)) // 2]:
                txn.delete(k)
            live = live[len(live) // 4:]
        need = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
        if os.path.getsize(path / "data.mdb") < need:
            break
    env.close()
    assert os.path.getsize(path / "data.mdb") < need, "no short file: try another seed"


def test_a_truncated_lmdb_file_is_corrupt_not_a_bus_error(tmp_path):
    """A data.mdb cut short (a copy stopped part way) killed every reader and writer with
    SIGBUS (exit 135 from the CLI, no message) on the first read of a page past its end;
    now opening it is CorruptValue naming the file, the size its pages need and its size.
    A file that ends early with only free pages past its end is whole, and opens."""
    import shutil

    path = tmp_path / "logs"
    rng = np.random.default_rng(0)
    with LmdbStore(path) as s:
        s.append_many(rng.integers(0, 300, 30_000), rng.integers(0, 10**6, 30_000),
                      np.ones(30_000, int), rng.integers(0, 10**6, 30_000))
    size = (path / "data.mdb").stat().st_size
    for cut in (8192, size // 2 + 100):
        bad = tmp_path / f"cut{cut}"
        shutil.copytree(path, bad)
        with open(bad / "data.mdb", "r+b") as f:
            f.truncate(cut)
        for mode in ("ro", "rw"):
            rc, out = _read_all_in_a_child(bad, mode)
            assert rc == 3, (mode, rc, out)
            assert out == (f"lmdb://{bad}: {bad / 'data.mdb'} is truncated: {cut} bytes, its "
                           f"pages need {size} (a copy cut short?); copy the store again, "
                           "or load it from a backup"), out
    short = tmp_path / "short"
    _short_but_whole_lmdb(short)
    for mode in ("ro", "rw"):
        rc, out = _read_all_in_a_child(short, mode)
        assert rc == 0 and out.startswith("read "), (mode, rc, out)


def test_new_lmdb_store_creates_its_parents_and_an_impossible_path_is_typed(tmp_path):
    with LmdbStore(tmp_path / "a" / "b" / "logs", map_size=1 << 24) as s:
        s.append(1, [5], [0], [10])
    assert (tmp_path / "a" / "b" / "logs" / "data.mdb").exists()
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(StoreUnavailable, match="cannot open LMDB store") as e:
        LmdbStore(tmp_path / "file" / "logs")
    assert str(tmp_path / "file" / "logs") in str(e.value)


def test_readonly_lmdb_reads_and_refuses_writes(tmp_path):
    writer = LmdbStore(tmp_path / "ro", map_size=1 << 24)
    writer.append(1, [5, 6], [0, 1], [10, 20])
    writer.close()
    reader = LmdbStore(tmp_path / "ro", readonly=True)
    assert reader.read(1).item.tolist() == [5, 6]
    for write in (lambda: reader.append(1, [7], [0], [30]),
                  lambda: reader.append_many([1], [7], [0], [30]),
                  lambda: reader.put_raw(1, b"x")):
        with pytest.raises(StoreError, match="read-only"):
            write()
    assert reader.read(1).item.tolist() == [5, 6]
    # one environment per path and process: a writer cannot take over the read-only one
    with pytest.raises(StoreUnavailable, match="already open read-only"):
        LmdbStore(tmp_path / "ro")
    reader.close()
    LmdbStore(tmp_path / "ro").close()             # once it is closed, it can


def test_readonly_lmdb_shares_an_open_writer(tmp_path):
    writer = LmdbStore(tmp_path / "rw", map_size=1 << 24)
    writer.append(2, [1], [0], [10])
    reader = LmdbStore(tmp_path / "rw", readonly=True)
    writer.append(2, [2], [1], [20])               # the reader sees appends made after it opened
    assert reader.read(2).item.tolist() == [1, 2]
    with pytest.raises(StoreError, match="read-only"):   # and still refuses to write
        reader.append(2, [3], [0], [30])
    reader.close()
    writer.append(2, [3], [0], [30])               # closing the reader left the writer open
    assert writer.read(2).item.tolist() == [1, 2, 3]
    writer.close()


def test_store_survives_pickling(tmp_path):
    import pickle

    s = LmdbStore(tmp_path / "p", map_size=1 << 24)
    s.append(1, [1], [0], [5])
    t = pickle.loads(pickle.dumps(s))
    assert t.read(1).item.tolist() == [1]


def test_single_event_appends_read_back_alike(store, stored_bytes):
    """One event per append (a live logger): both backends read the same log; LMDB keeps
    it one chunk, Redis rewrites it as one chunk every `compact_every` (32) appends (a read
    decodes a few headers, not one per append)."""
    rng = np.random.default_rng(5)
    ts = rng.integers(1_600_000_000, 1_600_100_000, 200)
    for i, t in enumerate(ts):
        store.append(4, i, i % 4, int(t))
    ev = store.read(4)
    order = np.argsort(ts, kind="stable")
    assert ev.ts.tolist() == ts[order].tolist() and ev.item.tolist() == order.tolist()
    raw = stored_bytes(store, 4)
    chunks = 1 if isinstance(store, LmdbStore) else 1 + 200 % 32
    from arm_jax.store import codec

    assert len(raw) == 200 * codec.BYTES_PER_EVENT + chunks * codec.HEADER_BYTES


def _open_in_child(path, queue):
    try:
        LmdbStore(path).read(1)
        queue.put("opened")
    except StoreUnavailable as e:
        queue.put(str(e))


def test_a_forked_child_is_told_to_open_the_store_after_the_fork(tmp_path):
    """py-lmdb refuses an environment the parent holds open; the error says what to do."""
    import multiprocessing as mp

    parent = LmdbStore(tmp_path / "logs")
    parent.append(1, 2, 0, 10)
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_open_in_child, args=(str(tmp_path / "logs"), queue))
    child.start()
    child.join(60)
    got = queue.get(timeout=10)
    assert "open the store after the fork, or use spawned workers" in got, got
    assert parent.read(1).item.tolist() == [2]          # the parent's store is unharmed
    parent.close()


def test_a_dropped_lmdb_store_releases_its_environment(tmp_path):
    """Dropped without close(), its directory deleted, a store made again at the path must
    be a new, empty store (it reused the old environment, reading deleted data)."""
    import gc
    import shutil

    path = tmp_path / "logs"
    store = LmdbStore(path)
    store.append(1, 111, 0, 100)
    del store
    gc.collect()
    shutil.rmtree(path)
    again = LmdbStore(path)
    assert len(again.read(1)) == 0 and again.num_users() == 0
    again.append(2, 222, 0, 100)
    again.close()
    assert (path / "data.mdb").exists() and LmdbStore(path, readonly=True).num_users() == 1


def test_compact_rewrites_multi_chunk_logs_as_one(store, stored_bytes):
    """Redis logs grow a chunk per APPEND; LMDB values written before appends merged
    (put_raw stands in for them): compact makes each one chunk, events unchanged."""
    from arm_jax.store import codec

    if isinstance(store, LmdbStore):
        store.put_raw(4, codec.encode([1, 2], [0, 1], [30, 10]) + codec.encode(3, 2, 20))
    else:
        for item, action, ts in ((1, 0, 30), (2, 1, 10), (3, 2, 20)):
            store.append(4, item, action, ts)
    store.append_many([5], [9], [0], [50])                  # already one chunk
    before = store.read(4)
    assert codec.num_chunks(stored_bytes(store, 4)) > 1
    assert store.compact() == 1 and store.compact() == 0
    assert codec.num_chunks(stored_bytes(store, 4)) == 1
    after = store.read(4)
    assert after.ts.tolist() == before.ts.tolist() == [10, 20, 30]
    assert after.item.tolist() == before.item.tolist() == [2, 3, 1]
    assert store.read(5).item.tolist() == [9]


def test_redis_compact_keeps_an_append_that_lands_mid_rewrite(redis_url, monkeypatch):
    """WATCH/MULTI: an APPEND between compact's read and its write aborts the write; the
    key is read again, so the late event survives."""
    import uuid

    from arm_jax.store import codec

    store = RedisStore(redis_url, prefix=f"t{uuid.uuid4().hex[:8]}:")
    other = RedisStore(redis_url, prefix=store.prefix)
    for ts in (10, 20):
        store.append(1, ts, 0, ts)
    real_decode, calls = codec.decode, []

    def decode_then_append(value, **kw):
        calls.append(1)
        if len(calls) == 1:                 # another writer appends right now
            other.append(1, 99, 1, 15)
        return real_decode(value, **kw)

    monkeypatch.setattr(codec, "decode", decode_then_append)
    assert store.compact() == 1 and len(calls) == 2          # aborted once, then redone
    monkeypatch.undo()
    assert store.read(1).ts.tolist() == [10, 15, 20]
    assert codec.num_chunks(store.client.get(store.key(1))) == 1
    store.clear()
    store.close()
    other.close()


def test_append_batch_applies_once_and_hides_its_ids(store):
    """A batch id is recorded with its events: the same id again writes nothing, and the
    ids are neither users (num_users, size) nor logs to compact."""
    assert not store.batch_applied("b-1")
    assert store.append_batch("b-1", [3, 4, 3], [7, 8, 9], [0, 1, 2], [30, 40, 10]) is True
    assert store.append_batch("b-1", [3, 4, 3], [7, 8, 9], [0, 1, 2], [30, 40, 10]) is False
    assert store.append_batch("b-2", [4], [5], [0], [50]) is True
    assert store.batch_applied("b-1") and store.batch_applied("b-2")
    assert store.read(3).ts.tolist() == [10, 30] and store.read(4).ts.tolist() == [40, 50]
    assert store.num_users() == 2 and store.compact() == (1 if isinstance(store, RedisStore)
                                                          else 0)
    assert store.read(4).item.tolist() == [8, 5]


@pytest.mark.parametrize("bad, words", [
    ("", "non-empty"), ("a b", "without spaces"), ("x" * 201, "at most 200"),
    (7, "expected a non-empty string")])
def test_bad_batch_ids_are_refused_before_any_write(store, bad, words):
    with pytest.raises(InvalidEvents, match=f"batch_id: .*{words}"):
        store.append_batch(bad, [1], [2], [0], [10])
    assert store.num_users() == 0


def test_bad_events_in_a_batch_write_nothing_and_record_no_id(store):
    with pytest.raises(InvalidEvents, match="ts="):
        store.append_batch("b", [1, 2], [2, 3], [0, 0], [10, 2**40])
    assert not store.batch_applied("b") and store.num_users() == 0


def _batch_of(users: int, per_user: int) -> tuple[np.ndarray, ...]:
    """(user, item, action, ts) of `per_user` events for each of `users` users."""
    user = np.repeat(np.arange(users), per_user)
    ts = np.tile(np.arange(per_user), users) + 100
    return user, user * 10 + ts % 7, user % 4, ts


@pytest.mark.parametrize("multi_users", [7, 50])
def test_redis_loaders_racing_on_one_batch_write_it_once(redis_url, multi_users):
    """Four clients append the same batch at once: WATCH on the id lets one through, also
    when the batch is written in parts (50 users, 7 per MULTI)."""
    import uuid

    prefix = f"t{uuid.uuid4().hex[:8]}:"
    stores = [RedisStore(redis_url, prefix=prefix, timeout_s=10.0, multi_users=multi_users)
              for _ in range(4)]
    users = np.repeat(np.arange(50), 20)
    ts = np.tile(np.arange(20), 50) + 100
    results: list[bool] = []
    threads = [threading.Thread(target=lambda s=s: results.append(
        s.append_batch("same", users, users, users % 4, ts))) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, False, False, True]
    assert all(len(stores[0].read(u)) == 20 for u in range(50))
    stores[0].clear()
    assert not stores[0].batch_applied("same")       # clear removes the ids with the logs
    for s in stores:
        s.close()


def test_redis_write_path_compaction_counts_every_kind_of_append(redis_url, caplog):
    """append, append_many and append_batch all count their chunks; off with None; a
    rewrite that fails (a corrupt value) is logged and the appends stand."""
    import uuid

    from arm_jax.store import codec

    def chunks(s, user):
        return codec.num_chunks(s.client.get(s.key(user)))

    store = RedisStore(redis_url, prefix=f"t{uuid.uuid4().hex[:8]}:", compact_every=4)
    off = RedisStore(redis_url, prefix=f"t{uuid.uuid4().hex[:8]}:", compact_every=None)
    for i in range(6):
        store.append(1, i, 0, 100 + i)
        store.append_many([2, 3], [i, i], [0, 0], [100 + i, 200 + i])
        store.append_batch(f"b{i}", [3], [i], [1], [300 + i])
        off.append(1, i, 0, 100 + i)
    assert chunks(store, 1) == 1 + 6 % 4 and chunks(store, 2) == 1 + 6 % 4
    assert chunks(store, 3) == 1 + 12 % 4                 # 12 appends: rewritten at 4, 8, 12
    assert store.read(3).ts.tolist() == sorted([200 + i for i in range(6)] +
                                               [300 + i for i in range(6)])
    assert chunks(off, 1) == 6 and store.num_users() == 3
    store.put_raw(5, b"\xa7\x01garbage")
    with caplog.at_level("WARNING", logger="arm_jax.store.redis_store"):
        for i in range(4):
            store.append(5, i, 0, 10 + i)                # the 4th triggers a failed rewrite
    assert "compacting user 5 after its append failed" in caplog.text
    with pytest.raises(CorruptValue):
        store.read(5)
    with pytest.raises(ValueError, match="compact_every=1: must be >= 2"):
        RedisStore(redis_url, compact_every=1)
    for s in (store, off):
        s.clear()
        s.close()


def test_user_ids_and_delete(store):
    """user_ids lists users only (not batch ids or append counts); delete removes logs,
    counts only those that existed, and checks every id before writing."""
    store.append_many([5, 2, 9, 2], [1, 2, 3, 4], [0, 0, 0, 0], [10, 20, 30, 40])
    store.append_batch("b", [7], [1], [0], [50])
    assert sorted(store.user_ids()) == [2, 5, 7, 9]
    with pytest.raises(InvalidEvents, match="user_id"):
        store.delete([2, -1])
    assert sorted(store.user_ids()) == [2, 5, 7, 9]              # nothing deleted
    assert store.delete([2, 2, 9, 11]) == 2 and store.delete([]) == 0
    assert sorted(store.user_ids()) == [5, 7] and store.num_users() == 2
    assert len(store.read(2)) == 0 and store.read(5).item.tolist() == [1]
    assert store.batch_applied("b")


def test_redis_prefix_with_glob_characters_lists_its_users(redis_url):
    """SCAN's pattern is a glob: the prefix is escaped, or `logs[eu]:` lists nobody."""
    import uuid

    store = RedisStore(redis_url, prefix=f"t{uuid.uuid4().hex[:6]}[eu]*?:")
    store.append_many([5, 6], [1, 2], [0, 0], [10, 20])
    assert sorted(store.user_ids()) == [5, 6] and store.num_users() == 2
    assert store.clear() >= 2 and store.num_users() == 0
    store.close()


def test_redis_batch_in_parts_is_written_once_and_resumes_after_a_failure(redis_url,
                                                                          monkeypatch):
    """A batch of more users than `multi_users` goes in several MULTIs (so no one EXEC
    stalls other clients for long): a failure between them leaves the batch unapplied, a
    retry writes only the parts still missing, and the part ids are gone once it is done."""
    import uuid

    from arm_jax.store.base import StoreUnavailable

    store = RedisStore(redis_url, prefix=f"t{uuid.uuid4().hex[:8]}:", multi_users=3)
    batch = _batch_of(10, 5)                    # 10 users: parts of 3, 3, 3, 1
    real, calls = RedisStore._append_part, []

    def fail_third(self, marker, groups, value):
        calls.append(marker)
        if len(calls) == 3:
            raise StoreUnavailable("injected outage")
        return real(self, marker, groups, value)
    monkeypatch.setattr(RedisStore, "_append_part", fail_third)
    with pytest.raises(StoreUnavailable, match="injected"):
        store.append_batch("big", *batch)
    assert not store.batch_applied("big")
    assert [len(store.read(u)) for u in range(10)] == [5] * 6 + [0] * 4   # parts 0 and 1
    monkeypatch.undo()
    assert store.append_batch("big", *batch) is True
    assert store.append_batch("big", *batch) is False
    for u in range(10):
        got = store.read(u)
        assert got.ts.tolist() == list(range(100, 105)), u           # each event once
        assert got.item.tolist() == (u * 10 + np.arange(100, 105) % 7).tolist()
    assert store.num_users() == 10 and store.batch_applied("big")
    assert list(store.client.scan_iter(match=f"{store.batch_key('big')} *")) == []
    # a batch that fits one MULTI keeps no part ids either
    assert store.append_batch("small", *_batch_of(3, 1)) is True
    assert list(store.client.scan_iter(match=f"{store.prefix}batch:* part*")) == []
    store.clear()
    store.close()


def test_redis_multi_users_must_be_positive(redis_url):
    with pytest.raises(ValueError, match="multi_users=0"):
        RedisStore(redis_url, multi_users=0)


def _fail_part(monkeypatch, which: int) -> None:
    """Make the `which`-th `_append_part` call (1-based) of any RedisStore an outage."""
    from arm_jax.store.base import StoreUnavailable

    real, calls = RedisStore._append_part, []

    def fail(self, *args):
        calls.append(1)
        if len(calls) == which:
            raise StoreUnavailable("injected outage")
        return real(self, *args)
    monkeypatch.setattr(RedisStore, "_append_part", fail)


def test_redis_a_batch_id_that_looks_like_a_part_id_is_its_own_batch(redis_url,
                                                                     monkeypatch):
    """Batch ids may hold ':'; the parts of batch "x" must not make batch "x:part0" look
    applied (its events were silently skipped)."""
    import uuid

    store = RedisStore(redis_url, prefix=f"t{uuid.uuid4().hex[:8]}:", multi_users=3)
    _fail_part(monkeypatch, 2)                  # part 0 of "x" written, then an outage
    with pytest.raises(StoreUnavailable, match="injected"):
        store.append_batch("x", *_batch_of(10, 5))
    monkeypatch.undo()
    assert not store.batch_applied("x:part0")
    assert store.append_batch("x:part0", [99], [1], [0], [5]) is True
    assert store.read(99).item.tolist() == [1]
    assert store.append_batch("x", *_batch_of(10, 5)) is True
    assert [len(store.read(u)) for u in range(10)] == [5] * 10
    store.clear()
    store.close()


@pytest.mark.parametrize("retry_multi_users", [2048, 2, 4])
def test_redis_batch_in_parts_resumed_with_another_multi_users_stores_each_event_once(
        redis_url, monkeypatch, retry_multi_users):
    """A retry by a loader configured with another `multi_users` (one MULTI for the whole
    batch, or parts of another size) must not write the users of the parts already
    written again: the parts keep the size they were started with."""
    import uuid

    prefix = f"t{uuid.uuid4().hex[:8]}:"
    first = RedisStore(redis_url, prefix=prefix, multi_users=3)
    batch = _batch_of(10, 5)                    # 10 users: parts of 3, 3, 3, 1
    _fail_part(monkeypatch, 3)
    with pytest.raises(StoreUnavailable, match="injected"):
        first.append_batch("big", *batch)
    monkeypatch.undo()
    retry = RedisStore(redis_url, prefix=prefix, multi_users=retry_multi_users)
    assert retry.append_batch("big", *batch) is True
    assert [len(retry.read(u)) for u in range(10)] == [5] * 10
    assert retry.append_batch("big", *batch) is False and first.batch_applied("big")
    assert sorted(retry.client.scan_iter(match=f"{prefix}batch:*")) == \
        [retry.batch_key("big").encode()]        # no part ids left behind
    retry.clear()
    for s in (first, retry):
        s.close()


def test_redis_loaders_with_different_multi_users_racing_on_one_batch_write_it_once(
        redis_url):
    """Loaders configured with different part sizes race on one batch: the first part size
    recorded is the one every loader writes, so each event is stored once."""
    import uuid

    prefix = f"t{uuid.uuid4().hex[:8]}:"
    stores = [RedisStore(redis_url, prefix=prefix, timeout_s=10.0, multi_users=m)
              for m in (3, 7, 2048, 2, 3, 7, 2048, 2)]
    batch = _batch_of(50, 4)
    for attempt in range(3):                         # a race is a race: run it a few times
        barrier, results = threading.Barrier(len(stores)), []

        def load(s, batch_id=f"mixed{attempt}"):
            barrier.wait()
            results.append(s.append_batch(batch_id, *batch))
        threads = [threading.Thread(target=load, args=(s,)) for s in stores]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == [False] * (len(stores) - 1) + [True]
        assert [len(stores[0].read(u)) for u in range(50)] == [4 * (attempt + 1)] * 50
    assert list(stores[0].client.scan_iter(match=f"{prefix}batch:* *")) == []
    stores[0].clear()
    for s in stores:
        s.close()


def test_redis_a_non_ascii_prefix_lists_its_users(redis_url, tmp_path):
    """Keys come back as bytes: the prefix was cut off by its length in characters, so a
    prefix such as "журнал:" listed no user (num_users 0, compact and export skipped
    every log)."""
    import uuid

    from arm_jax.store import codec
    from arm_jax.store.events_file import export_events, read_events_file

    store = RedisStore(redis_url, prefix=f"журнал{uuid.uuid4().hex[:6]}:", compact_every=None)
    store.append_many([5, 6], [1, 2], [0, 0], [10, 20])
    store.append(5, 3, 1, 30)
    assert sorted(store.user_ids()) == [5, 6] and store.num_users() == 2
    assert store.compact() == 1 and codec.num_chunks(store.client.get(store.key(5))) == 1
    assert export_events(store, tmp_path / "all.npz") == {"events": 3, "users": 2}
    assert read_events_file(tmp_path / "all.npz")["item"].tolist() in ([1, 3, 2], [2, 1, 3])
    store.clear()
    store.close()


@pytest.mark.parametrize("call,words", [
    (lambda s: s.append(1.5, [7], [0], [100]), "user_id: expected an integer, got 1.5"),
    (lambda s: s.read(np.float64(1.9)), "user_id: expected an integer, got 1.9"),
    (lambda s: s.read(float("inf")), "user_id: expected an integer, got inf"),
    (lambda s: s.delete([1.5]), "user_id: expected an integer, got 1.5"),
    (lambda s: s.read_before(1, 100.5), "ts: expected an integer, got 100.5"),
    (lambda s: s.read_many_before([1], [np.float32(100.5)]), "ts: expected an integer"),
], ids=["append", "read", "read_inf", "delete", "read_before", "read_many_before"])
def test_a_fractional_user_id_or_cut_is_refused_not_truncated(store, call, words):
    """int() truncates: user 1.5 was user 1 (an append went to another user's log), and a
    cut at 100.5 was a cut at 100, leaving out the event at 100, which is before it. An
    infinite user id raised a bare OverflowError."""
    store.append(1, [5], [0], [100])
    with pytest.raises(InvalidEvents, match=words):
        call(store)
    assert store.read(1).item.tolist() == [5]
    assert store.read_before(1, 101.0).item.tolist() == [5]     # a whole float is fine


def test_a_full_lmdb_store_is_a_typed_error_and_keeps_what_it_had(tmp_path):
    """Past map_size LMDB raises lmdb.MapFullError, which no caller catches (`store load`
    printed a traceback, without the events already written): a StoreError naming the
    store and its map_size; the failed append wrote nothing."""
    from arm_jax.store.events_file import load_events

    store = LmdbStore(tmp_path / "small", map_size=1 << 20)
    store.append(1, [5], [0], [100])
    n = 200_000                                     # 1.8 MB of events: past 1 MB
    with pytest.raises(StoreError, match=r"lmdb://.*small: full.*map_size=1048576"):
        store.append(2, np.arange(n), np.zeros(n, int), np.arange(n))
    with pytest.raises(StoreError, match=r"full.*\(after 0 of 200000 events were written"):
        load_events(store, {"user_id": np.full(n, 3), "item": np.arange(n),
                            "action": np.zeros(n, np.int64), "ts": np.arange(n)})
    assert store.read(1).item.tolist() == [5] and store.num_users() == 1
    store.close()


@pytest.mark.parametrize("call,words", [
    (lambda s: s.append(1, [[5], [6, 7]], [0, 0], [10, 20]), "item: "),
    (lambda s: s.append_many([1, 2], [5, 6], [0, 0], [[10], [20, 30]]), "ts: "),
    (lambda s: s.append_many([[1], [2, 3]], [5, 6], [0, 0], [10, 20]), "user_id: "),
], ids=["append-item", "append_many-ts", "append_many-user_id"])
def test_ragged_events_are_invalid_events_naming_the_field(store, call, words):
    """numpy refuses a ragged list with a bare ValueError naming no field."""
    with pytest.raises(InvalidEvents, match=words + "expected a 1-d array"):
        call(store)
    assert store.num_users() == 0


def test_redis_a_key_of_another_type_is_named_without_the_chunk_bytes(redis_url):
    """A failed pipeline command was shown with all its arguments: the APPEND's binary
    chunk, unreadable in a one-line message. Now its name and key; reads name it too."""
    import uuid

    from arm_jax.store.base import StoreError

    store = RedisStore(redis_url, prefix=f"t{uuid.uuid4().hex[:8]}:")
    store.client.rpush(store.key(5), "not a log")
    for write in (lambda: store.append(5, [1, 2], [0, 1], [10, 11]),
                  lambda: store.append_many([5], [1], [0], [10])):
        with pytest.raises(StoreError) as e:
            write()
        message = str(e.value)
        assert f"(APPEND {store.key(5)}): WRONGTYPE" in message, message
        assert message.isprintable() and len(message) < 200, message
    # a batch checks its keys first: a MULTI would have appended user 6 and recorded the
    # batch despite user 5's error, so a retry would skip the batch and never write user 5
    with pytest.raises(StoreError, match=f"key {store.key(5)} holds a list, not a user log"):
        store.append_batch("b", [5, 6], [1, 2], [0, 1], [10, 11])
    assert not store.batch_applied("b") and len(store.read(6)) == 0
    # MGET answers nil for a key of another type, as for a missing one: a read named it
    # "no events", dropping the user's history without a word
    for read in (lambda: store.read(5), lambda: store.read_many([6, 5]),
                 lambda: store.read_many_before([5], [100], max_len=4)):
        with pytest.raises(CorruptValue, match=f"{store.key(5)}: holds a list, not a user "):
            read()
    assert [len(e) for e in store.read_many([6, 7])] == [0, 0]
    store.client.delete(store.key(5))
    assert store.append_batch("b", [5, 6], [1, 2], [0, 1], [10, 11]) is True
    assert len(store.read(5)) == len(store.read(6)) == 1
    store.clear()
    store.close()


def test_lmdb_every_reader_slot_taken_is_store_unavailable(tmp_path):
    """More threads reading at once than max_readers raised lmdb.ReadersFullError, an
    exception of the lmdb package callers cannot know to catch."""
    from arm_jax.store.base import StoreUnavailable

    store = LmdbStore(tmp_path / "logs", map_size=1 << 22, max_readers=1)
    store.append(1, [2], [0], [10])
    holding, release = threading.Event(), threading.Event()

    def hold_a_reader_slot():
        with store.env.begin():
            holding.set()
            release.wait(10)
    t = threading.Thread(target=hold_a_reader_slot)
    t.start()
    try:
        assert holding.wait(10)
        with pytest.raises(StoreUnavailable, match=r"reader slot .*max_readers=1"):
            store.read(1)
    finally:
        release.set()
        t.join()
    assert store.read(1).item.tolist() == [2]          # the slot is free again
    store.close()

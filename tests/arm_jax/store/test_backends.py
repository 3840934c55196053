"""The same suite against LMDB and a real Redis server (see conftest.py)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from arm_jax.store import CorruptValue, InvalidEvents
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


@pytest.mark.parametrize("max_len", [1.5, 2.0, "2", True])
def test_a_max_len_that_is_no_integer_is_refused_naming_it(store, max_len):
    """read_before(u, ts, max_len=1.5) passed the >= 0 check and failed in Events.before
    with a bare TypeError (slice indices must be integers)."""
    store.append(1, [10, 11], [0, 1], [100, 200])
    with pytest.raises(ValueError, match=f"max_len={max_len!r}: must be an integer >= 0"):
        store.read_before(1, 250, max_len)
    with pytest.raises(ValueError, match="max_len="):
        store.read_many_before([1], [250], max_len)
    assert store.read_before(1, 250, np.int64(1)).item.tolist() == [11]


@pytest.mark.parametrize("call,words", [
    (lambda s: s.read_many("12"), "user_ids: expected a sequence of user ids, got '12'"),
    (lambda s: s.read_many(b"12"), "user_ids: expected a sequence of user ids, got b'12'"),
    (lambda s: s.read_many(1), "user_ids: expected a sequence of user ids, got 1"),
    (lambda s: s.read_many_before("12", [300, 300]), "user_ids: expected a sequence"),
    (lambda s: s.delete("12"), "user_ids: expected a sequence"),
    (lambda s: s.read("1"), "user_id: expected an integer, got '1'"),
    (lambda s: s.read(True), "user_id: expected an integer, got True"),
    (lambda s: s.read_many([np.str_("2")]), "user_id: expected an integer, got"),
    (lambda s: s.append(True, [7], [0], [100]), "user_id: expected an integer, got True"),
    (lambda s: s.read_before(1, "300"), "ts: expected an integer, got '300'"),
], ids=["str", "bytes", "int", "read_many_before", "delete", "read_str", "read_bool",
        "np_str", "append_bool", "cut_str"])
def test_text_or_a_bool_is_no_user_id(store, call, words):
    """read_many("12") iterated the string and returned the logs of users 1 and 2 (int()
    took "1"), b"12" those of users 49 and 50, and True was user 1."""
    store.append(1, [5], [0], [100])
    store.append(2, [6], [0], [100])
    with pytest.raises(InvalidEvents, match=words):
        call(store)
    assert store.num_users() == 2 and store.read(1).item.tolist() == [5]


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


def test_compact_over_a_damaged_value_raises_and_changes_no_log(store, stored_bytes):
    """`store compact` meeting a damaged value stops with CorruptValue naming its user; the
    damaged bytes are left as they were (for `store check` and a repair, never dropped or
    rewritten as what decoded of them) and every other user's events read as before."""
    from arm_jax.store import codec

    store.put_raw(1, codec.encode([1, 2], [0, 1], [30, 10]) + codec.encode(3, 2, 20))
    good = codec.encode([5, 6, 7], [0, 1, 2], [10, 20, 30])
    store.put_raw(2, good[:-4])                                  # truncated
    store.put_raw(3, codec.encode([4], [0], [40]) + codec.encode(8, 1, 5))
    logs = {u: store.read(u) for u in (1, 3)}
    with pytest.raises(CorruptValue, match="user 2|:2: "):
        store.compact()
    assert stored_bytes(store, 2) == good[:-4]
    assert store.num_users() == 3
    for u, ev in logs.items():
        after = store.read(u)
        assert (after.ts.tolist(), after.item.tolist(), after.action.tolist()) == (
            ev.ts.tolist(), ev.item.tolist(), ev.action.tolist())
    if isinstance(store, LmdbStore):       # one write transaction: all or nothing
        assert codec.num_chunks(stored_bytes(store, 1)) == 2

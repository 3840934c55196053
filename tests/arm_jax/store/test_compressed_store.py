"""Both backends with `compress=True`: the same events back, logs stored as version-2
chunks, a compressed log stays compressed whoever appends, and compact() converts a plain
store. Redis is a real server (tests/conftest.py)."""

from __future__ import annotations

import numpy as np

from arm_jax.store import codec
from arm_jax.store.lmdb_store import LmdbStore


def _logs(users=3, per_user=700, seed=0):
    rng = np.random.default_rng(seed)
    n = users * per_user
    user = np.repeat(np.arange(users), per_user)
    item = (rng.zipf(1.3, n) * 7919) % 200_000
    return user, item, rng.integers(0, 4, n), 1_600_000_000 + rng.integers(0, 90 * 86_400, n)


def _check(store, user, item, action, ts):
    for u in np.unique(user):
        sel = user == u
        order = np.argsort(ts[sel], kind="stable")
        ev = store.read(int(u))
        assert ev.ts.tolist() == ts[sel][order].tolist()
        assert ev.item.tolist() == item[sel][order].tolist()
        assert ev.action.tolist() == action[sel][order].tolist()


def test_a_compressing_store_reads_back_the_same_events(store, stored_bytes):
    store.compress = True
    user, item, action, ts = _logs()
    store.append_many(user, item, action, ts)
    _check(store, user, item, action, ts)
    for u in range(3):
        value = stored_bytes(store, u)
        assert codec.chunk_versions(value) == [codec.VERSION_COMPRESSED]
        assert len(value) < 0.6 * codec.encoded_size(700)
    cut = int(np.sort(ts[user == 1])[400])
    assert store.read_before(1, cut, max_len=5).ts.tolist() == np.sort(ts[user == 1])[395:400].tolist()


def test_a_compressed_log_stays_compressed_when_a_plain_writer_appends(store, stored_bytes):
    store.compress = True
    user, item, action, ts = _logs(users=1)
    store.append_many(user, item, action, ts)
    store.compress = False                      # another writer, not asking for compression
    store.append(0, 17, 2, 1_700_000_000)
    versions = codec.chunk_versions(stored_bytes(store, 0))
    # LMDB merges into one chunk and keeps its form; Redis adds a (small, plain) chunk,
    # and compaction keeps the log compressed
    assert versions == ([2] if isinstance(store, LmdbStore) else [2, 1])
    assert store.compact() == (0 if isinstance(store, LmdbStore) else 1)
    assert codec.chunk_versions(stored_bytes(store, 0)) == [2]
    _check(store, np.r_[user, 0], np.r_[item, 17], np.r_[action, 2], np.r_[ts, 1_700_000_000])


def test_compact_compresses_a_plain_store(store, stored_bytes):
    user, item, action, ts = _logs()
    store.append_many(user, item, action, ts)
    store.append_many([9], [1], [0], [5])       # too small for compression to pay
    before = sum(len(stored_bytes(store, u)) for u in (0, 1, 2))
    store.compress = True
    assert store.compact() == 3 and store.compact() == 0
    after = sum(len(stored_bytes(store, u)) for u in (0, 1, 2))
    assert after < 0.6 * before
    assert codec.chunk_versions(stored_bytes(store, 9)) == [1]
    _check(store, user, item, action, ts)


def test_batch_reads_before_cuts_match_full_reads(store):
    """read_many_before and read_before return what a full read cut afterwards does, on
    compressed and on plain logs."""
    user, item, action, ts = _logs(users=4, per_user=1300, seed=4)
    store.compress = True
    store.append_many(user[user < 2], item[user < 2], action[user < 2], ts[user < 2])
    store.compress = False
    store.append_many(user[user >= 2], item[user >= 2], action[user >= 2], ts[user >= 2])
    rng = np.random.default_rng(1)
    qu = rng.integers(0, 5, 60).tolist()                 # user 4: no log
    qt = rng.integers(ts.min() - 10, ts.max() + 10, 60).tolist()
    for max_len in (None, 1, 300, 1024):
        got = store.read_many_before(qu, qt, max_len)
        for u, t, ev in zip(qu, qt, got):
            want = store.read(u).before(t, max_len)
            assert ev.ts.tolist() == want.ts.tolist() and ev.item.tolist() == want.item.tolist()
            assert ev.action.tolist() == want.action.tolist()
            assert store.read_before(u, t, max_len).ts.tolist() == want.ts.tolist()

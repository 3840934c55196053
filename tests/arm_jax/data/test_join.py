"""Point-in-time join through the grain pipeline, against both store backends."""

from __future__ import annotations

import re
import uuid

import numpy as np
import pytest

from arm_jax.config import load_tier
from arm_jax.data.join import StoreHistory, joined_batches
from arm_jax.data.synthetic import SyntheticSpec, SyntheticWorld
from arm_jax.store import ActionOutOfRange
from arm_jax.store.lmdb_store import LmdbStore
from arm_jax.store.redis_store import RedisStore

MARK = 2**31 - 1   # planted at and after every example's own time


@pytest.fixture(scope="module")
def world(tiny_overrides):
    tier = load_tier("small", [*tiny_overrides, "features.max_history=64"])
    w = SyntheticWorld.generate(SyntheticSpec(num_users=40, num_items=500, num_topics=8,
                                              num_advertisers=40, history_median=30), tier.features)
    ex = w.sample_examples(90, 6, seed=1)
    return tier, w, ex


@pytest.fixture(params=["lmdb", "redis"])
def store(request, tmp_path):
    if request.param == "lmdb":
        s = LmdbStore(tmp_path / "logs", map_size=1 << 26)
    else:
        s = RedisStore(request.getfixturevalue("redis_url"), prefix=f"j{uuid.uuid4().hex[:8]}:")
    yield s
    s.close()


def _load(store, w, ex):
    """The world's log plus marker events at each example's own instant and an hour later;
    returns the same events flat, for a brute-force reference."""
    parts = [(w.log_user, w.log_item, w.log_action, w.log_ts)]
    for dt in (0, 3600):
        parts.append((ex.user_id, np.full(len(ex), MARK), np.zeros(len(ex), np.int64), ex.ts + dt))
    for p in parts:
        store.append_many(*p)
    return [np.concatenate([np.asarray(p[i], np.int64) for p in parts]) for i in range(4)]


def _brute_force(flat, user, ts, L):
    """Oldest-first scan: events of `user` strictly before `ts`, the last L, newest first."""
    u, it, ac, t = flat
    sel = np.flatnonzero((u == user) & (t < ts))
    sel = sel[np.argsort(t[sel], kind="stable")][-L:][::-1]
    return it[sel], ac[sel], ts - t[sel]


def test_join_matches_reference_and_never_leaks_the_future(store, world):
    tier, w, ex = world
    flat = _load(store, w, ex)
    L = 16
    seen = 0
    order = []
    for batch, labels in joined_batches(ex, store, tier.features, batch_size=8, max_len=L,
                                        num_threads=3):
        b = batch.num_requests
        assert batch.hist_item.shape == (b, L) and labels.shape[0] == b
        valid = np.arange(L)[None, :] < batch.hist_len[:, None]
        assert np.all(batch.hist_gap[valid] > 0), "an event at or after the example's time"
        steps = np.diff(np.asarray(batch.hist_gap), axis=1)[valid[:, 1:]]
        assert np.all(steps >= 0), "not newest first"
        order.append(np.asarray(batch.req_sparse))
        seen += b
    assert seen == len(ex)
    np.testing.assert_array_equal(np.concatenate(order), ex.req_sparse)   # order kept
    # identical to a brute-force scan of every stored event (items, actions, gaps, order)
    catalog = w.catalog()
    got = StoreHistory(store, tier.features, catalog).join_history(ex.user_id, ex.ts, L)
    for r in range(len(ex)):
        it, ac, gap = _brute_force(flat, ex.user_id[r], ex.ts[r], L)
        k = got["hist_len"][r]
        assert k == it.size
        np.testing.assert_array_equal(got["hist_item"][r, :k], it)
        np.testing.assert_array_equal(got["hist_side"][r, :k], catalog.lookup(it))
        assert not got["hist_side"][r, k:].any()
        np.testing.assert_array_equal(got["hist_action"][r, :k], ac)
        np.testing.assert_array_equal(got["hist_gap"][r, :k], gap.astype(np.float32))
    # markers of a user's earlier examples are legitimately joined; the example's own never
    assert (got["hist_item"] == MARK).any()
    assert got["hist_len"].max() == L and got["hist_len"].min() < L   # truncation exercised


def test_shuffle_and_drop_remainder(world, tmp_path):
    tier, w, ex = world
    s = LmdbStore(tmp_path / "s", map_size=1 << 26)
    s.append_many(w.log_user, w.log_item, w.log_action, w.log_ts)
    out = list(joined_batches(ex, s, tier.features, batch_size=8, max_len=4, shuffle=True,
                              seed=3, drop_remainder=True, num_threads=2))
    assert len(out) == len(ex) // 8
    users = np.concatenate([np.asarray(b.req_sparse) for b, _ in out])
    assert not np.array_equal(users, ex.req_sparse[: len(users)])   # shuffled
    with pytest.raises(ValueError, match="max_history"):
        list(joined_batches(ex, s, tier.features, batch_size=8, max_len=65))
    for bad in ({"batch_size": 0, "max_len": 4}, {"batch_size": 8, "max_len": 0}):
        with pytest.raises(ValueError, match=r"batch_size=\d+ and max_len=\d+ must be >= 1"):
            list(joined_batches(ex, s, tier.features, **bad))
    s.close()


def test_stored_action_past_the_tier_stops_the_join_naming_store_and_user(store, world):
    """An action >= features.num_action_types in the log is refused where it is joined, with
    the store, the user, the value and the limit (it used to reach make_batch as a
    BatchError naming neither store nor user)."""
    tier, w, ex = world
    store.append_many(w.log_user, w.log_item, w.log_action, w.log_ts)
    n = tier.features.num_action_types
    r = 13                                           # an example of the second batch
    user = int(ex.user_id[r])
    store.append(user, 5, n + 5, int(ex.ts[r]) - 1)  # the newest event before its time
    want = (re.escape(f"{store.url}: user {user}: stored action {n + 5}") + ".*"
            + re.escape(f"features.num_action_types={n}"))
    with pytest.raises(ActionOutOfRange, match=want) as info:
        list(joined_batches(ex, store, tier.features, batch_size=8, max_len=4, num_threads=1))
    assert "\n" not in str(info.value)
    with pytest.raises(ActionOutOfRange, match=want):       # the evaluation path too
        StoreHistory(store, tier.features).join_history(ex.user_id, ex.ts, 4)
    # requests that do not join it (other users', this user's before it) are not refused
    clean = np.flatnonzero((ex.user_id != user) | (ex.ts < ex.ts[r]))
    got = StoreHistory(store, tier.features).join_history(ex.user_id[clean], ex.ts[clean], 4)
    assert got["hist_action"].max() < n


def test_a_catalogue_of_other_side_fields_is_refused_before_any_join(world, tmp_path):
    """joined_batches / joined_dataset / StoreHistory never compared the catalogue's fields
    with features.history_side_fields (train.file_data and the server did): one of fields
    (2, 1) for a config's (1, 2) joined every event's topic as its advertiser and back."""
    from arm_jax.data.catalog import CatalogError, ItemCatalog

    tier, w, ex = world
    fields = tuple(tier.features.history_side_fields)
    assert len(fields) == 2
    swapped = ItemCatalog(w.catalog().side[:, ::-1], fields[::-1])
    want = r"catalogue holds candidate fields .* but features.history_side_fields is"
    with LmdbStore(tmp_path / "logs", map_size=1 << 26) as s:
        s.append(int(ex.user_id[0]), [5], [0], [100])
        with pytest.raises(CatalogError, match=want):
            list(joined_batches(ex, s, tier.features, batch_size=8, max_len=4,
                                catalog=swapped))
        with pytest.raises(CatalogError, match=want):
            StoreHistory(s, tier.features, swapped)
        assert len(list(joined_batches(ex, s, tier.features, batch_size=45, max_len=4,
                                       catalog=w.catalog(), num_threads=1))) == 2


@pytest.mark.parametrize("labels,words", [
    (lambda y: y[..., :1], r"labels: 1 per candidate .* but features.tasks=\['click', "
                           r"'conversion'\] has 2"),
    (lambda y: np.where(y > 0, np.nan, y), "labels: must be finite"),
    (lambda y: y * 3, r"labels: must be in \[0, 1\], got 0.0..3.0"),
], ids=["task_count", "nan", "range"])
def test_labels_that_do_not_fit_the_tasks_are_refused_before_any_join(world, tmp_path,
                                                                      labels, words):
    """NaN labels, or a label count that is not features.tasks', went into training."""
    import dataclasses

    tier, w, ex = world
    y = labels(ex.labels)
    bad = dataclasses.replace(ex, labels=y, true_prob=np.full(y.shape, np.nan, np.float32),
                              tasks=ex.tasks[:y.shape[2]])
    with LmdbStore(tmp_path / "logs", map_size=1 << 26) as s:
        with pytest.raises(ValueError, match=words):
            list(joined_batches(bad, s, tier.features, batch_size=8, max_len=4))


def test_join_threads_default_leaves_a_core_for_the_trainer(monkeypatch):
    from arm_jax.data import join

    for cpus, want in ((None, 1), (1, 1), (2, 1), (3, 2), (16, 4)):
        monkeypatch.setattr(join.os, "cpu_count", lambda c=cpus: c)
        assert join.join_threads() == want


def test_a_failing_worker_leaves_no_join_thread_running(world, tmp_path):
    """An error in a join worker reached the caller, but while anything held it (a logger,
    a retry wrapper, a notebook's last traceback) grain's prefetch threads stayed alive."""
    import threading
    import time

    from arm_jax.store.base import CorruptValue

    tier, w, ex = world
    with LmdbStore(tmp_path / "logs", map_size=1 << 26) as s:
        s.append_many(w.log_user, w.log_item, w.log_action, w.log_ts)
        calls = []
        real = s.read_many_before

        def flaky(*args, **kwargs):
            calls.append(1)
            if len(calls) == 3:
                raise CorruptValue("planted")
            return real(*args, **kwargs)

        s.read_many_before = flaky
        with pytest.raises(CorruptValue, match="planted") as held:
            list(joined_batches(ex, s, tier.features, batch_size=4, max_len=8, num_threads=2))
        deadline = time.monotonic() + 5
        alive = ["?"]
        while alive and time.monotonic() < deadline:
            alive = [t.name for t in threading.enumerate() if t.name.startswith("grain")]
            time.sleep(0.05)
        assert held.value is not None and alive == [], alive

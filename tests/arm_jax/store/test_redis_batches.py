"""RedisBatches (a real server): each batch id applied exactly once, in parts when large,
resumed after a failure and under racing loaders."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from arm_jax.store import StoreUnavailable
from arm_jax.store.redis_store import RedisStore


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


@pytest.mark.parametrize("multi_users", [2.0, 1e3, "2", True])
def test_redis_multi_users_must_be_an_integer_and_poisons_no_batch(redis_url, multi_users):
    """multi_users=2.0 was accepted: append_batch of more users recorded the part size
    "2.0" in Redis, then raised a bare TypeError, and every later append_batch of that
    batch id, from any client, a ValueError (invalid literal for int()): the load could
    never be completed. Now refused before anything is written."""
    import uuid

    prefix = f"t{uuid.uuid4().hex[:8]}:"
    user, item, action, ts = _batch_of(5, 1)
    with pytest.raises(ValueError, match=f"multi_users={multi_users!r}: must be an integer"):
        RedisStore(redis_url, prefix=prefix, multi_users=multi_users)
    store = RedisStore(redis_url, prefix=prefix, multi_users=np.int64(2))
    assert store.multi_users == 2 and type(store.multi_users) is int
    assert store.append_batch("b", user, item, action, ts)
    assert [len(e) for e in store.read_many(user.tolist())] == [1] * 5
    store.clear()
    store.close()


@pytest.mark.parametrize("size", [b"2.0", b"0", b"x"])
def test_redis_an_unreadable_part_size_names_its_key_and_the_way_out(redis_url, size):
    """A part size no load can use (one an older arm-jax recorded from multi_users=2.0)
    was a ValueError "invalid literal for int()" at every append_batch of the batch."""
    import uuid

    from arm_jax.store import StoreError

    store = RedisStore(redis_url, prefix=f"t{uuid.uuid4().hex[:8]}:", multi_users=2)
    layout = store._part_key("b", "parts")
    store.client.set(layout, size)
    user, item, action, ts = _batch_of(5, 1)
    with pytest.raises(StoreError, match=f"key '{layout}' holds {size!r}, not a part size"
                                         r".*delete the key \(redis-cli DEL\)"):
        store.append_batch("b", user, item, action, ts)
    assert store.num_users() == 0                           # nothing written
    store.client.delete(layout)                             # the way out the message names
    assert store.append_batch("b", user, item, action, ts)
    assert [len(e) for e in store.read_many(user.tolist())] == [1] * 5
    store.clear()
    store.close()


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

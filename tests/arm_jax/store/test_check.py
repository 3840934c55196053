"""`check_store` on both backends: every damaged log is named with its user, the rest are
counted, and a crc-valid value that reads would misuse (unsorted times, an item id past
2^31) is flagged as well."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from arm_jax.store import codec
from arm_jax.store.check import PROBLEM_KINDS, check_store
from arm_jax.store.redis_store import RedisStore


def _v1_chunk(rel_ts, items, actions, base_ts: int) -> bytes:
    """A plain chunk with a valid crc for whatever columns are given, sorted or not: what
    a writer other than ours could store."""
    head = struct.pack("<BBIq", codec.MAGIC, codec.VERSION, len(rel_ts), base_ts)
    payload = (np.asarray(rel_ts, "<u4").tobytes() + np.asarray(items, "<u4").tobytes()
               + np.asarray(actions, "u1").tobytes())
    return head + struct.pack("<I", zlib.crc32(payload, zlib.crc32(head))) + payload


def _fill(store) -> None:
    rng = np.random.default_rng(3)
    for user in range(7):
        n = 3 + user
        store.append(user, rng.integers(0, 1000, n), rng.integers(0, 3, n),
                     1_600_000_000 + rng.integers(0, 10_000, n))


def test_a_clean_store_is_ok_and_counted(store):
    _fill(store)
    report = check_store(store, num_action_types=3, users_per_read=3)
    assert report.ok and report.problems == []
    logs = [store.read(u) for u in range(7)]
    assert report.users == 7 and report.events == sum(len(e) for e in logs) == 42
    assert report.max_events == 9
    assert report.first_ts == min(int(e.ts.min()) for e in logs)
    assert report.last_ts == max(int(e.ts.max()) for e in logs)
    assert report.to_json()["problem_counts"] == {k: 0 for k in PROBLEM_KINDS}


def test_every_problem_is_named_with_its_user(store, stored_bytes):
    _fill(store)
    good = stored_bytes(store, 1)
    store.put_raw(2, good[:-4])                                          # truncated
    store.put_raw(3, good[:20] + bytes([good[20] ^ 0xFF]) + good[21:])   # bit flip
    store.put_raw(4, _v1_chunk([5, 1, 9], [1, 2, 3], [0, 0, 0], 1_600_000_000))
    store.put_raw(5, _v1_chunk([0, 1], [7, 2**31 + 5], [1, 1], 1_600_000_000))
    store.append(6, [1], [7], [1_600_000_001])                           # action 7 >= 3
    # batches of 3: users 2 and 3 share one with user 1, whose log must still be counted
    report = check_store(store, num_action_types=3, users_per_read=3)
    by_user = {(p.user, p.kind): p.message for p in report.problems}
    assert set(by_user) == {(2, "corrupt"), (3, "corrupt"), (4, "unsorted"),
                            (5, "item_out_of_range"), (6, "action_out_of_range")}
    assert "truncated" in by_user[(2, "corrupt")]
    assert "crc32 mismatch" in by_user[(3, "corrupt")]
    assert "event 1 at ts 1600000001 is earlier than event 0 at 1600000005" in by_user[
        (4, "unsorted")]
    assert "stored action 7 >= features.num_action_types=3" in by_user[
        (6, "action_out_of_range")]
    assert not report.ok and report.counts() == {"corrupt": 2, "action_out_of_range": 1,
                                                 "unsorted": 1, "item_out_of_range": 1}
    # the readable logs are counted: users 0, 1, 4, 5 and 6 (7 events plus the one appended)
    assert report.users == 7 and report.events == 3 + 4 + 3 + 2 + 9 + 1
    # without a tier the actions are not judged
    kinds = {p.kind for p in check_store(store).problems}
    assert "action_out_of_range" not in kinds and "corrupt" in kinds


def test_a_redis_key_of_another_type_is_corrupt(redis_url):
    import uuid

    store = RedisStore(redis_url, prefix=f"t{uuid.uuid4().hex[:8]}:")
    try:
        store.append(1, [1, 2], [0, 1], [10, 11])
        store.client.rpush(store.key(5), "not a log")
        report = check_store(store)
        assert [(p.user, p.kind) for p in report.problems] == [(5, "corrupt")]
        assert "holds a list" in report.problems[0].message
        assert report.events == 2
    finally:
        store.clear()
        store.close()


@pytest.mark.parametrize("kwargs, words", [({"users_per_read": 0}, "users_per_read=0"),
                                           ({"num_action_types": 0}, "num_action_types=0")])
def test_bad_arguments_are_named(store, kwargs, words):
    with pytest.raises(ValueError, match=words):
        check_store(store, **kwargs)

"""Codec: round trip, compactness, and every kind of damage detected (never decoded)."""

from __future__ import annotations

import numpy as np
import pytest

from arm_jax.store import codec
from arm_jax.store.base import CorruptValue, InvalidEvents


def _events(n, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 2**31 - 1, n), rng.integers(0, 5, n),
            1_600_000_000 + rng.integers(0, 10**7, n))


def test_round_trip_sorts_and_is_compact():
    item, action, ts = _events(257)
    value = codec.encode(item, action, ts)
    assert len(value) == codec.encoded_size(257) == 18 + 9 * 257
    ev = codec.decode(value)
    order = np.argsort(ts, kind="stable")
    np.testing.assert_array_equal(ev.ts, ts[order])
    np.testing.assert_array_equal(ev.item, item[order])
    np.testing.assert_array_equal(ev.action, action[order])


def test_concatenated_chunks_merge_in_time_order():
    a, b = _events(10, 1), _events(7, 2)
    ev = codec.decode(codec.encode(*a) + codec.encode(*b))
    assert len(ev) == 17 and np.all(np.diff(ev.ts) >= 0)
    assert sorted(ev.item.tolist()) == sorted([*a[0].tolist(), *b[0].tolist()])


def test_many_chunks_decode_like_one_and_merge_makes_one():
    """A log written one event per append (Redis APPEND) decodes to the same events as the
    one chunk `merge` writes (LMDB), out-of-order appends included."""
    item, action, ts = _events(300, 3)
    chunks = b"".join(codec.encode(item[i], action[i], ts[i]) for i in range(300))
    merged = None
    for i in range(300):
        merged = codec.merge(merged, item[i], action[i], ts[i])
    assert len(merged) == codec.encoded_size(300)          # one chunk
    a, b = codec.decode(chunks), codec.decode(merged)
    order = np.argsort(ts, kind="stable")
    for got in (a, b):
        np.testing.assert_array_equal(got.ts, ts[order])
        np.testing.assert_array_equal(got.item, item[order])
        np.testing.assert_array_equal(got.action, action[order])
    with pytest.raises(CorruptValue, match="user 5"):      # nothing appended to damage
        codec.merge(merged[:-3], 1, 1, 1, key="user 5")


@pytest.mark.parametrize("damage", ["truncate_payload", "truncate_header", "flip_payload",
                                    "flip_count", "bad_magic", "bad_version", "trailing"])
def test_damage_is_detected(damage):
    value = bytearray(codec.encode(*_events(20)))
    if damage == "truncate_payload":
        value = value[:-5]
    elif damage == "truncate_header":
        value = value[:10]
    elif damage == "flip_payload":
        value[40] ^= 0x10
    elif damage == "flip_count":
        value[2] ^= 0x01     # n 20 -> 21: either truncated or crc mismatch, never decoded
    elif damage == "bad_magic":
        value[0] = 0x00
    elif damage == "bad_version":
        value[1] = 9
    elif damage == "trailing":
        value += b"\x01\x02"
    with pytest.raises(CorruptValue) as e:
        codec.decode(bytes(value), key="user 7")
    assert "user 7" in str(e.value)
    if damage == "bad_version":
        assert "version 9" in str(e.value)


@pytest.mark.parametrize("item,action,ts,msg", [
    ([1, 2], [0], [1, 2], "lengths differ"),
    ([-1], [0], [1], "item"),
    ([2**31], [0], [1], "item"),
    ([1], [256], [1], "action"),
    ([1], [0], [-5], "ts"),
    ([1.5], [0], [1], "integers"),
    ([1, 2], [0, 0], [0, 2**33], "ts=8589934592"),
    ([1], [0], [1_700_000_000_000], r"ts=1700000000000: .*\(milliseconds\?\)"),
    ([1], [0], np.array([2**64 - 1], np.uint64), "ts=18446744073709551615"),
    (np.array([2**63], np.uint64), [0], [1], "item: ids must be in"),
    ([[1, 2]], [0, 0], [1, 2], "item: expected a 1-d array"),
    (1, [0, 0], [1, 2], "lengths differ"),
])
def test_bad_events_rejected(item, action, ts, msg):
    with pytest.raises(InvalidEvents, match=msg):
        codec.encode(np.asarray(item), np.asarray(action), np.asarray(ts))


def test_empty():
    assert codec.encode([], [], []) == b""
    assert len(codec.decode(b"")) == 0 and len(codec.decode(None)) == 0

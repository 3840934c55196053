"""Compressed (version 2) chunks: the same events back at ragged sizes, smaller than plain
on log-like data, mixed freely with plain chunks, and every kind of damage detected."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from arm_jax.store import codec
from arm_jax.store.base import CorruptValue


def _log(n, seed=0):
    """Log-like events: popular items reread (Zipf), few actions, times spread over 90
    days (gaps of hours, not uniform 32-bit noise)."""
    rng = np.random.default_rng(seed)
    item = (rng.zipf(1.3, n) * 7919) % 200_000
    return item, rng.integers(0, 4, n), 1_600_000_000 + rng.integers(0, 90 * 86_400, n)


def _assert_events(ev, item, action, ts):
    order = np.argsort(ts, kind="stable")
    np.testing.assert_array_equal(ev.ts, ts[order])
    np.testing.assert_array_equal(ev.item, item[order])
    np.testing.assert_array_equal(ev.action, action[order])
    assert ev.ts.dtype == np.int64 and ev.item.dtype == ev.action.dtype == np.int32


@pytest.mark.parametrize("n", [1, 2, 7, 33, 300, 4099])
def test_round_trip_at_ragged_sizes(n):
    item, action, ts = _log(n, seed=n)
    value = codec.encode(item, action, ts, compress=True)
    _assert_events(codec.decode(value), item, action, ts)
    plain = codec.encode(item, action, ts)
    assert len(value) <= len(plain)                    # never larger than plain
    if n >= 300:
        assert codec.chunk_versions(value) == [codec.VERSION_COMPRESSED]
        assert len(value) < 0.6 * len(plain)
    if n == 1:                                         # zlib's framing would cost more
        assert value == plain


def test_extreme_values_round_trip():
    """Times 0 and 2^32 - 1 in one chunk (a gap that needs all 32 bits), the largest ids
    and actions."""
    n = 400
    rng = np.random.default_rng(1)
    ts = np.r_[0, 2**32 - 1, rng.integers(0, 2**32, n - 2)]
    item = np.r_[2**31 - 1, 0, rng.integers(0, 2**31, n - 2)]
    action = np.r_[255, 0, rng.integers(0, 256, n - 2)]
    value = codec.encode(item, action, ts, compress=True)
    _assert_events(codec.decode(value), item, action, ts)


def test_plain_and_compressed_chunks_mix_in_one_value():
    """Redis appends a chunk per write: compressed and plain ones, out of time order."""
    a, b, c = _log(500, 1), _log(3, 2), _log(800, 3)
    value = (codec.encode(*a, compress=True) + codec.encode(*b)
             + codec.encode(*c, compress=True))
    assert codec.chunk_versions(value) == [2, 1, 2] and codec.num_chunks(value) == 3
    allev = [np.concatenate(x) for x in zip(a, b, c)]
    _assert_events(codec.decode(value), *allev)


def test_merge_keeps_a_compressed_log_compressed_and_compact_compresses():
    item, action, ts = _log(600)
    small = codec.encode(item, action, ts, compress=True)
    merged = codec.merge(small, [5], [1], [1_700_000_000])          # compress not asked
    assert codec.chunk_versions(merged) == [2]
    _assert_events(codec.decode(merged), np.r_[item, 5], np.r_[action, 1],
                   np.r_[ts, 1_700_000_000])
    plain = codec.encode(item, action, ts)
    assert codec.chunk_versions(codec.merge(plain, 5, 1, 1, compress=True)) == [2]
    assert codec.compact(plain) is None                              # one plain chunk: as asked
    assert codec.compact(small) is None and codec.compact(small, compress=True) is None
    packed = codec.compact(plain, compress=True)
    assert codec.chunk_versions(packed) == [2] and len(packed) < len(plain)
    _assert_events(codec.decode(packed), item, action, ts)
    tiny = codec.encode(1, 0, 5)
    assert codec.compact(tiny, compress=True) is None                # no gain: left alone
    two = codec.encode(1, 0, 5) + codec.encode(*_log(400), compress=True)
    assert codec.chunk_versions(codec.compact(two)) == [2]           # sticky


def _forge(n, stream, *, version=codec.VERSION_COMPRESSED, base=1_600_000_000):
    """A version-2 chunk around any stream, with a correct crc (damage the crc can't see)."""
    head = struct.pack("<BBIqI", codec.MAGIC, version, n, base, len(stream))
    return head + struct.pack("<I", zlib.crc32(stream, zlib.crc32(head))) + stream


@pytest.mark.parametrize("damage,words", [
    ("truncate", "truncated chunk at byte 0"),
    ("truncate_header", "truncated chunk header"),
    ("flip_stream", "crc32 mismatch"),
    ("flip_length", "truncated chunk|crc32 mismatch"),
    ("trailing", "truncated chunk header"),
    ("garbage_stream", "does not inflate"),
    ("short_stream", "inflates to 90 bytes, expected 900"),
    ("bomb", "inflates to more than 900 bytes"),
    ("stream_then_junk", "inflates to more than 900 bytes"),
    ("times_overflow", "times run past 2\\^32"),
])
def test_damage_is_detected(damage, words):
    item, action, ts = _log(100)
    value = bytearray(codec.encode(item, action, ts, compress=True))
    assert codec.chunk_versions(bytes(value)) == [2]
    plain = bytes(value)
    if damage == "truncate":
        value = value[:-7]
    elif damage == "truncate_header":
        value = value[:20]
    elif damage == "flip_stream":
        value[40] ^= 0x04
    elif damage == "flip_length":
        value[14] ^= 0x01
    elif damage == "trailing":
        value += b"\x00\x01"
    elif damage == "garbage_stream":
        value = _forge(100, bytes(range(200)))
    elif damage == "short_stream":
        value = _forge(100, zlib.compress(bytes(90)))
    elif damage == "bomb":                    # 64 MB of zeros behind a 100-event header
        value = _forge(100, zlib.compress(bytes(64 << 20), 9))
    elif damage == "stream_then_junk":
        value = _forge(100, zlib.compress(bytes(900)) + b"junk")
    elif damage == "times_overflow":          # gaps that sum past 2^32 - 1
        gaps = np.full(100, 2**31, "<u4")
        value = _forge(100, zlib.compress(codec._planes(gaps) + bytes(500)))
    assert bytes(value) != plain
    with pytest.raises(CorruptValue, match=words) as e:
        codec.decode(bytes(value), key="user 7")
    assert "user 7" in str(e.value)


def test_a_bomb_behind_a_zero_event_header_is_refused_without_inflating_it():
    """zlib's max_length=0 means "no limit": a 0-event header (9n = 0 bytes) let a 64 MB
    stream inflate whole before it was refused."""
    import tracemalloc

    value = _forge(0, zlib.compress(bytes(64 << 20), 9))
    tracemalloc.start()
    try:
        with pytest.raises(CorruptValue, match="inflates to more than 0 bytes, expected 0"):
            codec.decode(value, key="user 7")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, peak
    assert len(codec.decode(_forge(0, zlib.compress(b"")))) == 0     # empty: still fine

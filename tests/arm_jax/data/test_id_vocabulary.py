"""Point-in-time id vocabularies: counts strictly before each time, unknown ids -> OOV."""

from __future__ import annotations

import numpy as np
import pytest

from arm_jax.data.id_vocabulary import counts_before, map_unknown


def test_counts_before_match_a_direct_count_on_random_logs():
    rng = np.random.default_rng(7)
    log_id = rng.integers(0, 13, 500)
    log_ts = rng.integers(0, 100, 500)
    ids, ts = rng.integers(0, 15, (40, 3)), rng.integers(0, 101, (40, 1))   # broadcast
    got = counts_before(log_id, log_ts, ids, ts)
    want = np.array([[np.sum((log_id == i) & (log_ts < t[0])) for i in row]
                     for row, t in zip(ids, ts)])
    assert got.shape == (40, 3) and np.array_equal(got, want)


def test_counts_before_are_strict_and_handle_the_id_and_time_limits():
    big_id, last_ts = 2**31 - 1, 2**32 - 1
    log_id, log_ts = np.array([big_id, big_id, 0]), np.array([5, last_ts, last_ts])
    got = counts_before(log_id, log_ts, np.array([big_id, big_id, big_id, 0, 1]),
                        np.array([5, 6, last_ts, last_ts, 10]))
    assert got.tolist() == [0, 1, 1, 0, 0]      # at ts 5 the event at 5 is not yet past


def test_map_unknown_replaces_rare_ids_only_where_asked():
    ids = np.array([[3, 4, 0]], np.int32)
    got = map_unknown(ids, np.array([[2, 0, 0]]), 1, 99, where=np.array([[True, True, False]]))
    assert got.dtype == np.int32 and got.tolist() == [[3, 99, 0]]     # the padded slot kept
    assert map_unknown(ids, np.array([[2, 1, 5]]), 2, 99).tolist() == [[3, 99, 0]]
    with pytest.raises(ValueError, match="min_count=0"):
        map_unknown(ids, np.zeros((1, 3)), 0, 99)

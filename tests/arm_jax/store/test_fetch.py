"""Serving-side fetch: newest first, strictly before ts, bad stored actions refused."""

from __future__ import annotations

import pytest

from arm_jax.store import CorruptValue
from arm_jax.store.fetch import fetch_request_history


def test_fetch_shapes_history_like_the_wire_format(store):
    store.append(3, [10, 11, 12, 13], [0, 1, 2, 3], [100, 200, 300, 400])
    h = fetch_request_history(store, 3, 400, max_len=2, num_action_types=4)
    assert h == {"hist_item": [12, 11], "hist_action": [2, 1], "hist_gap": [100.0, 200.0]}
    assert fetch_request_history(store, 4, 400, 8, 4)["hist_item"] == []
    with pytest.raises(CorruptValue, match="num_action_types=3"):
        fetch_request_history(store, 3, 500, 8, num_action_types=3)

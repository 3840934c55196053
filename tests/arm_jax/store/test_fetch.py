"""Serving-side fetch: newest first, strictly before ts, bad stored actions refused,
side ids joined from the item catalogue."""

from __future__ import annotations

import re

import numpy as np
import pytest

from arm_jax.batch import UNKNOWN_SIDE
from arm_jax.data.catalog import ItemCatalog, empty_catalog
from arm_jax.store import ActionOutOfRange, CorruptValue
from arm_jax.store.fetch import fetch_request_history


def test_fetch_shapes_history_like_the_wire_format(store):
    store.append(3, [10, 11, 12, 13], [0, 1, 2, 3], [100, 200, 300, 400])
    h = fetch_request_history(store, 3, 400, max_len=2, num_action_types=4,
                              catalog=empty_catalog((1, 2)))
    assert {k: v.tolist() for k, v in h.items()} == {
        "hist_item": [12, 11], "hist_action": [2, 1], "hist_gap": [100.0, 200.0],
        "hist_side": [[UNKNOWN_SIDE] * 2] * 2}
    assert [h[k].dtype for k in ("hist_item", "hist_action", "hist_gap", "hist_side")] == [
        np.int64, np.int64, np.float64, np.int64]
    empty = fetch_request_history(store, 4, 400, 8, 4, empty_catalog((1, 2)))
    assert empty["hist_item"].shape == (0,) and empty["hist_side"].shape == (0, 2)
    # an action the tier has no row for: a CorruptValue (serving degrades on it) naming
    # the store, the user, the value and the limit
    with pytest.raises(ActionOutOfRange, match=re.escape(
            f"{store.url}: user 3: stored action 3 >= features.num_action_types=3")) as info:
        fetch_request_history(store, 3, 500, 8, num_action_types=3,
                              catalog=empty_catalog((1, 2)))
    assert isinstance(info.value, CorruptValue)
    # only the events fetched are checked: the newest 2 before ts=400 are actions 2, 1
    h = fetch_request_history(store, 3, 400, 2, num_action_types=3, catalog=empty_catalog((1, 2)))
    assert h["hist_action"].tolist() == [2, 1]


def test_fetch_joins_side_ids_from_the_catalog(store):
    # items 0..11 known; item 12 is past the catalogue's end -> UNKNOWN_SIDE
    catalog = ItemCatalog(np.stack([np.arange(12) * 10, np.arange(12) % 3], -1), (1, 2))
    store.append(3, [10, 11, 12, 5], [0, 1, 2, 3], [100, 200, 300, 350])
    h = fetch_request_history(store, 3, 400, max_len=8, num_action_types=4, catalog=catalog)
    assert h["hist_item"].tolist() == [5, 12, 11, 10]
    assert h["hist_side"].tolist() == [[50, 2], [UNKNOWN_SIDE] * 2, [110, 2], [100, 1]]

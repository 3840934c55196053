"""Serving-side history fetch: one store read per request, shaped like the inline history."""

from __future__ import annotations

from typing import Any

import numpy as np

from arm_jax.data.catalog import ItemCatalog
from arm_jax.store.base import CorruptValue, UserLogStore


def fetch_request_history(store: UserLogStore, user_id: int, ts: int, max_len: int,
                          num_action_types: int, catalog: ItemCatalog) -> dict[str, Any]:
    """The user's `max_len` most recent events strictly before `ts`, newest first, as
    /v1/rank fields: hist_item, hist_action (ints), hist_gap (seconds, float) and
    hist_side (one row of side ids per event, from `catalog`; `empty_catalog(fields)`
    when the server has none: every id UNKNOWN_SIDE).

    Raises StoreError subclasses (StoreUnavailable, CorruptValue); a stored action outside
    [0, num_action_types) is reported as CorruptValue, never sent to the model.
    """
    ev = store.read_before(int(user_id), int(ts), max_len)
    action = ev.action[::-1]
    if action.size and int(action.max()) >= num_action_types:
        raise CorruptValue(f"{store.url} user {user_id}: stored action {int(action.max())} "
                           f">= num_action_types={num_action_types}")
    item = ev.item[::-1]
    return {"hist_item": item.tolist(), "hist_action": action.tolist(),
            "hist_gap": (int(ts) - ev.ts[::-1]).astype(np.float64).tolist(),
            "hist_side": catalog.lookup(item).tolist()}


__all__ = ["fetch_request_history"]

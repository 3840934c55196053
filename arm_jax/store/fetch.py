"""Serving-side history fetch: one store read per request, shaped like the inline history."""

from __future__ import annotations

from typing import Any

import numpy as np

from arm_jax.data.catalog import ItemCatalog
from arm_jax.store.base import UserLogStore, check_stored_actions


def fetch_request_history(store: UserLogStore, user_id: int, ts: int, max_len: int,
                          num_action_types: int, catalog: ItemCatalog) -> dict[str, Any]:
    """The user's `max_len` most recent events strictly before `ts`, newest first, as
    arrays named as the /v1/rank fields: hist_item, hist_action (int64 [L]), hist_gap
    (seconds, float64 [L]) and hist_side (int64 [L, s]: each event's side ids, from
    `catalog`; `empty_catalog(fields)` when the server has none: every id UNKNOWN_SIDE).

    Raises StoreError subclasses (StoreUnavailable, CorruptValue); a fetched action outside
    [0, num_action_types) is ActionOutOfRange (a CorruptValue), never sent to the model.
    """
    ev = store.read_before(int(user_id), int(ts), max_len)
    action = ev.action[::-1]
    check_stored_actions(store.url, user_id, action, num_action_types)
    item = ev.item[::-1].astype(np.int64)
    return {"hist_item": item, "hist_action": action.astype(np.int64),
            "hist_gap": (int(ts) - ev.ts[::-1]).astype(np.float64),
            "hist_side": catalog.lookup(item).astype(np.int64)}


__all__ = ["fetch_request_history"]

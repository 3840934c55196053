"""Point-in-time id vocabularies: an id too new to have been learned shares one
out-of-vocabulary id.

A hashed embedding gives every id its own row, trained or not. An id training never saw (a
new user, a movie first rated after the training period) is looked up in a row that is
still its random initialisation: noise, different for every such id. The rule here: at a
request at time t, an id is *known* when it occurred at least `min_count` times before
min(t, end of training); otherwise it is replaced by one `oov_id`. In training this maps
ids at their first occurrences (a user's first session, a movie's first ratings) to the
OOV row, so that row learns what a new id looks like; at test time it catches exactly the
ids that are new since training, plus the rare ones. Fitted on the past only: no request
sees a count from its own future.
"""

from __future__ import annotations

import numpy as np

_TS_BITS = 32          # times are unix seconds in [0, 2^32); ids in [0, 2^31)


def counts_before(log_id: np.ndarray, log_ts: np.ndarray, ids: np.ndarray,
                  ts: np.ndarray) -> np.ndarray:
    """How often each `ids[i]` occurs in the log (`log_id`, `log_ts`) strictly before
    `ts[i]` (arrays broadcast together). Ids must be in [0, 2^31), times in [0, 2^32)."""
    log_id, log_ts = np.asarray(log_id, np.int64), np.asarray(log_ts, np.int64)
    key = np.sort(log_id << _TS_BITS | log_ts)
    ids, ts = np.broadcast_arrays(np.asarray(ids, np.int64), np.asarray(ts, np.int64))
    return (np.searchsorted(key, ids << _TS_BITS | ts, side="left")
            - np.searchsorted(key, ids << _TS_BITS, side="left"))


def map_unknown(ids: np.ndarray, counts: np.ndarray, min_count: int, oov_id: int,
                where: np.ndarray | None = None) -> np.ndarray:
    """`ids` with those whose `counts` are below `min_count` replaced by `oov_id` (only
    where `where` is True, e.g. a candidate mask, when given)."""
    if min_count < 1:
        raise ValueError(f"min_count={min_count}: must be >= 1")
    ids = np.asarray(ids)
    unknown = np.asarray(counts) < min_count
    if where is not None:
        unknown &= np.asarray(where, bool)
    return np.where(unknown, np.asarray(oov_id, ids.dtype), ids)


__all__ = ["counts_before", "map_unknown"]

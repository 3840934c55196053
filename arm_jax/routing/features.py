"""Request-level routing features: computed from the request alone, before any tier runs.

One row per request: history length (raw and log), the count of each action type among
valid events, the log age of the newest and the mean event, summaries of the request
dense features, and the log number of real candidates. All cheap numpy on the packed
RequestBatch the server already built.
"""

from __future__ import annotations

import numpy as np

from arm_jax.batch import RequestBatch


def feature_names(num_action_types: int) -> list[str]:
    """Column names of `request_features`, in order."""
    return (["hist_len", "log_hist_len"]
            + [f"action_{a}_count" for a in range(num_action_types)]
            + ["log_newest_gap", "log_mean_gap", "dense_mean", "dense_std", "dense_absmax",
               "log_candidates"])


def request_features(batch: RequestBatch, num_action_types: int) -> np.ndarray:
    """[b, F] float64 routing features (see `feature_names`)."""
    hist_len = np.asarray(batch.hist_len, np.float64)
    action_bl = np.asarray(batch.hist_action)
    gap_bl = np.asarray(batch.hist_gap, np.float64)
    l = action_bl.shape[1]
    valid_bl = np.arange(l)[None, :] < hist_len[:, None]
    counts = np.stack([((action_bl == a) & valid_bl).sum(1) for a in range(num_action_types)],
                      axis=1).astype(np.float64)
    n_valid = np.maximum(valid_bl.sum(1), 1)
    newest = np.where(hist_len > 0, gap_bl[:, 0] if l else 0.0, 0.0)
    mean_gap = np.where(valid_bl, gap_bl, 0.0).sum(1) / n_valid
    dense = np.asarray(batch.req_dense, np.float64)
    cands = np.asarray(batch.cand_mask).sum(1).astype(np.float64)
    return np.column_stack([
        hist_len, np.log1p(hist_len), counts, np.log1p(newest), np.log1p(mean_gap),
        dense.mean(1), dense.std(1), np.abs(dense).max(1), np.log1p(cands),
    ])

"""Random, valid RequestBatches of any size: for tests, benchmarks and compile warm-up."""

from __future__ import annotations

import numpy as np

from arm_jax.batch import RequestBatch, make_batch
from arm_jax.config import FeaturesConfig


def random_batch(features: FeaturesConfig, *, batch: int, candidates: int, history: int,
                 seed: int = 0, full_history: bool = False, valid_candidates: int | None = None
                 ) -> RequestBatch:
    """Fresh random ids and values (never zeros); ragged history lengths unless `full_history`.

    `valid_candidates` (default: all) masks the trailing candidate slots as padding.
    Side fields (history events' and candidates' `history_side_fields`) draw from 15
    values, so candidates and history events share values and history matching fires.
    """
    r = np.random.default_rng(seed)
    f = features
    hist_len = (np.full(batch, history) if full_history
                else r.integers(0, history + 1, size=batch))
    mask = np.ones((batch, candidates), bool)
    if valid_candidates is not None:
        mask[:, valid_candidates:] = False
    side = list(f.history_side_fields)
    cand_sparse = r.integers(1, 10**6, (batch, candidates, f.cand_sparse_fields))
    cand_sparse[..., side] = r.integers(1, 16, (batch, candidates, len(side)))
    return make_batch(
        req_sparse=r.integers(1, 10**6, (batch, f.req_sparse_fields)),
        req_dense=r.normal(size=(batch, f.req_dense_features)),
        hist_item=r.integers(1, 10**6, (batch, history)),
        hist_action=r.integers(0, f.num_action_types, (batch, history)),
        hist_gap=r.exponential(1e5, (batch, history)),
        hist_len=hist_len,
        hist_side=r.integers(1, 16, (batch, history, len(side))),
        cand_sparse=cand_sparse,
        cand_dense=r.normal(size=(batch, candidates, f.cand_dense_features)),
        cand_mask=mask, expected={"history_side_fields": len(side)},
    )

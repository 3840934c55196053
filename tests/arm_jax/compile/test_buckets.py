"""Bucket selection (bisect on the grid), over-largest refusal, padding layout."""

from __future__ import annotations

import numpy as np
import pytest

from arm_jax.compile.buckets import bucket_grid, pad_batch, select_bucket
from arm_jax.compile.errors import ArtifactError, BucketError
from arm_jax.config import load_tier
from arm_jax.data.random_batch import random_batch

GRID = bucket_grid((1, 4, 16), (16, 64, 256))


@pytest.mark.parametrize("b,n,want", [
    (1, 1, (1, 16)), (1, 16, (1, 16)), (1, 17, (1, 64)), (2, 16, (4, 16)),
    (4, 65, (4, 256)), (5, 3, (16, 16)), (16, 256, (16, 256)),
])
def test_select_nearest_bucket(b, n, want):
    assert select_bucket(GRID, b, n) == want


@pytest.mark.parametrize("b,n", [(17, 1), (1, 257), (100, 1000)])
def test_over_largest_bucket_is_refused_with_limits(b, n):
    with pytest.raises(BucketError, match=r"exceeds the largest compiled bucket.*16.*256"):
        select_bucket(GRID, b, n)
    assert issubclass(BucketError, ArtifactError)


def test_empty_batch_is_refused():
    with pytest.raises(BucketError, match="at least|>= 1"):
        select_bucket(GRID, 0, 4)


def test_ragged_bucket_list_takes_cheapest_fit():
    ragged = [(1, 1024), (8, 64)]
    assert select_bucket(ragged, 2, 10) == (8, 64)
    assert select_bucket(ragged, 1, 100) == (1, 1024)
    with pytest.raises(BucketError, match=r"\(buckets 1x1024, 8x64\)"):   # names them
        select_bucket(ragged, 2, 100)


def test_pad_batch_layout(tiny_overrides):
    tier = load_tier("small", [*tiny_overrides, "model.history_len=6"])
    batch = random_batch(tier.features, batch=2, candidates=3, history=9, seed=1)
    out = pad_batch(batch, (4, 8), history_len=6)
    assert out["cand_sparse"].shape == (4, 8, tier.features.cand_sparse_fields)
    assert out["hist_item"].shape == (4, 6)
    assert out["cand_mask"].dtype == bool
    assert out["cand_mask"][:2, :3].all() and not out["cand_mask"][:, 3:].any()
    assert not out["cand_mask"][2:].any() and (out["hist_len"][2:] == 0).all()
    np.testing.assert_array_equal(out["hist_item"][:2], np.asarray(batch.hist_item)[:, :6])
    assert (out["hist_len"][:2] == np.minimum(np.asarray(batch.hist_len), 6)).all()
    short = random_batch(tier.features, batch=1, candidates=2, history=4, seed=2)
    assert pad_batch(short, (1, 4), history_len=6)["hist_gap"].shape == (1, 6)

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


def test_pad_batch_refuses_fields_that_disagree_and_keeps_dtypes(tiny_overrides):
    """Fields are padded one by one: a short one was padded with zeros (cand_dense for 2
    of 3 candidates scored the third with zero dense features)."""
    tier = load_tier("small", [*tiny_overrides, "model.history_len=6"])
    batch = random_batch(tier.features, batch=2, candidates=3, history=9, seed=1)
    for field, cut, message in [
            ("cand_dense", (slice(None), slice(0, 2)), r"cand_dense: shape \[2, 2, 2\], expected "
                                                       r"3 candidates on axis 1"),
            ("hist_len", (slice(0, 1),), r"hist_len: shape \[1\], expected 2 requests on axis 0"),
            ("hist_side", (slice(None), slice(0, 8)), r"hist_side: shape \[2, 8, 2\], expected 9 "
                                                      r"history events on axis 1")]:
        with pytest.raises(ArtifactError, match="^" + message):
            pad_batch(batch.replace(**{field: np.asarray(getattr(batch, field))[cut]}), (4, 8), 6)
    # hist_len is cut to L in its own dtype: LoadedTier's cast to the compiled one judges it
    for dtype in (np.uint8, np.float32, np.bool_):
        hl = np.asarray(batch.hist_len).astype(dtype)
        assert pad_batch(batch.replace(hist_len=hl), (4, 8), 6)["hist_len"].dtype == dtype

"""crop_histories: random training-time cuts of hist_len, most recent events kept."""

import jax
import numpy as np
import pytest

from arm_jax.data.random_batch import random_batch
from arm_jax.config import load_tier
from arm_jax.train.augment import crop_histories


@pytest.fixture(scope="module")
def batch(tiny_overrides):
    tier = load_tier("small", tiny_overrides)
    return random_batch(tier.features, batch=512, candidates=2, history=40, seed=4)


def test_crop_only_shortens_hist_len_and_leaves_every_other_field(batch):
    out = crop_histories(batch, jax.random.key(0), 0.5)
    before, after = np.asarray(batch.hist_len), np.asarray(out.hist_len)
    assert after.dtype == before.dtype and after.shape == before.shape
    assert (after >= 0).all() and (after <= before).all()
    for name in ("hist_item", "hist_action", "hist_gap", "hist_side", "cand_sparse",
                 "req_dense", "cand_mask"):
        np.testing.assert_array_equal(getattr(out, name), getattr(batch, name))


def test_crop_rate_and_lengths_follow_prob(batch):
    before = np.asarray(batch.hist_len)
    long = before >= 10         # a cut of these is almost never their full length
    rates = {}
    for prob in (0.25, 0.75):
        cut = np.mean([np.asarray(crop_histories(batch, jax.random.key(s), prob).hist_len)
                       [long] < before[long] for s in range(8)])
        rates[prob] = cut
    assert rates[0.25] == pytest.approx(0.25 * 0.95, abs=0.06)
    assert rates[0.75] == pytest.approx(0.75 * 0.95, abs=0.06)
    # cut lengths are uniform on [0, len]: their mean share of the length is about 1/2
    out = np.asarray(crop_histories(batch, jax.random.key(9), 1.0).hist_len)
    assert np.mean(out[long] / before[long]) == pytest.approx(0.5, abs=0.05)


def test_prob_zero_is_the_identity_and_keys_reproduce(batch):
    assert crop_histories(batch, jax.random.key(0), 0.0) is batch
    a = crop_histories(batch, jax.random.key(3), 0.5).hist_len
    b = crop_histories(batch, jax.random.key(3), 0.5).hist_len
    np.testing.assert_array_equal(a, b)

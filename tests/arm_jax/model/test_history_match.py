"""HistoryMatch against a numpy reference, exact matches from step 0, padding ignored."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from arm_jax.model.history_match import HistoryMatch


def _reference(m: HistoryMatch, keys, enc, mask, cand):
    """The module's formula in numpy (float64)."""
    unit = lambda x: x / np.sqrt((x * x).sum(-1, keepdims=True) + 1e-12)  # noqa: E731
    valid = mask.astype(np.float64)
    k = unit(keys) * valid[:, :, None, None]
    w, bias = np.asarray(m.value.kernel[...]), np.asarray(m.value.bias[...])
    v = (enc @ w + bias) * valid[:, :, None]
    n = np.maximum(valid.sum(-1), 1.0)
    cos = np.einsum("bcfd,blfd->bcfl", unit(cand), k)
    slope, offset = np.asarray(m.slope[...])[:, None], np.asarray(m.offset[...])[:, None]
    gate = valid[:, None, None, :] / (1 + np.exp(-slope * (cos - offset)))
    hits = gate.sum(-1)
    feats = np.concatenate([hits / n[:, None, None], np.log1p(hits)], -1)
    stats = feats @ np.asarray(m.stats.kernel[...]) + np.asarray(m.stats.bias[...])
    return stats + np.einsum("bcfl,bld->bcd", gate, v) / (n[:, None, None] * m.num_fields)


@pytest.mark.parametrize("b, c, l, f, d", [(2, 5, 7, 3, 8), (3, 1, 13, 1, 4)])
def test_matches_numpy_reference_at_ragged_sizes(b, c, l, f, d):
    r = np.random.default_rng(b * 100 + l)
    m = HistoryMatch(f, d, rngs=nnx.Rngs(1))
    keys, enc, cand = r.normal(size=(b, l, f, d)), r.normal(size=(b, l, d)), r.normal(size=(b, c, f, d))
    cand[0, 0] = keys[0, 0]                       # one exact match
    mask = np.arange(l)[None] < r.integers(0, l + 1, b)[:, None]
    mask[0, 0] = True
    got = m(m.request_part(keys, enc, mask), cand)
    want = _reference(m, keys, enc, mask, cand)
    np.testing.assert_allclose(np.asarray(got), want, rtol=2e-5, atol=2e-5)


def test_exact_matches_are_counted_and_padding_never_counts():
    d, l = 16, 10
    r = np.random.default_rng(0)
    m = HistoryMatch(1, d, rngs=nnx.Rngs(0))
    vocab = 3.0 * np.eye(5, d)                    # distinct ids: cosine 0, equal ids: 1
    hist_ids = np.array([[0, 0, 0, 1, 2, 3, 4, 4, 0, 0]])
    keys = vocab[hist_ids][:, :, None, :]
    mask = np.arange(l)[None] < 8                 # the last two events are padding
    # read the fraction back through an identity stats layer, with no pooled values
    m.stats.kernel[...] = jax.numpy.eye(2, d)
    m.stats.bias[...] = jax.numpy.zeros(d)
    m.value.kernel[...] = jax.numpy.zeros((d, d))
    m.value.bias[...] = jax.numpy.zeros(d)
    state = m.request_part(keys, r.normal(size=(1, l, d)), mask)
    out = np.asarray(m(state, vocab[None, :, None, :]))      # candidates = ids 0..4
    frac = out[0, :, 0]
    np.testing.assert_allclose(frac * 8, [3, 1, 1, 1, 2], atol=0.1)   # counts among 8 valid
    changed = keys.copy()
    changed[:, 8:] = vocab[1]                     # padding now "matches" id 1: no effect
    again = np.asarray(m(m.request_part(changed, r.normal(size=(1, l, d)), mask),
                         vocab[None, :, None, :]))
    np.testing.assert_allclose(again[0, :, 0], frac, atol=1e-6)

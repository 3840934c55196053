"""The training losses: candidates' binary cross-entropy, the batch-wide pairwise ranking
loss, hidden actions' softmax cross-entropy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arm_jax.train.loss import (batch_pairwise_logistic, masked_action_ce, masked_bce,
                                ranker_loss)


def test_masked_bce_ignores_padded_candidates():
    r = np.random.default_rng(0)
    logits = r.normal(size=(2, 3, 2)).astype(np.float32)
    labels = r.integers(0, 2, (2, 3, 2)).astype(np.float32)
    mask = np.array([[True, True, False], [True, False, False]])
    p = 1 / (1 + np.exp(-logits))
    per = -(labels * np.log(p) + (1 - labels) * np.log(1 - p))
    assert float(masked_bce(logits, labels, mask)) == pytest.approx(
        per[mask].sum() / mask.sum(), rel=1e-5)


def test_masked_action_ce_scores_the_hidden_events_only():
    r = np.random.default_rng(1)
    logits = r.normal(size=(3, 7, 5)).astype(np.float32)
    actions = r.integers(0, 5, (3, 7))
    hidden = r.random((3, 7)) < 0.4
    log_p = np.asarray(jax.nn.log_softmax(logits, axis=-1))
    nll = -np.take_along_axis(log_p, actions[..., None], axis=-1)[..., 0]
    assert float(masked_action_ce(logits, actions, hidden)) == pytest.approx(
        nll[hidden].mean(), rel=1e-5)
    # what sits at the visible events does not matter; nothing hidden costs nothing
    other = np.where(hidden[..., None], logits, r.normal(size=logits.shape) * 9)
    assert float(masked_action_ce(other, actions, hidden)) == pytest.approx(
        nll[hidden].mean(), rel=1e-5)
    assert float(masked_action_ce(logits, actions, np.zeros_like(hidden))) == 0.0


def _pairwise_reference(logits, labels, mask):
    """Every ordered pair of valid candidates, request boundaries ignored, one task at a time."""
    total = 0.0
    for t in range(logits.shape[-1]):
        s, y = logits[..., t][mask], labels[..., t][mask]
        w = np.maximum(y[:, None] - y[None, :], 0.0)
        total += (w * np.logaddexp(0.0, s[None, :] - s[:, None])).sum() / max(w.sum(), 1e-6)
    return total


@pytest.mark.parametrize("soft", [False, True])
def test_batch_pairwise_logistic_matches_a_pairwise_reference(soft):
    r = np.random.default_rng(2 + soft)
    b, c, t = 5, 7, 2                       # ragged: each request keeps its own count
    logits = r.normal(size=(b, c, t)).astype(np.float32) * 2
    labels = (r.random((b, c, t)) if soft else r.integers(0, 2, (b, c, t))).astype(np.float32)
    mask = np.arange(c)[None, :] < r.integers(1, c + 1, b)[:, None]
    got = float(batch_pairwise_logistic(logits, labels, mask))
    assert got == pytest.approx(_pairwise_reference(logits, labels, mask), rel=1e-5)
    # padded slots do not count, whatever sits there; one shift of every logit changes nothing
    noise = np.where(mask[..., None], logits, r.normal(size=logits.shape) * 9)
    junk = np.where(mask[..., None], labels, 1.0 - labels)
    assert float(batch_pairwise_logistic(noise, junk, mask)) == pytest.approx(got, rel=1e-5)
    assert float(batch_pairwise_logistic(logits + 3.0, labels, mask)) == pytest.approx(
        got, rel=1e-4)
    # bfloat16 logits (model.dtype) are summed in float32: only their own rounding differs
    half = batch_pairwise_logistic(jnp.asarray(logits, jnp.bfloat16), labels, mask)
    assert half.dtype == jnp.float32 and float(half) == pytest.approx(got, rel=2e-2)


def test_batch_pairwise_logistic_pairs_across_requests():
    # each request holds one label only, so every ordered pair crosses a request boundary
    logits = np.array([[[2.0], [1.5]], [[-1.0], [0.0]]], np.float32)
    labels = np.array([[[1.0], [1.0]], [[0.0], [0.0]]], np.float32)
    mask = np.ones((2, 2), bool)
    got = float(batch_pairwise_logistic(logits, labels, mask))
    expected = np.mean([np.logaddexp(0.0, n - p) for p in (2.0, 1.5) for n in (-1.0, 0.0)])
    assert got == pytest.approx(expected, rel=1e-6)
    # no positive above any negative: nothing to rank, no loss, no nan
    assert float(batch_pairwise_logistic(logits, np.ones_like(labels), mask)) == 0.0
    grad = jax.grad(lambda s: batch_pairwise_logistic(s, labels, mask))(logits)
    assert (np.asarray(grad)[0] < 0).all() and (np.asarray(grad)[1] > 0).all()


def test_ranker_loss_adds_the_weighted_pairwise_term():
    r = np.random.default_rng(4)
    logits = r.normal(size=(3, 4, 1)).astype(np.float32)
    labels = r.integers(0, 2, (3, 4, 1)).astype(np.float32)
    mask = r.random((3, 4)) < 0.8
    bce = float(masked_bce(logits, labels, mask))
    pair = float(batch_pairwise_logistic(logits, labels, mask))
    assert float(ranker_loss(logits, labels, mask)) == pytest.approx(bce, rel=1e-6)
    assert float(ranker_loss(logits, labels, mask, 0.5)) == pytest.approx(bce + 0.5 * pair,
                                                                           rel=1e-6)


def test_ranker_loss_refuses_a_batch_too_wide_to_pair():
    from arm_jax.config import ConfigError

    # an examples file sets its own candidates per request, which train.candidates misses
    logits = np.zeros((65, 64, 1), np.float32)
    mask = np.ones((65, 64), bool)
    with pytest.raises(ConfigError) as e:
        ranker_loss(logits, logits, mask, 1.0)
    assert str(e.value) == ("train.rank_loss_weight=1.0 pairs every candidate of a batch: a "
                            "batch of 65 requests x 64 candidates = 4160 must be <= 4096")
    assert np.isfinite(float(ranker_loss(logits, logits, mask)))       # off: any width

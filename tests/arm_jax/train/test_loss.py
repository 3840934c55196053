"""The two training losses: candidates' binary cross-entropy, hidden actions' softmax one."""

import jax
import numpy as np
import pytest

from arm_jax.train.loss import masked_action_ce, masked_bce


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

"""Trainer: one shared setup for the training loops (model, AdamW, donated step, dropout)."""

import jax
import numpy as np
import pytest

from arm_jax.config import load_tier
from arm_jax.data.random_batch import random_batch
from arm_jax.train.trainer import Trainer


def test_step_updates_params_and_dropout_is_for_rankers_only(tiny_overrides):
    tier = load_tier("small", [*tiny_overrides, "model.dropout=0.2"])
    ranker = Trainer.create("ranker", tier, steps=5)
    logreg = Trainer.create("logreg", tier, steps=5)
    assert ranker.dropout_key(0) is not None and logreg.dropout_key(0) is None
    batch = random_batch(tier.features, batch=2, candidates=3, history=8, seed=1)
    labels = np.ones(batch.cand_mask.shape + (len(tier.features.tasks),), np.float32)
    before = jax.device_get(ranker.params)
    losses = [float(ranker.step(i, batch, labels)) for i in range(3)]
    assert np.isfinite(losses).all()
    changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), before,
                           jax.device_get(ranker.params))
    assert any(jax.tree.leaves(changed))
    assert np.isfinite(float(logreg.step(0, batch, labels)))


def test_mean_loss_averages_the_steps_since_the_last_call(tiny_overrides):
    tier = load_tier("small", tiny_overrides)
    trainer = Trainer.create("logreg", tier, steps=10)
    batch = random_batch(tier.features, batch=2, candidates=3, history=8, seed=2)
    labels = np.zeros(batch.cand_mask.shape + (len(tier.features.tasks),), np.float32)
    with pytest.raises(ValueError, match="mean_loss"):
        trainer.mean_loss()
    first = [float(trainer.step(i, batch, labels)) for i in range(3)]
    assert trainer.mean_loss() == pytest.approx(np.mean(first), rel=1e-6)
    second = [float(trainer.step(i, batch, labels)) for i in range(3, 5)]
    assert second != first[:2]   # the window restarted: only these two steps count
    assert trainer.mean_loss() == pytest.approx(np.mean(second), rel=1e-6)


def test_logs_at_every_log_every_steps_and_the_last(tiny_overrides):
    tier = load_tier("small", [*tiny_overrides, "train.log_every=4"])
    trainer = Trainer.create("logreg", tier, steps=10)
    assert [i for i in range(10) if trainer.logs_at(i)] == [0, 4, 8, 9]

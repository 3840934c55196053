"""Trainer: one shared setup for the training loops (model, AdamW, donated step, dropout)."""

import jax
import numpy as np
import pytest

from arm_jax.config import load_tier
from arm_jax.data.random_batch import random_batch
from arm_jax.train.trainer import MAX_STEPS_IN_FLIGHT, Trainer, TrainingDiverged


def test_step_updates_params_and_dropout_is_for_rankers_only(tiny_overrides):
    tier = load_tier("small", [*tiny_overrides, "model.dropout=0.2"])
    ranker = Trainer.create("ranker", tier, steps=5)
    logreg = Trainer.create("logreg", tier, steps=5)
    assert ranker.step_key(0) is not None and logreg.step_key(0) is None
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


def test_a_non_finite_loss_is_refused_naming_its_steps(tiny_overrides):
    """Nothing stopped a diverged run: it logged loss=nan, saved its NaN weights and
    exported them, and only the server's JSON encoder failed (on every request)."""
    tier = load_tier("small", tiny_overrides)
    trainer = Trainer.create("logreg", tier, steps=10)
    batch = random_batch(tier.features, batch=2, candidates=3, history=8, seed=3)
    labels = np.zeros(batch.cand_mask.shape + (len(tier.features.tasks),), np.float32)
    trainer.step(0, batch, labels)
    assert np.isfinite(trainer.mean_loss())
    trainer.step(1, batch, labels)
    trainer.step(2, batch, np.full_like(labels, np.nan))
    with pytest.raises(TrainingDiverged, match=r"^training diverged: the mean loss of steps "
                                               r"1-2 is nan; nothing from them is saved"):
        trainer.loss_window()           # what a training-state save reads first
    with pytest.raises(TrainingDiverged, match="steps 1-2 is nan"):
        trainer.mean_loss()


def test_step_returns_with_at_most_two_steps_unfinished():
    """A progress bar counts finished steps: `step` waits for the loss of the step two
    before it (jax would otherwise queue ~16 steps ahead), each loss waited for once."""
    waited = []

    class Loss(float):
        def block_until_ready(self):
            waited.append(int(self))
            return self

    def fake_step(params, opt_state, ema, batch, labels, i, key):
        return params, opt_state, ema, Loss(i)

    trainer = Trainer(graphdef=None, params=0, opt_state=0, train_step=fake_step,
                      step_key=lambda i: None, steps=10, log_every=5)
    assert MAX_STEPS_IN_FLIGHT == 2
    for i in range(6):
        trainer.step(i, None, None)
        assert waited == list(range(max(0, i - 1)))
    assert trainer.mean_loss() == pytest.approx(np.mean(range(6)))


def test_logs_at_every_log_every_steps_and_the_last(tiny_overrides):
    tier = load_tier("small", [*tiny_overrides, "train.log_every=4"])
    trainer = Trainer.create("logreg", tier, steps=10)
    assert [i for i in range(10) if trainer.logs_at(i)] == [0, 4, 8, 9]


def test_ema_follows_the_weights_at_its_warmed_up_rate(tiny_overrides):
    tier = load_tier("small", [*tiny_overrides, "train.ema_decay=0.9"])
    trainer = Trainer.create("ranker", tier, steps=5)
    batch = random_batch(tier.features, batch=2, candidates=3, history=8, seed=3)
    labels = np.ones(batch.cand_mask.shape + (len(tier.features.tasks),), np.float32)
    expected = jax.device_get(trainer.params)
    for i in range(4):
        trainer.step(i, batch, labels)
        d = min(0.9, (1 + i) / (10 + i))      # 0.1, 0.18, 0.25, 0.31: warming up to 0.9
        expected = jax.tree.map(lambda e, p: d * e + (1 - d) * p, expected,
                                jax.device_get(trainer.params))
    assert trainer.eval_params is trainer.ema_params
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                 jax.device_get(trainer.ema_params), expected)
    apart = jax.tree.map(lambda a, b: not np.allclose(a, b), jax.device_get(trainer.params),
                         jax.device_get(trainer.ema_params))
    assert any(jax.tree.leaves(apart))      # the average lags the weights


def test_without_ema_the_weights_are_what_is_evaluated(tiny_overrides):
    trainer = Trainer.create("logreg", load_tier("small", tiny_overrides), steps=5)
    assert trainer.ema_params is None and trainer.eval_params is trainer.params


def test_history_crop_changes_what_a_step_sees_only_when_on(tiny_overrides):
    batch = random_batch(load_tier("small", tiny_overrides).features, batch=8, candidates=3,
                         history=16, seed=5, full_history=True)
    labels = np.ones(batch.cand_mask.shape + (2,), np.float32)
    after = {}
    for crop in (0.0, 1.0):
        tier = load_tier("small", [*tiny_overrides, f"train.history_crop={crop}"])
        trainer = Trainer.create("ranker", tier, steps=3)
        assert (trainer.step_key(0) is None) == (crop == 0.0)
        for i in range(2):            # step 0 is the warm-up's zero learning rate
            trainer.step(i, batch, labels)
        after[crop] = jax.device_get(trainer.params)
    # same seed, same init, same batch: only the cropped histories can tell the two apart
    differs = jax.tree.map(lambda a, b: not np.array_equal(a, b), after[0.0], after[1.0])
    assert any(jax.tree.leaves(differs))
    assert Trainer.create("logreg", load_tier("small", [*tiny_overrides,
                                                        "train.history_crop=1.0"]),
                          steps=3).step_key(0) is None


def test_masked_actions_add_their_weighted_task_to_the_loss(tiny_overrides):
    from flax import nnx

    from arm_jax.train.loss import masked_action_ce, masked_bce

    batch = random_batch(load_tier("small", tiny_overrides).features, batch=4, candidates=3,
                         history=16, seed=6, full_history=True)
    labels = np.ones(batch.cand_mask.shape + (2,), np.float32)
    tier = load_tier("small", [*tiny_overrides, "train.masked_actions=0.5",
                               "train.masked_action_weight=2.0"])
    trainer = Trainer.create("ranker", tier, steps=3)
    key = trainer.step_key(0)
    assert key is not None
    # the step's loss is computed before its update: rebuild it from the same keys
    mask_key, dropout_key = jax.random.split(key)
    logits, aux = nnx.merge(trainer.graphdef, trainer.params).masked_action_forward(
        batch, mask_key, 0.5, dropout_key=dropout_key)
    ce = float(masked_action_ce(aux.logits_bla, aux.actions_bl, aux.hidden_bl))
    expected = float(masked_bce(logits, labels, batch.cand_mask)) + 2.0 * ce
    assert ce > 0.5 and float(trainer.step(0, batch, labels)) == pytest.approx(expected,
                                                                               rel=1e-5)
    assert Trainer.create("logreg", tier, steps=3).step_key(0) is None   # rankers only
    off = Trainer.create("ranker", load_tier("small", tiny_overrides), steps=3)
    assert off.step_key(0) is None


def test_rank_loss_weight_adds_the_pairwise_term_for_rankers_only(tiny_overrides):
    from flax import nnx

    from arm_jax.train.loss import batch_pairwise_logistic, masked_bce

    tier = load_tier("small", [*tiny_overrides, "train.rank_loss_weight=0.5"])
    batch = random_batch(tier.features, batch=3, candidates=4, history=8, seed=7)
    labels = np.random.default_rng(7).integers(
        0, 2, batch.cand_mask.shape + (len(tier.features.tasks),)).astype(np.float32)
    for kind, weight in (("ranker", 0.5), ("logreg", 0.0)):
        trainer = Trainer.create(kind, tier, steps=3)
        # the step's loss is computed before its update: rebuild it from the same params
        logits = nnx.merge(trainer.graphdef, trainer.params)(batch)
        pair = float(batch_pairwise_logistic(logits, labels, batch.cand_mask))
        expected = float(masked_bce(logits, labels, batch.cand_mask)) + weight * pair
        assert pair > 0.1
        assert float(trainer.step(0, batch, labels)) == pytest.approx(expected, rel=1e-5)

"""Training on the synthetic world: the loss falls, the ranker beats logistic regression, and
the large tier (long history, target attention) beats the small one on long-history users."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from arm_jax.checkpoint import load_checkpoint, read_metrics
from arm_jax.config import load_tier
from arm_jax.train.loop import evaluate_model, make_synthetic_data, train_model

# A small world and a tiny ranker with real-size item hashing (ids must not all collide for
# the history to carry information), small enough to train in seconds on 2 cores.
WORLD = ("train.num_users=1500", "train.train_requests=6000", "train.eval_requests=800",
         "train.batch_size=16", "train.candidates=32", "features.max_history=256",
         "features.item_hash_size=20011", "features.sparse_hash_size=2003",
         "train.log_every=10")


@pytest.fixture(scope="module")
def trained(tiny_overrides, tmp_path_factory):
    tier = load_tier("small", [*tiny_overrides, *WORLD, "model.history_len=16"])
    data = make_synthetic_data(tier)
    out = tmp_path_factory.mktemp("train")
    ranker = train_model(tier, data, steps=300, out_dir=out / "ranker", progress=False)
    logreg = train_model(tier, data, kind="logreg", steps=300, progress=False)
    return tier, data, ranker, logreg, out / "ranker"


@pytest.fixture(scope="module")
def trained_large(tiny_overrides):
    """The tiny `large` tier reading 128 events (small reads 16), on the same world."""
    tier = load_tier("large", [*tiny_overrides, *WORLD, "model.history_len=128"])
    return train_model(tier, make_synthetic_data(tier), steps=300, progress=False)


@pytest.fixture(scope="module")
def plain_20_steps(trained):
    """The small ranker trained 20 steps with every option off: what dropout and the moving
    average are compared with (same seed, same batches)."""
    tier, data = trained[:2]
    return train_model(tier, data, steps=20, progress=False)


def test_loss_falls(trained):
    _, _, ranker, logreg, _ = trained
    for res in (ranker, logreg):
        first, last = np.mean(res.losses[:3]), np.mean(res.losses[-3:])
        assert last < 0.8 * first, (res.kind, res.losses)


def test_ranker_beats_logistic_regression_on_auc(trained):
    _, _, ranker, logreg, _ = trained
    auc = {r.kind: r.metrics["overall"]["click"]["auc"] for r in (ranker, logreg)}
    assert auc["ranker"] > auc["logreg"] + 0.005, auc
    assert auc["ranker"] > 0.6, auc


def test_checkpoint_restores_the_trained_model(trained):
    tier, data, ranker, _, path = trained
    kind, tier2, graphdef, params = load_checkpoint(path)
    assert (kind, tier2) == ("ranker", tier)
    again = evaluate_model(graphdef, params, tier2, data)
    assert again["overall"]["click"]["auc"] == pytest.approx(
        ranker.metrics["overall"]["click"]["auc"], abs=1e-9)
    assert read_metrics(path)["steps"] == 300


def test_large_beats_small_on_users_with_long_histories(trained, trained_large):
    small, large = trained[2].metrics, trained_large.metrics
    assert small["long_history"]["requests"] == large["long_history"]["requests"] > 50
    auc = {name: m["long_history"]["click"]["auc"] for name, m in
           (("small", small), ("large", large))}
    assert auc["large"] > auc["small"] + 0.01, auc


def test_dropout_trains_differently_and_evaluates_deterministically(trained, plain_20_steps,
                                                                    tiny_overrides):
    """model.dropout reaches the train step (a different loss curve from the same seed) and
    evaluation of the result is deterministic (no dropout outside training)."""
    data, plain = trained[1], plain_20_steps
    dropped = load_tier("small", [*tiny_overrides, *WORLD, "model.history_len=16",
                                  "model.dropout=0.2"])
    res = train_model(dropped, data, steps=20, progress=False)
    assert res.losses[0] == pytest.approx(plain.losses[0], abs=0.2)   # same init, same batch
    assert not np.allclose(res.losses, plain.losses)
    again = evaluate_model(res.graphdef, res.params, dropped, data)
    assert again["overall"] == res.metrics["overall"]


def test_ema_averages_what_is_saved_without_changing_training(trained, plain_20_steps,
                                                              tiny_overrides, tmp_path):
    """train.ema_decay leaves the optimisation alone (same losses from the same seed) and
    replaces the evaluated and checkpointed weights by their moving average."""
    data, plain = trained[1], plain_20_steps
    ema_tier = load_tier("small", [*tiny_overrides, *WORLD, "model.history_len=16",
                                   "train.ema_decay=0.9"])
    ema = train_model(ema_tier, data, steps=20, out_dir=tmp_path / "ema", progress=False)
    np.testing.assert_allclose(ema.losses, plain.losses, rtol=1e-6)
    apart = jax.tree.map(lambda a, b: not np.allclose(a, b), jax.device_get(ema.params),
                         jax.device_get(plain.params))
    assert any(jax.tree.leaves(apart))
    _, _, _, restored = load_checkpoint(tmp_path / "ema")
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored),
                 jax.device_get(ema.params))


def test_lengths_past_the_schema_are_refused_naming_both_settings(tiny_overrides, tmp_path):
    """Every batch would be refused: say which two settings disagree, before any work."""
    tier = load_tier("small", [*tiny_overrides, *WORLD, "train.candidates=64",
                               "features.max_candidates=32"])
    with pytest.raises(ValueError, match=r"^train.candidates=64 exceeds "
                                         r"features.max_candidates=32$"):
        make_synthetic_data(tier)
    tier = load_tier("small", [*tiny_overrides, *WORLD, "train.train_requests=16",
                               "model.history_len=64", "features.max_history=32"])
    data = make_synthetic_data(tier)
    with pytest.raises(ValueError, match=r"^model.history_len=64 exceeds "
                                         r"features.max_history=32$"):
        train_model(tier, data, steps=1, progress=False, out_dir=tmp_path / "never")
    assert not (tmp_path / "never").exists()
    # the linear baseline reads features.max_history itself: not refused
    assert train_model(tier, data, kind="logreg", steps=1, progress=False) is not None


def test_examples_too_wide_for_the_pairwise_loss_are_refused_before_training(
        tiny_overrides, tmp_path):
    """train.candidates passes the config's bound, but the data's own width decides."""
    small = [*tiny_overrides, *WORLD, "train.train_requests=16", "train.batch_size=8"]
    wide = make_synthetic_data(load_tier("small", [*small, "train.candidates=600"]))
    tier = load_tier("small", [*small, "train.rank_loss_weight=1"])
    with pytest.raises(ValueError, match=r"^train.rank_loss_weight=1.0 pairs every candidate "
                                         r"of a batch: train.batch_size=8 x the training "
                                         r"examples' 600 candidates per request = 4800 must "
                                         r"be <= 4096$"):
        train_model(tier, wide, steps=1, progress=False, out_dir=tmp_path / "never")
    assert not (tmp_path / "never").exists()
    assert train_model(tier, wide, kind="logreg", steps=1, progress=False) is not None


def test_an_output_directory_that_is_not_a_checkpoint_is_refused_before_training(
        tiny_overrides, tmp_path):
    """save_checkpoint refuses it; training checks first instead of failing after its steps."""
    from arm_jax.checkpoint import CheckpointError

    tier = load_tier("small", [*tiny_overrides, "train.train_requests=16", "train.batch_size=8",
                               "train.eval_requests=8", "train.num_users=16"])
    out = tmp_path / "photos"
    out.mkdir()
    (out / "cat.jpg").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="refusing to save a checkpoint"):
        train_model(tier, make_synthetic_data(tier), steps=1, out_dir=out, progress=False,
                    checkpoint_every=1)
    assert sorted(p.name for p in out.iterdir()) == ["cat.jpg"]


def test_weights_gone_non_finite_are_neither_evaluated_nor_saved(tiny_overrides, tmp_path,
                                                                  monkeypatch):
    """The last update is not in any logged loss: the weights are checked themselves."""
    import jax.numpy as jnp

    from arm_jax.train.trainer import Trainer, TrainingDiverged

    tier = load_tier("small", [*tiny_overrides, "train.train_requests=16", "train.batch_size=8",
                               "train.eval_requests=8", "train.num_users=16"])
    trained_params = Trainer.eval_params.fget

    def diverged(self):
        return jax.tree.map(lambda w: w.at[(0,) * w.ndim].set(jnp.inf)
                            if jnp.issubdtype(w.dtype, jnp.floating) else w,
                            trained_params(self))

    monkeypatch.setattr(Trainer, "eval_params", property(diverged))
    with pytest.raises(TrainingDiverged, match=r"^training diverged: the trained weight \S+ "
                                               r"holds NaN or inf; nothing is saved"):
        train_model(tier, make_synthetic_data(tier), steps=2, out_dir=tmp_path / "run",
                    progress=False)
    assert not (tmp_path / "run" / "config.json").exists()
    assert not (tmp_path / "run" / "params").exists()


def test_evaluation_joins_the_history_lengths_in_chunks(trained, plain_20_steps, monkeypatch):
    """The by-history split joined every held-out request at max_history at once: [R, 1024]
    arrays, ~850 MB per 20,000 requests from a store, so a large --examples file ran out of
    memory after training. Same metrics, at most HISTORY_CHUNK requests per join."""
    import dataclasses

    from arm_jax.train import loop

    tier, data = trained[:2]
    rows = []

    class Recording:
        def __getattr__(self, name):
            return getattr(data.world, name)

        def join_history(self, user_id, ts, max_len):
            rows.append(len(user_id))
            return data.world.join_history(user_id, ts, max_len)

    monkeypatch.setattr(loop, "HISTORY_CHUNK", 100, raising=False)
    res = plain_20_steps
    again = evaluate_model(res.graphdef, res.params, tier,
                           dataclasses.replace(data, world=Recording()))
    assert again == {k: res.metrics[k] for k in again}
    assert len(data.test) > 100 and max(rows) <= 100

import numpy as np
import pytest

from arm_jax.batch import RequestBatch
from arm_jax.config import FeaturesConfig
from arm_jax.data.synthetic import (Examples, SyntheticSpec, SyntheticWorld, iterate_batches,
                                    oracle_metrics)

FEATURES = FeaturesConfig(req_sparse_fields=4, req_dense_features=3, cand_sparse_fields=6,
                          cand_dense_features=3, max_history=256, max_candidates=64)
SPEC = SyntheticSpec(num_users=1500, num_items=3000, num_topics=16, num_advertisers=120, seed=3)


@pytest.fixture(scope="module")
def world() -> SyntheticWorld:
    return SyntheticWorld.generate(SPEC, FEATURES)


@pytest.fixture(scope="module")
def examples(world) -> Examples:
    return world.sample_examples(3000, 12, seed=1, min_candidates=4)


def test_same_seed_same_world_and_examples(world, examples):
    again = SyntheticWorld.generate(SPEC, FEATURES)
    for name in ("log_user", "log_item", "log_action", "log_ts", "user_offsets"):
        np.testing.assert_array_equal(getattr(world, name), getattr(again, name))
    ex2 = again.sample_examples(3000, 12, seed=1, min_candidates=4)
    for name in ("user_id", "ts", "req_sparse", "req_dense", "cand_sparse", "cand_dense",
                 "cand_mask", "labels", "true_prob"):
        np.testing.assert_array_equal(getattr(examples, name), getattr(ex2, name))
    other = world.sample_examples(3000, 12, seed=2, min_candidates=4)
    assert not np.array_equal(other.cand_sparse, examples.cand_sparse)
    reseeded = SyntheticWorld.generate(SyntheticSpec(**{**SPEC.__dict__, "seed": 4}), FEATURES)
    assert not np.array_equal(reseeded.user_offsets, world.user_offsets)


def test_logs_are_flat_sorted_by_user_then_time(world):
    e_n = world.log_user.size
    assert world.user_offsets[0] == 0 and world.user_offsets[-1] == e_n
    assert world.log_user.dtype == np.int32 and world.log_ts.dtype == np.int64
    np.testing.assert_array_equal(
        world.log_user, np.repeat(np.arange(SPEC.num_users), world.history_lengths))
    same_user = world.log_user[1:] == world.log_user[:-1]
    assert np.all(world.log_ts[1:][same_user] >= world.log_ts[:-1][same_user])
    assert 0 <= world.log_item.min() and world.log_item.max() < SPEC.num_items
    assert 0 <= world.log_action.min() and world.log_action.max() < FEATURES.num_action_types


def test_history_lengths_spread_short_and_long(world):
    lengths = world.history_lengths
    assert (lengths < 32).mean() > 0.2
    assert (lengths > 512).mean() > 0.05
    assert lengths.max() <= SPEC.history_max


def _slow_join(world, user, ts, max_len):
    lo, hi = world.user_offsets[user], world.user_offsets[user + 1]
    events = [e for e in range(lo, hi) if world.log_ts[e] < ts]
    # newest first; equal timestamps keep log order reversed (later in the log = newer)
    events = sorted(events, key=lambda e: (-world.log_ts[e], -e))[:max_len]
    return events


def test_join_is_point_in_time_and_most_recent_first(world):
    r = np.random.default_rng(0)
    long_users = np.flatnonzero(world.history_lengths > 40)[:6]
    users, stamps = [], []
    for u in long_users:   # request exactly at an event's ts: that event must be excluded
        lo, hi = world.user_offsets[u], world.user_offsets[u + 1]
        e = r.integers(lo, hi)
        users += [u, u, u, u]
        stamps += [world.log_ts[e], world.log_ts[e] + 1, SPEC.start_ts - 5, 2**40]
    users = np.array(users + list(r.integers(0, SPEC.num_users, 20)))
    stamps = np.array(stamps + list(SPEC.start_ts + r.integers(0, SPEC.days * 86400, 20)))
    max_len = 32
    hist = world.join_history(users, stamps, max_len)
    assert hist["hist_item"].shape == (users.size, max_len)
    assert hist["hist_item"].dtype == np.int32 and hist["hist_gap"].dtype == np.float32
    for i, (u, ts) in enumerate(zip(users, stamps)):
        ref = _slow_join(world, u, ts, max_len)
        n = hist["hist_len"][i]
        assert n == len(ref)
        np.testing.assert_array_equal(hist["hist_item"][i, :n], world.log_item[ref])
        np.testing.assert_array_equal(hist["hist_action"][i, :n], world.log_action[ref])
        np.testing.assert_allclose(hist["hist_gap"][i, :n], ts - world.log_ts[ref])
        assert np.all(hist["hist_gap"][i, :n] > 0)                  # strictly before
        assert np.all(np.diff(hist["hist_gap"][i, :n]) >= 0)        # newest first
        assert not hist["hist_item"][i, n:].any() and not hist["hist_gap"][i, n:].any()


def test_examples_shapes_mask_and_label_consistency(examples):
    r_n, n_n, t_n = 3000, 12, len(FEATURES.tasks)
    assert len(examples) == r_n
    assert examples.labels.shape == examples.true_prob.shape == (r_n, n_n, t_n)
    assert examples.cand_sparse.shape == (r_n, n_n, FEATURES.cand_sparse_fields)
    assert examples.req_dense.shape == (r_n, FEATURES.req_dense_features)
    valid = examples.cand_mask.sum(1)
    assert valid.min() >= 4 and valid.max() <= n_n and len(np.unique(valid)) > 3
    pad = ~examples.cand_mask
    assert not examples.labels[pad].any() and not examples.true_prob[pad].any()
    click, conv = examples.labels[..., 0], examples.labels[..., 1]
    assert np.all(conv <= click)                                    # conversion needs a click
    assert np.all(examples.true_prob[..., 1] <= examples.true_prob[..., 0] + 1e-7)
    sub = examples.take(np.array([5, 2]))
    np.testing.assert_array_equal(sub.cand_sparse, examples.cand_sparse[[5, 2]])
    assert sub.tasks == examples.tasks


def test_label_rates_match_true_probabilities(examples):
    m = examples.cand_mask
    for t in range(2):
        y, p = examples.labels[..., t][m], examples.true_prob[..., t][m]
        se = np.sqrt((p * (1 - p)).sum()) / p.size
        assert abs(y.mean() - p.mean()) < 4 * se
        for lo, hi in ((0.0, 0.1), (0.1, 0.3), (0.3, 1.0)):          # calibrated per bin
            b = (p >= lo) & (p < hi)
            if b.sum() > 200:
                se_b = np.sqrt((p[b] * (1 - p[b])).sum()) / b.sum()
                assert abs(y[b].mean() - p[b].mean()) < 4 * se_b + 1e-3
    assert 0.08 < examples.labels[..., 0][m].mean() < 0.35


def test_oracle_auc_clearly_above_chance(examples):
    res = oracle_metrics(examples)
    assert res["click"]["auc"] > 0.75 and res["conversion"]["auc"] > 0.75
    assert res["click"]["ne"] < 0.9


def test_request_features_carry_no_user_identity(world):
    # the same user asked many times gets varied request ids: identity lives only in the log
    ex = world.sample_examples(4000, 4, seed=5)
    u = np.bincount(ex.user_id).argmax()
    rows = ex.req_sparse[ex.user_id == u]
    assert all(len(np.unique(rows[:, j])) > 1 for j in (0, 2, 3))


def test_iterate_batches_covers_examples_and_validates(world, examples):
    seen, count = [], 0
    for batch, labels in iterate_batches(world, examples, 256, 64, shuffle=False, seed=0,
                                         drop_remainder=False):
        assert isinstance(batch, RequestBatch)
        assert batch.hist_item.shape[1] == 64 and labels.shape[1:] == (12, 2)
        seen.append(batch.cand_sparse)
        count += batch.num_requests
    assert count == len(examples)
    np.testing.assert_array_equal(np.concatenate(seen), examples.cand_sparse)
    sizes = [b.num_requests for b, _ in iterate_batches(world, examples, 256, 8, shuffle=True,
                                                         seed=1, drop_remainder=True)]
    assert sizes == [256] * (len(examples) // 256)

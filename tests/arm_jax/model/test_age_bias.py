"""The learned recency prior (by age and by rank): its start, its absence at slope 0, and
what it does."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from arm_jax.config import ConfigError, load_tier
from arm_jax.data.random_batch import random_batch
from arm_jax.model import Ranker
from arm_jax.model.age_bias import RANK_BUCKETS, AgeBias, age_biases, rank_bucket
from arm_jax.model.attention import masked_softmax_attention
from arm_jax.train.step import embedding_labels


def test_table_starts_at_minus_slope_per_bucket_for_every_head():
    bias = AgeBias(time_buckets=6, num_heads=3, slope=0.5)
    np.testing.assert_array_equal(bias.bucket_bias[...][:, 1], -0.5 * np.arange(6))
    out = bias(jnp.array([[0, 5, 2]]))
    assert out.shape == (1, 3, 3) and out.dtype == jnp.float32
    np.testing.assert_array_equal(out[0, :, 2], [0.0, -2.5, -1.0])
    assert age_biases(6, 3, 0.0) is None


def test_a_steep_bias_reads_only_recent_events():
    r = np.random.default_rng(0)
    q, k, v = (jnp.asarray(r.normal(size=s), jnp.float32)
               for s in ((2, 4, 2, 8), (2, 10, 2, 8), (2, 10, 2, 8)))
    mask = jnp.ones((2, 10), bool)
    recent = jnp.arange(10) < 3
    bias = jnp.where(recent, 0.0, -200.0)[None, :, None] * jnp.ones((2, 1, 2))
    np.testing.assert_allclose(masked_softmax_attention(q, k, v, mask, bias),
                               masked_softmax_attention(q, k, v, mask & recent[None]),
                               rtol=1e-5, atol=1e-6)


def _params(tier):
    """The parameter tree, built abstractly (shapes only: no eager initialisation)."""
    model = nnx.eval_shape(lambda: Ranker(tier.model, tier.features, rngs=nnx.Rngs(0)))
    return nnx.state(model, nnx.Param)


def test_slope_zero_adds_no_parameters_and_a_slope_adds_one_table_per_attention(
        tiny_overrides):
    plain = _params(load_tier("large", tiny_overrides))
    tier = load_tier("large", [*tiny_overrides, "model.age_bias_slope=0.25"])
    biased = _params(tier)
    paths = lambda s: {"/".join(map(str, p)) for p, _ in nnx.to_flat_state(s)}  # noqa: E731
    added = sorted(paths(biased) - paths(plain))
    assert not paths(plain) - paths(biased)
    assert added == sorted([f"encoder/blocks/{i}/age_bias/bucket_bias"
                            for i in range(tier.model.encoder_layers)]
                           + ["summary/age_bias/bucket_bias", "ta_age_bias/bucket_bias"])


def test_both_tables_are_learned_as_dense_weights(tiny_overrides):
    tier = load_tier("large", [*tiny_overrides, "model.age_bias_slope=0.25",
                               "model.rank_bias_slope=1.0"])
    model = Ranker(tier.model, tier.features, rngs=nnx.Rngs(0))
    batch = random_batch(tier.features, batch=2, candidates=3, history=8, seed=1)
    graphdef, params = nnx.split(model)
    grads = jax.jit(jax.grad(lambda p: nnx.merge(graphdef, p)(batch).sum()))(params)
    labels = embedding_labels(params)
    for table in ("bucket_bias", "rank_bias"):
        for g in (grads["ta_age_bias"][table], grads["summary"]["age_bias"][table],
                  grads["encoder"]["blocks"][0]["age_bias"][table]):
            assert float(jnp.abs(g[...]).max()) > 0
        # Not an embedding table: `train.embedding_lr_scale` leaves it at the dense rate.
        assert labels["ta_age_bias"][table] == "dense"
    assert labels["encoder"]["items"]["table"] == "embedding"


@pytest.mark.parametrize("field", ["age_bias_slope", "rank_bias_slope"])
def test_a_negative_slope_is_refused(tiny_overrides, field):
    with pytest.raises(ConfigError, match=field):
        load_tier("large", [*tiny_overrides, f"model.{field}=-1"])


def test_rank_buckets_double_and_clip():
    np.testing.assert_array_equal(rank_bucket(9), [0, 1, 1, 2, 2, 2, 2, 3, 3])
    far = np.asarray(rank_bucket(1 << 17))
    assert far[(1 << 15) - 1] == 15 and far.max() == RANK_BUCKETS - 1


def test_the_rank_table_adds_to_the_age_table_and_alone_needs_no_ages():
    both = AgeBias(time_buckets=6, num_heads=2, slope=0.5, rank_slope=1.0)
    np.testing.assert_array_equal(both.rank_bias[...][:, 0], -np.arange(RANK_BUCKETS))
    ages = jnp.array([[0, 5, 2, 2], [1, 1, 1, 1]])
    out = np.asarray(both(ages))
    by_rank = -np.array([0.0, 1.0, 1.0, 2.0])
    np.testing.assert_array_equal(out[..., 1], -0.5 * np.asarray(ages) + by_rank[None])
    rank_only = AgeBias(time_buckets=6, num_heads=2, slope=0.0, rank_slope=1.0)
    assert rank_only.bucket_bias is None
    out = np.asarray(rank_only(ages))
    assert out.shape == (2, 4, 2) and out.dtype == np.float32
    np.testing.assert_array_equal(out, np.broadcast_to(by_rank[None, :, None], (2, 4, 2)))
    assert isinstance(age_biases(6, 2, 0.0, rank_slope=1.0), AgeBias)


def test_a_steep_rank_bias_reads_the_most_recent_event_whatever_the_ages():
    r = np.random.default_rng(1)
    q, k, v = (jnp.asarray(r.normal(size=s), jnp.float32)
               for s in ((2, 3, 2, 4), (2, 9, 2, 4), (2, 9, 2, 4)))
    mask = jnp.ones((2, 9), bool)
    same_time = jnp.zeros((2, 9), jnp.int32)         # a burst: one age bucket for all
    bias = AgeBias(time_buckets=4, num_heads=2, slope=0.0, rank_slope=200.0)(same_time)
    np.testing.assert_allclose(masked_softmax_attention(q, k, v, mask, bias),
                               masked_softmax_attention(q, k, v, mask & (jnp.arange(9) < 1)),
                               rtol=1e-5, atol=1e-6)


def test_a_rank_slope_adds_one_rank_table_per_attention(tiny_overrides):
    plain = _params(load_tier("large", [*tiny_overrides, "model.age_bias_slope=0.25"]))
    tier = load_tier("large", [*tiny_overrides, "model.age_bias_slope=0.25",
                               "model.rank_bias_slope=1.0"])
    paths = lambda s: {"/".join(map(str, p)) for p, _ in nnx.to_flat_state(s)}  # noqa: E731
    added = sorted(paths(_params(tier)) - paths(plain))
    assert added == sorted([f"encoder/blocks/{i}/age_bias/rank_bias"
                            for i in range(tier.model.encoder_layers)]
                           + ["summary/age_bias/rank_bias", "ta_age_bias/rank_bias"])

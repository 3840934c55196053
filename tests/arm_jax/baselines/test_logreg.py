import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from arm_jax.baselines.logreg import LogisticRegression, hash_bucket
from arm_jax.config import FeaturesConfig
from arm_jax.data.random_batch import random_batch
from arm_jax.data.synthetic import SyntheticSpec, SyntheticWorld, iterate_batches
from arm_jax.metrics import auc
from arm_jax.train.loss import masked_bce

TINY = FeaturesConfig(req_sparse_fields=3, req_dense_features=4, cand_sparse_fields=3,
                      cand_dense_features=2, sparse_hash_size=97, item_hash_size=101)


def test_hash_matches_uint32_formula_and_stays_in_range():
    ids = np.array([0, 1, 7, 2**31 - 1, 123456789], np.int32)
    got = np.asarray(hash_bucket(jnp.asarray(ids), 12345, 97))
    want = ((ids.astype(np.uint64) * 2654435761 + 12345) % 2**32) % 97
    np.testing.assert_array_equal(got, want)


def test_logits_shape_and_request_terms_shared_across_candidates():
    model = LogisticRegression(TINY, rngs=nnx.Rngs(0))
    batch = random_batch(TINY, batch=3, candidates=5, history=7, seed=1)
    out = model(batch)
    assert out.shape == (3, 5, 2) and bool(jnp.isfinite(out).all())
    # candidates are scored independently: permuting them permutes the logits
    perm = np.array([4, 2, 0, 1, 3])
    shuffled = batch.replace(cand_sparse=batch.cand_sparse[:, perm],
                             cand_dense=batch.cand_dense[:, perm])
    np.testing.assert_allclose(model(shuffled), out[:, perm], rtol=1e-6, atol=1e-6)


def test_history_past_hist_len_is_ignored():
    model = LogisticRegression(TINY, rngs=nnx.Rngs(0))
    batch = random_batch(TINY, batch=2, candidates=3, history=6, seed=2)
    batch = batch.replace(hist_len=np.array([2, 0], np.int32))
    junk = batch.hist_item.copy()
    junk[0, 2:] += 17
    junk[1] += 5
    np.testing.assert_allclose(model(batch.replace(hist_item=junk)), model(batch), atol=1e-6)
    # ... while the events within hist_len are read: a history ignored altogether passed
    seen = batch.hist_item.copy()
    seen[0, :2] += 17
    moved = np.abs(np.asarray(model(batch.replace(hist_item=seen))) - np.asarray(model(batch)))
    assert moved[0].min() > 1e-6 and moved[1].max() == 0


def test_trains_and_beats_chance_on_synthetic_data():
    features = FeaturesConfig(req_sparse_fields=3, req_dense_features=4, cand_sparse_fields=4,
                              cand_dense_features=2, sparse_hash_size=1009, item_hash_size=2003,
                              max_history=64, max_candidates=16)
    spec = SyntheticSpec(num_users=600, num_items=1000, num_topics=16, num_advertisers=60)
    world = SyntheticWorld.generate(spec, features)
    train = world.sample_examples(2048, 8, seed=1)
    test = world.sample_examples(1024, 8, seed=2)

    graphdef, params = nnx.split(LogisticRegression(features, rngs=nnx.Rngs(0)))
    tx = optax.adam(0.05)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, batch, labels):
        def loss_fn(p):
            return masked_bce(nnx.merge(graphdef, p)(batch), labels, batch.cand_mask)
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    losses = []
    for epoch in range(3):
        for batch, labels in iterate_batches(world, train, 128, 64, shuffle=True, seed=epoch,
                                             drop_remainder=True):
            params, opt_state, loss = step(params, opt_state, batch, labels)
            losses.append(float(loss))
    assert np.mean(losses[-5:]) < np.mean(losses[:3])

    predict = jax.jit(lambda p, b: jax.nn.sigmoid(nnx.merge(graphdef, p)(b)))
    (batch, labels), = iterate_batches(world, test, len(test), 64, shuffle=False, seed=0,
                                       drop_remainder=False)
    probs = np.asarray(predict(params, batch))
    held_out = auc(labels[..., 0], probs[..., 0], test.cand_mask)
    assert held_out > 0.6, held_out

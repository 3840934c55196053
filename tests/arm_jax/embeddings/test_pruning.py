"""Pruning: untouched rows dropped, surviving lookups exact in-graph, savings reported."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from arm_jax.embeddings.pruning import RowIndex, prune, row_counts
from arm_jax.model.embeddings import HashedEmbedding


def test_prune_keeps_touched_rows_exactly_and_reports_savings():
    emb = HashedEmbedding(2, 1000, 16, rngs=nnx.Rngs(0))
    r = np.random.default_rng(0)
    seen = r.integers(0, 10**6, size=(300, 2))
    counts = row_counts(emb, seen)
    assert counts.sum() == seen.size
    pruned, rep = prune(emb, counts, min_count=1)
    kept = int((counts >= 1).sum())
    assert rep.rows_after == kept + 1 and rep.rows_saved == 2000 - kept - 1
    assert rep.bytes_saved == 2000 * 16 * 4 - ((kept + 1) * 16 * 4 + kept * 4)
    assert rep.bytes_saved > 0
    ids = jnp.asarray(seen, jnp.int32)
    got = jax.jit(lambda m, x: m(x))(pruned, ids)       # remap runs in-graph
    assert np.array_equal(np.asarray(got), np.asarray(emb(ids)))
    # ids whose rows were pruned land on the fallback row (the mean of the dropped rows)
    probe = r.integers(0, 10**6, size=(2000, 2))
    unseen = counts[np.asarray(emb.rows(jnp.asarray(probe, jnp.int32)))] == 0
    assert unseen.any()
    out = np.asarray(pruned(jnp.asarray(probe, jnp.int32)))[unseen]
    fallback = np.asarray(emb.table[...])[counts == 0].mean(axis=0)
    np.testing.assert_allclose(out, np.broadcast_to(fallback, out.shape), rtol=1e-6)


def test_rarely_touched_rows_pruned_at_min_count_and_index_is_not_a_param():
    emb = HashedEmbedding(1, 64, 4, rngs=nnx.Rngs(0))
    counts = np.zeros(64, np.int64)
    counts[[1, 5, 9]] = [1, 2, 7]
    pruned, rep = prune(emb, counts, min_count=2)
    assert np.asarray(pruned.kept[...]).tolist() == [5, 9]
    assert rep.rows_after == 3
    assert isinstance(pruned.kept, RowIndex)
    params = nnx.state(pruned, nnx.Param)
    assert [p for p, _ in nnx.to_flat_state(params)] == [("table",)]


def test_pruning_every_row_sends_every_lookup_to_the_fallback_row():
    """min_count above every count keeps no row: lookups (eager and jitted) return the
    fallback row (the mean of the whole table) instead of failing in the gather."""
    emb = HashedEmbedding(2, 16, 4, rngs=nnx.Rngs(0))
    ids = jnp.asarray([[1, 2], [3, 4]], jnp.int32)
    pruned, rep = prune(emb, row_counts(emb, np.asarray(ids)), min_count=100)
    assert rep.rows_after == 1 and np.asarray(pruned.kept[...]).size == 0
    fallback = np.asarray(emb.table[...]).mean(axis=0)
    for got in (pruned(ids), jax.jit(lambda m, x: m(x))(pruned, ids)):
        assert got.shape == (2, 2, 4)
        np.testing.assert_allclose(np.asarray(got), np.broadcast_to(fallback, (2, 2, 4)),
                                   rtol=1e-6)

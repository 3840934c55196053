"""Pruning: untouched rows dropped, surviving lookups exact in-graph, savings reported."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from arm_jax.embeddings.pruning import RowIndex, prune, row_counts
from arm_jax.model.embeddings import HashedEmbedding


def test_prune_keeps_touched_rows_exactly_and_reports_savings():
    emb = HashedEmbedding(2, 1000, 16, rngs=nnx.Rngs(0))
    r = np.random.default_rng(0)
    seen = r.integers(0, 10**6, size=(300, 2))
    counts = row_counts(emb, seen)
    assert counts.sum() == seen.size
    pruned, rep = prune(emb, counts, min_count=1, pad_to=1)
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
    pruned, rep = prune(emb, counts, min_count=2, pad_to=1)
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
    pruned, rep = prune(emb, row_counts(emb, np.asarray(ids)), min_count=100,
                        pad_to=1)
    assert rep.rows_after == 1 and np.asarray(pruned.kept[...]).size == 0
    fallback = np.asarray(emb.table[...]).mean(axis=0)
    for got in (pruned(ids), jax.jit(lambda m, x: m(x))(pruned, ids)):
        assert got.shape == (2, 2, 4)
        np.testing.assert_allclose(np.asarray(got), np.broadcast_to(fallback, (2, 2, 4)),
                                   rtol=1e-6)


def test_pruned_table_is_padded_so_it_still_row_shards():
    """prune() returned kept + 1 rows, almost never a multiple of the model axis: the rules
    replicated the table (per-device bytes went up) while the report said bytes were saved.
    Now it pads with zero rows no id maps to and reports the padded size."""
    from jax.sharding import PartitionSpec as P

    from arm_jax.parallel.mesh import make_mesh
    from arm_jax.parallel.sharding import plan_placements, shard_state

    emb = HashedEmbedding(2, 512, 8, rngs=nnx.Rngs(0))
    seen = np.random.default_rng(0).integers(0, 10**6, size=(150, 2))
    counts = row_counts(emb, seen)
    kept = int((counts >= 1).sum())
    assert (kept + 1) % 8                      # unpadded, it would not split 8 ways
    pruned, rep = prune(emb, counts)                       # default pad_to=8
    _, state = nnx.split(pruned)
    table = {p.path: p for p in plan_placements(state, {"data": 1, "model": 8},
                                                min_shard_bytes=0)}["table"]
    assert table.spec == P("model", None) and table.per_device_bytes * 8 == table.total_bytes
    # the report counts the padding: rows and bytes of the table as it is stored
    assert rep.pad_rows == -(-(kept + 1) // 8) * 8 - kept - 1 > 0
    assert rep.rows_after == pruned.table.shape[0] == kept + 1 + rep.pad_rows
    assert rep.bytes_after == rep.rows_after * 8 * 4 + kept * 4
    assert rep.to_dict()["pad_rows"] == rep.pad_rows
    assert not np.asarray(pruned.table[...])[kept + 1:].any()          # zero padding
    # no id maps to a padding row, and the row-sharded lookup is the single-device one
    probe = jnp.asarray(np.random.default_rng(1).integers(0, 10**6, (64, 2)), jnp.int32)
    assert int(np.asarray(pruned.rows(probe)).max()) <= kept
    graphdef, _ = nnx.split(pruned)
    sharded = shard_state(state, make_mesh(2, 4), min_shard_bytes=0)
    assert sharded["table"][...].sharding.spec == P("model", None)
    got = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))(sharded, jnp.asarray(seen, jnp.int32))
    assert np.array_equal(np.asarray(got), np.asarray(emb(jnp.asarray(seen, jnp.int32))))
    # pad_to=1 pads nothing; pad_to below 1 is refused
    assert prune(emb, counts, pad_to=1)[1].rows_after == kept + 1
    assert prune(emb, counts, pad_to=3)[1].rows_after % 3 == 0
    with pytest.raises(ValueError, match="pad_to=0 must be >= 1"):
        prune(emb, counts, pad_to=0)


def test_pruned_cand_sparse_replaces_the_rankers_table(tiny_overrides):
    """The Ranker looks history-side ids up in cand_sparse with `fields`: PrunedEmbedding
    took no `fields` (TypeError), and row_counts could not count those lookups, so rows hit
    only by history were pruned. Counted ids score exactly as before pruning."""
    from arm_jax.config import load_tier
    from arm_jax.data.random_batch import random_batch
    from arm_jax.model import Ranker

    tier = load_tier("small", tiny_overrides)
    model = Ranker(tier.model, tier.features, rngs=nnx.Rngs(0))
    b = random_batch(tier.features, batch=2, candidates=4, history=12, seed=0)
    fwd = nnx.jit(lambda m, x: m(x))           # eager Ranker calls take seconds each
    before = np.asarray(fwd(model, b))
    cand, side = model.cand_sparse, model.side_fields
    hist = np.asarray(b.hist_side)
    hist_rows = set(np.asarray(cand.rows(jnp.asarray(hist), side)).ravel().tolist())
    cand_rows = set(np.asarray(cand.rows(jnp.asarray(b.cand_sparse))).ravel().tolist())
    assert hist_rows - cand_rows        # rows only the history side hits
    hist_counts = row_counts(cand, hist, fields=side)
    assert hist_counts.sum() == hist.size
    assert set(np.flatnonzero(hist_counts).tolist()) == hist_rows
    counts = row_counts(cand, np.asarray(b.cand_sparse)) + hist_counts
    pruned, rep = prune(cand, counts)
    assert rep.rows_after < rep.rows_before
    ids = jnp.asarray(hist)
    assert np.array_equal(np.asarray(pruned(ids, side)), np.asarray(cand(ids, side)))
    model.cand_sparse = pruned
    np.testing.assert_array_equal(np.asarray(fwd(model, b)), before)


@pytest.mark.parametrize("ids", [np.full((2, 8), 2**31, np.int64), np.full((2, 8), -1),
                                 np.full((2, 8), 1.5)])
def test_row_counts_refuses_ids_the_model_cannot_read(ids):
    """int64 ids above 2**31 - 1 wrapped silently into other rows' counts."""
    emb = HashedEmbedding(8, 64, 4, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="ids: "):
        row_counts(emb, ids)

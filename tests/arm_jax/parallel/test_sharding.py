"""Mesh, rules table, placements and exact sharded lookups on the 8-device CPU mesh."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from arm_jax.config import load_tier
from arm_jax.embeddings.unified import FieldEmbedding, TableLayout
from arm_jax.model import Ranker
from arm_jax.parallel.lookup import (all_devices_sharding, all_to_all_lookup, ids_sharding, lookup,
                                     shard_map_lookup, table_sharding)
from arm_jax.parallel.mesh import MeshError, make_mesh
from arm_jax.parallel.rules import DEFAULT_RULES, RulesError, logical_to_spec
from arm_jax.parallel.sharding import largest_replicated, plan_placements, shard_state


def test_mesh_and_rules():
    assert jax.device_count() == 8
    assert make_mesh(2, 4).devices.shape == (2, 4)
    with pytest.raises(MeshError, match="data=2 x model=2 = 4 != 8 devices"):
        make_mesh(2, 2)
    assert make_mesh(1, 4, jax.devices()[:4]).devices.shape == (1, 4)
    assert logical_to_spec(("vocab", "embed")) == P("model", None)
    assert logical_to_spec(("batch", "vocab")) == P("data", "model")
    with pytest.raises(RulesError, match="'nope' has no rule"):
        logical_to_spec(("nope",))


def test_tables_sharded_small_params_replicated_and_reported(tiny_overrides):
    tier = load_tier("small", tiny_overrides + ("features.sparse_hash_size=128",))
    abstract = nnx.eval_shape(lambda: Ranker(tier.model, tier.features, rngs=nnx.Rngs(0)))
    _, params = nnx.split(abstract)
    pl = {p.path: p for p in plan_placements(params, {"data": 2, "model": 4},
                                             min_shard_bytes=1024)}
    assert pl["req_sparse/table"].spec == P("model", None)
    assert pl["req_sparse/table"].per_device_bytes * 4 == pl["req_sparse/table"].total_bytes
    # the 101-row item table cannot split 4 ways: replicated, and the reason says why
    items = pl["encoder/items/table"]
    assert items.replicated and "101 not divisible by model=4" in items.reason
    assert pl["head_out/kernel"].replicated
    top = largest_replicated(list(pl.values()), top=5)
    assert "encoder/items/table" in [p.path for p in top]
    assert all(p.replicated for p in top)
    assert [p.total_bytes for p in top] == sorted((p.total_bytes for p in top), reverse=True)


@pytest.mark.parametrize("data,model", [(1, 8), (2, 4)])
def test_sharded_lookups_equal_single_device_exactly(data, model):
    mesh = make_mesh(data, model)
    r = np.random.default_rng(data)
    table = r.normal(size=(4096, 24)).astype(np.float32)
    rows = r.integers(0, 4096, size=(1000,)).astype(np.int32)
    rows[::97], rows[5::97], rows[7::97] = -1, 4096, 99999    # out of range: zero rows
    valid = (rows >= 0) & (rows < 4096)
    want = np.where(valid[:, None], table[np.where(valid, rows, 0)], 0.0)
    assert np.array_equal(np.asarray(lookup(jnp.asarray(table), jnp.asarray(rows))), want)
    t = jax.device_put(table, table_sharding(mesh))
    i = jax.device_put(rows, ids_sharding(mesh))
    assert len(t.addressable_shards) == 8
    assert t.addressable_shards[0].data.shape == (4096 // model, 24)
    got_jit = jax.jit(lookup)(t, i)
    got_smap = jax.jit(lambda a, b: shard_map_lookup(a, b, mesh))(t, i)
    assert np.array_equal(np.asarray(got_jit), want)
    assert np.array_equal(np.asarray(got_smap), want)
    a2a = jax.jit(lambda a, b: all_to_all_lookup(a, b, mesh))
    ids_all = jax.device_put(rows[:992], all_devices_sharding(mesh))
    assert np.array_equal(np.asarray(a2a(t, ids_all)), want[:992])
    # skewed ids (every id owned by shard 0) overflow the buckets: the exact fallback runs
    skew = (np.abs(rows[:992]) % 7).astype(np.int32)
    got_skew = a2a(t, jax.device_put(skew, all_devices_sharding(mesh)))
    assert np.array_equal(np.asarray(got_skew), table[skew])


def test_field_embedding_sharded_by_rules_matches_single_device(tiny_overrides):
    """The module path: rules place the table, jit partitions the lookup, same bits."""
    emb = FieldEmbedding(TableLayout.build([500, 300, 200], groups=[[1, 2]], pad_to=8), 16,
                         rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(emb)
    ids = jnp.asarray(np.random.default_rng(0).integers(0, 10**6, (64, 3)), jnp.int32)
    want = np.asarray(emb(ids))
    sharded = shard_state(state, make_mesh(2, 4), min_shard_bytes=0)
    assert sharded["table"][...].sharding.spec == P("model", None)
    got = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))(sharded, ids)
    assert np.array_equal(np.asarray(got), want)


@pytest.mark.parametrize("embedding_lr_scale", [1.0, 10.0])
def test_optimizer_moments_follow_their_parameters(tiny_overrides, embedding_lr_scale):
    """Also for the masked multi_transform optimizer (separate table learning rate)."""
    from arm_jax.parallel.step import optimizer_shardings
    from arm_jax.parallel.sharding import param_shardings
    from arm_jax.train.step import make_optimizer

    tier = load_tier("small", tiny_overrides + ("features.sparse_hash_size=128",))
    _, params = nnx.split(nnx.eval_shape(
        lambda: Ranker(tier.model, tier.features, rngs=nnx.Rngs(0))))
    mesh = make_mesh(2, 4)
    tx = make_optimizer(1e-3, 10, 1, 0.0, embedding_lr_scale)
    osh = optimizer_shardings(tx, params, param_shardings(params, mesh, min_shard_bytes=0), mesh)
    opt = jax.eval_shape(tx.init, params)
    specs = [(tuple(x.shape), s.spec) for x, s in zip(jax.tree.leaves(opt), jax.tree.leaves(osh))]
    table_rows = 3 * 128
    sharded = [sp for shape, sp in specs if shape == (table_rows, 16)]
    assert len(sharded) >= 4 and all(sp == P("model", None) for sp in sharded)  # mu, nu x 2
    assert all(sp == P() for shape, sp in specs if shape == ())                 # counters


def test_rules_naming_a_mesh_axis_the_mesh_lacks_are_a_rules_error():
    """dict(DEFAULT_RULES, vocab='expert') was a bare KeyError: 'expert'."""
    from arm_jax.model.embeddings import HashedEmbedding

    _, state = nnx.split(nnx.eval_shape(lambda: HashedEmbedding(2, 64, 8, rngs=nnx.Rngs(0))))
    rules = dict(DEFAULT_RULES, vocab="expert")
    with pytest.raises(RulesError, match="logical axis 'vocab' to mesh axis 'expert', which "
                                         "the mesh lacks; mesh axes: data, model"):
        plan_placements(state, {"data": 2, "model": 4}, rules, min_shard_bytes=0)
    with pytest.raises(RulesError, match="mesh axis 'expert'"):
        shard_state(state, make_mesh(2, 4), rules, min_shard_bytes=0)


@pytest.mark.parametrize("size", [0, -1, 2.0])
def test_a_mesh_axis_of_size_zero_is_a_mesh_error(size):
    """{'model': 0} was a ZeroDivisionError (integer modulo by zero); -1 a negative size."""
    from arm_jax.parallel.sharding import place

    with pytest.raises(MeshError, match=rf"^mesh model={size}: must be an integer >= 1"):
        place("t", (64, 16), np.float32, ("vocab", "embed"), {"data": 1, "model": size},
              min_shard_bytes=0)
    ok = place("t", (64, 16), np.float32, ("vocab", "embed"), {"data": 1, "model": np.int64(4)},
               min_shard_bytes=0)
    assert ok.spec == P("model", None) and ok.per_device_bytes == 16 * 16 * 4

"""Lookups of row-sharded tables: plain jit (XLA's SPMD partitioner) and explicit shard_map.

Both return exactly the single-device result: every output row is one table row
copied from the shard that owns it; the other shards contribute zeros (x + 0 == x).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from arm_jax.parallel.mesh import DATA, MODEL, mesh_shape


def lookup(table_vd: jax.Array, rows: jax.Array) -> jax.Array:
    """table[rows] as one gather; under jit with a row-sharded table XLA partitions it."""
    return jnp.take(table_vd, rows, axis=0)


def shard_map_lookup(table_vd: jax.Array, rows_n: jax.Array, mesh: Mesh) -> jax.Array:
    """table [V, d] sharded P('model', None), rows [n] split over 'data' -> [n, d].

    Each device gathers the rows its shard owns (others masked to zero), then one
    psum over 'model' assembles the full rows. `n` must divide by the data axis and
    V by the model axis.
    """
    sizes = mesh_shape(mesh)
    v, n = table_vd.shape[0], rows_n.shape[0]
    if v % sizes[MODEL] or n % sizes[DATA]:
        raise ValueError(f"shard_map_lookup: rows V={v} must divide by model={sizes[MODEL]} "
                         f"and ids n={n} by data={sizes[DATA]}")
    local_v = v // sizes[MODEL]

    @partial(jax.shard_map, mesh=mesh, in_specs=(P(MODEL, None), P(DATA)),
             out_specs=P(DATA, None))
    def run(table_local, rows_local):
        start = jax.lax.axis_index(MODEL) * local_v
        local = rows_local - start
        hit = (local >= 0) & (local < local_v)
        got = jnp.take(table_local, jnp.clip(local, 0, local_v - 1), axis=0)
        return jax.lax.psum(jnp.where(hit[:, None], got, jnp.zeros_like(got)), MODEL)

    return run(table_vd, rows_n)


def table_sharding(mesh: Mesh) -> NamedSharding:
    """Row-sharded over 'model', rows whole on each shard."""
    return NamedSharding(mesh, P(MODEL, None))


def ids_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA))

"""Lookups of row-sharded tables, each exactly the single-device result.

- `lookup` under jit: XLA's SPMD partitioner; every model shard gathers every id
  (masked) and an all-reduce assembles rows: `model`-fold redundant gather work.
- `shard_map_lookup`: the same algorithm written out (masked local gather + psum).
- `all_to_all_lookup`: ids split over every device are routed to the shard that owns
  their row (one all_to_all), gathered there, and routed back (a second all_to_all):
  each row is gathered once. Buckets have a static capacity; if any bucket anywhere
  overflows (skewed ids), the whole call takes the masked-psum path instead, so the
  result is exact either way.

Exactness: every output row is one table row copied from its owner; the masked paths
add zeros from the other shards (x + 0 == x). Ids outside [0, V) give a zero row on every
path (`jnp.take` alone would wrap -1 to the last row and give NaN past the end; callers
hash ids into range first, as the model does).
"""

from __future__ import annotations

import math
import numbers
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from arm_jax.parallel.mesh import DATA, MODEL, mesh_shape


def lookup(table_vd: jax.Array, rows: jax.Array) -> jax.Array:
    """table[rows] as one gather (zero rows for ids outside [0, V)); under jit with a
    row-sharded table XLA partitions it."""
    v = table_vd.shape[0]
    valid = (rows >= 0) & (rows < v)
    got = jnp.take(table_vd, jnp.where(valid, rows, 0), axis=0)
    return jnp.where(valid[..., None], got, jnp.zeros_like(got))


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
    """Lookup ids split over 'data'."""
    return NamedSharding(mesh, P(DATA))


def all_to_all_lookup(table_vd: jax.Array, rows_n: jax.Array, mesh: Mesh,
                      capacity_factor: float = 1.5) -> jax.Array:
    """table [V, d] sharded P('model', None), rows [n] split over every device -> [n, d].

    Per device: bucket its n_l ids by owning shard (a running count, no sort), send
    each bucket (capacity ceil(capacity_factor * n_l / model) slots) to its owner,
    gather there, send the rows back and pick each id's row from its slot. Falls back
    to the masked psum if any bucket overflows. `n` must divide by the device count and V
    by the model axis. An empty batch (n = 0) gives [0, d], as `lookup` and
    `shard_map_lookup` do.
    """
    if isinstance(capacity_factor, (bool, np.bool_)) or not isinstance(
            capacity_factor, numbers.Real) or not 0 < capacity_factor < math.inf:
        # NaN and inf were a bare "cannot convert float NaN to integer"; <= 0 ran as 1 slot
        raise ValueError(f"all_to_all_lookup: capacity_factor={capacity_factor!r} must be a "
                         "finite number > 0 (bucket slots, a multiple of an even share)")
    sizes = mesh_shape(mesh)
    m, d_ax = sizes[MODEL], sizes[DATA]
    v, n = table_vd.shape[0], rows_n.shape[0]
    if v % m or n % (m * d_ax):
        raise ValueError(f"all_to_all_lookup: rows V={v} must divide by model={m} and ids "
                         f"n={n} by data x model={d_ax * m}")
    local_v, n_l = v // m, n // (m * d_ax)
    cap = max(1, min(n_l, int(-(-capacity_factor * n_l // m))))

    def routed(table_local, ids):
        owner = ids // local_v
        # rank of each id inside its owner's bucket, without a sort: running count
        onehot = (owner[:, None] == jnp.arange(m)[None, :]).astype(jnp.int32)   # [n_l, m]
        rank = jnp.take_along_axis(jnp.cumsum(onehot, axis=0), owner[:, None], 1)[:, 0] - 1
        slot = owner * cap + rank
        send = jnp.zeros((m * cap,), ids.dtype).at[slot].set(ids - owner * local_v,
                                                             mode="drop")
        recv = jax.lax.all_to_all(send.reshape(m, cap), MODEL, 0, 0, tiled=True)
        got = jnp.take(table_local, recv.reshape(-1), axis=0).reshape(m, cap, -1)
        back = jax.lax.all_to_all(got, MODEL, 0, 0, tiled=True).reshape(m * cap, -1)
        # any(), not max(): an empty batch (n_l = 0) has no rank to reduce
        return jnp.take(back, jnp.minimum(slot, m * cap - 1), axis=0), (rank >= cap).any()

    def masked(table_local, ids):
        start = jax.lax.axis_index(MODEL) * local_v
        every = jax.lax.all_gather(ids, MODEL, tiled=True)              # ids of my data row
        local = every - start
        hit = (local >= 0) & (local < local_v)
        got = jnp.take(table_local, jnp.clip(local, 0, local_v - 1), axis=0)
        full = jax.lax.psum(jnp.where(hit[:, None], got, jnp.zeros_like(got)), MODEL)
        me = jax.lax.axis_index(MODEL)
        return jax.lax.dynamic_slice_in_dim(full, me * n_l, n_l)

    @partial(jax.shard_map, mesh=mesh, in_specs=(P(MODEL, None), P((DATA, MODEL))),
             out_specs=P((DATA, MODEL), None))
    def run(table_local, ids):
        valid = (ids >= 0) & (ids < v)        # out of range: routed as row 0, zeroed after
        ids = jnp.where(valid, ids, 0)
        out, overflow = routed(table_local, ids)
        any_overflow = jax.lax.psum(overflow.astype(jnp.int32), (DATA, MODEL)) > 0
        got = jax.lax.cond(any_overflow, masked, lambda t, i: out, table_local, ids)
        return jnp.where(valid[:, None], got, jnp.zeros_like(got))

    return run(table_vd, rows_n)


def all_devices_sharding(mesh: Mesh) -> NamedSharding:
    """Ids split over every device (the layout `all_to_all_lookup` expects)."""
    return NamedSharding(mesh, P((DATA, MODEL)))

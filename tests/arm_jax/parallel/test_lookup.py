"""Sharded lookups (arm_jax.parallel.lookup) at the edges: an empty batch on a 2x4 mesh."""

import jax
import numpy as np

from arm_jax.parallel.lookup import (all_devices_sharding, all_to_all_lookup, ids_sharding,
                                     lookup, shard_map_lookup, table_sharding)
from arm_jax.parallel.mesh import make_mesh


def test_an_empty_batch_gives_zero_rows_on_every_path():
    """all_to_all_lookup raised `zero-size array to reduction operation max` on n = 0,
    while lookup and shard_map_lookup returned [0, d]."""
    mesh = make_mesh(2, 4)
    table = np.random.default_rng(0).normal(size=(16, 3)).astype(np.float32)
    t = jax.device_put(table, table_sharding(mesh))
    empty = np.zeros((0,), np.int32)
    got = {
        "jit": jax.jit(lookup)(t, jax.device_put(empty, ids_sharding(mesh))),
        "shard_map": jax.jit(lambda a, b: shard_map_lookup(a, b, mesh))(
            t, jax.device_put(empty, ids_sharding(mesh))),
        "all_to_all": jax.jit(lambda a, b: all_to_all_lookup(a, b, mesh))(
            t, jax.device_put(empty, all_devices_sharding(mesh))),
    }
    for name, out in got.items():
        assert out.shape == (0, 3) and out.dtype == np.float32, name


def test_a_capacity_factor_that_is_nan_or_not_positive_is_refused():
    """NaN (and inf) were a bare "cannot convert float NaN to integer"; 0 and -1 ran."""
    import pytest

    mesh = make_mesh(2, 4)
    table, rows = np.zeros((16, 2), np.float32), np.arange(8, dtype=np.int32)
    for bad in (float("nan"), float("inf"), 0.0, -1.0, True):
        with pytest.raises(ValueError, match=rf"^all_to_all_lookup: capacity_factor={bad!r} "
                                             "must be a finite number > 0"):
            all_to_all_lookup(table, rows, mesh, bad)

"""The computation both the 2-process run and the single-process reference perform."""

from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec


def run_reference(overrides: list[str], devices: list, data: int, model: int) -> dict[str, Any]:
    """Sharded lookup + one train step on a data x model mesh of `devices` -> host arrays."""
    from arm_jax.config import load_tier
    from arm_jax.data.random_batch import random_batch
    from arm_jax.model import Ranker
    from arm_jax.parallel.mesh import make_mesh
    from arm_jax.parallel.step import ShardedModel, data_shardings
    from arm_jax.train.step import make_optimizer

    tier = load_tier("small", overrides)
    mesh = make_mesh(data, model, devices)
    mk = lambda: Ranker(tier.model, tier.features, rngs=nnx.Rngs(0))  # noqa: E731
    sm = ShardedModel.build(mk, mesh, min_shard_bytes=0)
    params = sm.init_params(mk)
    tx = make_optimizer(1e-2, 10, 1, 0.0)
    opt = jax.jit(tx.init, out_shardings=sm.optimizer_shardings(tx))(params)
    host_batch = random_batch(tier.features, batch=4, candidates=8,
                              history=tier.model.history_len, seed=0)
    labels = (np.random.default_rng(1).random((4, 8, 2)) < 0.3).astype(np.float32)

    def global_array(x, sharding):  # every process holds the same host data
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

    batch = jax.tree.map(global_array, host_batch, data_shardings(host_batch, mesh))
    glabels = global_array(labels, data_shardings(labels, mesh))
    rep = NamedSharding(mesh, PartitionSpec())
    graphdef = sm.graphdef
    lookup = jax.jit(lambda p, b: nnx.merge(graphdef, p).cand_sparse(b.cand_sparse),
                     out_shardings=rep)(params, batch)
    step = sm.train_step(tx, host_batch, labels, donate=False)
    new_params, _, loss = step(params, opt, batch, glabels)
    gather = jax.jit(lambda t: t, out_shardings=rep)
    return {
        "lookup": np.asarray(lookup),
        "loss": np.asarray(loss),
        "table_after": np.asarray(gather(new_params["cand_sparse"]["table"][...])),
        "head_after": np.asarray(gather(new_params["head_out"]["kernel"][...])),
        "table_sharding": np.asarray(str(params["cand_sparse"]["table"][...].sharding.spec)),
    }

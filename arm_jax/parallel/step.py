"""Sharded train and predict steps: shapes first, then shardings, then jit with both.

The step bodies are the same pure functions as `arm_jax.train.step` (merge, forward,
masked BCE, optax update); this module only adds the layout: parameters by the rules
table, optimizer moments like their parameters, batches split over 'data'.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import jax
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from arm_jax.batch import RequestBatch
from arm_jax.parallel.mesh import DATA, mesh_shape
from arm_jax.parallel.rules import DEFAULT_RULES, MIN_SHARD_BYTES
from arm_jax.parallel.sharding import param_shardings
from arm_jax.train.loss import masked_bce


def optimizer_shardings(tx: optax.GradientTransformation, abstract_params: Any,
                        param_sh: Any, mesh: Mesh) -> Any:
    """Moments sharded like their parameters; counters and other scalars replicated."""
    abstract_opt = jax.eval_shape(tx.init, abstract_params)
    rep = NamedSharding(mesh, PartitionSpec())
    return optax.tree_map_params(tx, lambda _, s: s, abstract_opt, param_sh,
                                 transform_non_params=lambda _: rep)


def data_shardings(tree: Any, mesh: Mesh) -> Any:
    """Leading (request) axis over 'data' when it divides evenly, else replicated."""
    n = mesh_shape(mesh)[DATA]

    def one(x):
        if getattr(x, "ndim", 0) >= 1 and x.shape[0] % n == 0:
            return NamedSharding(mesh, PartitionSpec(DATA))
        return NamedSharding(mesh, PartitionSpec())

    return jax.tree.map(one, tree)


@dataclass(frozen=True)
class ShardedModel:
    """A model's graphdef with the shardings of its params (and optimizer state)."""

    mesh: Mesh
    graphdef: nnx.GraphDef
    abstract_params: Any
    param_sh: Any

    @classmethod
    def build(cls, make_model: Callable[[], nnx.Module], mesh: Mesh,
              rules=DEFAULT_RULES, min_shard_bytes: int = MIN_SHARD_BYTES) -> "ShardedModel":
        """Shapes only (`nnx.eval_shape`): nothing is allocated here."""
        graphdef, abstract = nnx.split(nnx.eval_shape(make_model))
        return cls(mesh, graphdef, abstract, param_shardings(abstract, mesh, rules,
                                                             min_shard_bytes))

    def init_params(self, make_model: Callable[[], nnx.Module]) -> Any:
        """Initialise directly into the target shardings (no full copy on one device)."""
        return jax.jit(lambda: nnx.split(make_model())[1], out_shardings=self.param_sh)()

    def train_step(self, tx: optax.GradientTransformation, batch_like: RequestBatch,
                   labels_like: Any, donate: bool = True) -> Callable:
        """jit((params, opt_state, batch, labels) -> (params, opt_state, loss))."""
        graphdef = self.graphdef
        opt_sh = optimizer_shardings(tx, self.abstract_params, self.param_sh, self.mesh)

        def step(params, opt_state, batch, labels):
            def loss_fn(p):
                return masked_bce(nnx.merge(graphdef, p)(batch), labels, batch.cand_mask)

            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        rep = NamedSharding(self.mesh, PartitionSpec())
        return jax.jit(step,
                       in_shardings=(self.param_sh, opt_sh, data_shardings(batch_like, self.mesh),
                                     data_shardings(labels_like, self.mesh)),
                       out_shardings=(self.param_sh, opt_sh, rep),
                       donate_argnums=(0, 1) if donate else ())

    def optimizer_shardings(self, tx: optax.GradientTransformation) -> Any:
        return optimizer_shardings(tx, self.abstract_params, self.param_sh, self.mesh)

    def predict(self, batch_like: RequestBatch) -> Callable:
        """jit((params, batch) -> logits [b, c, tasks]) with the batch split over 'data'."""
        graphdef = self.graphdef
        bsh = data_shardings(batch_like, self.mesh)
        return jax.jit(lambda p, b: nnx.merge(graphdef, p)(b),
                       in_shardings=(self.param_sh, bsh),
                       out_shardings=data_shardings(jax.ShapeDtypeStruct(
                           (batch_like.num_requests,), "float32"), self.mesh))

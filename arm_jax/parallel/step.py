"""Sharded train and predict steps: shapes first, then shardings, then jit with both.

The step bodies are the same pure functions as `arm_jax.train.step` (merge, forward,
masked BCE, optax update); this module only adds the layout: parameters by the rules
table, optimizer moments like their parameters, batches split over 'data'.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

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
    return map_like_params(abstract_opt, abstract_params, param_sh, lambda _, s: s,
                           lambda _: rep)


def _key_name(k: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def map_like_params(tree: Any, params: Any, per_param: Any, fn: Callable[[Any, Any], Any],
                    other: Callable[[Any], Any]) -> Any:
    """Map the leaves of an optimizer state: a leaf whose key path ends with a parameter's
    path and has its shape gets fn(leaf, per_param[that path]); any other leaf other(leaf).

    Works for every optax state layout (chains, masked multi_transform, ...), unlike
    matching tree structures, because moments are keyed by the parameter's own path.
    """
    table = {}
    for (path, leaf), (_, extra) in zip(jax.tree_util.tree_flatten_with_path(params)[0],
                                        jax.tree_util.tree_flatten_with_path(per_param)[0]):
        table[tuple(_key_name(k) for k in path)] = (tuple(leaf.shape), extra)
    longest = max((len(k) for k in table), default=0)

    def one(path, leaf):
        names = tuple(_key_name(k) for k in path)
        for n in range(min(longest, len(names)), 0, -1):
            hit = table.get(names[-n:])
            if hit is not None and tuple(getattr(leaf, "shape", ())) == hit[0]:
                return fn(leaf, hit[1])
        return other(leaf)

    return jax.tree_util.tree_map_with_path(one, tree)


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
              rules: Mapping[str, str | None] = DEFAULT_RULES,
              min_shard_bytes: int = MIN_SHARD_BYTES) -> "ShardedModel":
        """Shapes only (`nnx.eval_shape`): nothing is allocated here."""
        graphdef, abstract = nnx.split(nnx.eval_shape(make_model))
        return cls(mesh, graphdef, abstract, param_shardings(abstract, mesh, rules,
                                                             min_shard_bytes))

    def init_params(self, make_model: Callable[[], nnx.Module]) -> Any:
        """Initialise directly into the target shardings (no full copy on one device)."""
        return jax.jit(lambda: nnx.split(make_model())[1], out_shardings=self.param_sh)()

    def train_step(self, tx: optax.GradientTransformation, batch_like: RequestBatch,
                   labels_like: Any, donate: bool = True) -> Callable:
        """jit((params, opt_state, batch, labels) -> (params, opt_state, loss)).

        Deterministic (no `model.dropout`): this step serves the memory planner's checks;
        dropout training goes through `arm_jax.train.step.make_train_step`."""
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
        """NamedShardings of `tx`'s state: moments like their parameters, the rest replicated
        (for a jit of one's own step: `jax.jit(tx.init, out_shardings=...)`)."""
        return optimizer_shardings(tx, self.abstract_params, self.param_sh, self.mesh)

    def predict(self, batch_like: RequestBatch) -> Callable:
        """jit((params, batch) -> logits [b, c, tasks]) with the batch split over 'data'."""
        graphdef = self.graphdef
        bsh = data_shardings(batch_like, self.mesh)
        return jax.jit(lambda p, b: nnx.merge(graphdef, p)(b),
                       in_shardings=(self.param_sh, bsh),
                       out_shardings=data_shardings(jax.ShapeDtypeStruct(
                           (batch_like.num_requests,), "float32"), self.mesh))

"""Check the planner against XLA: compile the same sharded steps and read memory_analysis().

Compared per device, scenario by scenario:
  predicted  = sum of the plan's items
  measured   = argument + output - alias + temp bytes (XLA's `memory_analysis()` of the
               compiled, SPMD-partitioned step on the mesh)
Generated code size is excluded (0 on CPU; it is not data). The parts are returned too
so a miss can be traced to arguments (exact bookkeeping) or temporaries (the estimate).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from arm_jax.config import TierConfig
from arm_jax.parallel.mesh import make_mesh
from arm_jax.parallel.planner import MemoryPlan, abstract_batch, plan_memory
from arm_jax.parallel.rules import MIN_SHARD_BYTES
from arm_jax.parallel.step import ShardedModel


@dataclass(frozen=True)
class PlanCheck:
    scenario: str
    predicted: int
    measured: int
    predicted_args: int
    measured_args: int
    predicted_temp: int
    measured_temp: int

    @property
    def error(self) -> float:
        """|predicted - measured| / measured."""
        return abs(self.predicted - self.measured) / max(self.measured, 1)

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "error": self.error}


def _measured(compiled: Any) -> tuple[int, int, int]:
    ma = compiled.memory_analysis()
    total = (ma.argument_size_in_bytes + ma.output_size_in_bytes - ma.alias_size_in_bytes
             + ma.temp_size_in_bytes)
    return int(total), int(ma.argument_size_in_bytes), int(ma.temp_size_in_bytes)


def compare_with_xla(tier: TierConfig, *, data: int, model: int, batch: int, candidates: int,
                     min_shard_bytes: int = MIN_SHARD_BYTES, train: bool = True
                     ) -> tuple[MemoryPlan, list[PlanCheck]]:
    """Plan, then compile the serve (and train) step on a data x model mesh of this host's
    devices and compare per-device bytes."""
    from arm_jax.model import Ranker
    from arm_jax.train.step import make_optimizer

    devices = data * model
    plan = plan_memory(tier, devices, 1 << 62, data=data, batch=batch, candidates=candidates,
                       train=train, min_shard_bytes=min_shard_bytes)
    mesh = make_mesh(data, model, jax.devices()[:devices])
    sm = ShardedModel.build(lambda: Ranker(tier.model, tier.features, rngs=nnx.Rngs(0)), mesh,
                            min_shard_bytes=min_shard_bytes)
    checks = []
    serve_s = plan.scenarios[0]
    ab = abstract_batch(tier, batch, candidates)
    total, args, temp = _measured(sm.predict(ab).lower(sm.abstract_params, ab).compile())
    checks.append(PlanCheck(serve_s.name, serve_s.total, total,
                            serve_s.items["params"] + serve_s.items["request batch"], args,
                            serve_s.items["activations (temp)"], temp))
    if train:
        tc = tier.train
        train_s = plan.scenarios[1]
        tx = make_optimizer(tc.learning_rate, tc.steps, tc.warmup_steps, tc.weight_decay,
                            getattr(tc, "embedding_lr_scale", 1.0))
        ab = abstract_batch(tier, tc.batch_size, tc.candidates)
        labels = jax.ShapeDtypeStruct((tc.batch_size, tc.candidates, len(tier.features.tasks)),
                                      jnp.float32)
        step = sm.train_step(tx, ab, labels)
        opt = jax.eval_shape(tx.init, sm.abstract_params)
        total, args, temp = _measured(step.lower(sm.abstract_params, opt, ab, labels).compile())
        checks.append(PlanCheck(train_s.name, train_s.total, total,
                                train_s.items["params"] + train_s.items["optimizer state (adam)"]
                                + train_s.items["batch + labels"], args,
                                train_s.items["activations+grads (temp)"]
                                + train_s.items["second gradient buffer"], temp))
    return plan, checks

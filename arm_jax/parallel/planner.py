"""Per-device memory plan for a tier on a mesh, on paper (shapes only, nothing allocated).

For each scenario the plan adds up, per device:

  serve   params + request batch (arguments) + scores (output) + temporaries
  train   params + optimizer state + batch and labels (arguments; the updated params
          and state alias them: donated) + loss (output) + temporaries

- params: every parameter placed by the rules table (`sharding.plan_placements`):
  sharded tensors count their local slice, replicated ones count whole.
- optimizer: AdamW keeps two moments per parameter (mu, nu) in the parameter's dtype
  and sharding, plus counters (`jax.eval_shape(tx.init)`; nothing guessed).
- temporaries: peak live bytes of the step's jaxpr traced at the per-device batch
  (`liveness.peak_temp_bytes`): activations, gradients and updates; values shaped like
  a sharded parameter (its gradient, its update) count their local slice. Plus a second
  gradient buffer (`second_gradient_bytes`): the all-reduce result when data > 1, the
  copied scatter-add result of the embedding tables otherwise.

These are the quantities XLA reports in `compiled.memory_analysis()` as
argument + output - alias + temp bytes per device, which is what the planner is
checked against (`compare_with_xla`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from arm_jax.argcheck import is_int
from arm_jax.batch import RequestBatch, batch_spec_for
from arm_jax.config import TierConfig
from arm_jax.parallel.liveness import jaxpr_peak_bytes
from arm_jax.parallel.mesh import DATA, MODEL
from arm_jax.parallel.rules import DEFAULT_RULES, MIN_SHARD_BYTES
from arm_jax.parallel.sharding import Placement, plan_placements
from arm_jax.parallel.step import map_like_params
from arm_jax.train.loss import masked_bce


class PlanError(ValueError):
    """The mesh or bucket asked for cannot be planned (bad sizes)."""


# The estimate runs up to ~27% below XLA:CPU's memory_analysis at the tiers' largest
# serving buckets and ~37% below for training at larger batches (XLA:CPU's breadth-first
# scheduler, materialised constant broadcasts and heap gaps are not modelled; README).
# A plan that "fits" with less headroom than this is flagged as unverified.
UNMODELLED_MARGIN = 0.40


@dataclass(frozen=True)
class Scenario:
    """One step's per-device bytes, item by item."""

    name: str
    items: dict[str, int]
    device_memory: int

    @property
    def total(self) -> int:
        return sum(self.items.values())

    @property
    def fits(self) -> bool:
        return self.total <= self.device_memory

    @property
    def over_by(self) -> int:
        return max(0, self.total - self.device_memory)

    @property
    def tight(self) -> bool:
        """Fits on paper, but within the estimate's known shortfall of the memory."""
        return self.fits and self.total * (1 + UNMODELLED_MARGIN) > self.device_memory


@dataclass(frozen=True)
class MemoryPlan:
    tier: str
    devices: int
    mesh: dict[str, int]
    device_memory: int
    param_count: int
    param_bytes: int
    placements: list[Placement] = field(repr=False)
    scenarios: list[Scenario] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return all(s.fits for s in self.scenarios)

    def failures(self) -> list[str]:
        """One line per scenario that does not fit: what and by how much."""
        out = []
        for s in self.scenarios:
            if not s.fits:
                big = max(s.items, key=s.items.get)
                out.append(f"{s.name} needs {fmt_bytes(s.total)} per device, "
                           f"{fmt_bytes(s.over_by)} over the {fmt_bytes(self.device_memory)} "
                           f"device memory (largest item: {big} {fmt_bytes(s.items[big])})")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"tier": self.tier, "devices": self.devices, "mesh": self.mesh,
                "device_memory": self.device_memory, "param_count": self.param_count,
                "param_bytes": self.param_bytes, "fits": self.fits,
                "scenarios": {s.name: {"items": s.items, "total": s.total, "fits": s.fits,
                                       "tight": s.tight, "over_by": s.over_by}
                              for s in self.scenarios}}

    def table(self) -> str:
        lines = [f"tier {self.tier}: {self.param_count:,} params ({fmt_bytes(self.param_bytes)})"
                 f" on {self.devices} devices, mesh data={self.mesh[DATA]} x "
                 f"model={self.mesh[MODEL]}, {fmt_bytes(self.device_memory)} per device"]
        for s in self.scenarios:
            lines.append(f"  {s.name}:")
            for k, v in s.items.items():
                lines.append(f"    {k:<28}{fmt_bytes(v):>14}")
            verdict = "fits" if s.fits else f"DOES NOT FIT (over by {fmt_bytes(s.over_by)})"
            if s.tight:
                verdict += (f" (unverified: under {UNMODELLED_MARGIN:.0%} headroom, and the "
                            "estimate can be ~30% low; check with compare_with_xla)")
            lines.append(f"    {'total per device':<28}{fmt_bytes(s.total):>14}  {verdict}")
        return "\n".join(lines)


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.2f} {unit}"
        n /= 1024
    return f"{n}"  # pragma: no cover


def parse_bytes(text: str) -> int:
    """'80GiB', '80G', '1.5e9', '512MiB' -> bytes."""
    t = str(text).strip().replace("_", "")
    units = {"k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12, "kb": 1e3, "mb": 1e6, "gb": 1e9,
             "tb": 1e12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "b": 1}
    low = t.lower()
    for u in sorted(units, key=len, reverse=True):
        if low.endswith(u):
            num, mult = low[: -len(u)], units[u]
            break
    else:
        num, mult = low, 1
    try:
        val = float(num) * mult
    except ValueError:
        raise PlanError(f"device memory '{text}' is not a size (e.g. 80GiB, 16e9)") from None
    if not math.isfinite(val) or val < 1:     # 0.5 (bytes) would plan for 0 B
        raise PlanError(f"device memory '{text}' must be at least 1 byte")
    return int(val)


def abstract_batch(tier: TierConfig, batch: int, candidates: int, history: int | None = None
                   ) -> RequestBatch:
    """ShapeDtypeStructs of a RequestBatch bucket (no data)."""
    return batch_spec_for(tier.features, batch=batch, candidates=candidates,
                          history=history or tier.model.history_len)


def _bytes(tree: Any) -> int:
    return sum(int(np.prod(x.shape, dtype=np.float64)) * np.dtype(x.dtype).itemsize
               for x in jax.tree.leaves(tree))


def _local_param_view(placements: list[Placement]) -> dict[tuple, int]:
    """shape -> shard factor, for values shaped like a sharded parameter."""
    out: dict[tuple, int] = {}
    for p in placements:
        if p.per_device_bytes < p.total_bytes:
            out[p.shape] = max(out.get(p.shape, 1), p.total_bytes // p.per_device_bytes)
    return out


def _trace(fn: Any, args: tuple) -> Any:
    try:
        return jax.make_jaxpr(fn)(*args).jaxpr
    except OverflowError as e:
        raise PlanError(f"the model cannot be traced at these sizes: a table has more rows "
                        f"than int32 row ids address (2**31 - 1); use fewer rows per table "
                        f"({str(e).splitlines()[0][:120]})") from None


def _temp_bytes(fn: Any, args: tuple, sharded_shapes: dict[tuple, int]) -> int:
    """Liveness peak of fn's jaxpr with sharded-parameter-shaped values at local size."""
    jaxpr = _trace(fn, args)
    if not sharded_shapes:
        return jaxpr_peak_bytes(jaxpr)
    return jaxpr_peak_bytes(jaxpr, local=lambda aval: sharded_shapes.get(tuple(aval.shape), 1))


def plan_memory(tier: TierConfig, devices: int, device_memory: int, *, data: int = 1,
                batch: int | None = None, candidates: int | None = None,
                train: bool = True, serve: bool = True,
                tx: optax.GradientTransformation | None = None,
                rules: Mapping[str, str | None] = DEFAULT_RULES,
                min_shard_bytes: int = MIN_SHARD_BYTES) -> MemoryPlan:
    """Plan serving (bucket `batch` x `candidates`, each >= 1, default (None) the largest)
    and training (tier.train.batch_size x candidates) per device on a data x (devices/data)
    mesh."""
    from arm_jax.model import Ranker

    if devices < 1 or data < 1 or devices % data:
        raise PlanError(f"devices={devices} must be >= 1 and divisible by data={data}")
    for name, value in (("batch", batch), ("candidates", candidates)):
        # None is the largest bucket; 0 is not (it used to mean it, silently)
        if value is not None and (not is_int(value) or value < 1):
            raise PlanError(f"{name}={value!r}: the serving bucket size must be an integer "
                            ">= 1 (or None: the tier's largest)")
    sizes = {DATA: data, MODEL: devices // data}
    abstract = nnx.eval_shape(lambda: Ranker(tier.model, tier.features, rngs=nnx.Rngs(0)))
    graphdef, params = nnx.split(abstract)
    placements = plan_placements(params, sizes, rules, min_shard_bytes)
    param_dev = sum(p.per_device_bytes for p in placements)
    shard_of = _local_param_view(placements)
    plan = MemoryPlan(tier.name, devices, sizes, device_memory,
                      int(sum(np.prod(p.shape, dtype=np.float64) for p in placements)),
                      sum(p.total_bytes for p in placements), placements)

    def local_rows(b: int, what: str) -> int:
        if b % data:
            raise PlanError(f"{what} batch {b} must divide by data={data}")
        return b // data

    if serve:
        b = max(tier.serving.batch_buckets) if batch is None else int(batch)
        c = max(tier.serving.candidate_buckets) if candidates is None else int(candidates)
        bl = local_rows(b, "serving")
        ab = abstract_batch(tier, bl, c)
        fwd = lambda p, x: nnx.merge(graphdef, p)(x)  # noqa: E731
        _trace(fwd, (params, ab))
        out = jax.eval_shape(fwd, params, ab)
        plan.scenarios.append(Scenario(f"serve b={b} c={c}", {
            "params": param_dev, "request batch": _bytes(ab), "scores (output)": _bytes(out),
            "activations (temp)": _temp_bytes(fwd, (params, ab), shard_of)}, device_memory))
    if train:
        from arm_jax.train.step import make_optimizer

        tc = tier.train
        tx = tx or make_optimizer(tc.learning_rate, tc.steps, tc.warmup_steps, tc.weight_decay,
                                 getattr(tc, "embedding_lr_scale", 1.0))
        bl = local_rows(tc.batch_size, "training")
        ab = abstract_batch(tier, bl, tc.candidates)
        labels = jax.ShapeDtypeStruct((bl, tc.candidates, len(tier.features.tasks)), jnp.float32)
        opt = jax.eval_shape(tx.init, params)
        opt_dev = optimizer_bytes_per_device(tx, opt, params, placements)

        def step(p, o, x, y):
            loss, grads = jax.value_and_grad(
                lambda q: masked_bce(nnx.merge(graphdef, q)(x), y, x.cand_mask))(p)
            updates, o = tx.update(grads, o, p)
            return optax.apply_updates(p, updates), o, loss

        items = {"params": param_dev, "optimizer state (adam)": opt_dev,
                 "batch + labels": _bytes(ab) + _bytes(labels), "loss (output)": 4,
                 "activations+grads (temp)": _temp_bytes(step, (params, opt, ab, labels),
                                                         shard_of)}
        items["second gradient buffer"] = second_gradient_bytes(placements, data)
        plan.scenarios.append(Scenario(f"train b={tc.batch_size} c={tc.candidates}", items,
                                       device_memory))
    return plan


def second_gradient_bytes(placements: list[Placement], data: int) -> int:
    """Gradient bytes XLA holds twice, per device.

    The embedding tables (logical axis 'vocab') get a second buffer: their gradient is
    a scatter-add into a zero table, which XLA copies before the update (seen as `copy`
    of the scatter result in the CPU buffer assignment). With data parallelism
    (data > 1) every gradient is also summed over 'data' by an all-reduce whose result
    is a second buffer of the gradient's (local) size. Dense gradients are otherwise
    updated in place.
    """
    tables = sum(p.per_device_bytes for p in placements if p.axes and "vocab" in p.axes)
    if data > 1:
        return tables + sum(p.per_device_bytes for p in placements)
    return tables


def optimizer_bytes_per_device(tx: optax.GradientTransformation, opt: Any,
                               params: nnx.State, placements: list[Placement]) -> int:
    """Moments at their parameter's local size; counters and the rest replicated."""
    ratio = {p.path: p.per_device_bytes / max(p.total_bytes, 1) for p in placements}
    ratios = nnx.from_flat_state([(path, var.replace(value=ratio["/".join(map(str, path))]))
                                  for path, var in nnx.to_flat_state(params)])
    sized = map_like_params(opt, params, ratios, lambda x, r: _bytes(x) * r, _bytes)
    return int(round(sum(float(v) for v in jax.tree.leaves(sized))))

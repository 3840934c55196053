"""Apply the rules table to NNX parameters: big tables sharded, small things replicated.

Works on real or abstract state (`nnx.eval_shape`), so the same placement decisions
feed the planner on paper and the device placement for real. Each decision carries a
reason, and `largest_replicated` lists what was left whole on every device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from arm_jax.parallel.mesh import check_axis_size, mesh_shape
from arm_jax.parallel.rules import DEFAULT_RULES, MIN_SHARD_BYTES, RulesError, logical_to_spec


@dataclass(frozen=True)
class Placement:
    """Where one parameter lives: its spec, bytes in total and per device, and why."""

    path: str
    shape: tuple[int, ...]
    dtype: str
    spec: PartitionSpec
    total_bytes: int
    per_device_bytes: int
    reason: str
    axes: tuple[str | None, ...] | None = None

    @property
    def replicated(self) -> bool:
        return all(a is None for a in self.spec)


def logical_axes_of(var: nnx.Variable) -> tuple[str | None, ...] | None:
    """Logical axes from `logical_axes` metadata (ours) or flax's `out_sharding`."""
    meta = var.get_metadata()
    axes = meta.get("logical_axes") or meta.get("out_sharding")
    return tuple(axes) if axes else None


def place(path: str, shape: tuple[int, ...], dtype: Any, axes: tuple[str | None, ...] | None,
          sizes: Mapping[str, int], rules: Mapping[str, str | None] = DEFAULT_RULES,
          min_shard_bytes: int = MIN_SHARD_BYTES) -> Placement:
    """The placement of one array of `shape` given its logical axes and mesh axis sizes.

    Raises RulesError when `rules` map one of its logical axes to a mesh axis not in
    `sizes`, MeshError when a size in `sizes` is not an integer >= 1."""
    for axis, size in sizes.items():    # a model axis of 0 was a ZeroDivisionError below
        check_axis_size(axis, size)
    itemsize = np.dtype(dtype).itemsize
    total = int(math.prod(shape)) * itemsize
    rep = PartitionSpec()
    if axes is None or len(axes) != len(shape):
        why = "no logical axes" if axes is None else f"logical axes {axes} != rank {len(shape)}"
        return Placement(path, shape, str(np.dtype(dtype)), rep, total, total, why, axes)
    if total < min_shard_bytes:
        return Placement(path, shape, str(np.dtype(dtype)), rep, total, total,
                         f"small ({total} B < {min_shard_bytes} B): replicated", axes)
    spec = list(logical_to_spec(axes, rules))
    for a, m in zip(axes, spec):
        if m is not None and m not in sizes:    # was a bare KeyError below
            raise RulesError(f"rules map logical axis '{a}' to mesh axis '{m}', which the mesh "
                             f"lacks; mesh axes: {', '.join(sizes) or '(none)'}")
    notes = []
    for i, m in enumerate(spec):
        if m is not None and shape[i] % sizes.get(m, 1):
            notes.append(f"dim {i}={shape[i]} not divisible by {m}={sizes[m]}")
            spec[i] = None
    local = [d // sizes[m] if m is not None else d for d, m in zip(shape, spec)]
    per_dev = int(math.prod(local)) * itemsize
    sharded = [f"{a}->{m}" for a, m in zip(axes, spec) if m is not None and sizes.get(m, 1) > 1]
    reason = ("sharded " + ", ".join(sharded)) if sharded else "replicated by rules"
    if notes:
        reason += " (" + "; ".join(notes) + ")"
    return Placement(path, shape, str(np.dtype(dtype)), PartitionSpec(*spec), total, per_dev,
                     reason, axes)


def plan_placements(state: nnx.State, sizes: Mapping[str, int],
                    rules: Mapping[str, str | None] = DEFAULT_RULES,
                    min_shard_bytes: int = MIN_SHARD_BYTES) -> list[Placement]:
    """Placement of every variable in `state` (real or abstract) on a mesh of `sizes`."""
    out = []
    for path, var in nnx.to_flat_state(state):
        v = var.get_value() if hasattr(var, "get_value") else var.value
        out.append(place("/".join(map(str, path)), tuple(v.shape), v.dtype, logical_axes_of(var),
                         sizes, rules, min_shard_bytes))
    return out


def param_shardings(state: nnx.State, mesh: Mesh, rules: Mapping[str, str | None] = DEFAULT_RULES,
                    min_shard_bytes: int = MIN_SHARD_BYTES) -> nnx.State:
    """A tree like `state` whose array leaves are NamedShardings (use as in/out_shardings)."""
    sizes = mesh_shape(mesh)
    specs = {p.path: p.spec for p in plan_placements(state, sizes, rules, min_shard_bytes)}
    flat = [(path, var.replace(value=NamedSharding(mesh, specs["/".join(map(str, path))])))
            for path, var in nnx.to_flat_state(state)]
    return nnx.from_flat_state(flat)


def shard_state(state: nnx.State, mesh: Mesh, rules: Mapping[str, str | None] = DEFAULT_RULES,
                min_shard_bytes: int = MIN_SHARD_BYTES) -> nnx.State:
    """`state` placed on `mesh` by the rules (a copy; the input is untouched)."""
    return jax.device_put(state, param_shardings(state, mesh, rules, min_shard_bytes))


def replicated_like(tree: Any, mesh: Mesh) -> Any:
    """NamedShardings replicating every array leaf of `tree` on `mesh`."""
    return jax.tree.map(lambda _: NamedSharding(mesh, PartitionSpec()), tree)


def largest_replicated(placements: list[Placement], top: int = 5) -> list[Placement]:
    """The `top` biggest parameters kept whole on every device (what to shard next)."""
    reps = [p for p in placements if p.replicated]
    return sorted(reps, key=lambda p: -p.total_bytes)[:top]


def format_placements(placements: list[Placement], top: int = 5) -> str:
    """A short table: sharded bytes, replicated bytes and the largest replicated tensors."""
    sharded = sum(p.total_bytes for p in placements if not p.replicated)
    rep = sum(p.total_bytes for p in placements if p.replicated)
    lines = [f"sharded: {sharded:,} B in {sum(not p.replicated for p in placements)} tensors; "
             f"replicated: {rep:,} B in {sum(p.replicated for p in placements)} tensors",
             "largest replicated:"]
    for p in largest_replicated(placements, top):
        lines.append(f"  {p.path:<48} {str(p.shape):<16} {p.total_bytes:>12,} B  {p.reason}")
    return "\n".join(lines)

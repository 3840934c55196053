"""The one table mapping logical parameter/activation axes to mesh axes.

Parameters carry logical axis names (`nnx.Param(..., logical_axes=('vocab', 'embed'))`);
nothing else in the model mentions the mesh. Changing how the model is laid out means
changing this table, not the model.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from jax.sharding import PartitionSpec

from arm_jax.parallel.mesh import DATA, MODEL

# logical axis -> mesh axis (None: replicated along that dimension)
DEFAULT_RULES: Mapping[str, str | None] = {
    "vocab": MODEL,      # embedding rows: the big dimension, row-sharded
    "embed": None,       # embedding width: every shard keeps whole rows
    "batch": DATA,       # requests of a batch
    "candidates": None,
    "history": None,
    "mlp": None,         # dense layers are small: replicated (cheap to copy)
    "heads": None,
}

# Parameters smaller than this stay replicated even when their axes map to a mesh axis:
# copying them is cheaper than the collectives sharding them would add.
MIN_SHARD_BYTES = 1 << 20


class RulesError(ValueError):
    """A logical axis has no rule, or its rule names a mesh axis the mesh lacks."""


def logical_to_spec(axes: Sequence[str | None], rules: Mapping[str, str | None] = DEFAULT_RULES
                    ) -> PartitionSpec:
    """('vocab', 'embed') -> PartitionSpec('model', None). A mesh axis is used at most once."""
    out: list[str | None] = []
    used: set[str] = set()
    for a in axes:
        if a is None:
            out.append(None)
            continue
        if a not in rules:
            raise RulesError(f"logical axis '{a}' has no rule; known: {', '.join(sorted(rules))}")
        m = rules[a]
        out.append(m if m is not None and m not in used else None)
        if m is not None:
            used.add(m)
    return PartitionSpec(*out)

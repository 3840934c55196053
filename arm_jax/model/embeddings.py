"""Hashed embedding tables: several fields stacked in one table with per-field offsets."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from arm_jax.model.preprocess import check_field_count, field_salts, hash_ids


class HashedEmbedding(nnx.Module):
    """`num_fields` fields, each hashed into its own `rows_per_field` slice of one table.

    One table with offsets (rather than a Python list of tables) keeps the lookup a
    single gather and makes row-wise sharding of the whole table one rule.
    Table shape [num_fields * rows_per_field, features], logical axes ('vocab', 'embed').
    """

    def __init__(self, num_fields: int, rows_per_field: int, features: int, *,
                 salt_base: int = 0, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.num_fields = num_fields
        self.rows_per_field = rows_per_field
        self.salt_base = salt_base
        init = nnx.initializers.normal(stddev=0.05)
        # Logical axis names, mapped to mesh axes by one rules table (arm_jax.parallel).
        self.table = nnx.Param(init(rngs.params(), (num_fields * rows_per_field, features),
                                    param_dtype), logical_axes=("vocab", "embed"))

    def rows(self, ids_xf: jax.Array, fields: tuple[int, ...] | None = None) -> jax.Array:
        """Table rows for raw ids [..., num_fields] (or [..., len(fields)]: those fields).

        Ids whose last dim is not that count raise ValueError (at trace time): they would
        broadcast against the per-field salts and look every id up in every field."""
        check_field_count(ids_xf, self.num_fields, fields)
        salts = field_salts(self.num_fields, self.salt_base)
        offsets = jnp.arange(self.num_fields, dtype=jnp.int32) * self.rows_per_field
        if fields is not None:
            idx = jnp.asarray(fields, jnp.int32)
            salts, offsets = salts[idx], offsets[idx]
        return hash_ids(ids_xf, salts, self.rows_per_field) + offsets

    def __call__(self, ids_xf: jax.Array, fields: tuple[int, ...] | None = None) -> jax.Array:
        """[..., num_fields] raw ids -> [..., num_fields, features].

        `fields` looks ids of only those fields up (e.g. a history event's advertiser and
        topic in the candidate table, so both sides share one embedding per value).
        """
        return jnp.take(self.table[...], self.rows(ids_xf, fields), axis=0)

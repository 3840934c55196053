"""In-graph preprocessing: id hashing, dense normalisation, event-age buckets.

These run inside the compiled function so that serving never touches ids or
values in Python per request.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

_GOLDEN = 0x9E3779B9
_MIX = 0x85EBCA6B


def hash_ids(ids: jax.Array, salt: jax.Array | int, size: int) -> jax.Array:
    """Hash non-negative int32 ids into [0, size) with a per-field salt (uint32 wrap-around)."""
    x = ids.astype(jnp.uint32) ^ jnp.asarray(salt, jnp.uint32)
    x = x * jnp.uint32(_GOLDEN)
    x = x ^ (x >> 16)
    x = x * jnp.uint32(_MIX)
    x = x ^ (x >> 13)
    return (x % jnp.uint32(size)).astype(jnp.int32)


def check_field_count(ids: jax.Array, num_fields: int,
                      fields: Sequence[int] | None = None,
                      error: type[ValueError] = ValueError) -> None:
    """`error` (at trace time) unless the ids' last dim is one id per field looked up:
    `num_fields`, or `len(fields)` when `fields` picks some. Ids of another width would
    broadcast against the per-field salts and look every id up in every field."""
    want = num_fields if fields is None else len(fields)
    shape = tuple(jnp.shape(ids))
    if not shape or shape[-1] != want:
        which = f"the {num_fields} fields" if fields is None else f"fields={list(fields)}"
        raise error(f"ids of shape {shape}: last dim must be {want} (one id per field: "
                    f"{which})")


def field_salts(num_fields: int, base: int = 0) -> jax.Array:
    """Distinct salts so that equal ids in different fields land in unrelated rows."""
    return (jnp.arange(num_fields, dtype=jnp.uint32) + jnp.uint32(base)) * jnp.uint32(0x27D4EB2F)


def normalize_dense(x: jax.Array) -> jax.Array:
    """Signed log1p: keeps heavy-tailed counts and prices in a trainable range."""
    return jnp.sign(x) * jnp.log1p(jnp.abs(x))


def age_bucket(gap_seconds: jax.Array, num_buckets: int) -> jax.Array:
    """log2 bucket of an event's age in seconds, clipped to [0, num_buckets)."""
    b = jnp.floor(jnp.log2(1.0 + jnp.maximum(gap_seconds, 0.0)))
    return jnp.clip(b, 0, num_buckets - 1).astype(jnp.int32)

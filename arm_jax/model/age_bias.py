"""A learned recency prior for attention over a user's history.

Every attention that reads the history (the encoder's self-attention, the summary
pooling, target attention) adds `bucket_bias[age_bucket(event), head]` to each key's score.
The bias starts at `-slope * bucket`: an event twice as old starts `slope` logits
lower, so with few users to learn from a long history first reads like a short one
and the model learns how far back to look, per head (HSTU's relative time bias,
reduced to the event's age at request time so that it stays a per-key term that the
fused target-attention kernel can add per L-block).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class AgeBias(nnx.Module):
    """Additive key bias [b, L, heads] (float32) from each event's age bucket."""

    def __init__(self, time_buckets: int, num_heads: int, slope: float, *,
                 param_dtype=jnp.float32):
        start = -slope * jnp.arange(time_buckets, dtype=jnp.float32)
        self.bucket_bias = nnx.Param(jnp.tile(start[:, None], (1, num_heads)).astype(param_dtype))

    def __call__(self, age_bucket_bl: jax.Array) -> jax.Array:
        return jnp.take(self.bucket_bias[...], age_bucket_bl, axis=0).astype(jnp.float32)


def age_biases(time_buckets: int, num_heads: int, slope: float, *,
               param_dtype: jnp.dtype = jnp.float32) -> AgeBias | None:
    """An AgeBias when `slope` > 0, else None (the model then has no such parameters)."""
    return AgeBias(time_buckets, num_heads, slope, param_dtype=param_dtype) if slope > 0 else None

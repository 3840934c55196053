"""A learned recency prior for attention over a user's history.

Every attention that reads the history (the encoder's self-attention, the summary
pooling, target attention) adds `bucket_bias[age_bucket(event), head]` to each key's score.
The bias starts at `-slope * bucket`: an event twice as old starts `slope` logits
lower, so with few users to learn from a long history first reads like a short one
and the model learns how far back to look, per head (HSTU's relative time bias,
reduced to the event's age at request time so that it stays a per-key term that the
fused target-attention kernel can add per L-block).

Optionally (`model.rank_bias_slope`) the same kind of table by the event's rank in the
history instead of its age: `rank_bias[rank_bucket(event), head]`, starting at `-slope`
per doubling of the rank (0 = the most recent event). Age cannot order events that share
nearly one time, as a burst of ratings entered in one sitting does; rank always can, and
a model that reads 32 events is such a prior with an infinitely steep cutoff.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


RANK_BUCKETS = 16      # log2 buckets of an event's rank: ranks up to 2**15 get their own


def rank_bucket(length: int, num_buckets: int = RANK_BUCKETS) -> jax.Array:
    """log2 bucket of each rank 0..length-1 (0, 1, 1, 2, 2, 2, 2, 3, ...), clipped."""
    bits = 31 - jax.lax.clz(jnp.arange(1, length + 1, dtype=jnp.int32))   # exact floor(log2)
    return jnp.minimum(bits, num_buckets - 1)


class AgeBias(nnx.Module):
    """Additive key bias [b, L, heads] (float32) from each event's age bucket and, when
    `rank_slope` > 0, its rank bucket (each table present only when its slope is > 0)."""

    def __init__(self, time_buckets: int, num_heads: int, slope: float, *,
                 rank_slope: float = 0.0, param_dtype=jnp.float32):
        def start(buckets: int, s: float) -> nnx.Param:
            first = -s * jnp.arange(buckets, dtype=jnp.float32)
            return nnx.Param(jnp.tile(first[:, None], (1, num_heads)).astype(param_dtype))

        self.num_heads = num_heads
        self.bucket_bias = start(time_buckets, slope) if slope > 0 else None
        self.rank_bias = start(RANK_BUCKETS, rank_slope) if rank_slope > 0 else None

    def __call__(self, age_bucket_bl: jax.Array) -> jax.Array:
        b, l = age_bucket_bl.shape
        parts = []
        if self.bucket_bias is not None:
            parts.append(jnp.take(self.bucket_bias[...], age_bucket_bl, axis=0))
        if self.rank_bias is not None:
            by_rank = jnp.take(self.rank_bias[...], rank_bucket(l), axis=0)
            parts.append(jnp.broadcast_to(by_rank[None], (b, l, self.num_heads)))
        return sum(parts[1:], parts[0]).astype(jnp.float32)


def age_biases(time_buckets: int, num_heads: int, slope: float, *, rank_slope: float = 0.0,
               param_dtype: jnp.dtype = jnp.float32) -> AgeBias | None:
    """An AgeBias when `slope` or `rank_slope` is > 0, else None (the model then has no such
    parameters)."""
    if slope <= 0 and rank_slope <= 0:
        return None
    return AgeBias(time_buckets, num_heads, slope, rank_slope=rank_slope,
                   param_dtype=param_dtype)

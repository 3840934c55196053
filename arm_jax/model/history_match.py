"""History matching: how much of a request's history looks like each candidate.

Softmax target attention answers "what, in this history, is like the candidate", but it
normalises away how MUCH of the history is like it: one matching event among a thousand
and five hundred of them give the same weighted average. That intensity is the strongest
signal of a user's interest (DIN keeps unnormalised weights for it, HSTU uses pointwise
attention, SIM searches the history by category). `HistoryMatch` computes it directly.

For each matched field f (the item id, then each history side field such as advertiser
and topic) the candidate's value and every event's value are embedded by the SAME table,
and a soft "same value" gate

    w[c, f, l] = sigmoid(slope_f * (cos(e_f(candidate c), e_f(event l)) - offset_f))

is 1 for an exact match from the first training step (cosine 1 whatever the embeddings
are), and opens for similar values as the embeddings learn. Per candidate it returns one
token: a projection of the fraction and log-count of matching events per field, plus the
gate-weighted mean of the encoded events.

Request-level work (normalised event keys, projected event values) runs once per request;
the candidate-level part is [b, c, f, l] gates: O(c * l * f * d) multiply-adds.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx


@flax.struct.dataclass
class MatchState:
    """Request-level half of the match, per request b."""

    keys_bfld: jax.Array     # unit-norm event embeddings per matched field (0 on padding)
    values_bld: jax.Array    # projected encoded events (0 on padding)
    valid_bl: jax.Array      # 1.0 for real events, 0.0 for padding
    count_b: jax.Array       # valid events, at least 1 (the fraction's denominator)


def _unit(x: jax.Array) -> jax.Array:
    return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + 1e-12)


class HistoryMatch(nnx.Module):
    """One match token [b, c, d] per candidate from `num_fields` shared-embedding fields."""

    def __init__(self, num_fields: int, d_model: int, *, dtype=jnp.float32,
                 param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.num_fields = num_fields
        self.dtype = dtype
        # slope 10, offset 0.5: an exact match passes (~0.99), an unrelated value (cosine
        # ~0 for random embeddings) does not (~0.007).
        self.slope = nnx.Param(jnp.full((num_fields,), 10.0, param_dtype))
        self.offset = nnx.Param(jnp.full((num_fields,), 0.5, param_dtype))
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.value = nnx.Linear(d_model, d_model, **kw)
        self.stats = nnx.Linear(2 * num_fields, d_model, **kw)

    def request_part(self, keys_blfd: jax.Array, encoded_bld: jax.Array,
                     mask_bl: jax.Array) -> MatchState:
        """Once per request: event keys [b, l, f, d] (raw embeddings), encoded events [b, l, d]."""
        m = mask_bl.astype(self.dtype)
        # select, not multiply: a non-finite padded event must not survive as 0 * NaN
        keys = jnp.where(mask_bl[:, :, None, None], _unit(keys_blfd.astype(self.dtype)), 0)
        values = jnp.where(mask_bl[:, :, None], self.value(encoded_bld), 0)
        # field-major keys: one [c, d] x [d, l] matmul per (request, field)
        return MatchState(jnp.swapaxes(keys, 1, 2), values, m, jnp.maximum(m.sum(-1), 1.0))

    def __call__(self, state: MatchState, cand_keys_bcfd: jax.Array) -> jax.Array:
        """Candidate keys [b, c, f, d] (same tables as the events) -> match token [b, c, d]."""
        q_bfcd = jnp.swapaxes(_unit(cand_keys_bcfd.astype(self.dtype)), 1, 2)
        cos_bfcl = jnp.einsum("bfcd,bfld->bfcl", q_bfcd, state.keys_bfld)
        slope = self.slope[...].astype(self.dtype)[None, :, None, None]
        offset = self.offset[...].astype(self.dtype)[None, :, None, None]
        gate_bfcl = (jax.nn.sigmoid(slope * (cos_bfcl - offset))
                     * state.valid_bl[:, None, None, :])
        n_b = state.count_b
        hits_bcf = jnp.swapaxes(gate_bfcl.sum(-1), 1, 2)
        frac_bcf = hits_bcf / n_b[:, None, None]
        stats = self.stats(jnp.concatenate([frac_bcf, jnp.log1p(hits_bcf)], axis=-1))
        # the values are shared by all fields: sum the gates over fields, then one matmul
        pooled_bcd = jnp.einsum("bcl,bld->bcd", gate_bfcl.sum(1), state.values_bld)
        return stats + pooled_bcd / (n_b[:, None, None] * self.num_fields)
